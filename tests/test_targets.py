"""Targets (Sec. 3.2) against a naive numpy renderer."""

import numpy as np
import pytest

from sgfan_jax import targets


def naive_targets(points, size, sigma, radius):
  n = len(points)
  heat = np.zeros((size, size, n), np.float64)
  score = np.zeros((size, size, n), np.float64)
  for k, (x, y) in enumerate(points):
    if not (-0.5 <= x < size - 0.5 and -0.5 <= y < size - 0.5):
      continue
    for i in range(size):
      for j in range(size):
        d2 = (j - x) ** 2 + (i - y) ** 2
        heat[i, j, k] = np.exp(-d2 / (2 * sigma ** 2))
        score[i, j, k] = 1.0 if d2 <= radius ** 2 else 0.0
  return heat, score


def test_targets_match_naive_reference():
  rng = np.random.default_rng(0)
  size, sigma, radius = 24, 1.5, 3
  pts = rng.uniform(-4, size + 4, size=(2, 7, 2)).astype(np.float32)
  pts[0, 0] = (3.0, 5.0)       # integer point: peak exactly 1
  heat, score = targets.render_targets(pts, size, sigma, radius)
  assert heat.shape == (2, size, size, 7) and score.shape == heat.shape
  for b in range(2):
    ref_h, ref_s = naive_targets(pts[b], size, sigma, radius)
    np.testing.assert_allclose(np.asarray(heat[b]), ref_h, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(score[b]), ref_s)
  assert float(heat[0, 5, 3, 0]) == pytest.approx(1.0)
  # A radius-3 disc holds 29 pixel centres.
  assert float(score[0, :, :, 0].sum()) == 29


def test_outside_landmarks_give_zero_maps():
  pts = np.array([[[-3.0, 10.0], [10.0, 40.0], [10.0, 10.0]]], np.float32)
  heat, score = targets.render_targets(pts, 32, 2.0, 3)
  assert float(np.abs(heat[0, ..., :2]).max()) == 0.0
  assert float(np.abs(score[0, ..., :2]).max()) == 0.0
  assert float(heat[0, ..., 2].max()) == pytest.approx(1.0)


def test_invalid_flag_zeroes_map():
  pts = np.array([[[5.0, 5.0], [9.0, 9.0]]], np.float32)
  heat, score = targets.render_targets(pts, 16, 1.0, 2,
                                       valid=np.array([[True, False]]))
  assert float(heat[0, ..., 1].max()) == 0.0
  assert float(score[0, ..., 0].max()) == 1.0
