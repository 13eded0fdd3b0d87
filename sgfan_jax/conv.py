"""Convolution module with a selectable implementation.

``Conv`` declares the same parameters as ``flax.linen.Conv`` (``kernel``
[kh, kw, in, out], ``bias`` [out]) so checkpoints do not depend on the
implementation.

* ``impl='xla'``: stock ``lax.conv_general_dilated``; best on GPU/TPU.
"""

from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


def resolve_conv_impl(impl: str) -> str:
  """Maps 'auto' to the implementation for the default backend."""
  if impl == "auto":
    return "xla"
  if impl not in ("xla",):
    raise ValueError(f"conv_impl must be 'auto' or 'xla', got {impl!r}")
  return impl


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

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    cin = x.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (kh, kw, cin, self.features), jnp.float32)
    pad = (kh // 2, kw // 2) if self.padding < 0 else (self.padding,) * 2
    x = x.astype(self.dtype)
    y = lax.conv_general_dilated(
        x, kernel.astype(self.dtype), (self.strides, self.strides),
        ((pad[0], pad[0]), (pad[1], pad[1])),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (self.features,),
                        jnp.float32)
      y = y + bias.astype(self.dtype)
    return y
