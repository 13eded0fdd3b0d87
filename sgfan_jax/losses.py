"""The training loss: paper Eq. 3 and the recipe variants of issue 18.

  Loss = 1/2 sum_n sum_k ||H_k - H^_k||^2 + lambda/2 sum_n sum_k ||S_k - S^_k||^2

summed over the samples n, the landmarks k and every pixel of each map.

Variants (``config.heatmap_loss``, ``heatmap_fg_weight``, ``loss_normalize``;
all off by default = Eq. 3 exactly):

* ``heatmap_fg_weight`` w: the heatmap term's squared errors are weighted by
  ``1 + w * H^`` per pixel (foreground-weighted MSE: the few pixels near a
  landmark count more than the empty background).
* ``heatmap_loss='awing'``: the Adaptive Wing loss of Wang et al., ICCV 2019
  (Eq. 6 there; omega 14, theta 0.5, epsilon 1, alpha 2.1), with its
  weighted loss map (weight ``W + 1`` on pixels within the 3x3-dilated
  region where ``H^ >= 0.2``; W = 10), in place of the squared error.
* ``loss_normalize``: each term is divided by its targets' energy over the
  batch (``1/2 sum H^^2`` and ``1/2 sum S^^2``), i.e. by the loss of an
  all-zero prediction, so both terms start at 1 and lambda weighs relative
  errors (the raw score term is ~4x the heatmap term: issue 18). With
  'awing' the heatmap term is divided by the same MSE energy (a constant
  scale, so it does not start at 1).

The logged 'heatmap' / 'score' terms are always the paper's squared errors,
so runs with different objectives stay comparable.
"""

import jax
import jax.numpy as jnp

# Adaptive Wing (Wang et al. 2019, Sec. 4 and 5.2 defaults).
AWING_OMEGA = 14.0
AWING_THETA = 0.5
AWING_EPSILON = 1.0
AWING_ALPHA = 2.1
AWING_MAP_WEIGHT = 10.0
AWING_MAP_THRESHOLD = 0.2


def sgfan_loss(heatmaps, scores, heatmaps_gt, scores_gt, loss_lambda: float):
  """Per-sample Eq. 3 terms.

  Args:
    heatmaps, scores: predictions [B, H, W, N].
    heatmaps_gt, scores_gt: targets [B, H, W, N].
    loss_lambda: lambda, the weight of the score-map term.

  Returns:
    dict of [B] arrays: 'heatmap' = 1/2 ||H - H^||^2, 'score' = 1/2 ||S - S^||^2
    and 'total' = heatmap + lambda * score. Eq. 3 is ``total.sum()``.
  """
  heat = 0.5 * jnp.sum(jnp.square(heatmaps - heatmaps_gt), axis=(1, 2, 3))
  score = 0.5 * jnp.sum(jnp.square(scores - scores_gt), axis=(1, 2, 3))
  return {"heatmap": heat, "score": score, "total": heat + loss_lambda * score}


def adaptive_wing(pred, target):
  """Element-wise Adaptive Wing loss (Wang et al. 2019, Eq. 6).

  ``AWing(y, y^) = omega ln(1 + |y - y^| / eps)^(alpha - y)`` for
  ``|y - y^| < theta``, else ``A |y - y^| - C`` with A and C making it
  continuous and smooth at theta. ``y`` is the target. Same shape in and out.
  """
  diff = jnp.abs(target - pred)
  power = AWING_ALPHA - target
  small = AWING_OMEGA * jnp.log1p(jnp.power(diff / AWING_EPSILON, power))
  t = AWING_THETA / AWING_EPSILON
  a = (AWING_OMEGA * (1.0 / (1.0 + jnp.power(t, power))) * power *
       jnp.power(t, power - 1.0) / AWING_EPSILON)
  c = AWING_THETA * a - AWING_OMEGA * jnp.log1p(jnp.power(t, power))
  return jnp.where(diff < AWING_THETA, small, a * diff - c)


def awing_weight_map(target):
  """Wang et al.'s loss weight map: ``W + 1`` on the 3x3 dilation of
  ``target >= 0.2`` (per landmark map), 1 elsewhere. [B, H, W, N] in/out."""
  mask = (target >= AWING_MAP_THRESHOLD).astype(target.dtype)
  dilated = jax.lax.reduce_window(mask, 0.0, jax.lax.max, (1, 3, 3, 1),
                                  (1, 1, 1, 1), "SAME")
  return 1.0 + AWING_MAP_WEIGHT * dilated


def training_loss(heatmaps, scores, heatmaps_gt, scores_gt, *,
                  loss_lambda: float, heatmap_loss: str = "mse",
                  heatmap_fg_weight: float = 0.0,
                  normalize: bool = False):
  """The optimised objective per sample, and the paper's Eq. 3 terms.

  Args:
    heatmaps, scores, heatmaps_gt, scores_gt: [B, H, W, N].
    loss_lambda: weight of the score term.
    heatmap_loss: 'mse' (Eq. 3) or 'awing'.
    heatmap_fg_weight: foreground weight w of the heatmap MSE (0 = Eq. 3).
    normalize: divide each term by its targets' energy over the batch.

  Returns:
    dict of [B] arrays: 'objective' (what is minimised; its sum over the
    batch is the loss), and Eq. 3's 'heatmap', 'score', 'total'.
  """
  terms = sgfan_loss(heatmaps, scores, heatmaps_gt, scores_gt, loss_lambda)
  axes = (1, 2, 3)
  if heatmap_loss == "mse":
    err = jnp.square(heatmaps - heatmaps_gt)
    if heatmap_fg_weight:
      err = err * (1.0 + heatmap_fg_weight * heatmaps_gt)
    heat = 0.5 * jnp.sum(err, axis=axes)
  elif heatmap_loss == "awing":
    heat = jnp.sum(adaptive_wing(heatmaps, heatmaps_gt) *
                   awing_weight_map(heatmaps_gt), axis=axes)
  else:
    raise ValueError(f"heatmap_loss must be 'mse' or 'awing', got "
                     f"{heatmap_loss!r}")
  score = terms["score"]
  if normalize:
    b = heatmaps.shape[0]
    heat_energy = 0.5 * jnp.sum(jnp.square(heatmaps_gt)) / b
    score_energy = 0.5 * jnp.sum(jnp.square(scores_gt)) / b
    heat = heat / jnp.maximum(heat_energy, 1e-6)
    score = score / jnp.maximum(score_energy, 1e-6)
  return dict(terms, objective=heat + loss_lambda * score)
