"""Eq. 1 landmark confidence ("weight" in the paper): mean score-map value
around each decoded landmark, in [0, 1]; low = likely occluded.

Paper (Sec. 3.2, Eq. 1)::

  w_i = sum_{k=X_i-r}^{X_i+r} sum_{t=Y_i-r}^{Y_i+r} score_i(k, t) / (2r + 1)^2

where ``(X_i, Y_i)`` is the decoded location of landmark ``i`` (rounded to the
nearest pixel) and ``score_i`` its score map.

Two choices the paper leaves open, made here:

* **Divisor = the number of in-bounds window pixels**, not ``(2r+1)^2``.
  The window is clipped at the map border; dividing by the in-bounds count
  makes ``w`` the *mean* score over the part of the window that exists, so a
  confident landmark lying on the border (half its window outside the map)
  gets the same weight as a confident landmark in the middle. With the
  literal ``(2r+1)^2`` a perfect border point would get ~0.5-0.6 and be
  mistaken for an occluded one. Inside the map both divisors agree.
* **Window radius**: the score-map targets are binary discs of radius
  ``targets.score_radius`` (3 px at 128). A square window of half-width ``r``
  lies inside such a disc iff ``r * sqrt(2) <= score_radius``, so
  ``config.refine.weight_radius`` (default 2 = floor(3 / sqrt 2)) makes a
  perfect score map give ``w = 1`` in the middle and on the border when the
  landmark sits on a pixel centre, and ``w >= 0.92`` for any sub-pixel offset
  (the window corners may then leave the disc). With ``r = score_radius`` a
  perfect disc would fill only 29/49 = 0.59 of the window. Use
  :func:`default_weight_radius` to derive it from another ``score_radius``.
  The caller passes ``radius`` (e.g. ``config.refine.weight_radius``).
  On coarse maps (``model.output_stride`` 2: a disc of 1.5 map px) that
  margin is gone: a 3x3 window would give a perfect point as little as 4/9.
  There the prediction code uses :func:`offset_safe_weight_radius`, the
  largest window that stays inside the disc for any sub-pixel offset.

Decoded points outside the map are first clipped to it (the nearest in-map
pixel), so every window has at least one in-bounds pixel.
"""

import functools
import math

import chex
import jax
import jax.numpy as jnp


def default_weight_radius(score_radius: float) -> int:
  """Largest window half-width whose square lies inside the target disc.

  Args:
    score_radius: radius of the binary score-map target disc (px).

  Returns:
    ``floor(score_radius / sqrt(2))`` (at least 0).
  """
  return max(int(math.floor(score_radius / math.sqrt(2.0) + 1e-9)), 0)


def offset_safe_weight_radius(score_radius: float) -> int:
  """Largest half-width ``r`` whose window, centred on the pixel nearest to
  any point, lies inside the disc of radius ``score_radius`` around it.

  The window's farthest corner is ``(r + 0.5) * sqrt(2)`` from the point
  when the point is half a pixel off the centre in x and y, so ``r`` is the
  largest with ``(r + 0.5) * sqrt(2) <= score_radius`` (at least 0: then w is
  the score at the nearest pixel, inside the disc whenever the radius is at
  least sqrt(2) / 2).
  """
  r = math.floor(score_radius / math.sqrt(2.0) - 0.5 + 1e-9)
  return max(int(r), 0)


def _weights_one(score_maps: jax.Array, points: jax.Array,
                 radius: int) -> jax.Array:
  """Eq. 1 for one face: score_maps [H, W, N], points [N, 2] -> [N]."""
  height, width, num_points = score_maps.shape
  # Nearest pixel (x.5 rounds up), clipped into the map.
  centre = jnp.floor(points + 0.5).astype(jnp.int32)          # [N, 2]
  cx = jnp.clip(centre[:, 0], 0, width - 1)
  cy = jnp.clip(centre[:, 1], 0, height - 1)
  offsets = jnp.arange(-radius, radius + 1, dtype=jnp.int32)  # [2r+1]
  xs = cx[:, None, None] + offsets[None, None, :]             # [N, 1, 2r+1]
  ys = cy[:, None, None] + offsets[None, :, None]             # [N, 2r+1, 1]
  inside = ((xs >= 0) & (xs < width)) & ((ys >= 0) & (ys < height))
  xs_c = jnp.clip(xs, 0, width - 1)
  ys_c = jnp.clip(ys, 0, height - 1)
  chan = jnp.arange(num_points)[:, None, None]
  values = score_maps[ys_c, xs_c, chan]                       # [N, 2r+1, 2r+1]
  inside = jnp.broadcast_to(inside, values.shape)
  total = jnp.sum(jnp.where(inside, values, 0.0), axis=(1, 2))
  count = jnp.sum(inside, axis=(1, 2)).astype(values.dtype)
  return total / count


@functools.partial(jax.jit, static_argnames=("radius", "clip"))
def landmark_confidence(score_maps: jax.Array, points: jax.Array,
                     radius: int, clip: bool = True) -> jax.Array:
  """Eq. 1 weights of a batch of faces.

  Args:
    score_maps: [B, H, W, N] predicted score maps (any float dtype).
    points: [B, N, 2] decoded landmarks, (x, y) pixel coordinates at the
      score-map resolution (0-based, pixel centres; see docs/DESIGN.md).
      Rounded to the nearest pixel and clipped into the map.
    radius: window half-width ``r`` (static Python int; window is
      ``(2r+1) x (2r+1)`` before clipping at the map border).
    clip: clip the weights to [0, 1] (default). The network's score maps
      are unconstrained linear outputs trained towards {0, 1} targets, so a
      window mean can leave [0, 1]; a weight is a confidence, and the
      refinement uses w^2, where a negative mean would otherwise count as
      reliable.

  Returns:
    [B, N] float32 weights: the mean score of map ``i`` over the in-bounds
    part of the window centred on landmark ``i`` (see the module docstring
    for the divisor).
  """
  chex.assert_rank(score_maps, 4)
  chex.assert_rank(points, 3)
  batch, _, _, num_points = score_maps.shape
  chex.assert_shape(points, (batch, num_points, 2))
  if radius < 0:
    raise ValueError(f"radius must be >= 0, got {radius}")
  score_maps = score_maps.astype(jnp.float32)
  out = jax.vmap(_weights_one, in_axes=(0, 0, None))(
      score_maps, points.astype(jnp.float32), radius)
  chex.assert_shape(out, (batch, num_points))
  return jnp.clip(out, 0.0, 1.0) if clip else out
