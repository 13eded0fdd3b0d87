"""Machine-readable records: ``results.json`` and ``predictions_<split>.npz``.

``results.json`` holds every number (fractions, not percent; ``null`` where a
metric is undefined, e.g. no occluded point): the thresholds, the
normalisations, the published numbers and, per split, the output of
``summary.compute_metrics``. ``predictions_<split>.npz`` holds the per-face
arrays of a split and its per-image NMEs (no pickle needed to read it).
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, Mapping

import numpy as np

from sgfan_jax.reporting.paper import PAPER_300W_NME, PAPER_COFW
from sgfan_jax.reporting.splits import SplitResult

NORMALIZATION_DOCS = {
    "inter_pupil": "distance between the means of the layout's "
                   "left_eye and right_eye points (paper Table 1)",
    "inter_ocular": "distance between the layout's outer eye corners "
                    "(COFW-68 convention)",
    "bbox": "sqrt(w * h) of the face box (or gt landmark box)",
}


def jsonable(x):
  """Converts numpy scalars/arrays to JSON types; NaN/inf -> None."""
  if isinstance(x, Mapping):
    return {str(k): jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [jsonable(v) for v in x]
  if isinstance(x, np.ndarray):
    return jsonable(x.tolist())
  if isinstance(x, (bool, np.bool_)):
    return bool(x)
  if isinstance(x, (int, np.integer)):
    return int(x)
  if isinstance(x, (float, np.floating)):
    return float(x) if math.isfinite(x) else None
  return x


def write_results_json(path: str, all_metrics: Mapping[str, Dict[str, Any]],
                       thresholds: Mapping[str, float],
                       layout_name: str) -> str:
  """Writes ``results.json`` (split name -> compute_metrics output)."""
  doc = {
      "layout": layout_name,
      "units": "NME, failure and success rates and AUC are fractions",
      "thresholds": dict(thresholds),
      "normalizations": NORMALIZATION_DOCS,
      "published": {"300w_table1_ours_nme_percent_inter_pupil": PAPER_300W_NME,
                    "cofw68_percent": PAPER_COFW},
      "splits": dict(all_metrics),
  }
  with open(path, "w") as f:
    json.dump(jsonable(doc), f, indent=2, allow_nan=False)
  return path


def write_predictions(path: str, result: SplitResult,
                      per_image: Mapping[str, np.ndarray]) -> str:
  """Writes a split's ``.npz``: ``gt``, ``baseline``, ``refined``,
  ``weights``, ``file_names``, optional ``visible`` and ``boxes``, and
  ``nme_<method>_<subset>_<normalization>`` per image."""
  arrays = dict(gt=result.gt, baseline=result.baseline,
                refined=result.refined, weights=result.weights,
                file_names=np.array(result.file_names))
  if result.visible is not None:
    arrays["visible"] = result.visible
  if result.boxes is not None:
    arrays["boxes"] = result.boxes
  arrays.update({f"nme_{k}": v for k, v in per_image.items()})
  np.savez(path, **arrays)
  return path
