"""Device-side augmentation: the network input window, flips, colour jitter.

Everything here is a pure ``jax.numpy`` function with static shapes, so it can
run inside a jitted train step; batch-wise functions are vectorised (``vmap``
or broadcasting), never Python loops over examples.

Geometry (see docs/DESIGN.md): the stored crop has side ``S`` (crop pixels,
0-based pixel-centre coordinates). The network input window is a square of side
``window_side = S * face_context / crop_context`` crop pixels
(``input_window_side``) centred on the crop centre
``c = ((S - 1) / 2, (S - 1) / 2)``; it is resampled bilinearly to ``out_size``
pixels. Training perturbs the window:

* rotation ``angle`` (radians): the window is rotated by ``angle`` inside the
  crop (with y pointing down, a positive angle turns the window clockwise as
  displayed, so the face appears turned counter-clockwise);
* ``scale``: the window side is divided by ``scale``, so ``scale > 1`` makes
  the face appear bigger;
* ``shift`` (crop pixels, ``[2]``): the window centre moves to ``c + shift``;
* ``flip``: the output is mirrored, ``x -> out_size - 1 - x``, and the points
  (and visible flags) are re-labelled with the layout's mirror permutation.

All of it is one affine map ``crop_to_out`` ``[2, 3]`` (DESIGN.md convention
``p' = A[:, :2] @ p + A[:, 2]``); landmarks go through it exactly and the image
is sampled through its inverse. Pixels sampled outside the crop are zero
(black) before normalisation.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp

# ITU-R BT.601 luma weights (R, G, B): the grey image used by the saturation
# and contrast jitter.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
# Pixel value range of the uint8 crops; the network sees image / 255 - 0.5.
PIXEL_MAX = 255.0
PIXEL_OFFSET = 0.5


def input_window_side(crop_size: int, crop_context: float,
                face_context: float) -> float:
  """Side of the network input window in crop pixels (DESIGN.md).

  Args:
    crop_size: S, side of the stored crop (builder metadata ``crop_size``).
    crop_context: crop side / face box side (builder metadata).
    face_context: window side / face box side (config ``data.face_context``).

  Returns:
    ``crop_size * face_context / crop_context``.
  """
  if crop_context <= 0 or face_context <= 0:
    raise ValueError(f"contexts must be positive, got crop_context="
                     f"{crop_context}, face_context={face_context}")
  return float(crop_size) * float(face_context) / float(crop_context)


# ----------------------------------------------------------------- affine maps


def apply_affine(points: jax.Array, affine: jax.Array) -> jax.Array:
  """Maps points through affine matrices.

  Args:
    points: [..., N, 2] (x, y).
    affine: [..., 2, 3], broadcastable against the leading axes of points.

  Returns:
    [..., N, 2] mapped points ``A[:, :2] @ p + A[:, 2]``.
  """
  lin = affine[..., :2]
  return (jnp.einsum("...ij,...nj->...ni", lin, points)
          + affine[..., None, :, 2])


def compose_affine(outer: jax.Array, inner: jax.Array) -> jax.Array:
  """Affine map ``p -> outer(inner(p))``.

  Args:
    outer: [..., 2, 3].
    inner: [..., 2, 3].

  Returns:
    [..., 2, 3].
  """
  lin = outer[..., :2] @ inner[..., :2]
  trans = (outer[..., :2] @ inner[..., 2:])[..., 0] + outer[..., 2]
  return jnp.concatenate([lin, trans[..., None]], axis=-1)


def invert_affine(affine: jax.Array) -> jax.Array:
  """Inverse of (batched) invertible affine maps.

  Args:
    affine: [..., 2, 3].

  Returns:
    [..., 2, 3] with ``apply_affine(apply_affine(p, A), inv(A)) == p``.
  """
  a, b = affine[..., 0, 0], affine[..., 0, 1]
  c, d = affine[..., 1, 0], affine[..., 1, 1]
  det = a * d - b * c
  inv_lin = jnp.stack([jnp.stack([d, -b], -1), jnp.stack([-c, a], -1)],
                      -2) / det[..., None, None]
  inv_trans = -(inv_lin @ affine[..., 2:])[..., 0]
  return jnp.concatenate([inv_lin, inv_trans[..., None]], axis=-1)


def flip_affine(out_size: int) -> jax.Array:
  """[2, 3] horizontal mirror of an ``out_size``-wide image: x -> out-1-x."""
  return jnp.array([[-1.0, 0.0, out_size - 1.0], [0.0, 1.0, 0.0]], jnp.float32)


def window_affine(crop_size: int, window: float, out_size: int, *,
                  angle=0.0, scale=1.0, shift=None, flip=None) -> jax.Array:
  """Crop -> network-input affine map of a (perturbed) window.

  Args:
    crop_size: S, side of the crop in pixels.
    window: window side in crop pixels (``input_window_side(...)``).
    out_size: side of the network input in pixels.
    angle: [...] window rotation in radians (or a scalar).
    scale: [...] face size multiplier (or a scalar).
    shift: [..., 2] window centre offset in crop pixels, or None for zero.
    flip: [...] bool, mirror the output; None for no flip.

  Returns:
    [..., 2, 3] float32 ``crop_to_out`` (leading axes from the arguments).
  """
  angle = jnp.asarray(angle, jnp.float32)
  scale = jnp.asarray(scale, jnp.float32)
  if shift is None:
    shift = jnp.zeros(jnp.broadcast_shapes(angle.shape, scale.shape) + (2,),
                      jnp.float32)
  shift = jnp.asarray(shift, jnp.float32)
  shape = jnp.broadcast_shapes(angle.shape, scale.shape, shift.shape[:-1])
  angle = jnp.broadcast_to(angle, shape)
  scale = jnp.broadcast_to(scale, shape)
  shift = jnp.broadcast_to(shift, shape + (2,))

  zoom = scale * (out_size / window)          # output px per crop px
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  # Linear part k * R(-angle): output axes = window axes rotated by angle.
  lin = zoom[..., None, None] * jnp.stack(
      [jnp.stack([cos, sin], -1), jnp.stack([-sin, cos], -1)], -2)
  crop_centre = (crop_size - 1.0) / 2.0
  out_centre = (out_size - 1.0) / 2.0
  centre = crop_centre + shift                 # window centre, crop coords
  trans = out_centre - (lin @ centre[..., None])[..., 0]
  affine = jnp.concatenate([lin, trans[..., None]], axis=-1)
  if flip is not None:
    flip = jnp.broadcast_to(jnp.asarray(flip, bool), shape)
    flipped = compose_affine(flip_affine(out_size), affine)
    affine = jnp.where(flip[..., None, None], flipped, affine)
  return affine


def sample_window_params(rng: jax.Array, batch_size: int, aug: Any,
                         window: float) -> Dict[str, jax.Array]:
  """Draws one random window perturbation per example.

  Args:
    rng: PRNG key.
    batch_size: B.
    aug: config ``augment`` (attributes ``rotation_deg``, ``scale_min``,
      ``scale_max``, ``translate_frac``, ``flip_prob``), Python floats.
    window: window side in crop pixels (sets the shift range).

  Returns:
    dict with ``angle`` [B] radians uniform in +-rotation_deg, ``scale`` [B]
    uniform in [scale_min, scale_max], ``shift`` [B, 2] crop pixels uniform in
    +-translate_frac * window per axis, ``flip`` [B] bool with P = flip_prob.
  """
  if aug.scale_min <= 0 or aug.scale_max < aug.scale_min:
    raise ValueError(f"need 0 < scale_min <= scale_max, got "
                     f"{aug.scale_min}, {aug.scale_max}")
  if not 0.0 <= aug.flip_prob <= 1.0:
    raise ValueError(f"flip_prob must be in [0, 1], got {aug.flip_prob}")
  k_rot, k_scale, k_shift, k_flip = jax.random.split(rng, 4)
  max_angle = math.radians(aug.rotation_deg)
  max_shift = aug.translate_frac * window
  return dict(
      angle=jax.random.uniform(k_rot, (batch_size,), jnp.float32,
                               -max_angle, max_angle),
      scale=jax.random.uniform(k_scale, (batch_size,), jnp.float32,
                               aug.scale_min, aug.scale_max),
      shift=jax.random.uniform(k_shift, (batch_size, 2), jnp.float32,
                               -max_shift, max_shift),
      flip=jax.random.bernoulli(k_flip, aug.flip_prob, (batch_size,)),
  )


# ------------------------------------------------------------------ resampling


def bilinear_sample(image: jax.Array, coords: jax.Array) -> jax.Array:
  """Bilinear lookup with zeros outside the image.

  Pixel (i, j) has its centre at (x=j, y=i); a neighbour outside the image
  contributes zero, so the result fades to zero within one pixel of the edge.

  Args:
    image: [H, W, C] (any real dtype; computed in float32).
    coords: [..., 2] (x, y) sample positions.

  Returns:
    [..., C] float32.
  """
  height, width, channels = image.shape
  flat = image.reshape(height * width, channels).astype(jnp.float32)
  x, y = coords[..., 0], coords[..., 1]
  x0, y0 = jnp.floor(x), jnp.floor(y)
  fx, fy = x - x0, y - y0
  x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
  out = 0.0
  for dy, wy in ((0, 1.0 - fy), (1, fy)):
    for dx, wx in ((0, 1.0 - fx), (1, fx)):
      xi, yi = x0 + dx, y0 + dy
      inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
      idx = jnp.clip(yi, 0, height - 1) * width + jnp.clip(xi, 0, width - 1)
      weight = jnp.where(inside, wx * wy, 0.0)
      out = out + flat[idx] * weight[..., None]
  return out


def warp_images(images: jax.Array, out_to_crop: jax.Array,
                out_size: int) -> jax.Array:
  """Resamples crops onto the output grid through ``out_to_crop``.

  Args:
    images: [B, S, S, C] (uint8 or float).
    out_to_crop: [B, 2, 3] affine from output pixel coords to crop coords.
    out_size: side of the output.

  Returns:
    [B, out_size, out_size, C] float32 in the input's value units.
  """
  ys, xs = jnp.meshgrid(jnp.arange(out_size, dtype=jnp.float32),
                        jnp.arange(out_size, dtype=jnp.float32), indexing="ij")
  grid = jnp.stack([xs, ys], -1).reshape(1, out_size * out_size, 2)
  coords = apply_affine(grid, out_to_crop)                     # [B, P, 2]
  sampled = jax.vmap(bilinear_sample)(images, coords)          # [B, P, C]
  return sampled.reshape(images.shape[0], out_size, out_size,
                         images.shape[-1])


# ----------------------------------------------------------------------- flips


def permute_points(landmarks: jax.Array, visible: jax.Array, flip: jax.Array,
                   flip_perm: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """Re-labels mirrored examples: ``new[i] = old[flip_perm[i]]`` where flip.

  Args:
    landmarks: [B, N, 2].
    visible: [B, N].
    flip: [B] bool.
    flip_perm: [N] int mirror permutation (``layout.flip_permutation``).

  Returns:
    (landmarks [B, N, 2], visible [B, N]).
  """
  flip_perm = jnp.asarray(flip_perm)
  if flip_perm.shape != (landmarks.shape[-2],):
    raise ValueError(f"flip_perm has shape {flip_perm.shape}, expected "
                     f"({landmarks.shape[-2]},) to match the landmarks")
  landmarks = jnp.where(flip[:, None, None], landmarks[:, flip_perm],
                        landmarks)
  visible = jnp.where(flip[:, None], visible[:, flip_perm], visible)
  return landmarks, visible


def flip_horizontal(images: jax.Array, landmarks: jax.Array,
                    visible: jax.Array, flip_perm: jax.Array
                    ) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """Mirrors whole examples (no resampling): image columns, x, point labels.

  Args:
    images: [B, H, W, C].
    landmarks: [B, N, 2] in the images' pixel coordinates.
    visible: [B, N].
    flip_perm: [N] int mirror permutation.

  Returns:
    (images [B, H, W, C], landmarks [B, N, 2], visible [B, N]).
  """
  width = images.shape[2]
  images = images[:, :, ::-1]
  landmarks = landmarks.at[..., 0].set(width - 1.0 - landmarks[..., 0])
  flip = jnp.ones(images.shape[:1], bool)
  landmarks, visible = permute_points(landmarks, visible, flip, flip_perm)
  return images, landmarks, visible


# ---------------------------------------------------------------------- colour


def _grey(images: jax.Array) -> jax.Array:
  """[..., 3] -> [..., 1] luma."""
  return (images * jnp.asarray(LUMA_WEIGHTS, images.dtype)).sum(-1,
                                                                keepdims=True)


def color_jitter(rng: jax.Array, images: jax.Array, *, brightness: float,
                 contrast: float, saturation: float) -> jax.Array:
  """Random brightness, contrast and saturation (in this order), clipped.

  Each factor is uniform in ``[1 - a, 1 + a]`` for amplitude ``a``, per
  example: brightness multiplies, contrast blends with the image's mean grey
  level, saturation blends with the per-pixel grey image.

  Args:
    rng: PRNG key.
    images: [B, H, W, 3] float in [0, 1].
    brightness: amplitude a (>= 0).
    contrast: amplitude a (>= 0).
    saturation: amplitude a (>= 0).

  Returns:
    [B, H, W, 3] float in [0, 1]; exactly ``images`` when all amplitudes are 0.
  """
  for name, amp in (("brightness", brightness), ("contrast", contrast),
                    ("saturation", saturation)):
    if not 0.0 <= amp <= 1.0:
      raise ValueError(f"{name} amplitude must be in [0, 1], got {amp}")
  if brightness == contrast == saturation == 0.0:
    return images
  batch = images.shape[0]
  k_b, k_c, k_s = jax.random.split(rng, 3)

  def factor(key, amp):
    return jax.random.uniform(key, (batch, 1, 1, 1), images.dtype,
                              1.0 - amp, 1.0 + amp)

  images = images * factor(k_b, brightness)
  mean = _grey(images).mean(axis=(1, 2, 3), keepdims=True)
  images = mean + (images - mean) * factor(k_c, contrast)
  grey = _grey(images)
  images = grey + (images - grey) * factor(k_s, saturation)
  return jnp.clip(images, 0.0, 1.0)


def normalize(images: jax.Array) -> jax.Array:
  """Pixel values [0, 255] -> network input ``image / 255 - 0.5`` (float32)."""
  return images.astype(jnp.float32) / PIXEL_MAX - PIXEL_OFFSET


# ------------------------------------------------------------------ transforms


def _check_batch(images, landmarks, visible=None):
  if images.ndim != 4 or images.shape[1] != images.shape[2]:
    raise ValueError(f"images must be [B, S, S, C], got {images.shape}")
  if landmarks.ndim != 3 or landmarks.shape[-1] != 2 or (
      landmarks.shape[0] != images.shape[0]):
    raise ValueError(f"landmarks must be [B, N, 2] with B={images.shape[0]}, "
                     f"got {landmarks.shape}")
  if visible is not None and visible.shape != landmarks.shape[:2]:
    raise ValueError(f"visible must be {landmarks.shape[:2]}, got "
                     f"{visible.shape}")


def warp_batch(images: jax.Array, landmarks: jax.Array, visible: jax.Array,
               crop_to_out: jax.Array, flip: jax.Array, flip_perm: jax.Array,
               out_size: int) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """Applies given per-example maps (no randomness, no colour, no scaling).

  Args:
    images: [B, S, S, C] uint8 crops.
    landmarks: [B, N, 2] crop coordinates.
    visible: [B, N] bool.
    crop_to_out: [B, 2, 3] (mirroring included where ``flip``).
    flip: [B] bool, which examples are mirrored (re-labels their points).
    flip_perm: [N] int mirror permutation.
    out_size: output side.

  Returns:
    (images [B, out, out, C] float32 in pixel units 0..255, landmarks
    [B, N, 2] output coordinates, visible [B, N]).
  """
  _check_batch(images, landmarks, visible)
  out = warp_images(images, invert_affine(crop_to_out), out_size)
  points = apply_affine(landmarks.astype(jnp.float32), crop_to_out)
  points, visible = permute_points(points, visible, flip, flip_perm)
  return out, points, visible


def train_transform(rng: jax.Array, images: jax.Array, landmarks: jax.Array,
                    visible: jax.Array, *, aug: Any, flip_perm: jax.Array,
                    window_side: float, out_size: int
                    ) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """Random window + flip + colour jitter; the training input of a batch.

  Args:
    rng: PRNG key.
    images: [B, S, S, 3] uint8 crops.
    landmarks: [B, N, 2] crop coordinates.
    visible: [B, N] bool.
    aug: config ``augment`` (rotation_deg, scale_min, scale_max,
      translate_frac, flip_prob, brightness, contrast, saturation), floats.
    flip_perm: [N] int mirror permutation of the layout.
    window_side: window side in crop pixels (``input_window_side(...)``).
    out_size: network input side (``model.input_size``).

  Returns:
    images [B, out, out, 3] float32 ``image / 255 - 0.5``, landmarks
    [B, N, 2] float32 in network-input coordinates, visible [B, N].
  """
  _check_batch(images, landmarks, visible)
  k_geo, k_col = jax.random.split(rng)
  params = sample_window_params(k_geo, images.shape[0], aug, window_side)
  crop_to_out = window_affine(images.shape[1], window_side, out_size, **params)
  out, points, visible = warp_batch(images, landmarks, visible, crop_to_out,
                                    params["flip"], flip_perm, out_size)
  out = color_jitter(k_col, out / PIXEL_MAX, brightness=aug.brightness,
                     contrast=aug.contrast, saturation=aug.saturation)
  return out - PIXEL_OFFSET, points, visible


def eval_transform(images: jax.Array, landmarks: jax.Array, *,
                   window_side: float, out_size: int
                   ) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """Deterministic centred window: the evaluation input of a batch.

  Args:
    images: [B, S, S, 3] uint8 crops.
    landmarks: [B, N, 2] crop coordinates (ground truth; pass zeros if none).
    window_side: window side in crop pixels.
    out_size: network input side.

  Returns:
    images [B, out, out, 3] float32 ``image / 255 - 0.5``, landmarks
    [B, N, 2] in network-input coordinates, out_to_crop [B, 2, 3] mapping
    network-input coordinates back to crop coordinates (then
    ``crop_to_image`` takes them to the original image).
  """
  _check_batch(images, landmarks)
  batch = images.shape[0]
  crop_to_out = jnp.broadcast_to(
      window_affine(images.shape[1], window_side, out_size), (batch, 2, 3))
  out_to_crop = invert_affine(crop_to_out)
  out = warp_images(images, out_to_crop, out_size)
  points = apply_affine(landmarks.astype(jnp.float32), crop_to_out)
  return normalize(out), points, out_to_crop
