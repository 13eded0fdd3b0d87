"""Training targets rendered on device (paper Sec. 3.2).

* Heatmap: an unnormalised Gaussian (peak 1) of std ``sigma`` pixels at the
  landmark.
* Score map: binary, 1 within radius ``r`` pixels of the landmark (distance
  <= r), 0 elsewhere.

Maps are evaluated at pixel centres (DESIGN.md: pixel (i, j) is at x=j, y=i).
A landmark outside the map (x or y outside [-0.5, size - 0.5)) or flagged
invalid gives an all-zero heatmap and score map, not an error.
"""

import functools

import jax
import jax.numpy as jnp


def _inside(points, size):
  """points [..., N, 2] -> bool [..., N]: inside the map's pixel area."""
  return jnp.all((points >= -0.5) & (points < size - 0.5), axis=-1)


def render_heatmaps(points, size: int, sigma: float, valid=None):
  """Gaussian heatmaps for one face.

  Args:
    points: [N, 2] (x, y) landmark coordinates in map pixels.
    size: map side H = W.
    sigma: Gaussian standard deviation in pixels.
    valid: optional [N] bool; False gives an all-zero map.

  Returns:
    [size, size, N] float32; separable: exp(-dy^2/2s^2) * exp(-dx^2/2s^2).
  """
  grid = jnp.arange(size, dtype=jnp.float32)
  gx = jnp.exp(-(grid[:, None] - points[None, :, 0]) ** 2 / (2 * sigma ** 2))
  gy = jnp.exp(-(grid[:, None] - points[None, :, 1]) ** 2 / (2 * sigma ** 2))
  keep = _inside(points, size)
  if valid is not None:
    keep = keep & valid
  return jnp.einsum("hn,wn->hwn", gy, gx * keep[None, :])


def render_score_maps(points, size: int, radius: float, valid=None):
  """Binary score maps for one face.

  Args:
    points: [N, 2] (x, y) landmark coordinates in map pixels.
    size: map side.
    radius: r; pixels with distance <= r to the landmark are 1.
    valid: optional [N] bool; False gives an all-zero map.

  Returns:
    [size, size, N] float32 in {0, 1}.
  """
  grid = jnp.arange(size, dtype=jnp.float32)
  dx2 = (grid[:, None] - points[None, :, 0]) ** 2       # [W, N]
  dy2 = (grid[:, None] - points[None, :, 1]) ** 2       # [H, N]
  keep = _inside(points, size)
  if valid is not None:
    keep = keep & valid
  inside = (dy2[:, None, :] + dx2[None, :, :]) <= radius ** 2
  return (inside & keep[None, None, :]).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("size", "sigma", "radius"))
def render_targets(points, size: int, sigma: float, radius: float,
                   valid=None):
  """Batched targets: points [B, N, 2] -> (heatmaps, scores) [B, size, size, N].

  ``valid`` [B, N] bool or None.
  """
  if valid is None:
    valid = jnp.ones(points.shape[:2], bool)
  heat = jax.vmap(render_heatmaps, in_axes=(0, None, None, 0))(
      points, size, sigma, valid)
  score = jax.vmap(render_score_maps, in_axes=(0, None, None, 0))(
      points, size, radius, valid)
  return heat, score
