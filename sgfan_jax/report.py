"""Evaluation report: results.json, results.md, CED plots, visualisations.

The evaluation loop collects, for every evaluated split, the per-face arrays
in a :class:`SplitResult` and calls :func:`write_report`, which writes into
``workdir``:

* ``results.json``: every number (fractions, not percent; ``null`` where a
  metric is undefined, e.g. no occluded point), see :func:`compute_metrics`;
* ``results.md``: human-readable tables: (a) the paper's Table 1 layout for
  the 300-W splits present (inter-pupil NME, plus inter-ocular NME, failure
  rate and AUC tables), with the published numbers, (b) COFW-68 NME / failure
  / success over all points and visible points only, (c) occlusion detection
  and occluded-point NME where visibility flags exist, and a summary of all
  splits;
* ``ced_<split>.png``: CED curves, baseline vs refined (dashed: visible points
  only, where visibility flags exist);
* ``occlusion_pr_<split>.png``: precision-recall of "weight < t" as occlusion
  detector (splits with occluded points);
* ``predictions_<split>.npz``: per-face arrays (``gt``, ``baseline``,
  ``refined``, ``weights``, ``file_names``, optional ``visible`` and
  ``boxes``, and per-image NMEs ``nme_<method>_<normalization>``);
* ``vis/<split>_<k>.png``: faces with landmarks drawn, when images are given.

``<split>`` is the split name with every character outside
``[A-Za-z0-9_.-]`` replaced by ``_`` (``face300w:test_common`` ->
``face300w_test_common``).

Split names are ``builder:split`` strings (config ``data.eval_splits``);
:func:`split_kind` recognises the 300-W test subsets (``face300w:test_common``
/ ``test_challenging`` / ``test_full`` / ``test_private``) and COFW
(builder name starting with ``cofw``). Any other split appears in the summary
table only. Published-number conventions: Table 1 of the paper uses
inter-pupil NME; COFW-68 is conventionally reported with inter-ocular NME and
failure at NME > 0.10; the 300-W AUC is computed up to 0.08 (inter-ocular).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from sgfan_jax import layouts as layouts_lib
from sgfan_jax import metrics

METHODS = ("baseline", "refined")
METHOD_LABELS = {"baseline": "Baseline (heatmap decoding)",
                 "refined": "Refined (score-guided)"}

# Paper Table 1, row 'Ours': NME (%) with inter-pupil normalisation.
PAPER_300W_NME = {"common": 4.16, "challenging": 7.54, "full": 4.78}
# Paper Sec. 4.4 (COFW-68, all points): NME (%) and success rate (%).
PAPER_COFW = {"baseline": {"nme": 6.29, "success_rate": 94.67},
              "refined": {"nme": 5.78, "success_rate": 97.83}}
_300W_SUBSETS = (("common", "Common"), ("challenging", "Challenging"),
                 ("full", "Full"), ("private", "Private"))


@dataclasses.dataclass
class SplitResult:
  """Per-face evaluation arrays of one split (M faces, N landmarks).

  All landmark arrays must be in the same coordinate frame (e.g. original
  image pixels, 0-based).

  Attributes:
    gt: [M, N, 2] ground-truth landmarks.
    baseline: [M, N, 2] predictions of heatmap decoding alone.
    refined: [M, N, 2] predictions after score-guided refinement.
    weights: [M, N] Eq. 1 landmark weights.
    file_names: [M] source file names.
    visible: optional [M, N] bool (False = annotated occluded).
    boxes: optional [M, 4] face boxes (x0, y0, x1, y1) for 'bbox' NME; None
      uses the ground-truth landmark box.
    images: optional sequence of K uint8 [H, W, 3] images to draw.
    image_indices: optional [K] face index of each image (default 0..K-1).
    image_transforms: optional [K, 2, 3] affine maps from landmark
      coordinates to the image's pixel coordinates (default identity), e.g.
      the inverse of ``crop_to_image`` when the images are the stored crops.
  """
  gt: np.ndarray
  baseline: np.ndarray
  refined: np.ndarray
  weights: np.ndarray
  file_names: Sequence[str]
  visible: Optional[np.ndarray] = None
  boxes: Optional[np.ndarray] = None
  images: Optional[Sequence[np.ndarray]] = None
  image_indices: Optional[Sequence[int]] = None
  image_transforms: Optional[np.ndarray] = None

  def __post_init__(self):
    self.gt = np.asarray(self.gt, dtype=np.float64)
    if self.gt.ndim != 3 or self.gt.shape[-1] != 2:
      raise ValueError(f"gt must have shape [M, N, 2], got {self.gt.shape}")
    m, n = self.gt.shape[:2]
    for name in ("baseline", "refined"):
      arr = np.asarray(getattr(self, name), dtype=np.float64)
      if arr.shape != self.gt.shape:
        raise ValueError(f"{name} must have shape {self.gt.shape} like gt, "
                         f"got {arr.shape}")
      if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
      setattr(self, name, arr)
    if not np.all(np.isfinite(self.gt)):
      raise ValueError("gt contains NaN or inf")
    self.weights = np.asarray(self.weights, dtype=np.float64)
    if self.weights.shape != (m, n):
      raise ValueError(f"weights must have shape {(m, n)}, got "
                       f"{self.weights.shape}")
    if not np.all(np.isfinite(self.weights)):
      raise ValueError("weights contain NaN or inf")
    self.file_names = [str(f) for f in self.file_names]
    if len(self.file_names) != m:
      raise ValueError(f"{len(self.file_names)} file names for {m} faces")
    if self.visible is not None:
      vis = np.asarray(self.visible)
      if vis.shape != (m, n):
        raise ValueError(f"visible must have shape {(m, n)}, got {vis.shape}")
      self.visible = vis.astype(bool)
    if self.boxes is not None:
      self.boxes = np.asarray(self.boxes, dtype=np.float64)
      if self.boxes.shape != (m, 4):
        raise ValueError(f"boxes must have shape {(m, 4)}, got "
                         f"{self.boxes.shape}")
    if self.images is not None:
      k = len(self.images)
      for img in self.images:
        if np.ndim(img) != 3 or np.shape(img)[-1] != 3:
          raise ValueError(f"images must be [H, W, 3], got {np.shape(img)}")
      if self.image_indices is None:
        self.image_indices = list(range(k))
      self.image_indices = [int(i) for i in self.image_indices]
      if len(self.image_indices) != k or any(
          not 0 <= i < m for i in self.image_indices):
        raise ValueError("image_indices must give one face index in [0, M) "
                         "per image")
      if self.image_transforms is not None:
        self.image_transforms = np.asarray(self.image_transforms, np.float64)
        if self.image_transforms.shape != (k, 2, 3):
          raise ValueError(f"image_transforms must have shape {(k, 2, 3)}, "
                           f"got {self.image_transforms.shape}")

  @property
  def num_images(self) -> int:
    return int(self.gt.shape[0])

  @property
  def has_occlusion(self) -> bool:
    """True when visibility flags mark at least one point occluded."""
    return self.visible is not None and bool((~self.visible).any())

  def predictions(self, method: str) -> np.ndarray:
    if method not in METHODS:
      raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return getattr(self, method)


def split_kind(name: str) -> Tuple[str, Optional[str]]:
  """Classifies a 'builder:split' name.

  Returns:
    ('300w', 'common' | 'challenging' | 'full' | 'private' | None),
    ('cofw', None) or ('other', None).
  """
  builder, _, split = name.partition(":")
  builder = builder.lower()
  split = split.lower() or builder
  if "300w" in builder:
    for key in ("common", "challeng", "full", "private"):
      if key in split:
        return "300w", "challenging" if key == "challeng" else key
    return "300w", None
  if builder.startswith("cofw"):
    return "cofw", None
  return "other", None


def safe_name(name: str) -> str:
  """File-name-safe version of a split name."""
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "split"


def _get(config, path: str, default):
  node = config
  for key in path.split("."):
    if node is None:
      return default
    try:
      node = node[key]
    except (KeyError, TypeError, AttributeError):
      node = getattr(node, key, None)
  return default if node is None else node


def _thresholds(config) -> Dict[str, float]:
  return {
      "failure_threshold": float(_get(config, "eval.failure_threshold", 0.10)),
      "auc_threshold": float(_get(config, "eval.auc_threshold", 0.08)),
      "weight_threshold": float(_get(config, "refine.weight_threshold", 0.5)),
  }


def _point_subsets(result: SplitResult) -> Dict[str, Optional[np.ndarray]]:
  subsets = {"all": None}
  if result.has_occlusion:
    subsets["visible"] = result.visible
    subsets["occluded"] = ~result.visible
  return subsets


def per_image_nme(result: SplitResult, layout) -> Dict[str, np.ndarray]:
  """Per-image NMEs: keys '<method>_<subset>_<normalization>' -> [M]."""
  out = {}
  for method in METHODS:
    for subset, mask in _point_subsets(result).items():
      for norm in metrics.NORMALIZATIONS:
        out[f"{method}_{subset}_{norm}"] = metrics.nme(
            result.predictions(method), result.gt, norm, visible=mask,
            layout=layout, boxes=result.boxes)
  return out


def compute_metrics(result: SplitResult, layout, failure_threshold=0.10,
                    auc_threshold=0.08, weight_threshold=0.5
                    ) -> Dict[str, Any]:
  """Every number of one split.

  Returns:
    dict with 'num_images', 'num_points', 'kind', 'has_occlusion', and
    'methods' -> {'baseline'|'refined' -> {'all'|'visible'|'occluded' ->
    {'inter_pupil'|'inter_ocular'|'bbox' -> metrics.summarize(...)}}}
    ('visible' / 'occluded' only with occluded points); 'weights' (mean
    weight overall / of visible / of occluded points); with occluded points
    also 'occlusion_detection' (metrics.occlusion_detection at
    weight_threshold plus 'pr_curve' and 'average_precision').
  """
  lay = metrics.resolve_layout(layout, result.gt.shape[1])
  per_image = per_image_nme(result, lay)
  methods = {}
  for method in METHODS:
    methods[method] = {}
    for subset in _point_subsets(result):
      methods[method][subset] = {
          norm: metrics.summarize(per_image[f"{method}_{subset}_{norm}"],
                                  failure_threshold, auc_threshold)
          for norm in metrics.NORMALIZATIONS}
  out = {
      "num_images": result.num_images,
      "num_points": int(result.gt.shape[1]),
      "layout": lay.name,
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


def _jsonable(x):
  """Converts numpy scalars/arrays to JSON types; NaN/inf -> None."""
  if isinstance(x, Mapping):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.ndarray):
    return _jsonable(x.tolist())
  if isinstance(x, (bool, np.bool_)):
    return bool(x)
  if isinstance(x, (int, np.integer)):
    return int(x)
  if isinstance(x, (float, np.floating)):
    return float(x) if math.isfinite(x) else None
  return x


# --------------------------------------------------------------- markdown


def _pct(x, digits=2) -> str:
  if x is None or not math.isfinite(x):
    return "—"
  return f"{100 * x:.{digits}f}"


def _num(x, digits=4) -> str:
  if x is None or not math.isfinite(x):
    return "—"
  return f"{x:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join(["---"] * len(header)) + "|"]
  lines += ["| " + " | ".join(r) + " |" for r in rows]
  return lines + [""]


def _markdown(all_metrics: Dict[str, Dict[str, Any]], thr: Dict[str, float],
              layout_name: str, figures: Dict[str, Dict[str, Any]]) -> str:
  fail, auc_t = thr["failure_threshold"], thr["auc_threshold"]
  lines = ["# SGFAN evaluation results", "",
           f"Landmark layout: `{layout_name}`. NME, failure and success rates "
           "are in percent; AUC is a fraction. Failure: NME > "
           f"{fail:g}; AUC: area under the CED on [0, {auc_t:g}] divided by "
           f"{auc_t:g}. Baseline = heatmap decoding alone; refined = "
           "score-guided refinement (Eq. 2).", ""]

  # (a) 300-W, paper Table 1 layout.
  w300 = {}
  for name, m in all_metrics.items():
    kind, sub = split_kind(name)
    if kind == "300w" and sub is not None and sub not in w300:
      w300[sub] = m
  if w300:
    cols = [(k, label) for k, label in _300W_SUBSETS if k in w300]
    header = ["Method"] + [label for _, label in cols]
    lines += ["## 300-W (paper Table 1 layout)", ""]

    def rows_for(norm, key, fmt):
      return [[METHOD_LABELS[meth]] + [
          fmt(w300[k]["methods"][meth]["all"][norm][key]) for k, _ in cols]
              for meth in METHODS]

    lines += ["### NME (%), inter-pupil normalisation (as in Table 1)", ""]
    paper = ["Paper Table 1, 'Ours'"] + [
        f"{PAPER_300W_NME[k]:.2f}" if k in PAPER_300W_NME else "—"
        for k, _ in cols]
    lines += _table(header, rows_for("inter_pupil", "nme", _pct) + [paper])
    lines += ["### NME (%), inter-ocular (outer eye corners) normalisation", ""]
    lines += _table(header, rows_for("inter_ocular", "nme", _pct))
    lines += [f"### Failure rate (%), inter-ocular NME > {fail:g}", ""]
    lines += _table(header, rows_for("inter_ocular", "failure_rate", _pct))
    lines += [f"### AUC@{auc_t:g}, inter-ocular NME", ""]
    lines += _table(header, rows_for("inter_ocular", "auc", _num))

  # (b) COFW-68.
  for name, m in all_metrics.items():
    if split_kind(name)[0] != "cofw":
      continue
    lines += [f"## COFW-68 (`{name}`, {m['num_images']} faces)", ""]
    header = ["Method", "NME all (%)", "Failure all (%)", "Success all (%)",
              "NME visible (%)", "Failure visible (%)", "Success visible (%)"]
    for norm, title in (("inter_ocular", "inter-ocular (outer eye corners) "
                         "normalisation, the COFW-68 convention"),
                        ("inter_pupil", "inter-pupil normalisation")):
      rows = []
      for meth in METHODS:
        res = m["methods"][meth]
        row = [METHOD_LABELS[meth]]
        for subset in ("all", "visible"):
          if subset in res:
            s = res[subset][norm]
            row += [_pct(s["nme"]), _pct(s["failure_rate"]),
                    _pct(s["success_rate"])]
          else:
            row += ["—"] * 3
        rows.append(row)
      if norm == "inter_ocular":
        for meth, label in (("baseline", "Paper, baseline"),
                            ("refined", "Paper, SGFAN")):
          p = PAPER_COFW[meth]
          rows.append([label, f"{p['nme']:.2f}", "—",
                       f"{p['success_rate']:.2f}", "—", "—", "—"])
      lines += [f"### {title}", ""] + _table(header, rows)
    lines += ["Paper numbers: Sec. 4.4 (all points; visible-only numbers are "
              "only described as similar for both methods). The paper "
              "states inter-pupil normalisation (Sec. 4.2) but COFW-68 is "
              "conventionally reported with inter-ocular normalisation, so "
              "both are given.", ""]

  # (c) Occlusion.
  occ = {n: m for n, m in all_metrics.items() if m["has_occlusion"]}
  if occ:
    lines += ["## Occlusion", ""]
    lines += [f"### Occlusion detection: weight < "
              f"{thr['weight_threshold']:g} vs annotated occlusion", ""]
    rows = []
    for name, m in occ.items():
      d = m["occlusion_detection"]
      rows.append([f"`{name}`", f"{d['num_occluded']} / {d['num_points']}",
                   _num(d["precision"], 3), _num(d["recall"], 3),
                   _num(d["f1"], 3), _num(d["average_precision"], 3),
                   _num(m["weights"]["mean_visible"], 3),
                   _num(m["weights"]["mean_occluded"], 3)])
    lines += _table(["Split", "Occluded points", "Precision", "Recall", "F1",
                     "Average precision", "Mean weight (visible)",
                     "Mean weight (occluded)"], rows)
    lines += ["### NME (%) of occluded and visible points, inter-ocular", ""]
    rows = []
    for name, m in occ.items():
      res = m["methods"]
      rows.append([f"`{name}`"] + [
          _pct(res[meth][subset]["inter_ocular"]["nme"])
          for subset in ("occluded", "visible") for meth in METHODS])
    lines += _table(["Split", "Occluded, baseline", "Occluded, refined",
                     "Visible, baseline", "Visible, refined"], rows)

  # Summary of every split.
  lines += ["## All splits", ""]
  rows = []
  for name, m in all_metrics.items():
    for meth in METHODS:
      a = m["methods"][meth]["all"]
      rows.append([f"`{name}`", str(m["num_images"]), METHOD_LABELS[meth],
                   _pct(a["inter_pupil"]["nme"]),
                   _pct(a["inter_ocular"]["nme"]),
                   _pct(a["bbox"]["nme"]),
                   _pct(a["inter_ocular"]["failure_rate"]),
                   _num(a["inter_ocular"]["auc"])])
  lines += _table(["Split", "Faces", "Method", "NME ip (%)", "NME io (%)",
                   "NME bbox (%)", "Failure io (%)",
                   f"AUC@{auc_t:g} io"], rows)

  if figures:
    lines += ["## Figures", ""]
    for name, f in figures.items():
      items = [f"[CED]({f['ced']})"]
      if f.get("occlusion_pr"):
        items.append(f"[occlusion PR]({f['occlusion_pr']})")
      items += [f"[face {i}]({p})" for i, p in enumerate(f.get("vis", []))]
      lines.append(f"* `{name}`: " + ", ".join(items))
    lines.append("")
  return "\n".join(lines)


# ------------------------------------------------------------------ plots


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def primary_normalization(name: str) -> str:
  """Normalisation of a split's CED plot: 300-W inter-pupil, else ocular."""
  return "inter_pupil" if split_kind(name)[0] == "300w" else "inter_ocular"


def plot_ced(path: str, name: str, per_image: Dict[str, np.ndarray],
             thr: Dict[str, float]) -> str:
  """Writes the CED plot (baseline vs refined) of one split to ``path``."""
  plt = _pyplot()
  norm = primary_normalization(name)
  xmax = 1.5 * max(thr["failure_threshold"], thr["auc_threshold"])
  grid = np.linspace(0.0, xmax, 601)
  fig, ax = plt.subplots(figsize=(6, 5.6), dpi=100)
  colours = {"baseline": "tab:red", "refined": "tab:blue"}
  for subset, style in (("all", "-"), ("visible", "--")):
    for meth in METHODS:
      key = f"{meth}_{subset}_{norm}"
      if key not in per_image:
        continue
      v = per_image[key]
      label = (f"{METHOD_LABELS[meth]}, {subset} points: NME "
               f"{_pct(metrics.mean_nme(v))}%, AUC@{thr['auc_threshold']:g} "
               f"{_num(metrics.auc(v, thr['auc_threshold']), 3)}")
      ax.plot(grid, metrics.ced(v, grid), style, color=colours[meth],
              label=label, linewidth=1.6)
  ax.axvline(thr["failure_threshold"], color="gray", linestyle=":",
             linewidth=1,
             label=f"failure threshold {thr['failure_threshold']:g}")
  ax.set_xlim(0, xmax)
  ax.set_ylim(0, 1.01)
  ax.set_xlabel(f"NME ({norm.replace('_', '-')} normalisation)")
  ax.set_ylabel("Fraction of faces")
  ax.set_title(f"CED: {name}")
  ax.grid(alpha=0.3)
  ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=7,
            frameon=False)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


def plot_occlusion_pr(path: str, name: str, det: Dict[str, Any]) -> str:
  """Writes the occlusion precision-recall plot of one split."""
  plt = _pyplot()
  curve = det["pr_curve"]
  fig, ax = plt.subplots(figsize=(4.5, 4), dpi=100)
  ax.plot(curve["recall"], curve["precision"], "-", color="tab:purple")
  if det["recall"] is not None and math.isfinite(det["recall"]) and (
      math.isfinite(det["precision"])):
    ax.plot([det["recall"]], [det["precision"]], "o", color="black",
            label=f"weight < {det['threshold']:g}")
    ax.legend(loc="lower left", fontsize=8)
  ax.set_xlim(0, 1.01)
  ax.set_ylim(0, 1.01)
  ax.set_xlabel("Recall (occluded points)")
  ax.set_ylabel("Precision")
  ax.set_title(f"Occlusion detection: {name}\n"
               f"AP {_num(det['average_precision'], 3)}", fontsize=9)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


def _apply(affine: Optional[np.ndarray], pts: np.ndarray) -> np.ndarray:
  if affine is None:
    return pts
  return pts @ affine[:, :2].T + affine[:, 2]


def draw_landmarks(path: str, image: np.ndarray, result: SplitResult,
                   index: int, affine: Optional[np.ndarray],
                   weight_threshold: float, title: str = "") -> str:
  """Draws gt / baseline / refined landmarks of face ``index`` on ``image``.

  Ground truth: green dots; baseline: red crosses; refined: blue pluses;
  baseline points with weight below ``weight_threshold``: yellow rings.
  Annotated occluded ground-truth points are drawn hollow.
  """
  plt = _pyplot()
  image = np.asarray(image)
  h, w = image.shape[:2]
  gt = _apply(affine, result.gt[index])
  base = _apply(affine, result.baseline[index])
  ref = _apply(affine, result.refined[index])
  size = 5.0
  fig, ax = plt.subplots(figsize=(size, size + 0.4), dpi=100)
  ax.imshow(image)
  vis = (result.visible[index] if result.visible is not None
         else np.ones(len(gt), bool))
  ax.scatter(gt[vis, 0], gt[vis, 1], s=14, c="lime", edgecolors="black",
             linewidths=0.4, label="ground truth", zorder=3)
  if (~vis).any():
    ax.scatter(gt[~vis, 0], gt[~vis, 1], s=14, facecolors="none",
               edgecolors="lime", linewidths=1.0, label="gt (occluded)",
               zorder=3)
  ax.scatter(base[:, 0], base[:, 1], s=18, c="red", marker="x",
             linewidths=1.0, label="baseline", zorder=4)
  ax.scatter(ref[:, 0], ref[:, 1], s=22, c="deepskyblue", marker="+",
             linewidths=1.0, label="refined", zorder=5)
  low = result.weights[index] < weight_threshold
  if low.any():
    ax.scatter(base[low, 0], base[low, 1], s=80, facecolors="none",
               edgecolors="yellow", linewidths=1.0,
               label=f"weight < {weight_threshold:g}", zorder=6)
  # Zoom to the face: all drawn points plus a margin, within the image.
  pts = np.concatenate([gt, base, ref])
  lo, hi = pts.min(axis=0), pts.max(axis=0)
  margin = 0.25 * float(max(hi - lo)) + 2.0
  x0, y0 = max(lo[0] - margin, -0.5), max(lo[1] - margin, -0.5)
  x1, y1 = min(hi[0] + margin, w - 0.5), min(hi[1] + margin, h - 0.5)
  if x1 <= x0 or y1 <= y0:          # face outside the image: show it all
    x0, y0, x1, y1 = -0.5, -0.5, w - 0.5, h - 0.5
  ax.set_xlim(x0, x1)
  ax.set_ylim(y1, y0)
  ax.axis("off")
  ax.legend(loc="upper right", fontsize=6, framealpha=0.7)
  ax.set_title(title, fontsize=7)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


# ------------------------------------------------------------ entry point


def write_report(workdir: str, results: Mapping[str, SplitResult],
                 layout: Union[str, layouts_lib.LandmarkLayout],
                 config=None) -> Dict[str, Any]:
  """Computes every metric and writes the report files into ``workdir``.

  Args:
    workdir: output directory (created if missing).
    results: split name ('builder:split') -> SplitResult. Splits absent here
      are absent from every table.
    layout: landmark layout (name or LandmarkLayout) of all splits.
    config: the run config (ConfigDict or nested dict) or None; read:
      eval.failure_threshold (0.10), eval.auc_threshold (0.08),
      eval.num_vis_images (8), refine.weight_threshold (0.5).

  Returns:
    dict: 'results_json', 'results_md' (paths), 'ced', 'occlusion_pr',
    'predictions' (split -> path) and 'vis' (split -> list of paths).
  """
  if not results:
    raise ValueError("write_report needs at least one split")
  lay = (layout if isinstance(layout, layouts_lib.LandmarkLayout)
         else layouts_lib.get_layout(layout))
  for name, res in results.items():
    if not isinstance(res, SplitResult):
      raise TypeError(f"results[{name!r}] must be a SplitResult")
    if res.gt.shape[1] != lay.num_points:
      raise ValueError(f"split {name!r} has {res.gt.shape[1]} points, layout "
                       f"{lay.name!r} has {lay.num_points}")
  safe = {name: safe_name(name) for name in results}
  if len(set(safe.values())) != len(safe):
    raise ValueError(f"split names collide as file names: {safe}")
  thr = _thresholds(config)
  num_vis = int(_get(config, "eval.num_vis_images", 8))
  os.makedirs(workdir, exist_ok=True)

  paths = {"ced": {}, "occlusion_pr": {}, "predictions": {}, "vis": {}}
  all_metrics, figures = {}, {}
  for name, res in results.items():
    m = compute_metrics(res, lay, **thr)
    kind, sub = split_kind(name)
    m["dataset_kind"], m["subset"] = kind, sub
    all_metrics[name] = m
    per_image = per_image_nme(res, lay)

    npz_path = os.path.join(workdir, f"predictions_{safe[name]}.npz")
    arrays = dict(gt=res.gt, baseline=res.baseline, refined=res.refined,
                  weights=res.weights, file_names=np.array(res.file_names))
    if res.visible is not None:
      arrays["visible"] = res.visible
    if res.boxes is not None:
      arrays["boxes"] = res.boxes
    arrays.update({f"nme_{k}": v for k, v in per_image.items()})
    np.savez(npz_path, **arrays)
    paths["predictions"][name] = npz_path

    fig = {}
    ced_path = os.path.join(workdir, f"ced_{safe[name]}.png")
    paths["ced"][name] = plot_ced(ced_path, name, per_image, thr)
    fig["ced"] = os.path.basename(ced_path)
    if res.has_occlusion:
      pr_path = os.path.join(workdir, f"occlusion_pr_{safe[name]}.png")
      paths["occlusion_pr"][name] = plot_occlusion_pr(
          pr_path, name, m["occlusion_detection"])
      fig["occlusion_pr"] = os.path.basename(pr_path)
    vis_paths = []
    if res.images is not None and num_vis > 0:
      os.makedirs(os.path.join(workdir, "vis"), exist_ok=True)
      norm = primary_normalization(name)
      for k, (img, idx) in enumerate(zip(res.images, res.image_indices)):
        if k >= num_vis:
          break
        affine = (None if res.image_transforms is None
                  else res.image_transforms[k])
        nb = per_image[f"baseline_all_{norm}"][idx]
        nr = per_image[f"refined_all_{norm}"][idx]
        title = (f"{res.file_names[idx]}\nNME ({norm.replace('_', '-')}) "
                 f"baseline {_pct(nb)}%, refined {_pct(nr)}%")
        p = os.path.join(workdir, "vis", f"{safe[name]}_{k}.png")
        vis_paths.append(draw_landmarks(p, img, res, idx, affine,
                                        thr["weight_threshold"], title))
    paths["vis"][name] = vis_paths
    fig["vis"] = [os.path.relpath(p, workdir) for p in vis_paths]
    figures[name] = fig

  doc = {
      "layout": lay.name,
      "units": "NME, failure and success rates and AUC are fractions",
      "thresholds": thr,
      "normalizations": {
          "inter_pupil": "distance between the means of the layout's "
                         "left_eye and right_eye points (paper Table 1)",
          "inter_ocular": "distance between the layout's outer eye corners "
                          "(COFW-68 convention)",
          "bbox": "sqrt(w * h) of the face box (or gt landmark box)",
      },
      "published": {"300w_table1_ours_nme_percent_inter_pupil": PAPER_300W_NME,
                    "cofw68_percent": PAPER_COFW},
      "splits": all_metrics,
  }
  json_path = os.path.join(workdir, "results.json")
  with open(json_path, "w") as f:
    json.dump(_jsonable(doc), f, indent=2, allow_nan=False)
  md_path = os.path.join(workdir, "results.md")
  with open(md_path, "w") as f:
    f.write(_markdown(_jsonable(all_metrics), thr, lay.name, figures))
  paths["results_json"] = json_path
  paths["results_md"] = md_path
  return paths
