"""The 'cpu' convolution equals the stock one (outputs and gradients), in
float32 (bfloat16: tests/test_bf16.py).

Reference: ``lax.conv_general_dilated`` (``conv_xla``) and its automatic
derivatives. Gradients are compared through a random cotangent so every
output element contributes.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgfan_jax import conv as conv_lib
from sgfan_jax import model as model_lib
from tests import network_grads

jax.config.update("jax_default_matmul_precision", "highest")


def _rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def _value_and_grads(fn, x, kernel, cot):
  """sum(fn(x, kernel) * cot), d/dx, d/dkernel and the output."""
  def objective(x, kernel):
    y = fn(x, kernel)
    return jnp.sum(y * cot), y
  (_, y), (dx, dk) = jax.jit(jax.value_and_grad(
      objective, argnums=(0, 1), has_aux=True))(x, kernel)
  return y, dx, dk


# (batch, height, width, c_in, c_out, kernel, stride, pad)
CASES = [
    (1, 8, 8, 4, 6, 3, 1, 1),       # batch 1
    (3, 9, 7, 5, 4, 3, 1, 1),       # odd, non-square
    (2, 11, 11, 3, 8, 7, 2, 3),     # the stem: 7x7 stride 2 pad 3
    (2, 8, 8, 6, 5, 1, 1, 0),       # 1x1 (matmul path)
    (2, 9, 9, 4, 3, 1, 2, 0),       # 1x1 stride 2 (stock path)
    (2, 7, 9, 4, 5, 3, 2, 1),       # 3x3 stride 2, odd
    (2, 6, 6, 3, 4, 5, 1, 2),       # 5x5
    (2, 6, 6, 3, 4, 3, 1, 2),       # padding larger than k // 2
    (2, 6, 6, 3, 4, 3, 1, 0),       # valid padding
]


@pytest.mark.parametrize("b,h,w,cin,cout,k,stride,pad", CASES)
def test_cpu_conv_matches_stock_outputs_and_grads(b, h, w, cin, cout, k,
                                                  stride, pad):
  keys = jax.random.split(jax.random.PRNGKey(b * 1000 + h * 10 + k), 3)
  x = jax.random.normal(keys[0], (b, h, w, cin))
  kernel = jax.random.normal(keys[1], (k, k, cin, cout))
  ho = (h + 2 * pad - k) // stride + 1
  wo = (w + 2 * pad - k) // stride + 1
  cot = jax.random.normal(keys[2], (b, ho, wo, cout))
  ref = _value_and_grads(
      functools.partial(conv_lib.conv_xla, stride=stride, pad=(pad, pad)),
      x, kernel, cot)
  got = _value_and_grads(
      functools.partial(conv_lib.conv_cpu, stride=stride, pad=(pad, pad)),
      x, kernel, cot)
  for name, r, g in zip(("output", "d_input", "d_kernel"), ref, got):
    assert g.shape == r.shape, name
    assert _rel_err(g, r) < 1e-5, (name, "cpu", _rel_err(g, r))
  # The convolution as one patches @ kernel product (autodiff gradients)
  # and as a sum of shifted 1x1 products (custom VJP).
  for fn in (conv_lib.conv_im2col_matmul, conv_lib.conv_shifted):
    got = _value_and_grads(
        functools.partial(fn, stride=stride, pad=(pad, pad)), x, kernel, cot)
    for name, r, g in zip(("output", "d_input", "d_kernel"), ref, got):
      assert g.shape == r.shape, name
      assert _rel_err(g, r) < 1e-5, (name, fn.__name__, _rel_err(g, r))


def test_im2col_layout_matches_kernel_reshape():
  """A conv is im2col(x) @ kernel.reshape(-1, O) (patch order kh, kw, I)."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 6, 3))
  kernel = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 5))
  cols = conv_lib.im2col(x, 3, 3, 2, (1, 1))
  assert cols.shape == (2, 4, 3, 27)
  got = cols @ kernel.reshape(-1, 5)
  ref = conv_lib.conv_xla(x, kernel, 2, (1, 1))
  assert _rel_err(got, ref) < 1e-5


def test_conv_module_same_params_and_outputs():
  x = jax.random.normal(jax.random.PRNGKey(4), (2, 9, 9, 5))
  mods = {impl: conv_lib.Conv(7, (3, 3), strides=2, impl=impl)
          for impl in conv_lib.IMPLS}
  params = mods["xla"].init(jax.random.PRNGKey(5), x)
  shapes = jax.tree_util.tree_map(jnp.shape, params)
  assert shapes == jax.tree_util.tree_map(
      jnp.shape, mods["cpu"].init(jax.random.PRNGKey(5), x))
  assert shapes["params"]["kernel"] == (3, 3, 5, 7)
  assert shapes["params"]["bias"] == (7,)
  params = jax.tree_util.tree_map(lambda p: p + 0.1, params)   # bias != 0
  ref = mods["xla"].apply(params, x)
  assert _rel_err(mods["cpu"].apply(params, x), ref) < 1e-5


def test_resolve_conv_impl():
  assert conv_lib.resolve_conv_impl("xla") == "xla"
  assert conv_lib.resolve_conv_impl("cpu") == "cpu"
  expected = "cpu" if jax.default_backend() == "cpu" else "xla"
  assert conv_lib.resolve_conv_impl("auto") == expected
  for removed in ("cudnn", "cpu_im2col"):
    with pytest.raises(ValueError):
      conv_lib.resolve_conv_impl(removed)


def test_sgfan_same_outputs_and_grads_for_both_impls():
  """Tiny SGFAN, train mode: outputs, BN statistics and all parameter
  gradients agree between conv_impl='cpu' and 'xla' from the same params."""
  kwargs = dict(num_landmarks=5, width=8, hourglass_depth=1,
                branch_channels=8, dtype="float32")
  x = jax.random.normal(jax.random.PRNGKey(6), (2, 32, 32, 3))
  models = {impl: model_lib.SGFAN(conv_impl=impl, **kwargs)
            for impl in ("xla", "cpu")}
  variables = models["xla"].init(jax.random.PRNGKey(7), x)
  cot = jax.random.normal(jax.random.PRNGKey(8), (2, 2, 32, 32, 5))

  run = lambda model: network_grads.train_outputs(model, variables, x, cot)
  (h_ref, s_ref, upd_ref), g_ref = run(models["xla"])
  (h_got, s_got, upd_got), g_got = run(models["cpu"])
  assert _rel_err(h_got, h_ref) < 1e-4
  assert _rel_err(s_got, s_ref) < 1e-4
  flat_ref = jax.tree_util.tree_leaves_with_path(g_ref)
  flat_got = dict(jax.tree_util.tree_leaves_with_path(g_got))
  assert len(flat_ref) == len(flat_got) > 50
  # Biases of convolutions followed by train-mode BatchNorm have an exactly
  # zero gradient; their computed values are rounding noise, so they are
  # held to an absolute tolerance relative to the largest gradient.
  scale = max(float(jnp.abs(g).max()) for _, g in flat_ref)
  for path, ref in flat_ref:
    np.testing.assert_allclose(flat_got[path], ref, rtol=1e-3,
                               atol=1e-5 * scale,
                               err_msg=jax.tree_util.keystr(path))
  kernel_errs = [_rel_err(flat_got[p], r) for p, r in flat_ref
                 if "kernel" in jax.tree_util.keystr(p)]
  assert max(kernel_errs) < 1e-3
  for a, b in zip(jax.tree_util.tree_leaves(upd_got),
                  jax.tree_util.tree_leaves(upd_ref)):
    assert _rel_err(a, b) < 1e-4


@pytest.mark.parametrize("impl", ["xla", "cpu", "im2col_matmul", "shifted"])
@pytest.mark.parametrize("b,h,w,cin,cout", [(1, 5, 7, 3, 4), (2, 8, 8, 6, 5)])
def test_conv_upsampled2x_equals_conv_of_upsampled(impl, b, h, w, cin, cout):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(b, h, w, cin)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(3, 3, cin, cout)), jnp.float32)
  up = lambda x: jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
  ref = lambda x, k: conv_lib.conv_xla(up(x), k, 1, (1, 1))
  conv_fn = {"xla": conv_lib.conv_xla, "cpu": conv_lib.conv_cpu,
             "im2col_matmul": conv_lib.conv_im2col_matmul,
             "shifted": conv_lib.conv_shifted}[impl]
  fast = lambda x, k: conv_lib.conv_upsampled2x(x, k, conv_fn)
  np.testing.assert_allclose(fast(x, k), ref(x, k), rtol=1e-5, atol=1e-5)
  dy = jnp.asarray(rng.normal(size=(b, 2 * h, 2 * w, cout)), jnp.float32)
  g_fast = jax.vjp(fast, x, k)[1](dy)
  g_ref = jax.vjp(ref, x, k)[1](dy)
  for a, r in zip(g_fast, g_ref):
    np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-4)
