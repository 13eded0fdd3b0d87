"""Aggregation: the per-image NMEs of a split and every number derived.

Per-image NMEs are computed once per split (:func:`per_image_nme`) and
shared by the metrics (:func:`compute_metrics`), the ``.npz`` file, the CED
plot and the face titles.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import numpy as np

from sgfan_jax import metrics
from sgfan_jax.reporting.splits import METHODS, SplitResult


def point_subsets(result: SplitResult) -> Dict[str, Optional[np.ndarray]]:
  """Point subsets of a split: 'all' (None = every point), and with
  occluded points 'visible' / 'occluded' ([M, N] bool masks)."""
  subsets = {"all": None}
  if result.has_occlusion:
    subsets["visible"] = result.visible
    subsets["occluded"] = ~result.visible
  return subsets


def per_image_nme(result: SplitResult, layout) -> Dict[str, np.ndarray]:
  """Per-image NMEs: keys '<method>_<subset>_<normalization>' -> [M]."""
  out = {}
  for method in METHODS:
    for subset, mask in point_subsets(result).items():
      for norm in metrics.NORMALIZATIONS:
        out[f"{method}_{subset}_{norm}"] = metrics.nme(
            result.predictions(method), result.gt, norm, visible=mask,
            layout=layout, boxes=result.boxes)
  return out


def compute_metrics(result: SplitResult, per_image: Mapping[str, np.ndarray],
                    layout_name: str, *, failure_threshold: float,
                    auc_threshold: float, weight_threshold: float
                    ) -> Dict[str, Any]:
  """Every number of one split.

  Args:
    result: the split's arrays.
    per_image: its :func:`per_image_nme`.
    layout_name: landmark layout name (recorded in the output).
    failure_threshold, auc_threshold: see ``metrics.summarize``.
    weight_threshold: "weight < t" = predicted occluded.

  Returns:
    dict with 'num_images', 'num_points', 'layout', 'has_occlusion', and
    'methods' -> {'baseline'|'refined' -> {'all'|'visible'|'occluded' ->
    {'inter_pupil'|'inter_ocular'|'bbox' -> metrics.summarize(...)}}}
    ('visible' / 'occluded' only with occluded points); 'weights' (mean
    weight overall / of visible / of occluded points); with occluded points
    also 'occlusion_detection' (metrics.occlusion_detection at
    weight_threshold plus 'pr_curve' and 'average_precision').
  """
  methods = {}
  for method in METHODS:
    methods[method] = {}
    for subset in point_subsets(result):
      methods[method][subset] = {
          norm: metrics.summarize(per_image[f"{method}_{subset}_{norm}"],
                                  failure_threshold, auc_threshold)
          for norm in metrics.NORMALIZATIONS}
  out = {
      "num_images": result.num_images,
      "num_points": int(result.gt.shape[1]),
      "layout": layout_name,
      "has_occlusion": result.has_occlusion,
      "methods": methods,
      "weights": {"mean": float(result.weights.mean())},
  }
  if result.has_occlusion:
    out["weights"]["mean_visible"] = float(
        result.weights[result.visible].mean())
    out["weights"]["mean_occluded"] = float(
        result.weights[~result.visible].mean())
    det = metrics.occlusion_detection(result.weights, result.visible,
                                      weight_threshold)
    curve = metrics.occlusion_pr_curve(result.weights, result.visible)
    det["average_precision"] = curve["average_precision"]
    det["pr_curve"] = {k: curve[k].tolist()
                       for k in ("thresholds", "precision", "recall", "f1")}
    out["occlusion_detection"] = det
  return out
