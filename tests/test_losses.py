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
