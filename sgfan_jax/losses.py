"""The training loss, paper Eq. 3.

  Loss = 1/2 sum_n sum_k ||H_k - H^_k||^2 + lambda/2 sum_n sum_k ||S_k - S^_k||^2

summed over the samples n, the landmarks k and every pixel of each map.
"""

import jax.numpy as jnp


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
