"""Synthetic occluders pasted on device, inside the jitted train step.

Beyond the paper (project issue 10, section 5: occlusion-aware score maps).
With an occluder pasted in training we know which points it hides, so a
variant can train the score branch as an explicit occlusion detector (score
target 0 under the occluder; ``config.occluders.score_target``, train.py).
``sgfan_jax.occlusion_copy`` is the host-side twin for the seeded occluded
*test* copy; this module draws the same kinds of occluders with
``jax.random``, on the augmented network input (after ``augment.
train_transform``), with static shapes and vmapped over the batch.

Per image, with probability ``prob``, one occluder:

* **shape**, uniform over ``SHAPES``: ``ellipse``, ``rectangle`` (both of a
  log-uniform aspect in [1/2, 2], slightly tilted) or ``hand`` (a palm
  ellipse plus four finger capsules and a thumb capsule, pointing in a
  uniform random direction); the proportions are those of occlusion_copy;
* **fill**, uniform over ``FILLS``: ``colour`` (one uniform random RGB),
  ``skin`` (a tone of ``SKIN_TONES`` +-12 per channel, a linear shading ramp
  0.8..1.05 and grain of std 4), ``dark`` (level 5..45 +-5 per channel,
  shading 0.7..1.3, grain of std 3), ``noise`` (uniform RGB noise in 1, 2 or
  4 px blocks) or ``texture`` (the same pixels of another image of the batch,
  rolled by a uniform random offset; the image itself when B = 1); values in
  0..255 units, clipped, then put in network units ``v / 255 - 0.5``;
* **region** it is centred on, uniform over the ``REGION_NAMES`` the layout
  has (``layouts.LandmarkLayout.regions``: eyes, nose, mouth, left / right
  side of the jaw for iBUG-68): the mean of the region's points plus a normal
  jitter of std ``CENTRE_JITTER`` face sizes per axis;
* **size**: a target covered fraction uniform in ``coverage`` =
  ``(lo, hi)``; the shape's scale is bisected (``FIT_ITERATIONS`` steps in
  log scale over ``SCALE_RANGE`` face sizes) on the covered fraction. The
  *face box* is the landmark box of the augmented points; the *covered
  fraction* is the number of masked pixels whose centres lie in the face box
  over the number of image pixels whose centres lie in it; the face size is
  ``sqrt(box width * box height)``. An occluder whose fitted coverage is not
  in ``[lo, hi]`` (a face box without pixels, a rare step of the coverage
  function wider than the range) is not pasted: every pasted occluder covers
  a fraction in ``[lo, hi]``, exactly as measured on its mask.

Geometry (``inside``) is a union of primitives in output pixel coordinates
(DESIGN.md: 0-based pixel centres), angles counter-clockwise in the image's
x/y axes, as in occlusion_copy: the mask is the union sampled at the pixel
centres; a point is **occluded** when its exact position lies inside the union
and inside the image area (``[-0.5, size - 0.5)`` per axis).

Every draw comes from the key (``jax.random.split`` per image, then one key
per named draw, ``DRAWS``), so the result is a pure function of the key and
the inputs; train.py derives the key from the step key like the rest of the
augmentation.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Dict, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from sgfan_jax import augment

SHAPES = ("ellipse", "rectangle", "hand")
FILLS = ("colour", "skin", "dark", "noise", "texture")
# Region names looked up in the layout's ``regions`` (those it has are used).
REGION_NAMES = ("eyes", "nose", "mouth", "left_jaw", "right_jaw")
SCORE_TARGETS = ("paper", "visibility")
# RGB skin tones, 0..255 (the table of occlusion_copy).
SKIN_TONES = ((233, 190, 160), (224, 172, 140), (198, 134, 103),
              (168, 112, 80), (141, 85, 56), (96, 60, 40))
NOISE_BLOCKS = (1, 2, 4)        # px side of the noise fill's blocks
NUM_CAPSULES = 5                # hand: four fingers and a thumb
CENTRE_JITTER = 0.03            # std of the centre jitter, face sizes
SCALE_RANGE = (0.02, 8.0)       # bisection bracket of the scale, face sizes
FIT_ITERATIONS = 20
# Unit-shape proportions (face sizes), as in occlusion_copy._unit_shape.
RECT_HALF_SIDE = 0.27
RECT_MAX_TILT = 0.35            # radians
ELLIPSE_RADIUS = 0.31
ELLIPSE_MAX_TILT = 0.5
PALM_RADII = (0.2, 0.16)
FINGER_LENGTHS = (0.16, 0.21, 0.2, 0.15)
FINGER_OFFSETS = (-1.5, -0.5, 0.5, 1.5)
FINGER_RADIUS = 0.034
THUMB_LENGTH = 0.16
THUMB_RADIUS = 0.042
SHADE_EXTENT = 0.35             # shading ramp half-length, occluder scales
SKIN_SHADE, SKIN_GRAIN = (0.8, 1.05), 4.0
DARK_SHADE, DARK_GRAIN = (0.7, 1.3), 3.0

# Named per-image draws, one key each (the order is part of the seeding).
DRAWS = ("apply", "shape", "fill", "region", "jitter", "log_aspect", "tilt",
         "phi", "spread", "fan", "finger_scale", "thumb_side", "thumb_angle",
         "target", "colour", "tone", "tone_jitter", "dark_level",
         "dark_jitter", "shade_angle", "grain", "block", "noise", "donor",
         "roll_y", "roll_x")


def region_indices(layout) -> Tuple[Tuple[int, ...], ...]:
  """Point indices of the layout's occluder regions (``REGION_NAMES`` order).

  Args:
    layout: a ``layouts.LandmarkLayout``.

  Returns:
    tuple of index tuples, hashable (a StepSpec field).
  """
  regions = tuple(tuple(int(i) for i in layout.regions[name])
                  for name in REGION_NAMES if name in layout.regions)
  if not regions:
    raise ValueError(f"layout {layout.name} has none of the occluder regions "
                     f"{REGION_NAMES}")
  return regions


def check_settings(prob: float, coverage: Tuple[float, float],
                   score_target: str = "paper") -> None:
  """Raises ValueError on settings outside their ranges."""
  if not 0.0 <= prob <= 1.0:
    raise ValueError(f"occluders.prob must be in [0, 1], got {prob}")
  lo, hi = coverage
  if not 0.0 < lo <= hi <= 1.0:
    raise ValueError(f"need 0 < occluders.coverage_min <= coverage_max <= 1, "
                     f"got {lo}, {hi}")
  if score_target not in SCORE_TARGETS:
    raise ValueError(f"occluders.score_target must be one of {SCORE_TARGETS},"
                     f" got {score_target!r}")


# -------------------------------------------------------------------- geometry


def inside(prims: Dict[str, jax.Array], x, y) -> jax.Array:
  """Whether points ``(x, y)`` (broadcast arrays) lie in the occluder union.

  Args:
    prims: placed primitives of one occluder: ``main_is_rect`` bool,
      ``main_centre`` [2], ``main_axes`` [2] (radii / half sides),
      ``main_angle``; ``caps`` [C, 5] (x0, y0, x1, y1, r), ``caps_on`` [C].
    x, y: coordinates, broadcastable.

  Returns:
    bool array of the broadcast shape: the main ellipse / rectangle
    (``(u/a)^2 + (v/b)^2 <= 1`` / ``|u| <= a and |v| <= b`` with ``(u, v)``
    the point relative to the centre rotated by ``-angle``) or any enabled
    capsule (distance to the segment ``<= r``).
  """
  x = jnp.asarray(x, jnp.float32)
  y = jnp.asarray(y, jnp.float32)
  cos, sin = jnp.cos(prims["main_angle"]), jnp.sin(prims["main_angle"])
  dx, dy = x - prims["main_centre"][0], y - prims["main_centre"][1]
  u, v = cos * dx + sin * dy, -sin * dx + cos * dy
  a, b = prims["main_axes"][0], prims["main_axes"][1]
  ellipse = (u / a) ** 2 + (v / b) ** 2 <= 1.0
  rect = (jnp.abs(u) <= a) & (jnp.abs(v) <= b)
  out = jnp.where(prims["main_is_rect"], rect, ellipse)
  caps = prims["caps"]
  for k in range(caps.shape[0]):
    x0, y0, x1, y1, r = (caps[k, i] for i in range(5))
    ex, ey = x1 - x0, y1 - y0
    den = ex * ex + ey * ey
    t = ((x - x0) * ex + (y - y0) * ey) / jnp.where(den > 0, den, 1.0)
    t = jnp.clip(jnp.where(den > 0, t, 0.0), 0.0, 1.0)
    near = (x - x0 - t * ex) ** 2 + (y - y0 - t * ey) ** 2 <= r * r
    out = out | (near & prims["caps_on"][k])
  return out


def _unit_primitives(d: Dict[str, jax.Array]) -> Dict[str, jax.Array]:
  """The occluder's primitives around (0, 0) in face sizes, from its draws."""
  shape = d["shape"]
  root = jnp.sqrt(jnp.exp(d["log_aspect"]))
  aspect_axes = jnp.stack([root, 1.0 / root])
  is_rect = shape == SHAPES.index("rectangle")
  is_hand = shape == SHAPES.index("hand")
  axes = jnp.where(is_rect, RECT_HALF_SIDE, ELLIPSE_RADIUS) * aspect_axes
  axes = jnp.where(is_hand, jnp.asarray(PALM_RADII, jnp.float32), axes)
  angle = jnp.where(is_rect, RECT_MAX_TILT, ELLIPSE_MAX_TILT) * d["tilt"]
  angle = jnp.where(is_hand, d["phi"], angle)

  e1 = jnp.stack([jnp.cos(d["phi"]), jnp.sin(d["phi"])])    # along fingers
  e2 = jnp.stack([-jnp.sin(d["phi"]), jnp.cos(d["phi"])])   # across palm
  caps = []
  lengths = jnp.asarray(FINGER_LENGTHS, jnp.float32) * d["finger_scale"]
  for k, off in enumerate(FINGER_OFFSETS):
    base = 0.1 * e1 + 0.07 * off * d["spread"] * e2
    a = d["fan"] * (k - 1.5)
    tip = base + lengths[k] * (jnp.cos(a) * e1 + jnp.sin(a) * e2)
    caps.append(jnp.concatenate([base, tip, jnp.full((1,), FINGER_RADIUS)]))
  side = jnp.where(d["thumb_side"], 1.0, -1.0)
  base = -0.02 * e1 + side * 0.13 * e2
  a = side * d["thumb_angle"]
  tip = base + THUMB_LENGTH * (jnp.cos(a) * e1 + jnp.sin(a) * e2)
  caps.append(jnp.concatenate([base, tip, jnp.full((1,), THUMB_RADIUS)]))
  return dict(main_is_rect=is_rect, main_axes=axes.astype(jnp.float32),
              main_angle=angle, caps=jnp.stack(caps).astype(jnp.float32),
              caps_on=jnp.broadcast_to(is_hand, (NUM_CAPSULES,)))


def place(unit: Dict[str, jax.Array], centre: jax.Array,
          size: jax.Array) -> Dict[str, jax.Array]:
  """Unit primitives scaled by ``size`` pixels and moved to ``centre``."""
  caps = unit["caps"] * size
  caps = caps + jnp.concatenate([centre, centre, jnp.zeros((1,))])
  return dict(main_is_rect=unit["main_is_rect"], main_centre=centre,
              main_axes=unit["main_axes"] * size,
              main_angle=unit["main_angle"], caps=caps,
              caps_on=unit["caps_on"])


# ----------------------------------------------------------------------- draws


def _draw(key: jax.Array, *, num_regions: int, batch: int, height: int,
          width: int, prob: float, coverage: Tuple[float, float]
          ) -> Dict[str, jax.Array]:
  """Every random draw of one image's occluder (module docstring)."""
  k = dict(zip(DRAWS, jax.random.split(key, len(DRAWS))))
  u = jax.random.uniform
  f32 = jnp.float32
  return dict(
      apply=jax.random.bernoulli(k["apply"], prob),
      shape=jax.random.randint(k["shape"], (), 0, len(SHAPES)),
      fill=jax.random.randint(k["fill"], (), 0, len(FILLS)),
      region=jax.random.randint(k["region"], (), 0, num_regions),
      jitter=jax.random.normal(k["jitter"], (2,), f32),
      log_aspect=u(k["log_aspect"], (), f32, math.log(0.5), math.log(2.0)),
      tilt=u(k["tilt"], (), f32, -1.0, 1.0),
      phi=u(k["phi"], (), f32, 0.0, 2 * math.pi),
      spread=u(k["spread"], (), f32, 0.9, 1.15),
      fan=u(k["fan"], (), f32, 0.0, 0.12),
      finger_scale=u(k["finger_scale"], (4,), f32, 0.85, 1.15),
      thumb_side=jax.random.bernoulli(k["thumb_side"], 0.5),
      thumb_angle=u(k["thumb_angle"], (), f32, 0.8, 1.2),
      target=u(k["target"], (), f32, coverage[0], coverage[1]),
      colour=u(k["colour"], (3,), f32, 0.0, 255.0),
      tone=jax.random.randint(k["tone"], (), 0, len(SKIN_TONES)),
      tone_jitter=u(k["tone_jitter"], (3,), f32, -12.0, 12.0),
      dark_level=u(k["dark_level"], (), f32, 5.0, 45.0),
      dark_jitter=u(k["dark_jitter"], (3,), f32, -5.0, 5.0),
      shade_angle=u(k["shade_angle"], (), f32, 0.0, 2 * math.pi),
      grain=jax.random.normal(k["grain"], (height, width, 1), f32),
      block=jax.random.randint(k["block"], (), 0, len(NOISE_BLOCKS)),
      noise=u(k["noise"], (height, width, 3), f32, 0.0, 255.0),
      donor=jax.random.randint(k["donor"], (), 0, max(batch - 1, 1)),
      roll_y=jax.random.randint(k["roll_y"], (), 0, height),
      roll_x=jax.random.randint(k["roll_x"], (), 0, width),
  )


def _region_weights(regions: Sequence[Sequence[int]], num_points: int
                    ) -> np.ndarray:
  """[R, N] float32: row r averages the points of region r."""
  weights = np.zeros((len(regions), num_points), np.float32)
  for r, idx in enumerate(regions):
    if not idx or max(idx) >= num_points or min(idx) < 0:
      raise ValueError(f"occluder region {r} has indices {tuple(idx)} "
                       f"outside the {num_points} landmarks")
    weights[r, list(idx)] = 1.0 / len(idx)
  return weights


# ------------------------------------------------------------------ one image


def _one(d, index, landmarks, images, weights, *, coverage):
  """Fits, rasterises and fills one image's occluder."""
  batch, height, width, _ = images.shape
  ys = jnp.arange(height, dtype=jnp.float32)[:, None]
  xs = jnp.arange(width, dtype=jnp.float32)[None, :]

  lo_box = landmarks.min(axis=0)
  hi_box = landmarks.max(axis=0)
  box_w, box_h = hi_box[0] - lo_box[0], hi_box[1] - lo_box[1]
  face_size = jnp.sqrt(jnp.maximum(box_w * box_h, 0.0))
  in_box = ((xs >= lo_box[0]) & (xs <= hi_box[0]) & (ys >= lo_box[1])
            & (ys <= hi_box[1]))
  box_count = in_box.sum()
  centre = (weights @ landmarks)[d["region"]] + (
      d["jitter"] * (CENTRE_JITTER * face_size))
  unit = _unit_primitives(d)

  def cover(mask):
    return (mask & in_box).sum() / jnp.maximum(box_count, 1)

  def mask_at(log_scale):
    return inside(place(unit, centre, jnp.exp(log_scale) * face_size), xs, ys)

  def bisect(_, bracket):
    lo, hi = bracket
    mid = 0.5 * (lo + hi)
    below = cover(mask_at(mid)) < d["target"]
    return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

  bracket = (jnp.float32(math.log(SCALE_RANGE[0])),
             jnp.float32(math.log(SCALE_RANGE[1])))
  lo, hi = jax.lax.fori_loop(0, FIT_ITERATIONS, bisect, bracket)
  log_scale = jnp.where(cover(mask_at(hi)) <= coverage[1], hi, lo)
  scale = jnp.exp(log_scale)
  prims = place(unit, centre, scale * face_size)
  mask = inside(prims, xs, ys)
  covered = cover(mask)
  fits = ((covered >= coverage[0]) & (covered <= coverage[1])
          & (box_count > 0) & (box_w > 0) & (box_h > 0))
  applied = d["apply"] & fits
  mask = mask & applied

  in_image = ((landmarks[:, 0] >= -0.5) & (landmarks[:, 0] < width - 0.5)
              & (landmarks[:, 1] >= -0.5) & (landmarks[:, 1] < height - 0.5))
  occluded = inside(prims, landmarks[:, 0], landmarks[:, 1]) & in_image
  occluded = occluded & applied

  # Fills, 0..255 units (texture: network units).
  extent = jnp.maximum(SHADE_EXTENT * scale * face_size, 1e-3)
  ramp = (jnp.cos(d["shade_angle"]) * (xs - centre[0])
          + jnp.sin(d["shade_angle"]) * (ys - centre[1]))
  ramp = jnp.clip(0.5 + ramp / (2.0 * extent), 0.0, 1.0)[..., None]

  def shaded(base, shade, grain):
    return (base * (shade[0] + (shade[1] - shade[0]) * ramp)
            + grain * d["grain"])

  tone = jnp.asarray(SKIN_TONES, jnp.float32)[d["tone"]] + d["tone_jitter"]
  dark = d["dark_level"] + d["dark_jitter"]
  block = jnp.asarray(NOISE_BLOCKS, jnp.int32)[d["block"]]
  rows = jnp.arange(height, dtype=jnp.int32)
  cols = jnp.arange(width, dtype=jnp.int32)
  noise = d["noise"][(rows // block * block)[:, None],
                     (cols // block * block)[None, :]]
  painted = jnp.stack([
      jnp.broadcast_to(d["colour"], (height, width, 3)),
      shaded(tone, SKIN_SHADE, SKIN_GRAIN),
      shaded(dark, DARK_SHADE, DARK_GRAIN),
      noise,
  ])
  painted = painted[jnp.minimum(d["fill"], painted.shape[0] - 1)]
  painted = (jnp.clip(painted, 0.0, augment.PIXEL_MAX) / augment.PIXEL_MAX
             - augment.PIXEL_OFFSET)
  donor = (index + 1 + d["donor"]) % batch if batch > 1 else index
  texture = images[donor][((rows - d["roll_y"]) % height)[:, None],
                          ((cols - d["roll_x"]) % width)[None, :]]
  fill = jnp.where(d["fill"] == FILLS.index("texture"), texture, painted)
  image = jnp.where(mask[..., None], fill, images[index])

  params = dict(d, face_box=jnp.concatenate([lo_box, hi_box]),
                face_size=face_size, centre=centre, scale=scale,
                coverage=covered, fits=fits, applied=applied,
                donor_index=donor, **{"prim_" + k: v for k, v in prims.items()})
  return image, occluded, mask, params


# ---------------------------------------------------------------------- batch


def occlude(key: jax.Array, images: jax.Array, landmarks: jax.Array, *,
            regions: Sequence[Sequence[int]], prob: float,
            coverage: Tuple[float, float]
            ) -> Tuple[jax.Array, jax.Array, jax.Array, Dict[str, Any]]:
  """``paste_occluders`` plus the per-image parameters (for tests, logs).

  Returns:
    (images, occluded, mask, params): params is a dict of [B, ...] arrays:
    the draws (``DRAWS``; ``grain`` [B, H, W, 1] and ``noise`` [B, H, W, 3]
    are per pixel), the fitted ``scale`` (face sizes), ``centre`` [B, 2], ``face_box`` [B, 4]
    (x0, y0, x1, y1), ``face_size``, ``coverage`` (of the unpasted mask too),
    ``fits``, ``applied`` (= apply & fits), ``donor_index`` and the placed
    primitives ``prim_*`` (see ``inside``).
  """
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"images must be [B, H, W, 3], got {images.shape}")
  if (landmarks.ndim != 3 or landmarks.shape[-1] != 2
      or landmarks.shape[0] != images.shape[0]):
    raise ValueError(f"landmarks must be [B, N, 2] with B={images.shape[0]},"
                     f" got {landmarks.shape}")
  coverage = (float(coverage[0]), float(coverage[1]))
  check_settings(float(prob), coverage)
  batch, height, width, _ = images.shape
  weights = jnp.asarray(_region_weights(regions, landmarks.shape[1]))
  keys = jax.random.split(key, batch)
  draws = jax.vmap(lambda k: _draw(
      k, num_regions=len(regions), batch=batch, height=height, width=width,
      prob=float(prob), coverage=coverage))(keys)
  images = images.astype(jnp.float32)
  one = functools.partial(_one, coverage=coverage)
  return jax.vmap(one, in_axes=(0, 0, 0, None, None))(
      draws, jnp.arange(batch), landmarks.astype(jnp.float32), images,
      weights)


def paste_occluders(key: jax.Array, images: jax.Array, landmarks: jax.Array,
                    *, regions: Sequence[Sequence[int]], prob: float,
                    coverage: Tuple[float, float]
                    ) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """Pastes at most one synthetic occluder per image (module docstring).

  Args:
    key: PRNG key.
    images: [B, H, W, 3] float network input ``v / 255 - 0.5`` (after
      ``augment.train_transform``).
    landmarks: [B, N, 2] points in the images' pixel coordinates.
    regions: static tuple of point-index tuples (``region_indices(layout)``).
    prob: probability of an occluder per image (Python float).
    coverage: (lo, hi) covered fraction of the face box (Python floats).

  Returns:
    (images [B, H, W, 3] float32, occluded [B, N] bool: point under the
    pasted occluder, mask [B, H, W] bool: pasted pixels).
  """
  images, occluded, mask, _ = occlude(key, images, landmarks,
                                      regions=regions, prob=prob,
                                      coverage=coverage)
  return images, occluded, mask
