"""The SGFAN network (paper Sec. 3.1, Fig. 2), flax.linen.

Input ``[B, 128, 128, 3]`` float32 -> heatmaps ``[B, M, M, N]`` and score
maps ``[B, M, M, N]``, M = 128 / ``output_stride`` (the paper: stride 1).

* stem: 7x7 stride-2 conv (3 -> 64, padding 3, no norm before it) to 64x64,
  then three residual blocks 64 -> width/2 -> width/2 -> width;
* two identical branches (heatmap, score), each: hourglass (``depth`` levels,
  one residual block per level), two residual blocks ending at
  ``branch_channels`` (128), nearest-neighbour 2x upsampling to 128x128, one
  residual block, a 1x1 conv to N maps.

Residual blocks are pre-activation bottlenecks (Newell et al. 2016):
BN-ReLU-1x1 conv (C/2), BN-ReLU-3x3 conv (C/2), BN-ReLU-1x1 conv (C), with a
1x1 projection on the skip path when the channel count changes. "Batch
Normalization is used before all convolutional layers except the first."

The defaults of :class:`SGFAN`'s settings are read from ``configs/default.py``
(``config.model``), the one place where config defaults live; training builds
the network from the run's config with :func:`create_model`.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from configs import default as default_config
from sgfan_jax import conv as conv_lib

# config.model of configs/default.py: the defaults of SGFAN's settings.
_DEFAULTS = default_config.get_config().model

DTYPES = ("auto", "float32", "bfloat16")
OUTPUT_STRIDES = (1, 2)
# model.dtype='auto': the training compute dtype per backend, where it was
# measured (BENCHMARKS.md, "bfloat16"): on CPU bfloat16 trains SGFAN
# 1.16x (width 64) / 1.20x (width 256) faster than float32, validation NME
# within run-to-run noise at the end of the schedule, and a paired 16-epoch
# run from scratch (same seed and data order) within -2.5..+1.4 points of
# float32 with no lag (docs/RECIPE_SEARCH.md, "bfloat16"). Backends
# without an entry (GPU/TPU: not measured) compute in float32.
AUTO_DTYPE = {"cpu": "bfloat16"}


def resolve_dtype(dtype, backend=None, auto=None, what: str = "model.dtype"):
  """The compute dtype of ``dtype`` ('auto', a name or a numpy dtype).

  'auto' is the entry of ``backend`` (None = ``jax.default_backend()``) in
  ``auto`` (None = ``AUTO_DTYPE``, the training table), float32 where it
  has none. A name outside DTYPES raises ValueError naming ``what``.
  """
  if isinstance(dtype, str):
    if dtype == "auto":
      table = AUTO_DTYPE if auto is None else auto
      dtype = table.get(backend or jax.default_backend(), "float32")
    elif dtype not in DTYPES:
      raise ValueError(f"{what} must be one of {DTYPES}, got {dtype!r}")
  return jnp.dtype(dtype)


class ResidualBlock(nn.Module):
  """Pre-activation bottleneck: [B, H, W, C_in] -> [B, H, W, features].

  With ``upsample_input`` the block computes ``block(upsample2(x))`` for a
  low-res x [B, H, W, features] -> [B, 2H, 2W, features], the same function
  with the same parameters, cheaper: BatchNorm (its batch statistics too,
  every value being repeated 4 times), ReLU and the first 1x1 conv commute
  with nearest upsampling, and the 3x3 conv of an upsampled map is four 2x2
  phase convs at low resolution (conv.conv_upsampled2x).
  """
  features: int
  conv: Any
  dtype: Any = jnp.float32       # of the activations (BatchNorm outputs)
  upsample_input: bool = False

  @nn.compact
  def __call__(self, x, train: bool):
    bn = functools.partial(nn.BatchNorm, use_running_average=not train,
                           momentum=0.9, epsilon=1e-5, dtype=self.dtype)
    mid = self.features // 2
    if self.upsample_input and x.shape[-1] != self.features:
      raise ValueError("upsample_input needs C_in == features")
    y = nn.relu(bn()(x))
    skip = x
    if x.shape[-1] != self.features:
      # The projection sees the same normalised input (pre-activation style).
      skip = self.conv(self.features, (1, 1), name="skip")(y)
    y = self.conv(mid, (1, 1))(y)
    y = self.conv(mid, (3, 3), upsample2x_input=self.upsample_input)(
        nn.relu(bn()(y)))
    if self.upsample_input:
      skip = _upsample2(skip)
    y = self.conv(self.features, (1, 1))(nn.relu(bn()(y)))
    return skip + y


def _max_pool2(x):
  return nn.max_pool(x, (2, 2), strides=(2, 2))


def _upsample2(x):
  """Nearest-neighbour 2x: [B, H, W, C] -> [B, 2H, 2W, C]."""
  b, h, w, c = x.shape
  x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
  return x.reshape(b, 2 * h, 2 * w, c)


class Hourglass(nn.Module):
  """Recursive hourglass of ``depth`` levels at constant width.

  [B, H, W, C] -> [B, H, W, C]; H and W must be divisible by 2**depth.
  """
  depth: int
  features: int
  conv: Any
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    res = functools.partial(ResidualBlock, self.features, self.conv,
                            dtype=self.dtype)
    up = res(name="up")(x, train)
    low = res(name="down")(_max_pool2(x), train)
    if self.depth > 1:
      low = Hourglass(self.depth - 1, self.features, self.conv, self.dtype,
                      name="inner")(low, train)
    else:
      low = res(name="bottom")(low, train)
    low = res(name="up_low")(low, train)
    return up + _upsample2(low)


class Branch(nn.Module):
  """One output branch: [B, 64, 64, width] -> [B, M, M, N].

  M = 128 with ``output_stride`` 1 (the paper), 64 with 2.
  """
  num_maps: int
  width: int
  hourglass_depth: int
  branch_channels: int
  conv: Any
  dtype: Any                     # of the activations (BatchNorm outputs)
  head_init_scale: float
  fuse_upsample: bool
  output_stride: int = 1

  @nn.compact
  def __call__(self, x, train: bool):
    x = Hourglass(self.hourglass_depth, self.width, self.conv, self.dtype)(
        x, train)
    x = ResidualBlock(self.width, self.conv, self.dtype)(x, train)
    x = ResidualBlock(self.branch_channels, self.conv, self.dtype)(x, train)
    if self.output_stride == 2:
      x = ResidualBlock(self.branch_channels, self.conv, self.dtype)(x, train)
    elif self.fuse_upsample:
      # Same function and parameters as upsample-then-block, computed at a
      # quarter of the pixels (see ResidualBlock).
      x = ResidualBlock(self.branch_channels, self.conv, self.dtype,
                        upsample_input=True)(x, train)
    else:
      x = _upsample2(x)
      x = ResidualBlock(self.branch_channels, self.conv, self.dtype)(x, train)
    # Final 1x1 conv sees BN-ReLU features, like every other conv.
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, dtype=self.dtype)(x))
    init = nn.initializers.variance_scaling(self.head_init_scale ** 2,
                                            "fan_in", "truncated_normal")
    # The maps are float32 in any compute dtype (they feed the loss and the
    # sub-pixel decoding).
    return self.conv(self.num_maps, (1, 1), name="head", kernel_init=init,
                     out_dtype=jnp.float32)(x)


class SGFAN(nn.Module):
  """Score-Guided Face Alignment Network.

  Attributes (defaults: ``config.model`` of configs/default.py; N: 68):
    num_landmarks: N, maps per branch (68, 29, 98).
    width: feature width of the stem output and hourglass (paper: 256).
    hourglass_depth: levels of each hourglass (paper: 4).
    branch_channels: channels before the 1x1 heads (paper: 128).
    conv_impl: 'xla', 'cpu' or 'auto' (see conv.py); parameters identical.
    dtype: compute dtype: float32, or bfloat16 = the matrix products (and,
      with conv_impl 'xla', the convolutions) take bfloat16 operands and
      accumulate in float32. Parameters, BatchNorm statistics (flax computes
      the batch mean/variance and normalises in float32) and the two output
      maps stay float32, so the Eq. 3 loss is float32. Activations: float32
      with conv_impl 'cpu' (the products round their operands themselves),
      bfloat16 with 'xla'; see conv.activation_dtype for why. 'auto' (the
      default): the measured choice of the backend (``AUTO_DTYPE``:
      bfloat16 on CPU, float32 elsewhere), resolved when the module runs.
    head_init_scale: std of the 1x1 heads' initial weights relative to
      LeCun-normal (1.0 = the PyTorch default init of the paper). A small
      value starts the maps near zero, so the Eq. 3 loss starts at the
      targets' energy (~1e3 per face) instead of ~1e6 (unit-variance noise
      over 2 x 128 x 128 x N pixels) and training goes straight to the
      landmarks.
    fuse_upsample: compute the residual block after the 2x upsampling at
      low resolution (same function and parameters; see ResidualBlock).
    output_stride: input pixels per output-map pixel: 1 (the paper, maps
      at the input's side) or 2 (no upsampling in the branches: maps at
      half the side, a quarter of the pixels).
  """
  num_landmarks: int = 68
  width: int = _DEFAULTS.width
  hourglass_depth: int = _DEFAULTS.hourglass_depth
  branch_channels: int = _DEFAULTS.branch_channels
  conv_impl: str = _DEFAULTS.conv_impl
  dtype: Any = _DEFAULTS.dtype   # 'auto' / a name / a dtype: resolve_dtype
  head_init_scale: float = _DEFAULTS.head_init_scale
  fuse_upsample: bool = _DEFAULTS.fuse_upsample
  output_stride: int = _DEFAULTS.output_stride

  @nn.compact
  def __call__(self, images, train: bool = False):
    """images [B, H, W, 3] (H = W = 128) -> (heatmaps, scores) [B, M, M, N].

    M = H / output_stride.
    """
    if self.output_stride not in OUTPUT_STRIDES:
      raise ValueError(f"model.output_stride must be one of {OUTPUT_STRIDES},"
                       f" got {self.output_stride!r}")
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"SGFAN expects images [B, H, W, 3], got {images.shape}")
    size = images.shape[1]
    if size % (2 ** (self.hourglass_depth + 1)):
      raise ValueError(f"input side {size} must be divisible by "
                       f"2**(hourglass_depth + 1) = "
                       f"{2 ** (self.hourglass_depth + 1)}")
    impl = conv_lib.resolve_conv_impl(self.conv_impl)
    dtype = resolve_dtype(self.dtype)
    conv = functools.partial(conv_lib.Conv, impl=impl, dtype=dtype)
    # The sub-modules' dtype is that of the activations (BatchNorm outputs):
    # float32 on CPU even in bfloat16 compute (conv.activation_dtype).
    act = conv_lib.activation_dtype(impl, dtype)
    x = conv(64, (7, 7), strides=2, padding=3, name="stem")(images)
    half = max(self.width // 2, 1)
    for features in (half, half, self.width):
      x = ResidualBlock(features, conv, act)(x, train)
    branch = functools.partial(Branch, self.num_landmarks, self.width,
                               self.hourglass_depth, self.branch_channels,
                               conv, act, self.head_init_scale,
                               self.fuse_upsample, self.output_stride)
    heatmaps = branch(name="heatmap_branch")(x, train)
    scores = branch(name="score_branch")(x, train)
    return heatmaps.astype(jnp.float32), scores.astype(jnp.float32)


def create_model(model_config, num_landmarks: int) -> SGFAN:
  """Builds the network from ``config.model`` and the layout's N."""
  return SGFAN(num_landmarks=num_landmarks,
               width=model_config.width,
               hourglass_depth=model_config.hourglass_depth,
               branch_channels=model_config.branch_channels,
               conv_impl=model_config.conv_impl,
               dtype=resolve_dtype(model_config.dtype),
               head_init_scale=model_config.head_init_scale,
               fuse_upsample=model_config.fuse_upsample,
               output_stride=int(model_config.output_stride))


def count_params(params) -> int:
  return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
