"""Eq. 3 against a hand-computed value."""

import numpy as np
import pytest

from sgfan_jax import losses


def test_eq3_hand_computed():
  # One sample, 2x2 maps, one landmark.
  h = np.array([[1.0, 0.0], [0.5, 0.0]]).reshape(1, 2, 2, 1)
  h_gt = np.array([[0.0, 0.0], [0.0, 2.0]]).reshape(1, 2, 2, 1)
  s = np.array([[1.0, 1.0], [0.0, 0.0]]).reshape(1, 2, 2, 1)
  s_gt = np.array([[1.0, 0.0], [1.0, 0.0]]).reshape(1, 2, 2, 1)
  # heatmap: 0.5 * (1 + 0.25 + 4) = 2.625 ; score: 0.5 * (1 + 1) = 1.0
  out = losses.sgfan_loss(h, s, h_gt, s_gt, loss_lambda=0.3)
  assert float(out["heatmap"][0]) == pytest.approx(2.625)
  assert float(out["score"][0]) == pytest.approx(1.0)
  assert float(out["total"][0]) == pytest.approx(2.625 + 0.3 * 1.0)


def test_eq3_sums_over_samples_and_landmarks():
  rng = np.random.default_rng(1)
  a, b, c, d = (rng.normal(size=(3, 4, 4, 5)) for _ in range(4))
  out = losses.sgfan_loss(a, b, c, d, loss_lambda=2.0)
  ref = 0.5 * ((a - c) ** 2).sum() + 2.0 / 2 * ((b - d) ** 2).sum()
  assert float(out["total"].sum()) == pytest.approx(ref, rel=1e-5)


def _awing_naive(y_hat, y):
  """Adaptive Wing, one element, transcribed from Wang et al. 2019 Eq. 6."""
  omega, theta, eps, alpha = 14.0, 0.5, 1.0, 2.1
  d = abs(y - y_hat)
  if d < theta:
    return omega * np.log(1 + (d / eps) ** (alpha - y))
  a = (omega * (1 / (1 + (theta / eps) ** (alpha - y))) * (alpha - y) *
       (theta / eps) ** (alpha - y - 1) * (1 / eps))
  c = theta * a - omega * np.log(1 + (theta / eps) ** (alpha - y))
  return a * d - c


def test_adaptive_wing_matches_the_paper_formula_and_is_continuous():
  rng = np.random.default_rng(0)
  y = rng.uniform(0, 1, size=200)
  y_hat = y + rng.uniform(-1.5, 1.5, size=200)
  got = np.asarray(losses.adaptive_wing(y_hat, y))
  ref = np.array([_awing_naive(p, t) for p, t in zip(y_hat, y)])
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
  # Continuous at |y - y^| = theta (the two branches meet).
  for t in (0.0, 0.3, 1.0):
    below = float(losses.adaptive_wing(np.float32(t + 0.5 - 1e-4), t))
    above = float(losses.adaptive_wing(np.float32(t + 0.5 + 1e-4), t))
    assert abs(below - above) < 5e-3


def test_awing_weight_map_dilates_the_foreground():
  t = np.zeros((1, 5, 5, 1), np.float32)
  t[0, 2, 2, 0] = 1.0
  w = np.asarray(losses.awing_weight_map(t))[0, :, :, 0]
  ref = np.ones((5, 5))
  ref[1:4, 1:4] = 11.0
  np.testing.assert_array_equal(w, ref)


def test_training_loss_variants_against_naive_sums():
  rng = np.random.default_rng(2)
  h, s = rng.uniform(size=(2, 3, 6, 6, 4)).astype(np.float32)
  h_gt, s_gt = rng.uniform(size=(2, 3, 6, 6, 4)).astype(np.float32)
  # Defaults: the objective is Eq. 3.
  out = losses.training_loss(h, s, h_gt, s_gt, loss_lambda=0.5)
  np.testing.assert_allclose(out["objective"], out["total"], rtol=1e-6)
  # Foreground weight w: 1/2 sum (1 + w H^) (H - H^)^2 + lambda/2 sum (S-S^)^2.
  out = losses.training_loss(h, s, h_gt, s_gt, loss_lambda=0.5,
                             heatmap_fg_weight=5.0)
  ref = (0.5 * ((1 + 5 * h_gt) * (h - h_gt) ** 2).sum((1, 2, 3)) +
         0.25 * ((s - s_gt) ** 2).sum((1, 2, 3)))
  np.testing.assert_allclose(out["objective"], ref, rtol=1e-5)
  # The logged Eq. 3 terms do not change with the objective.
  np.testing.assert_allclose(out["heatmap"],
                             0.5 * ((h - h_gt) ** 2).sum((1, 2, 3)), rtol=1e-5)
  # Normalised: an all-zero prediction costs 1 + lambda per sample (mean).
  zeros = np.zeros_like(h)
  out = losses.training_loss(zeros, zeros, h_gt, s_gt, loss_lambda=0.5,
                             normalize=True)
  assert float(out["objective"].mean()) == pytest.approx(1.5, rel=1e-5)
  with pytest.raises(ValueError, match="heatmap_loss"):
    losses.training_loss(h, s, h_gt, s_gt, loss_lambda=1.0,
                         heatmap_loss="l1")
