"""Convolution module with a selectable implementation.

``Conv`` declares the same parameters as ``flax.linen.Conv`` (``kernel``
[kh, kw, in, out], ``bias`` [out]) so checkpoints do not depend on the
implementation.

* ``impl='xla'``: stock ``lax.conv_general_dilated``; best on GPU/TPU.
* ``impl='cpu'``: the same function, written for XLA:CPU. XLA lowers the
  weight gradient of a convolution to a convolution whose window is the whole
  feature map (output ``[in, kh, kw, out]``) after transposing both operands
  to ``[C, H, W, B]``; for 1x1 kernels on large maps (e.g. the 128 -> 68 heads
  at 128x128) XLA:CPU runs that much slower than the equivalent matrix
  product. Here a 1x1 stride-1 convolution is a matrix product
  ``[B*H*W, in] @ [in, out]`` (its gradients are matrix products too, the
  kernel gradient batched over the examples, see ``conv_matmul_1x1``), and
  the 2x2 phase convolution of ``conv_upsampled2x`` (the 3x3 conv after the
  2x upsampling) is one im2col matrix product (``conv_im2col_matmul``);
  other kernels (3x3, the 7x7 stem) use the stock convolution, which
  measured fastest for them (an im2col weight gradient, a sum of nine
  shifted products and a three-row variant were all no faster in the
  network).

  Outputs equal the stock implementation bit-for-bit or to float32 rounding
  (different summation order); see tests/test_conv.py.

Timings behind these choices: BENCHMARKS.md (and benchmarks/results/).
"""

from typing import Callable, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

IMPLS = ("xla", "cpu")


def resolve_conv_impl(impl: str) -> str:
  """Maps 'auto' to 'cpu' on the CPU backend and to 'xla' elsewhere."""
  if impl == "auto":
    return "cpu" if jax.default_backend() == "cpu" else "xla"
  if impl not in IMPLS:
    raise ValueError(f"conv_impl must be 'auto' or one of {IMPLS}, "
                     f"got {impl!r}")
  return impl


def _padding(pad):
  return ((pad[0], pad[0]), (pad[1], pad[1]))


def conv_xla(x, kernel, stride: int, pad: Tuple[int, int]):
  """Stock convolution: x [B, H, W, I], kernel [kh, kw, I, O] -> [B, Ho, Wo, O].

  ``pad`` = (rows, cols) of zeros added on each side; ``stride`` in both axes.
  """
  return lax.conv_general_dilated(
      x, kernel, (stride, stride), _padding(pad),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _out_size(size, k, stride, pad):
  return (size + 2 * pad - k) // stride + 1


def im2col(x, kh: int, kw: int, stride: int, pad: Tuple[int, int]):
  """Patches: x [B, H, W, I] -> [B, Ho, Wo, kh*kw*I].

  The last axis is ordered (kh, kw, I), matching ``kernel.reshape(-1, O)``.
  """
  b, h, w, c = x.shape
  ho = _out_size(h, kh, stride, pad[0])
  wo = _out_size(w, kw, stride, pad[1])
  xp = jnp.pad(x, ((0, 0), (pad[0], pad[0]), (pad[1], pad[1]), (0, 0)))
  cols = [
      lax.slice(xp, (0, i, j, 0),
                (b, i + (ho - 1) * stride + 1, j + (wo - 1) * stride + 1, c),
                (1, stride, stride, 1))
      for i in range(kh) for j in range(kw)
  ]
  return jnp.concatenate(cols, axis=-1)


@jax.custom_vjp
def conv_matmul_1x1(x, kernel):
  """1x1 stride-1 convolution as a matrix product.

  x [B, H, W, I], kernel [1, 1, I, O] -> [B, H, W, O].

  Gradients (custom VJP): the input gradient is ``dy @ kernel^T``; the
  kernel gradient is a batched product over the examples, ``sum_b
  x_b^T dy_b`` with ``x_b`` [H*W, I] and ``dy_b`` [H*W, O] (a dot_general
  with batch axis B, then a sum over B). Autodiff's ``[B*H*W, I]^T @
  [B*H*W, O]`` makes XLA:CPU copy the whole activation into a transposed
  layout first; the batched form does not (the gain in the train step:
  BENCHMARKS.md).
  """
  return _matmul_1x1(x, kernel)


def _matmul_1x1(x, kernel):
  return lax.dot_general(x, kernel[0, 0], (((x.ndim - 1,), (0,)), ((), ())))


def _matmul_1x1_fwd(x, kernel):
  return _matmul_1x1(x, kernel), (x, kernel)


def _matmul_1x1_bwd(res, dy):
  x, kernel = res
  k = kernel[0, 0]
  dx = lax.dot_general(dy, k, (((dy.ndim - 1,), (1,)), ((), ())))
  b = x.shape[0]
  dk = lax.dot_general(x.reshape(b, -1, x.shape[-1]),
                       dy.reshape(b, -1, dy.shape[-1]),
                       (((1,), (1,)), ((0,), (0,))),
                       preferred_element_type=jnp.float32).sum(0)
  return dx.astype(x.dtype), dk.reshape(kernel.shape).astype(kernel.dtype)


conv_matmul_1x1.defvjp(_matmul_1x1_fwd, _matmul_1x1_bwd)


def conv_im2col_matmul(x, kernel, stride: int, pad: Tuple[int, int]):
  """Convolution as one matrix product of im2col patches with the kernel.

  x [B, H, W, I], kernel [kh, kw, I, O] -> [B, Ho, Wo, O]: the patches
  ``[B, Ho, Wo, kh*kw*I]`` (``im2col``) times ``kernel.reshape(-1, O)``.
  Gradients are matrix products (``conv_matmul_1x1``'s; the input gradient
  then ends in a sum of shifted slices). Used for the 2x2 phase convolution of
  ``conv_upsampled2x`` on CPU, whose stock weight gradient (a convolution
  whose window is the whole 65x65 map) XLA:CPU runs much slower than this
  product (BENCHMARKS.md); the patch matrix is kh*kw = 4 times the input.
  """
  kh, kw, _, cout = kernel.shape
  cols = im2col(x, kh, kw, stride, pad)
  # A 1x1 convolution of the patches: same product, batched kernel gradient.
  return conv_matmul_1x1(cols, kernel.reshape(1, 1, -1, cout))


def conv_upsampled2x(x, kernel, conv_fn):
  """3x3 'SAME' convolution of the 2x nearest-upsampled input, at low res.

  ``conv(upsample2(x), kernel)`` with zero padding 1, computed as four 2x2
  "phase" convolutions of ``x`` (16 taps per low-res pixel instead of 36):
  output pixel (2i+a, 2j+b) reads low-res rows {i-1+a, i+a} and columns
  {j-1+b, j+b}, with the 3x3 taps that fall on the same low-res pixel
  summed (row phase 0: (k0, k1+k2); phase 1: (k0+k1, k2); likewise columns).
  Exact up to float32 summation order; gradients follow by autodiff.

  Args:
    x: [B, h, w, I] low-resolution input.
    kernel: [3, 3, I, O].
    conv_fn: ``(x, kernel, stride, pad) -> y`` used for the 2x2 convolution.

  Returns:
    [B, 2h, 2w, O].
  """
  if kernel.shape[:2] != (3, 3):
    raise ValueError(f"conv_upsampled2x needs a 3x3 kernel, got "
                     f"{kernel.shape}")
  b, h, w, _ = x.shape
  out = kernel.shape[-1]
  # groups[a] = (taps of low row i-1+a, taps of low row i+a), per phase a.
  groups = (((0,), (1, 2)), ((0, 1), (2,)))

  def phase_kernel(a, c):
    rows = [sum(kernel[r] for r in g) for g in groups[a]]      # 2 x [3, I, O]
    return jnp.stack([jnp.stack([sum(row[q] for q in g) for g in groups[c]])
                      for row in rows])                        # [2, 2, I, O]

  k4 = jnp.concatenate([phase_kernel(a, c) for a in (0, 1) for c in (0, 1)],
                       axis=-1)                                # [2, 2, I, 4O]
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  y = conv_fn(xp, k4, 1, (0, 0))                               # [B, h+1, w+1, 4O]
  phases = [y[:, a:a + h, c:c + w, (2 * a + c) * out:(2 * a + c + 1) * out]
            for a in (0, 1) for c in (0, 1)]
  y = jnp.stack(phases, axis=3).reshape(b, h, w, 2, 2, out)    # [.., a, c, O]
  return y.transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, out)


def conv_cpu(x, kernel, stride: int, pad: Tuple[int, int]):
  """CPU-friendly convolution with the semantics of ``conv_xla``.

  x [B, H, W, I], kernel [kh, kw, I, O] -> [B, Ho, Wo, O]. 1x1 stride-1
  convolutions are matrix products; other kernels use the stock convolution.
  """
  kh, kw = kernel.shape[:2]
  if (kh, kw) == (1, 1) and stride == 1 and pad == (0, 0):
    return conv_matmul_1x1(x, kernel)
  return conv_xla(x, kernel, stride, pad)


class Conv(nn.Module):
  """2D convolution, NHWC, 'SAME'-style symmetric padding.

  Input [B, H, W, C_in] -> output [B, H/stride, W/stride, features].
  """
  features: int
  kernel_size: Tuple[int, int] = (3, 3)
  strides: int = 1
  padding: int = -1          # -1 = kernel_size // 2 on each side
  use_bias: bool = True
  impl: str = "auto"
  dtype: jnp.dtype = jnp.float32
  kernel_init: Callable = nn.initializers.lecun_normal()
  # The input is the low-res map whose 2x nearest upsampling is convolved
  # (3x3, padding 1, stride 1 only): output [B, 2H, 2W, features].
  upsample2x_input: bool = False

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    cin = x.shape[-1]
    kernel = self.param("kernel", self.kernel_init,
                        (kh, kw, cin, self.features), jnp.float32)
    pad = (kh // 2, kw // 2) if self.padding < 0 else (self.padding,) * 2
    x = x.astype(self.dtype)
    impl = resolve_conv_impl(self.impl)
    kernel = kernel.astype(self.dtype)
    if self.upsample2x_input:
      if self.strides != 1 or pad != (1, 1):
        raise ValueError("upsample2x_input needs stride 1 and padding 1")
      y = conv_upsampled2x(
          x, kernel, conv_xla if impl == "xla" else conv_im2col_matmul)
    elif impl == "xla":
      y = conv_xla(x, kernel, self.strides, pad)
    else:
      y = conv_cpu(x, kernel, self.strides, pad)
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (self.features,),
                        jnp.float32)
      y = y + bias.astype(self.dtype)
    return y
