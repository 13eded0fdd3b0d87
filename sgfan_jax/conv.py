"""Convolution module with a selectable implementation.

``Conv`` declares the same parameters as ``flax.linen.Conv`` (``kernel``
[kh, kw, in, out], ``bias`` [out]) so checkpoints do not depend on the
implementation or the compute dtype. Parameters are always float32.

* ``impl='xla'``: stock ``lax.conv_general_dilated``; best on GPU/TPU.
* ``impl='cpu'``: the same function, written for XLA:CPU. Each convolution
  is one of four kinds (:func:`conv_kind`) and runs the kernel that
  ``CPU_KERNELS`` names for its kind and compute dtype:

  - ``'matmul'`` (1x1 stride-1 only): a matrix product ``[B*H*W, in] @
    [in, out]``; its gradients are matrix products too, the kernel gradient
    batched over the examples (``conv_matmul_1x1``). XLA lowers the weight
    gradient of a convolution to a convolution whose window is the whole
    feature map (output ``[in, kh, kw, out]``) after transposing both
    operands to ``[C, H, W, B]``, which XLA:CPU runs much slower than the
    equivalent product for 1x1 kernels on large maps;
  - ``'im2col'``: one product of the patches with the kernel
    (``conv_im2col_matmul``);
  - ``'shifted'``: a sum of kh*kw shifted 1x1 products, no patch matrix
    (``conv_shifted``);
  - ``'xla'``: the stock convolution.

  In float32 the table is the measured choice of BENCHMARKS.md: 1x1 convs
  are products, the 2x2 phase convolution of ``conv_upsampled2x`` (the 3x3
  conv after the 2x upsampling) is one im2col product, and the 3x3 convs and
  the 7x7 stem use the stock convolution (an im2col weight gradient, a sum
  of nine shifted products and a three-row variant were all no faster in the
  network in float32). Outputs equal the stock implementation bit-for-bit or
  to float32 rounding (different summation order); see tests/test_conv.py.

Compute dtype (``Conv.dtype``, ``config.model.dtype``): with ``bfloat16``
the operands of the products are rounded to bfloat16 and every product
accumulates in float32 (``preferred_element_type``), in the forward pass
and in the custom VJPs (the incoming float32 cotangent is rounded to
bfloat16 for the backward products); kernel gradients are accumulated and
returned in float32 (the parameter's dtype), never rounded to bfloat16.
XLA:CPU hands a bfloat16 product to its fast kernel only in the plain
``[M, K] @ [K, N]`` form and runs bfloat16 data movement (pad, slice,
concatenate) through float32 copies, so the 16-bit kernels move their
operands as uint16 bits and give the weight gradients a transposed copy of
the activation (``_transposed_weight_grad``).

What the result is kept in (``Conv.out_dtype``, default
:func:`activation_dtype`): with ``impl='cpu'`` the float32 accumulator,
bias added in float32, so on CPU the activations (BatchNorm inputs and
outputs, residual sums) stay float32 and bfloat16 exists only as the
operand of the matrix-product kernels (XLA fuses the rounding into the
BatchNorm-ReLU pass that produces the operand). A stock convolution
('xla' in the table) then keeps float32 operands: XLA:CPU computes it in
float32 whatever its operand type, so rounding would cost accuracy and
save nothing. With ``impl='xla'`` (GPU/TPU) the stock convolution takes
and returns the compute dtype (those convolutions accumulate in float32
internally), i.e. the usual bfloat16 activations. The two 1x1 heads always
return float32 (``out_dtype``): their maps feed the loss and the sub-pixel
decoding. In float32 none of this adds an operation: the float32
computation is bit-for-bit that of the float32-only code
(tests/test_bf16.py).

On CPU, stock XLA convolutions are no faster in bfloat16 than in float32,
while a bfloat16 matrix product with float32 accumulation runs at about
twice the float32 rate (AVX512-BF16). So in bfloat16 the table moves to
products only where the whole train step measured faster: the 1x1 convs,
the 3x3 convs with at least 128 input channels (nine shifted products; the
paper's width-256 hourglass) and the phase conv (shifted products); the
narrower 3x3 convs (width 64) and the 3-channel stem stay stock float32
convolutions. Timings behind the choices:
BENCHMARKS.md, benchmarks/conv_bf16.py (kernels alone, the network's
shapes) and benchmarks/train_step.py ``--dtypes`` / ``--cpu_kernels`` (in
the network).
"""

from typing import Any, Callable, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

IMPLS = ("xla", "cpu")
# Kinds of convolution (conv_kind) and the kernels that compute them.
KINDS = ("1x1", "kxk", "strided", "upsample2x")
KERNELS = ("xla", "matmul", "im2col", "shifted")

# impl='cpu': kernel per compute dtype and kind.
#   1x1:        1x1, stride 1, no padding (the bottleneck and head convs);
#   kxk:        any other stride-1 kernel (the 3x3 convs);
#   strided:    stride > 1 (the 7x7 stride-2 stem);
#   upsample2x: the 2x2 phase convolution of conv_upsampled2x (the 3x3 conv
#               of the block after the 2x upsampling, fuse_upsample).
# An entry is a kernel name, or (kernel, min_in_channels, kernel_below):
# ``kernel`` for convolutions with at least ``min_in_channels`` input
# channels, ``kernel_below`` for the others (cpu_kernel).
# float32: measured (BENCHMARKS.md); unchanged by the bfloat16 work.
# bfloat16: measured in the whole train step (benchmarks/train_step.py
#   --dtypes bfloat16 --cpu_kernels ..., BENCHMARKS.md "bfloat16"; kernels
#   alone: benchmarks/results/conv_bf16.md). 1x1: the bfloat16 product.
#   3x3: nine shifted bfloat16 products from 128 input channels (the
#   width-256 hourglass: step 1.94-1.97 s vs 2.15-2.16 s with the stock
#   convolution), the stock float32 convolution below (width 64: 0.70-0.73
#   s with shifted products vs 0.65; the patch copies and float32 partial
#   sums cost more than the faster product saves at 16-64 channels; im2col
#   was in between at both widths). Stem: stock (3 input channels; im2col
#   and shifted were 1.5-4x slower alone). Phase conv: shifted products
#   (fastest alone at both widths, fwd+bwd 75 vs 97 ms for im2col; equal in
#   the width-64 step).
# Dtypes without a row (float16, float64) use the float32 row.
CPU_KERNELS = {
    "float32": {"1x1": "matmul", "kxk": "xla", "strided": "xla",
                "upsample2x": "im2col"},
    "bfloat16": {"1x1": "matmul", "kxk": ("shifted", 128, "xla"),
                 "strided": "xla", "upsample2x": "shifted"},
}


def resolve_conv_impl(impl: str) -> str:
  """Maps 'auto' to 'cpu' on the CPU backend and to 'xla' elsewhere."""
  if impl == "auto":
    return "cpu" if jax.default_backend() == "cpu" else "xla"
  if impl not in IMPLS:
    raise ValueError(f"conv_impl must be 'auto' or one of {IMPLS}, "
                     f"got {impl!r}")
  return impl


def accum_dtype(dtype) -> Optional[Any]:
  """``preferred_element_type`` of products of ``dtype`` inputs.

  float32 for 16-bit floats; None (the input dtype, i.e. no change to the
  computation) otherwise.
  """
  if jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
    return jnp.float32
  return None


def _padding(pad):
  return ((pad[0], pad[0]), (pad[1], pad[1]))


def conv_xla(x, kernel, stride: int, pad: Tuple[int, int],
             preferred_element_type=None):
  """Stock convolution: x [B, H, W, I], kernel [kh, kw, I, O] -> [B, Ho, Wo, O].

  ``pad`` = (rows, cols) of zeros added on each side; ``stride`` in both axes.
  The kernel is cast to ``x.dtype`` (a no-op when they agree); the result
  has ``preferred_element_type`` (default: ``x.dtype``).
  """
  return lax.conv_general_dilated(
      x, kernel.astype(x.dtype), (stride, stride), _padding(pad),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      preferred_element_type=preferred_element_type)


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


# 16-bit floats are moved (padded, sliced, transposed, concatenated) as
# their uint16 bits: XLA:CPU (jax 0.10.2) runs those data-movement ops on
# bfloat16 through float32 copies, unfused (a bfloat16 patch matrix built
# with jnp.concatenate takes several times as long as copying it), while
# integer copies fuse. Zero bits are +0.0, so zero padding is exact.


def _to_bits(x):
  return lax.bitcast_convert_type(x, jnp.uint16)


def _from_bits(u, dtype):
  return lax.bitcast_convert_type(u, dtype)


def _concat_bits(parts, axis: int):
  """Concatenation of uint16 arrays along ``axis`` as one fused pass.

  Each part is zero-padded to its place along ``axis`` and the disjoint
  pieces are OR-ed (XLA fuses this into a single loop; jnp.concatenate is
  a separate, slower copy on XLA:CPU). Bit-for-bit the concatenation.
  """
  axis = axis % parts[0].ndim
  total = sum(p.shape[axis] for p in parts)
  out, start = None, 0
  for p in parts:
    cfg = [(0, 0)] * p.ndim
    cfg[axis] = (start, total - start - p.shape[axis])
    piece = jnp.pad(p, cfg)
    out = piece if out is None else out | piece
    start += p.shape[axis]
  return out


def _window_concat(u, kh, kw, ho, wo, stride, spatial, axis):
  """The kh*kw tap windows of padded bits ``u``, concatenated along ``axis``.

  ``spatial``: the (row, column) axes of ``u``. Tap order (kh, kw), then
  the existing entries of ``axis``. Large kernels (the 7x7 stem) are
  concatenated in two levels, columns then rows, so that the fused loop
  picks among kw + kh pieces per element instead of kh*kw.
  """
  def window(v, i, j, rows, row_stride, cols, col_stride):
    start, limit, strides = [0] * v.ndim, list(v.shape), [1] * v.ndim
    start[spatial[0]], start[spatial[1]] = i, j
    limit[spatial[0]] = i + (rows - 1) * row_stride + 1
    limit[spatial[1]] = j + (cols - 1) * col_stride + 1
    strides[spatial[0]], strides[spatial[1]] = row_stride, col_stride
    return lax.slice(v, start, limit, strides)

  if kh * kw <= 9:
    return _concat_bits([window(u, i, j, ho, stride, wo, stride)
                         for i in range(kh) for j in range(kw)], axis)
  rows = u.shape[spatial[0]]
  by_cols = _concat_bits([window(u, 0, j, rows, 1, wo, stride)
                          for j in range(kw)], axis)
  return _concat_bits([window(by_cols, i, 0, ho, stride, wo, 1)
                       for i in range(kh)], axis)


def _patches(x, kh: int, kw: int, stride: int, pad: Tuple[int, int]):
  """``im2col`` (same layout and values) of 16-bit x, moved as bits."""
  _, h, w, _ = x.shape
  ho = _out_size(h, kh, stride, pad[0])
  wo = _out_size(w, kw, stride, pad[1])
  up = jnp.pad(_to_bits(x), ((0, 0), (pad[0], pad[0]), (pad[1], pad[1]),
                             (0, 0)))
  return _from_bits(_window_concat(up, kh, kw, ho, wo, stride, (1, 2), 3),
                    x.dtype)


def _untap(d, i, j, h, w, stride, pad):
  """Transpose of ``_tap`` on the unpadded input: [B, Ho, Wo, I] -> [B, H, W, I].

  Output pixel (oh, ow) of tap (i, j) read input pixel (i - pad + s*oh,
  j - pad + s*ow); one ``lax.pad`` with interior (stride) and possibly
  negative (cropping) edges puts it there, zeros elsewhere.
  """
  _, ho, wo, _ = d.shape
  span_h = (ho - 1) * stride + 1
  span_w = (wo - 1) * stride + 1
  lo_h, lo_w = i - pad[0], j - pad[1]
  zero = jnp.zeros((), d.dtype)
  return lax.pad(d, zero, ((0, 0, 0),
                           (lo_h, h - lo_h - span_h, stride - 1),
                           (lo_w, w - lo_w - span_w, stride - 1),
                           (0, 0, 0)))


def _batched_weight_grad(x, dy):
  """``sum_b x_b^T dy_b`` in float32: x [B, ..., I], dy [B, ..., O] -> [I, O].

  float32: a dot_general with batch axis B, then a sum over B: autodiff's
  ``[B*H*W, I]^T @ [B*H*W, O]`` makes XLA:CPU copy the whole activation into
  a transposed layout first; the batched form does not.

  16-bit inputs: ``_transposed_weight_grad`` (XLA:CPU runs a bfloat16 product
  with float32 accumulation in its fast library kernel only in the plain
  ``[M, K] @ [K, N]`` form; the batched or transposed-operand forms are
  converted to float32 products, losing the gain).
  """
  if accum_dtype(x.dtype) is not None:
    return _transposed_weight_grad(_channels_first(x), dy)
  b = x.shape[0]
  return lax.dot_general(x.reshape(b, -1, x.shape[-1]),
                         dy.reshape(b, -1, dy.shape[-1]),
                         (((1,), (1,)), ((0,), (0,))),
                         preferred_element_type=jnp.float32).sum(0)


def _channels_first(x):
  """[B, H, W, C] -> [C, B, H, W] (a transposed copy; 16-bit as bits)."""
  perm = (x.ndim - 1,) + tuple(range(x.ndim - 1))
  if accum_dtype(x.dtype) is None:
    return jnp.transpose(x, perm)
  return _from_bits(jnp.transpose(_to_bits(x), perm), x.dtype)


def _transposed_weight_grad(xt, dy):
  """``xt [I, B, H, W]`` contracted with ``dy [B, H, W, O]`` -> [I, O] float32.

  The activation is transposed (channels first) so that the product is
  ``[I, B*H*W] @ [B*H*W, O]``, the form XLA:CPU hands to its bfloat16
  kernel. (Transposing ``dy`` and the [O, I] result instead crashes XLA:CPU
  of jax 0.10.2 at run time, "Unsupported element type for DotThunk: BF16 x
  BF16 = F32"; tests/test_bf16.py runs every gradient path.)
  """
  n = dy.ndim - 1
  return lax.dot_general(xt, dy, ((tuple(range(1, n + 1)), tuple(range(n))),
                                  ((), ())),
                         preferred_element_type=jnp.float32)


@jax.custom_vjp
def conv_matmul_1x1(x, kernel):
  """1x1 stride-1 convolution as a matrix product.

  x [B, H, W, I], kernel [1, 1, I, O] -> [B, H, W, O]. The kernel is cast to
  ``x.dtype``; with 16-bit ``x`` the product accumulates and returns float32
  (``accum_dtype``), otherwise it is in ``x.dtype``.

  Gradients (custom VJP): the input gradient is ``dy @ kernel^T`` (cast to
  ``x.dtype``); the kernel gradient ``sum_b x_b^T dy_b`` (``x_b`` [H*W, I],
  ``dy_b`` [H*W, O]) is accumulated in float32 and returned in the kernel's
  dtype: in float32 a product batched over the examples (the gain in the
  train step: BENCHMARKS.md), in 16 bits one product with a transposed copy
  of x (``_batched_weight_grad``).
  """
  return _matmul_1x1(x, kernel)


def _matmul_1x1(x, kernel):
  return lax.dot_general(x, kernel[0, 0].astype(x.dtype),
                         (((x.ndim - 1,), (0,)), ((), ())),
                         preferred_element_type=accum_dtype(x.dtype))


def _matmul_1x1_fwd(x, kernel):
  return _matmul_1x1(x, kernel), (x, kernel)


def _matmul_1x1_bwd(res, dy):
  x, kernel = res
  k = kernel[0, 0].astype(x.dtype)
  dy = dy.astype(x.dtype)
  dx = lax.dot_general(dy, k, (((dy.ndim - 1,), (1,)), ((), ())),
                       preferred_element_type=accum_dtype(x.dtype))
  dk = _batched_weight_grad(x, dy)
  return dx.astype(x.dtype), dk.reshape(kernel.shape).astype(kernel.dtype)


conv_matmul_1x1.defvjp(_matmul_1x1_fwd, _matmul_1x1_bwd)


def conv_im2col_matmul(x, kernel, stride: int, pad: Tuple[int, int]):
  """Convolution as one matrix product of im2col patches with the kernel.

  x [B, H, W, I], kernel [kh, kw, I, O] -> [B, Ho, Wo, O]: the patches
  ``[B, Ho, Wo, kh*kw*I]`` (``im2col``) times ``kernel.reshape(-1, O)``; the
  patch matrix is kh*kw times the input.

  * float32 ``x`` (the 2x2 phase convolution of ``conv_upsampled2x`` on CPU,
    whose stock weight gradient XLA:CPU runs much slower than this product,
    BENCHMARKS.md): gradients are ``conv_matmul_1x1``'s, the input gradient
    then ends in autodiff's sum of shifted slices.
  * 16-bit ``x``: ``_conv_im2col_lowp``, a custom VJP that accumulates every
    product in float32; the input gradient is (stride 1) the patches
    product of dy with the flipped, transposed kernel, otherwise the kh*kw
    shifted slices of ``dy @ kernel^T`` summed in float32, rounded once to
    ``x.dtype``; the kernel gradient is one product with channel-first
    patches rebuilt in the backward pass (the kh*kw-times-larger matrix is
    not kept alive between the passes). Patches are built as bits
    (``_patches``), bit-for-bit ``im2col``.
  """
  if accum_dtype(x.dtype) is not None:
    return _conv_im2col_lowp(x, kernel, stride, pad)
  kh, kw, _, cout = kernel.shape
  cols = im2col(x, kh, kw, stride, pad)
  # A 1x1 convolution of the patches: same product, batched kernel gradient.
  return conv_matmul_1x1(cols, kernel.reshape(1, 1, -1, cout))


def _im2col_product(x, kernel, stride, pad):
  kh, kw, _, cout = kernel.shape
  cols = _patches(x, kh, kw, stride, pad)
  k = kernel.reshape(-1, cout).astype(x.dtype)
  return lax.dot_general(cols, k, (((3,), (0,)), ((), ())),
                         preferred_element_type=jnp.float32)


def _conv_im2col_lowp_fwd(x, kernel, stride, pad):
  return _im2col_product(x, kernel, stride, pad), (x, kernel)


def _conv_im2col_lowp_bwd(stride, pad, res, dy):
  x, kernel = res
  kh, kw, cin, cout = kernel.shape
  _, h, w, _ = x.shape
  dy = dy.astype(x.dtype)
  if stride == 1 and pad[0] <= kh - 1 and pad[1] <= kw - 1:
    # The input gradient of a stride-1 convolution is the convolution of dy
    # with the flipped, transposed kernel: one more patches product, with
    # no float32 patch-sized intermediate.
    flipped = jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2))
    dx = _im2col_product(dy, flipped, 1, (kh - 1 - pad[0], kw - 1 - pad[1]))
  else:
    k = kernel.reshape(-1, cout).astype(x.dtype)
    dcols = lax.dot_general(dy, k, (((3,), (1,)), ((), ())),
                            preferred_element_type=jnp.float32)
    dx = sum(_untap(dcols[..., t * cin:(t + 1) * cin], t // kw, t % kw, h,
                    w, stride, pad) for t in range(kh * kw))
  dk = _transposed_weight_grad(_im2col_channels_first(x, kh, kw, stride, pad),
                               dy)
  return dx.astype(x.dtype), dk.reshape(kernel.shape).astype(kernel.dtype)


def _im2col_channels_first(x, kh, kw, stride, pad):
  """``im2col`` of 16-bit x with the patch axis first: [kh*kw*I, B, Ho, Wo].

  Cut from the transposed input (one transposed copy of x, not of the
  kh*kw-times-larger patch matrix), moved as bits; rows ordered (kh, kw, I)
  like ``kernel.reshape(-1, O)``.
  """
  _, h, w, _ = x.shape
  ho = _out_size(h, kh, stride, pad[0])
  wo = _out_size(w, kw, stride, pad[1])
  ut = jnp.pad(jnp.transpose(_to_bits(x), (3, 0, 1, 2)),
               ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
  return _from_bits(_window_concat(ut, kh, kw, ho, wo, stride, (2, 3), 0),
                    x.dtype)


_conv_im2col_lowp = jax.custom_vjp(_im2col_product, nondiff_argnums=(2, 3))
_conv_im2col_lowp.defvjp(_conv_im2col_lowp_fwd, _conv_im2col_lowp_bwd)


def _taps(x, kh, kw, stride, pad, channels_first: bool = False):
  """The kh*kw windows of zero-padded x that the taps read, in tap order.

  Each [B, Ho, Wo, I], or [I, B, Ho, Wo] with ``channels_first`` (cut from
  one transposed copy of x). 16-bit x is moved as bits.
  """
  b, h, w, c = x.shape
  ho = _out_size(h, kh, stride, pad[0])
  wo = _out_size(w, kw, stride, pad[1])
  bits = accum_dtype(x.dtype) is not None
  u = _to_bits(x) if bits else x
  if channels_first:
    u = jnp.transpose(u, (3, 0, 1, 2))
  sp = (2, 3) if channels_first else (1, 2)
  cfg = [(0, 0)] * 4
  cfg[sp[0]], cfg[sp[1]] = (pad[0], pad[0]), (pad[1], pad[1])
  u = jnp.pad(u, cfg)
  taps = []
  for i in range(kh):
    for j in range(kw):
      start, limit, strides = [0] * 4, list(u.shape), [1] * 4
      start[sp[0]], start[sp[1]] = i, j
      limit[sp[0]] = i + (ho - 1) * stride + 1
      limit[sp[1]] = j + (wo - 1) * stride + 1
      strides[sp[0]] = strides[sp[1]] = stride
      t = lax.slice(u, start, limit, strides)
      taps.append(_from_bits(t, x.dtype) if bits else t)
  return taps


def _shifted_product(x, kernel, stride, pad):
  kh, kw, _, _ = kernel.shape
  k = kernel.astype(x.dtype)
  acc = accum_dtype(x.dtype)
  taps = _taps(x, kh, kw, stride, pad)
  return sum(lax.dot_general(taps[t], k[t // kw, t % kw],
                             (((3,), (0,)), ((), ())),
                             preferred_element_type=acc)
             for t in range(kh * kw))


def _shifted_fwd(x, kernel, stride, pad):
  return _shifted_product(x, kernel, stride, pad), (x, kernel)


def _shifted_bwd(stride, pad, res, dy):
  x, kernel = res
  kh, kw, _, _ = kernel.shape
  _, h, w, _ = x.shape
  dy = dy.astype(x.dtype)
  k = kernel.astype(x.dtype)
  acc = accum_dtype(x.dtype)
  dx = sum(_untap(lax.dot_general(dy, k[i, j], (((3,), (1,)), ((), ())),
                                  preferred_element_type=acc),
                  i, j, h, w, stride, pad)
           for i in range(kh) for j in range(kw))
  if acc is None:
    taps = _taps(x, kh, kw, stride, pad)
    dk = [_batched_weight_grad(t, dy) for t in taps]
  else:
    # Each tap's window of one transposed copy of the input.
    taps = _taps(x, kh, kw, stride, pad, channels_first=True)
    dk = [_transposed_weight_grad(t, dy) for t in taps]
  dk = jnp.stack(dk).reshape(kernel.shape)
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


_conv_shifted = jax.custom_vjp(_shifted_product, nondiff_argnums=(2, 3))
_conv_shifted.defvjp(_shifted_fwd, _shifted_bwd)


def conv_shifted(x, kernel, stride: int, pad: Tuple[int, int]):
  """Convolution as a sum of kh*kw shifted 1x1 products (no patch matrix).

  x [B, H, W, I], kernel [kh, kw, I, O] -> [B, Ho, Wo, O] =
  ``sum_ij tap_ij(pad(x)) @ kernel[i, j]``, ``tap_ij`` the (strided) window
  that tap (i, j) reads. The kernel is cast to ``x.dtype``; with 16-bit
  ``x`` every product accumulates in float32 and the sum and the result are
  float32 (``accum_dtype``).

  Gradients (custom VJP): the input gradient is the sum of the kh*kw
  products ``dy @ kernel[i, j]^T`` put back at their taps' offsets
  (``_untap``), summed in the accumulator dtype and rounded once to
  ``x.dtype``; the kernel gradient of each tap is one product in float32
  (float32: batched over the examples; 16 bits: with that tap's window of
  one transposed copy of the input).
  """
  return _conv_shifted(x, kernel, stride, pad)


def conv_upsampled2x(x, kernel, conv_fn):
  """3x3 'SAME' convolution of the 2x nearest-upsampled input, at low res.

  ``conv(upsample2(x), kernel)`` with zero padding 1, computed as four 2x2
  "phase" convolutions of ``x`` (16 taps per low-res pixel instead of 36):
  output pixel (2i+a, 2j+b) reads low-res rows {i-1+a, i+a} and columns
  {j-1+b, j+b}, with the 3x3 taps that fall on the same low-res pixel
  summed (row phase 0: (k0, k1+k2); phase 1: (k0+k1, k2); likewise columns).
  Exact up to float32 summation order; gradients follow by autodiff. The
  tap sums are in the kernel's dtype (float32 parameters), before
  ``conv_fn`` casts the phase kernel to ``x.dtype``.

  Args:
    x: [B, h, w, I] low-resolution input.
    kernel: [3, 3, I, O].
    conv_fn: ``(x, kernel, stride, pad) -> y`` used for the 2x2 convolution.

  Returns:
    [B, 2h, 2w, O], in ``conv_fn``'s result dtype.
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


def conv_kind(kernel_size, stride: int, pad: Tuple[int, int],
              upsample2x: bool = False) -> str:
  """The ``CPU_KERNELS`` kind of a convolution (see KINDS)."""
  if upsample2x:
    return "upsample2x"
  if stride != 1:
    return "strided"
  if tuple(kernel_size) == (1, 1) and tuple(pad) == (0, 0):
    return "1x1"
  return "kxk"


def cpu_kernel(kind: str, dtype, in_channels: Optional[int] = None) -> str:
  """The kernel ``CPU_KERNELS`` names for ``kind`` in compute ``dtype``.

  For a channel-dependent entry ``(kernel, min_in_channels, kernel_below)``
  ``in_channels`` picks one (None: ``kernel``).
  """
  row = CPU_KERNELS.get(jnp.dtype(dtype).name, CPU_KERNELS["float32"])
  entry = row[kind]
  if isinstance(entry, str):
    return entry
  name, min_in, below = entry
  if in_channels is not None and in_channels < min_in:
    return below
  return name


def kernel_fn(name: str) -> Callable:
  """``(x, kernel, stride, pad) -> y`` of a kernel name (see KERNELS).

  'xla' here is the stock convolution with the cpu kernels' result dtype
  (the float32 accumulator for 16-bit inputs).
  """
  if name == "xla":
    return lambda x, k, s, p: conv_xla(x, k, s, p, accum_dtype(x.dtype))
  if name == "matmul":
    def matmul(x, k, s, p):
      if k.shape[:2] != (1, 1) or s != 1 or tuple(p) != (0, 0):
        raise ValueError("the 'matmul' kernel is for 1x1 stride-1 unpadded "
                         f"convolutions, got {k.shape[:2]}, stride {s}, "
                         f"pad {p}")
      return conv_matmul_1x1(x, k)
    return matmul
  if name == "im2col":
    return conv_im2col_matmul
  if name == "shifted":
    return conv_shifted
  raise ValueError(f"conv kernel must be one of {KERNELS}, got {name!r}")


def conv_cpu(x, kernel, stride: int, pad: Tuple[int, int]):
  """CPU-friendly convolution with the semantics of ``conv_xla``.

  x [B, H, W, I], kernel [kh, kw, I, O] -> [B, Ho, Wo, O], by the kernel
  ``CPU_KERNELS`` names for the convolution's kind and ``x.dtype`` (float32:
  1x1 stride-1 convolutions are matrix products, other kernels the stock
  convolution). The result is the accumulator dtype (float32 for 16-bit
  ``x``). (``Conv`` with impl='cpu' also gives a stock kernel float32
  operands in 16-bit compute; this function takes ``x`` as it comes.)
  """
  kind = conv_kind(kernel.shape[:2], stride, pad)
  return kernel_fn(cpu_kernel(kind, x.dtype, x.shape[-1]))(x, kernel, stride,
                                                           pad)


def activation_dtype(impl: str, dtype):
  """dtype of the activations (conv outputs, BatchNorm outputs).

  The compute ``dtype``, except float32 for 16-bit compute with
  ``impl='cpu'``. On CPU the gain of bfloat16 is the matrix-product kernel
  (bfloat16 operands, float32 accumulation), and the products round their
  operands themselves (XLA fuses the rounding into the producing
  BatchNorm-ReLU pass, so the product's operand is still written in
  bfloat16); keeping the activations float32 everywhere else (residual
  sums, BatchNorm inputs, the stock convolutions, which XLA:CPU computes in
  float32 anyway) made the shipped model's bfloat16 landmarks about 3x
  closer to float32 (mean and max shift over real faces) than bfloat16
  activations did. GPUs/TPUs ('xla') keep the usual bfloat16 activations.
  """
  resolve_conv_impl(impl)
  if impl == "cpu" and accum_dtype(dtype) is not None:
    return jnp.dtype(jnp.float32)
  return jnp.dtype(dtype)


class Conv(nn.Module):
  """2D convolution, NHWC, 'SAME'-style symmetric padding.

  Input [B, H, W, C_in] -> output [B, H/stride, W/stride, features], in
  ``out_dtype`` (default: ``activation_dtype(impl, dtype)``). Parameters
  are float32; the products take ``dtype`` operands (see the module
  docstring for bfloat16).
  """
  features: int
  kernel_size: Tuple[int, int] = (3, 3)
  strides: int = 1
  padding: int = -1          # -1 = kernel_size // 2 on each side
  use_bias: bool = True
  impl: str = "auto"
  dtype: Any = jnp.float32
  # dtype of the result; None = activation_dtype(impl, dtype).
  out_dtype: Optional[Any] = None
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
    impl = resolve_conv_impl(self.impl)
    if self.upsample2x_input and (self.strides != 1 or pad != (1, 1)):
      raise ValueError("upsample2x_input needs stride 1 and padding 1")
    # The float32 kernel goes in: each conv function casts it to x.dtype
    # (no-op in float32), so the custom VJPs return float32 kernel
    # gradients, and conv_upsampled2x sums its taps in float32.
    if impl == "xla":
      x = x.astype(self.dtype)
      fn = conv_xla
    else:
      name = cpu_kernel(conv_kind((kh, kw), self.strides, pad,
                                  self.upsample2x_input), self.dtype, cin)
      # XLA:CPU computes a stock convolution in float32 whatever its
      # operand type, so in 16-bit compute it keeps float32 operands here
      # (no rounding, same speed): exactly the float32 convolution.
      if name == "xla" and accum_dtype(self.dtype) is not None:
        x = x.astype(jnp.float32)
      else:
        x = x.astype(self.dtype)
      fn = kernel_fn(name)
    if self.upsample2x_input:
      y = conv_upsampled2x(x, kernel, fn)
    else:
      y = fn(x, kernel, self.strides, pad)
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (self.features,),
                        jnp.float32)
      y = y + bias.astype(y.dtype)
    out_dtype = (activation_dtype(impl, self.dtype) if self.out_dtype is None
                 else self.out_dtype)
    return y.astype(out_dtype)
