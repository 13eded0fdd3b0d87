"""Landmark-localisation metrics (host-side numpy): NME, failure, AUC, CED.

Conventions (all error values are fractions, e.g. 0.0578 = 5.78 %):

* **NME** of one image (paper Eq. 5, per image) is the mean over its landmarks
  of the point-to-point Euclidean error, divided by a normalising distance
  measured on the ground truth:

  - ``'inter_pupil'``: distance between the eye centres, each the mean of the
    layout's ``left_eye`` / ``right_eye`` points (68-pt: 1-based 37-42 and
    43-48; 29-pt COFW: the annotated pupils; 98-pt WFLW: points 96 / 97).
    The SGFAN paper's 300-W Table 1 uses this normalisation (Sec. 4.2).
  - ``'inter_ocular'``: distance between the layout's ``outer_eye_corners``
    (68-pt: 1-based 37 and 46). COFW-68 is reported with this normalisation
    and failure at NME > 0.10 (Ghiasi and Fowlkes 2015 and the works that
    follow them); the 300-W AUC is usually computed up to NME 0.08.
  - ``'bbox'``: ``sqrt(w * h)`` of the ground-truth face box, from ``boxes``
    ``[M, 4]`` = ``(x0, y0, x1, y1)`` when given, else of the bounding box of
    the ground-truth landmarks.

* **Point subsets.** ``visible`` ``[M, N]`` bool selects the points the mean
  runs over (pass ``~visible`` for occluded-only errors). The normalising
  distance always uses all ground-truth points. An image with no selected
  point has NME ``NaN``.

* **NaN policy of the aggregates.** ``mean_nme``, ``failure_rate``,
  ``success_rate``, ``ced`` and ``auc`` ignore ``NaN`` entries (images with
  no selected point), i.e. every fraction is over the images that have an
  NME; ``count_valid`` says how many that is. With no valid image they return
  ``NaN``. ``+inf`` is a valid (failed) error. Negative values raise.

The point sets come from ``sgfan_jax.layouts`` metadata; nothing here branches
on the number of points.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Union

import numpy as np

from sgfan_jax import layouts as layouts_lib

NORMALIZATIONS = ("inter_pupil", "inter_ocular", "bbox")

LayoutLike = Union[None, str, int, layouts_lib.LandmarkLayout]


def resolve_layout(layout: LayoutLike,
                   num_points: int) -> layouts_lib.LandmarkLayout:
  """Returns the LandmarkLayout for ``layout`` (object, name, size or None).

  ``None`` looks the layout up by ``num_points``. Raises ValueError when the
  layout does not have ``num_points`` points.
  """
  if layout is None:
    layout = layouts_lib.get_layout(int(num_points))
  elif not isinstance(layout, layouts_lib.LandmarkLayout):
    layout = layouts_lib.get_layout(layout)
  if layout.num_points != num_points:
    raise ValueError(f"layout {layout.name!r} has {layout.num_points} points "
                     f"but the landmarks have {num_points}")
  return layout


def _check_points(name: str, x) -> np.ndarray:
  x = np.asarray(x, dtype=np.float64)
  if x.ndim != 3 or x.shape[-1] != 2:
    raise ValueError(f"{name} must have shape [M, N, 2], got {x.shape}")
  if not np.all(np.isfinite(x)):
    bad = np.argwhere(~np.all(np.isfinite(x), axis=(1, 2)))[:5, 0].tolist()
    raise ValueError(f"{name} contains NaN or inf (first images: {bad})")
  return x


def _check_mask(name: str, mask, shape) -> np.ndarray:
  mask = np.asarray(mask)
  if mask.shape != tuple(shape):
    raise ValueError(f"{name} must have shape {tuple(shape)}, got {mask.shape}")
  if mask.dtype != bool:
    if not np.all(np.isin(mask, (0, 1))):
      raise ValueError(f"{name} must be boolean (or 0/1)")
    mask = mask.astype(bool)
  return mask


def normalizing_distance(gt, normalization: str, layout: LayoutLike = None,
                         boxes=None) -> np.ndarray:
  """Per-image normalising distance measured on the ground truth.

  Args:
    gt: [M, N, 2] ground-truth landmarks (x, y).
    normalization: 'inter_pupil', 'inter_ocular' or 'bbox' (module doc).
    layout: LandmarkLayout, layout name, or None (looked up from N).
    boxes: optional [M, 4] face boxes (x0, y0, x1, y1), used by 'bbox' only;
      without them 'bbox' uses the ground-truth landmark bounding box.

  Returns:
    [M] float64 distances (> 0).

  Raises:
    ValueError: bad shapes, non-finite values, unknown normalisation, or a
      zero distance (degenerate ground truth).
  """
  gt = _check_points("gt", gt)
  lay = resolve_layout(layout, gt.shape[1])
  if normalization == "inter_pupil":
    left = gt[:, list(lay.left_eye)].mean(axis=1)
    right = gt[:, list(lay.right_eye)].mean(axis=1)
    dist = np.linalg.norm(left - right, axis=-1)
  elif normalization == "inter_ocular":
    a, b = lay.outer_eye_corners
    dist = np.linalg.norm(gt[:, a] - gt[:, b], axis=-1)
  elif normalization == "bbox":
    if boxes is not None:
      boxes = np.asarray(boxes, dtype=np.float64)
      if boxes.shape != (gt.shape[0], 4):
        raise ValueError(f"boxes must have shape [{gt.shape[0]}, 4] "
                         f"(x0, y0, x1, y1), got {boxes.shape}")
      if not np.all(np.isfinite(boxes)):
        raise ValueError("boxes contain NaN or inf")
      w = boxes[:, 2] - boxes[:, 0]
      h = boxes[:, 3] - boxes[:, 1]
    else:
      w = gt[..., 0].max(axis=1) - gt[..., 0].min(axis=1)
      h = gt[..., 1].max(axis=1) - gt[..., 1].min(axis=1)
    if np.any(w < 0) or np.any(h < 0):
      raise ValueError("boxes must satisfy x1 >= x0 and y1 >= y0")
    dist = np.sqrt(w * h)
  else:
    raise ValueError(f"unknown normalization {normalization!r}; "
                     f"use one of {NORMALIZATIONS}")
  if np.any(dist <= 0):
    bad = np.flatnonzero(dist <= 0)[:5].tolist()
    raise ValueError(f"zero {normalization} distance for images {bad} "
                     "(degenerate ground truth)")
  return dist


def point_errors(pred, gt, normalization: str, layout: LayoutLike = None,
                 boxes=None) -> np.ndarray:
  """Normalised per-point errors.

  Args:
    pred: [M, N, 2] predicted landmarks.
    gt: [M, N, 2] ground-truth landmarks.
    normalization, layout, boxes: as in ``normalizing_distance``.

  Returns:
    [M, N] float64: ``||pred - gt|| / d`` with d the image's normaliser.
  """
  pred = _check_points("pred", pred)
  gt = _check_points("gt", gt)
  if pred.shape != gt.shape:
    raise ValueError(f"pred {pred.shape} and gt {gt.shape} shapes differ")
  dist = normalizing_distance(gt, normalization, layout, boxes)
  return np.linalg.norm(pred - gt, axis=-1) / dist[:, None]


def nme(pred, gt, normalization: str = "inter_pupil", visible=None,
        layout: LayoutLike = None, boxes=None) -> np.ndarray:
  """Per-image normalised mean error (paper Eq. 5 before averaging over M).

  Args:
    pred: [M, N, 2] predicted landmarks (x, y).
    gt: [M, N, 2] ground-truth landmarks.
    normalization: 'inter_pupil' (paper Table 1, 300-W), 'inter_ocular'
      (COFW-68 convention) or 'bbox'; see the module docstring.
    visible: optional [M, N] bool; the mean runs over the True points only
      (pass ``~visible`` for occluded points). An image with no True point
      gets NaN.
    layout: LandmarkLayout, its name, or None (looked up from N).
    boxes: optional [M, 4] (x0, y0, x1, y1) ground-truth boxes for 'bbox'.

  Returns:
    [M] float64 NME per image (fractions, not percent).
  """
  err = point_errors(pred, gt, normalization, layout, boxes)
  if visible is None:
    return err.mean(axis=1)
  mask = _check_mask("visible", visible, err.shape)
  count = mask.sum(axis=1)
  total = np.where(mask, err, 0.0).sum(axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _check_nme(values) -> np.ndarray:
  """Validates a [M] array of per-image errors and drops NaN entries."""
  values = np.asarray(values, dtype=np.float64)
  if values.ndim != 1:
    raise ValueError(f"per-image NME must have shape [M], got {values.shape}")
  finite_or_inf = values[~np.isnan(values)]
  if np.any(finite_or_inf < 0):
    raise ValueError("per-image NME values must be >= 0")
  return finite_or_inf


def _check_threshold(threshold: float) -> float:
  threshold = float(threshold)
  if not np.isfinite(threshold) or threshold <= 0:
    raise ValueError(f"threshold must be a positive number, got {threshold}")
  return threshold


def count_valid(values) -> int:
  """Number of images with an NME (non-NaN entries of a [M] array)."""
  return int(_check_nme(values).size)


def mean_nme(values) -> float:
  """Mean of per-image NMEs [M] over the non-NaN entries (NaN if none)."""
  v = _check_nme(values)
  return float(v.mean()) if v.size else float("nan")


def failure_rate(values, threshold: float = 0.10) -> float:
  """Fraction of images with NME > threshold (NaN entries ignored).

  COFW-68 convention: inter-ocular NME, threshold 0.10.

  Args:
    values: [M] per-image NME.
    threshold: failure threshold (> 0).

  Returns:
    Failure fraction in [0, 1]; NaN when no image has an NME.
  """
  threshold = _check_threshold(threshold)
  v = _check_nme(values)
  return float(np.mean(v > threshold)) if v.size else float("nan")


def success_rate(values, threshold: float = 0.10) -> float:
  """1 - failure_rate: fraction of images with NME <= threshold."""
  return 1.0 - failure_rate(values, threshold)


def ced(values, thresholds) -> np.ndarray:
  """Cumulative error distribution.

  Args:
    values: [M] per-image NME (NaN entries ignored).
    thresholds: [T] error thresholds.

  Returns:
    [T] float64: fraction of images with NME <= t for each t (NaN where no
    image has an NME).
  """
  v = np.sort(_check_nme(values))
  t = np.asarray(thresholds, dtype=np.float64)
  if t.ndim != 1:
    raise ValueError(f"thresholds must have shape [T], got {t.shape}")
  if not v.size:
    return np.full(t.shape, np.nan)
  return np.searchsorted(v, t, side="right") / v.size


def auc(values, threshold: float = 0.08, step: float = 1e-4) -> float:
  """Area under the CED curve on [0, threshold], divided by threshold.

  Integration rule: the CED is sampled at ``t_k = k * step`` for
  ``k = 0..K``, ``K = round(threshold / step)`` (``step`` must divide
  ``threshold``), and integrated with the trapezoid rule. The exact area of
  the step-shaped CED is ``mean_i max(0, threshold - e_i)`` (``exact_auc``);
  the trapezoid value differs from it by at most ``step / (2 threshold)``.
  The usual 300-W setting is threshold 0.08 (inter-ocular NME).

  Args:
    values: [M] per-image NME (NaN entries ignored).
    threshold: upper integration limit (> 0).
    step: grid spacing (> 0, divides threshold).

  Returns:
    AUC in [0, 1]; NaN when no image has an NME.
  """
  threshold = _check_threshold(threshold)
  step = float(step)
  if not np.isfinite(step) or step <= 0:
    raise ValueError(f"step must be positive, got {step}")
  k = int(round(threshold / step))
  if k < 1 or abs(k * step - threshold) > 1e-9 * max(threshold, 1.0):
    raise ValueError(f"step {step} must divide threshold {threshold}")
  grid = np.linspace(0.0, threshold, k + 1)
  curve = ced(values, grid)
  if np.isnan(curve[0]):
    return float("nan")
  area = np.sum((curve[1:] + curve[:-1]) * 0.5) * (threshold / k)
  return float(area / threshold)


def exact_auc(values, threshold: float = 0.08) -> float:
  """Exact normalised area under the step CED: mean max(0, 1 - e / thr)."""
  threshold = _check_threshold(threshold)
  v = _check_nme(values)
  if not v.size:
    return float("nan")
  return float(np.mean(np.maximum(0.0, threshold - v)) / threshold)


def summarize(values, failure_threshold: float = 0.10,
              auc_threshold: float = 0.08) -> Dict[str, float]:
  """All scalar metrics of a [M] per-image NME array.

  Returns:
    dict with 'nme' (mean), 'failure_rate', 'success_rate' (at
    failure_threshold), 'auc' (at auc_threshold), 'num_valid' (images with an
    NME) and 'num_images' (M).
  """
  v = np.asarray(values, dtype=np.float64)
  return {
      "nme": mean_nme(v),
      "failure_rate": failure_rate(v, failure_threshold),
      "success_rate": success_rate(v, failure_threshold),
      "auc": auc(v, auc_threshold),
      "num_valid": count_valid(v),
      "num_images": int(v.shape[0]),
  }


# ----------------------------------------------------------------- occlusion


def _confusion(pred_occ: np.ndarray, occ: np.ndarray) -> Dict[str, float]:
  tp = int(np.sum(pred_occ & occ))
  fp = int(np.sum(pred_occ & ~occ))
  fn = int(np.sum(~pred_occ & occ))
  tn = int(np.sum(~pred_occ & ~occ))
  nan = float("nan")
  precision = tp / (tp + fp) if tp + fp else nan
  recall = tp / (tp + fn) if tp + fn else nan
  if tp + fp and tp + fn and precision + recall > 0:
    f1 = 2 * precision * recall / (precision + recall)
  elif tp + fp and tp + fn:
    f1 = 0.0
  else:
    f1 = nan
  return {
      "precision": float(precision), "recall": float(recall), "f1": float(f1),
      "accuracy": (tp + tn) / max(tp + fp + fn + tn, 1),
      "true_positives": tp, "false_positives": fp,
      "false_negatives": fn, "true_negatives": tn,
      "num_occluded": tp + fn, "num_predicted_occluded": tp + fp,
      "num_points": tp + fp + fn + tn,
  }


def _check_weights(weights, visible):
  w = np.asarray(weights, dtype=np.float64)
  if w.ndim != 2:
    raise ValueError(f"weights must have shape [M, N], got {w.shape}")
  if not np.all(np.isfinite(w)):
    raise ValueError("weights contain NaN or inf")
  vis = _check_mask("visible", visible, w.shape)
  return w, vis


def occlusion_detection(weights, visible, threshold: float) -> Dict[str, float]:
  """Scores "weight < threshold" as a detector of annotated occlusion.

  A point is predicted occluded when its landmark weight (Eq. 1) is below
  ``threshold``; it is truly occluded when ``visible`` is False. Positives are
  occluded points.

  Args:
    weights: [M, N] landmark weights.
    visible: [M, N] bool annotation (False = occluded).
    threshold: weight threshold.

  Returns:
    dict: 'precision' = TP / (TP + FP) (NaN when nothing is predicted
    occluded), 'recall' = TP / (TP + FN) (NaN when nothing is occluded),
    'f1' (NaN when either is undefined, 0 when both are 0), 'accuracy',
    the four confusion counts, 'num_occluded', 'num_predicted_occluded',
    'num_points' and 'threshold'.
  """
  w, vis = _check_weights(weights, visible)
  out = _confusion(w < float(threshold), ~vis)
  out["threshold"] = float(threshold)
  return out


def occlusion_pr_curve(weights, visible,
                       thresholds: Optional[Sequence[float]] = None
                       ) -> Dict[str, np.ndarray]:
  """Precision-recall sweep of ``occlusion_detection`` over thresholds.

  Args:
    weights: [M, N] landmark weights.
    visible: [M, N] bool (False = occluded).
    thresholds: [T] thresholds; default: 101 evenly spaced values from the
      minimum weight to just above the maximum (so the last one flags every
      point).

  Returns:
    dict of [T] arrays 'thresholds', 'precision', 'recall', 'f1'
    (NaN entries where undefined, as in ``occlusion_detection``), plus
    'average_precision' (float): sum over recall increments of precision,
    thresholds visited in increasing order (NaN without occluded points).
  """
  w, vis = _check_weights(weights, visible)
  if thresholds is None:
    lo, hi = float(w.min()), float(w.max())
    hi = hi + max(1e-6, 1e-6 * abs(hi))
    thresholds = np.linspace(lo, hi, 101)
  t = np.asarray(thresholds, dtype=np.float64)
  if t.ndim != 1 or not np.all(np.isfinite(t)):
    raise ValueError("thresholds must be a finite [T] array")
  t = np.sort(t)
  occ = ~vis
  rows = [_confusion(w < ti, occ) for ti in t]
  precision = np.array([r["precision"] for r in rows])
  recall = np.array([r["recall"] for r in rows])
  f1 = np.array([r["f1"] for r in rows])
  if occ.any():
    ap, prev_recall = 0.0, 0.0
    for p, r in zip(precision, recall):
      if r > prev_recall:
        ap += (r - prev_recall) * p
        prev_recall = r
  else:
    ap = float("nan")
  return {"thresholds": t, "precision": precision, "recall": recall,
          "f1": f1, "average_precision": float(ap)}


# ------------------------------------------------ occlusion-flag threshold

# Thresholds swept when a model's flag threshold is chosen
# (scripts/calibrate_flags.py; predict.occluded_threshold).
FLAG_THRESHOLDS = tuple(np.round(np.arange(0.02, 0.701, 0.01), 2))


def flag_threshold_sweep(clean_conf, occ_conf, occ_mask,
                         thresholds=FLAG_THRESHOLDS):
  """Occlusion flags ``confidence < t`` for each threshold ``t``.

  Args:
    clean_conf: ``[F, N]`` confidences of faces with every point visible.
    occ_conf: ``[F', N]`` confidences of occluded faces.
    occ_mask: bool ``[F', N]``, True = the point is under an occluder.
    thresholds: the ``t`` to try.

  Returns:
    rows ``(t, clean_rate, precision, recall, f1)``: the fraction of clean
    points flagged, and the flags' precision / recall / F1 on the occluded
    faces, pooled over points (precision NaN and F1 0 when nothing is
    flagged).
  """
  clean_conf = np.asarray(clean_conf)
  occ_conf = np.asarray(occ_conf)
  occ_mask = np.asarray(occ_mask, bool)
  rows = []
  for t in thresholds:
    flag = occ_conf < t
    tp = float((flag & occ_mask).sum())
    n_flag = float(flag.sum())
    precision = tp / n_flag if n_flag else float("nan")
    recall = tp / max(float(occ_mask.sum()), 1.0)
    f1 = (2 * precision * recall / (precision + recall)
          if n_flag and precision + recall > 0 else 0.0)
    rows.append((float(t), float((clean_conf < t).mean()), precision,
                 recall, f1))
  return rows


def choose_flag_threshold(rows, max_clean_rate: float):
  """The ``flag_threshold_sweep`` row with the best F1 among those flagging
  at most ``max_clean_rate`` of the clean points (ties: the lower t)."""
  ok = [r for r in rows if r[1] <= max_clean_rate]
  if not ok:
    raise ValueError(f"no threshold flags <= {max_clean_rate:.0%} of the "
                     "clean points")
  return max(ok, key=lambda r: (r[4], -r[0]))


def choose_refine_threshold(rows):
  """The refinement threshold with the lowest mean of clean and occluded NME.

  Args:
    rows: ``(t, clean_nme, occluded_nme)`` per tried ``refine.weight_threshold``
      ``t`` (points with Eq. 1 confidence below ``t`` are re-estimated by
      Eq. 2): mean NME of the clean faces and of their occluded copy.

  Returns:
    the chosen row; the clean faces and the occluded copy weigh the same
    (ties: the higher ``t``, the paper's side).
  """
  if not rows:
    raise ValueError("no refinement thresholds to choose from")
  return min(rows, key=lambda r: (0.5 * (r[1] + r[2]), -r[0]))
