"""Network structure: shapes, parameter count against a closed form."""

import jax
import jax.numpy as jnp
import pytest

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
