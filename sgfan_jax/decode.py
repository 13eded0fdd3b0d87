"""Landmark decoding from heatmaps, paper Eq. 4.

``Z_k = argmax_p H_k(p)`` gives integer pixel positions (error up to
sqrt(0.5) = 0.71 px for a point between pixels). The optional sub-pixel step
fits a parabola to the log of the heatmap at the argmax and its two
neighbours along each axis: exact for a Gaussian peak, which is what the
network is trained to output.
"""

import jax
import jax.numpy as jnp

_LOG_FLOOR = 1e-6


def argmax_points(heatmaps):
  """Eq. 4. heatmaps [B, H, W, N] -> (points [B, N, 2] float (x, y), peak [B, N])."""
  b, h, w, n = heatmaps.shape
  flat = heatmaps.reshape(b, h * w, n)
  idx = jnp.argmax(flat, axis=1)                              # [B, N]
  peak = jnp.take_along_axis(flat, idx[:, None, :], axis=1)[:, 0]
  points = jnp.stack([idx % w, idx // w], axis=-1).astype(jnp.float32)
  return points, peak


def _parabola_offset(left, centre, right):
  """Vertex offset of the parabola through (-1, l), (0, c), (1, r), in [-0.5, 0.5]."""
  denom = left - 2.0 * centre + right
  offset = jnp.where(denom < 0, 0.5 * (left - right) / jnp.where(
      denom < 0, denom, -1.0), 0.0)
  return jnp.clip(offset, -0.5, 0.5)


def subpixel_points(heatmaps, points):
  """Refines integer argmax points [B, N, 2] on heatmaps [B, H, W, N].

  Uses log-heatmap parabolas along x and y; points on the border keep their
  integer coordinate along that axis.
  """
  b, h, w, n = heatmaps.shape
  logh = jnp.log(jnp.maximum(heatmaps, _LOG_FLOOR))
  xi = points[..., 0].astype(jnp.int32)
  yi = points[..., 1].astype(jnp.int32)

  def at(ys, xs):
    ys = jnp.clip(ys, 0, h - 1)
    xs = jnp.clip(xs, 0, w - 1)
    bi = jnp.arange(b)[:, None]
    ni = jnp.arange(n)[None, :]
    return logh[bi, ys, xs, ni]                               # [B, N]

  c = at(yi, xi)
  dx = _parabola_offset(at(yi, xi - 1), c, at(yi, xi + 1))
  dy = _parabola_offset(at(yi - 1, xi), c, at(yi + 1, xi))
  dx = jnp.where((xi > 0) & (xi < w - 1), dx, 0.0)
  dy = jnp.where((yi > 0) & (yi < h - 1), dy, 0.0)
  return points + jnp.stack([dx, dy], axis=-1)


def decode_heatmaps(heatmaps, subpixel: bool):
  """heatmaps [B, H, W, N] -> (points [B, N, 2], peak values [B, N])."""
  points, peak = argmax_points(heatmaps)
  if subpixel:
    points = subpixel_points(heatmaps, points)
  return points, peak
