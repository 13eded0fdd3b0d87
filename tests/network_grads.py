"""Train-mode outputs and parameter gradients of an SGFAN, for comparing
two implementations of the same network (tests/test_conv.py,
tests/test_bf16.py)."""

import jax
import jax.numpy as jnp


def train_outputs(model, variables, x, cot):
  """``((heatmaps, scores, updated BatchNorm statistics), gradients)`` of
  ``sum(heatmaps * cot[0] + scores * cot[1])`` in train mode, jitted."""
  def objective(params):
    (h, s), upd = model.apply(
        {"params": params, "batch_stats": variables["batch_stats"]}, x,
        train=True, mutable=["batch_stats"])
    return jnp.sum(h * cot[0]) + jnp.sum(s * cot[1]), (h, s, upd)
  (_, aux), grads = jax.jit(jax.value_and_grad(objective, has_aux=True))(
      variables["params"])
  return aux, grads
