"""Network structure: shapes, parameter count against a closed form."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default as default_config
from sgfan_jax import model as model_lib


def res_params(cin, cout):
  """Pre-activation bottleneck: 3 BN (scale, bias) + 1x1, 3x3, 1x1 convs."""
  mid = cout // 2
  n = 2 * cin + 2 * mid + 2 * mid                     # BN scales/biases
  n += cin * mid + mid + 9 * mid * mid + mid + mid * cout + cout
  if cin != cout:
    n += cin * cout + cout                             # skip projection
  return n


def hourglass_params(depth, c):
  inner = hourglass_params(depth - 1, c) if depth > 1 else res_params(c, c)
  return 3 * res_params(c, c) + inner


def sgfan_params(width, depth, branch, n):
  half = width // 2
  total = 7 * 7 * 3 * 64 + 64
  total += res_params(64, half) + res_params(half, half) + res_params(half,
                                                                      width)
  br = hourglass_params(depth, width) + res_params(width, width)
  br += res_params(width, branch) + res_params(branch, branch)
  br += 2 * branch + branch * n + n                    # BN + 1x1 head
  return total + 2 * br


@pytest.mark.parametrize("width,depth,branch,n", [(256, 4, 128, 68),
                                                  (64, 4, 128, 68),
                                                  (16, 2, 16, 29)])
def test_param_count_matches_closed_form(width, depth, branch, n):
  m = model_lib.SGFAN(num_landmarks=n, width=width, hourglass_depth=depth,
                      branch_channels=branch)
  v = jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0),
                                    jnp.zeros((1, 128, 128, 3))))
  assert model_lib.count_params(v["params"]) == sgfan_params(width, depth,
                                                             branch, n)


def test_output_shapes_and_train_mode():
  m = model_lib.SGFAN(num_landmarks=5, width=8, hourglass_depth=2,
                      branch_channels=8)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 128, 128, 3))
  v = m.init(jax.random.PRNGKey(1), x)
  (h, s), upd = m.apply(v, x, train=True, mutable=["batch_stats"])
  assert h.shape == (2, 128, 128, 5) and s.shape == (2, 128, 128, 5)
  changed = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()),
                                   v["batch_stats"], upd["batch_stats"])
  assert max(jax.tree_util.tree_leaves(changed)) > 0   # stats updated
  h2, _ = m.apply(v, x, train=False)
  assert h2.shape == h.shape


def test_bad_input_shape_is_clear():
  m = model_lib.SGFAN(num_landmarks=5, width=8, hourglass_depth=2,
                      branch_channels=8)
  with pytest.raises(ValueError, match=r"expects images \[B, H, W, 3\]"):
    m.init(jax.random.PRNGKey(0), jnp.zeros((1, 128, 128)))
  with pytest.raises(ValueError, match="divisible"):
    m.init(jax.random.PRNGKey(0), jnp.zeros((1, 100, 100, 3)))


def test_small_head_init_starts_maps_near_zero():
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 128, 128, 3))
  out = {}
  for scale in (1.0, 0.01):
    m = model_lib.SGFAN(num_landmarks=5, width=8, hourglass_depth=2,
                        branch_channels=8, head_init_scale=scale)
    v = m.init(jax.random.PRNGKey(1), x)
    h, s = m.apply(v, x)
    out[scale] = float(jnp.sqrt(jnp.mean(h ** 2) + jnp.mean(s ** 2)))
  # Output scale follows the head's init scale (BN-normalised features).
  assert out[0.01] < 0.03 * out[1.0]
  assert out[1.0] > 0.1


def test_fused_upsample_block_is_the_same_function():
  """Upsample-then-block == block at low res (outputs, stats, gradients)."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 128, 128, 3))
  nets = {f: model_lib.SGFAN(num_landmarks=4, width=16, hourglass_depth=2,
                             branch_channels=16, fuse_upsample=f,
                             conv_impl="xla", dtype="float32")
          for f in (True, False)}
  v = nets[False].init(jax.random.PRNGKey(1), x)
  v_fused = nets[True].init(jax.random.PRNGKey(1), x)
  # Identical parameter trees (checkpoints do not depend on the switch).
  assert (jax.tree_util.tree_structure(v) ==
          jax.tree_util.tree_structure(v_fused))

  def loss(params, net):
    (h, s), upd = net.apply({"params": params,
                             "batch_stats": v["batch_stats"]}, x,
                            train=True, mutable=["batch_stats"])
    return jnp.sum(h ** 2) + jnp.sum(jnp.sin(s)), (h, s, upd)

  out = {}
  for f, net in nets.items():
    (val, aux), g = jax.value_and_grad(loss, has_aux=True)(v["params"], net)
    out[f] = (val, aux, g)
  (v1, (h1, s1, u1), g1), (v0, (h0, s0, u0), g0) = out[True], out[False]
  assert float(jnp.abs(h0).max()) > 0
  np.testing.assert_allclose(h1, h0, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(s1, s0, rtol=1e-4, atol=1e-4)
  chex.assert_trees_all_close(u1, u0, rtol=1e-4, atol=1e-5)
  # Gradients: relative to each leaf's scale (biases feeding BN are ~0).
  for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g0)):
    scale = float(jnp.abs(b).max()) + 1e-3 * float(jnp.abs(v0))
    np.testing.assert_allclose(a, b, atol=1e-3 * scale, rtol=1e-3)
  # Eval mode (running statistics) too.
  e1, _ = nets[True].apply(v, x, train=False)
  e0, _ = nets[False].apply(v, x, train=False)
  np.testing.assert_allclose(e1, e0, rtol=1e-4, atol=1e-4)


def test_defaults_are_those_of_the_default_config():
  """SGFAN's defaults and create_model both read configs/default.py."""
  cfg = default_config.get_config().model
  fields = ("width", "hourglass_depth", "branch_channels", "conv_impl",
            "head_init_scale", "fuse_upsample")
  for m in (model_lib.SGFAN(), model_lib.create_model(cfg, 68)):
    assert {f: getattr(m, f) for f in fields} == {f: cfg[f] for f in fields}
    assert m.num_landmarks == 68
  # The module keeps 'auto' (resolved when it runs); create_model resolves.
  assert model_lib.SGFAN().dtype == cfg.dtype == "auto"
  assert model_lib.create_model(cfg, 68).dtype == model_lib.resolve_dtype(
      cfg.dtype)


def test_resolve_dtype(monkeypatch):
  """'auto' = the backend's measured entry (bfloat16 on CPU), float32 where
  none; names and dtypes pass through; anything else is a clear error."""
  assert model_lib.AUTO_DTYPE == {"cpu": "bfloat16"}
  assert model_lib.resolve_dtype("auto", "cpu") == jnp.bfloat16
  assert model_lib.resolve_dtype("auto", "gpu") == jnp.float32
  assert model_lib.resolve_dtype("auto", "tpu") == jnp.float32
  assert model_lib.resolve_dtype("float32") == jnp.float32
  assert model_lib.resolve_dtype(jnp.bfloat16) == jnp.bfloat16
  with pytest.raises(ValueError, match="model.dtype must be one of"):
    model_lib.resolve_dtype("fp8")
  # A module built with 'auto' computes in the resolved dtype: on this
  # backend its output equals that of the explicit dtype, bit for bit.
  kwargs = dict(num_landmarks=3, width=8, hourglass_depth=1,
                branch_channels=8)
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 32, 32, 3))
  v = model_lib.SGFAN(dtype="float32", **kwargs).init(jax.random.PRNGKey(1),
                                                     x)
  explicit = model_lib.resolve_dtype("auto").name
  a = model_lib.SGFAN(dtype="auto", **kwargs).apply(v, x)
  b = model_lib.SGFAN(dtype=explicit, **kwargs).apply(v, x)
  for p, q in zip(a, b):
    np.testing.assert_array_equal(np.asarray(p), np.asarray(q))
