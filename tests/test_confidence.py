"""Tests of sgfan_jax.weights (Eq. 1) against a naive numpy loop."""

import numpy as np
import pytest

from sgfan_jax import confidence


def naive_weights(score_maps, points, radius):
  """Loop-by-loop Eq. 1 with in-bounds divisor: [B,H,W,N], [B,N,2] -> [B,N]."""
  b_size, height, width, n_points = score_maps.shape
  out = np.zeros((b_size, n_points))
  for b in range(b_size):
    for i in range(n_points):
      x = int(np.floor(points[b, i, 0] + 0.5))
      y = int(np.floor(points[b, i, 1] + 0.5))
      x = min(max(x, 0), width - 1)
      y = min(max(y, 0), height - 1)
      total, count = 0.0, 0
      for yy in range(y - radius, y + radius + 1):
        for xx in range(x - radius, x + radius + 1):
          if 0 <= xx < width and 0 <= yy < height:
            total += score_maps[b, yy, xx, i]
            count += 1
      out[b, i] = total / count
  return out


def disc_maps(points, height, width, disc_radius):
  """Binary disc targets (value 1 within disc_radius of the point)."""
  ys, xs = np.mgrid[0:height, 0:width]
  b_size, n_points, _ = points.shape
  maps = np.zeros((b_size, height, width, n_points), np.float32)
  for b in range(b_size):
    for i in range(n_points):
      d2 = (xs - points[b, i, 0]) ** 2 + (ys - points[b, i, 1]) ** 2
      maps[b, :, :, i] = d2 <= disc_radius ** 2
  return maps


@pytest.mark.parametrize("radius", [0, 1, 3])
def test_matches_naive_loop(radius):
  rng = np.random.default_rng(radius)
  maps = rng.uniform(size=(3, 16, 20, 5)).astype(np.float32)
  # Points inside, on and beyond the border, and at x.5 (rounding).
  points = rng.uniform(-3.0, 22.0, size=(3, 5, 2)).astype(np.float32)
  points[0, 0] = [0.0, 0.0]
  points[0, 1] = [19.0, 15.0]
  points[0, 2] = [4.5, 7.5]
  points[1, 3] = [-10.0, 40.0]
  got = np.asarray(confidence.landmark_confidence(maps, points, radius=radius))
  np.testing.assert_allclose(got, naive_weights(maps, points, radius),
                             rtol=1e-5, atol=1e-6)


def test_hand_computed_values():
  # 1 face, 1 landmark, 5x5 map with values 0..24 (row-major).
  maps = np.arange(25, dtype=np.float32).reshape(1, 5, 5, 1)
  # Centre (2, 2), r = 1: mean of rows 1-3, cols 1-3 = mean(6,7,8,11,...,18).
  w = confidence.landmark_confidence(maps, np.array([[[2.2, 1.6]]]), radius=1, clip=False)
  assert float(w[0, 0]) == pytest.approx(12.0)
  # Corner (0, 0), r = 1: in-bounds pixels (0,0),(0,1),(1,0),(1,1) -> 0,1,5,6.
  w = confidence.landmark_confidence(maps, np.array([[[0.0, 0.0]]]), radius=1, clip=False)
  assert float(w[0, 0]) == pytest.approx(3.0)


def test_perfect_disc_gives_one_inside_and_on_border():
  score_radius = 3
  radius = confidence.default_weight_radius(score_radius)
  assert radius == 2
  pts = np.array([[[10.0, 12.0], [0.0, 7.0], [31.0, 31.0]]], np.float32)
  maps = disc_maps(pts, 32, 32, score_radius)
  w = np.asarray(confidence.landmark_confidence(maps, pts, radius=radius))
  np.testing.assert_allclose(w, 1.0)
  # The literal (2r+1)^2 window of r = score_radius is only partly covered.
  w3 = np.asarray(confidence.landmark_confidence(maps, pts, radius=score_radius))
  assert w3[0, 0] == pytest.approx(29 / 49)
  # An empty score map (occluded point) gives 0.
  w0 = confidence.landmark_confidence(np.zeros_like(maps), pts, radius=radius)
  np.testing.assert_allclose(np.asarray(w0), 0.0)


def test_shape_check():
  with pytest.raises(Exception):
    confidence.landmark_confidence(np.zeros((2, 8, 8, 3)), np.zeros((2, 4, 2)), 1)


def test_weights_are_clipped_confidences():
  """Raw network score maps leave [0, 1]; weights must not."""
  maps = np.zeros((1, 9, 9, 3), np.float32)
  maps[0, :, :, 0] = -0.7       # negative mean -> 0 (unreliable)
  maps[0, :, :, 1] = 1.6        # above one -> 1
  maps[0, :, :, 2] = 0.4
  pts = np.full((1, 3, 2), 4.0, np.float32)
  w = np.asarray(confidence.landmark_confidence(maps, pts, 1))
  np.testing.assert_allclose(w[0], [0.0, 1.0, 0.4], atol=1e-6)
  raw = np.asarray(confidence.landmark_confidence(maps, pts, 1, clip=False))
  np.testing.assert_allclose(raw[0], [-0.7, 1.6, 0.4], atol=1e-6)
