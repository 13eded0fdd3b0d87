"""Figures of the report: CED curves, occlusion PR curves, faces.

* ``ced_<split>.png``: CED curves, baseline vs refined (dashed: visible points
  only, where visibility flags exist), in the split's primary normalisation
  (``splits.primary_normalization``);
* ``occlusion_pr_<split>.png``: precision-recall of "weight < t" as occlusion
  detector (splits with occluded points);
* ``vis/<split>_<k>.png``: faces with landmarks drawn, when images are given.

Figures are drawn on ``matplotlib.figure.Figure`` objects (the Agg canvas
when saved), not through ``pyplot``: no global backend or figure registry is
touched, so importing this module does not change a notebook's backend.
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Mapping, Optional

from matplotlib.figure import Figure
import numpy as np

from sgfan_jax import metrics
from sgfan_jax.reporting.splits import (METHOD_LABELS, METHODS, SplitResult,
                                        primary_normalization)
from sgfan_jax.reporting.tables import num, pct


def plot_ced(path: str, name: str, per_image: Dict[str, np.ndarray],
             thr: Dict[str, float]) -> str:
  """Writes the CED plot (baseline vs refined) of one split to ``path``."""
  norm = primary_normalization(name)
  xmax = 1.5 * max(thr["failure_threshold"], thr["auc_threshold"])
  grid = np.linspace(0.0, xmax, 601)
  fig = Figure(figsize=(6, 5.6), dpi=100)
  ax = fig.subplots()
  colours = {"baseline": "tab:red", "refined": "tab:blue"}
  for subset, style in (("all", "-"), ("visible", "--")):
    for meth in METHODS:
      key = f"{meth}_{subset}_{norm}"
      if key not in per_image:
        continue
      v = per_image[key]
      label = (f"{METHOD_LABELS[meth]}, {subset} points: NME "
               f"{pct(metrics.mean_nme(v))}%, AUC@{thr['auc_threshold']:g} "
               f"{num(metrics.auc(v, thr['auc_threshold']), 3)}")
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
  return path


def plot_occlusion_pr(path: str, name: str, det: Dict[str, Any]) -> str:
  """Writes the occlusion precision-recall plot of one split."""
  curve = det["pr_curve"]
  fig = Figure(figsize=(4.5, 4), dpi=100)
  ax = fig.subplots()
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
               f"AP {num(det['average_precision'], 3)}", fontsize=9)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path)
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
  image = np.asarray(image)
  h, w = image.shape[:2]
  gt = _apply(affine, result.gt[index])
  base = _apply(affine, result.baseline[index])
  ref = _apply(affine, result.refined[index])
  size = 5.0
  fig = Figure(figsize=(size, size + 0.4), dpi=100)
  ax = fig.subplots()
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
  return path


def write_split_figures(workdir: str, name: str, file_stem: str,
                        result: SplitResult,
                        per_image: Mapping[str, np.ndarray],
                        split_metrics: Mapping[str, Any],
                        thr: Mapping[str, float], num_vis: int
                        ) -> Dict[str, Any]:
  """Writes every figure of one split into ``workdir``.

  Args:
    workdir: the report directory.
    name: split name ('builder:split').
    file_stem: its file-name-safe form (``splits.safe_name``).
    result: the split's arrays.
    per_image: its per-image NMEs (``summary.per_image_nme``).
    split_metrics: its ``summary.compute_metrics`` output.
    thr: 'failure_threshold', 'auc_threshold', 'weight_threshold'.
    num_vis: at most this many faces drawn (of ``result.images``).

  Returns:
    dict: 'ced' (path), 'occlusion_pr' (path, only for splits with occluded
    points) and 'vis' (list of paths).
  """
  out = {"ced": plot_ced(os.path.join(workdir, f"ced_{file_stem}.png"), name,
                         per_image, thr)}
  if result.has_occlusion:
    out["occlusion_pr"] = plot_occlusion_pr(
        os.path.join(workdir, f"occlusion_pr_{file_stem}.png"), name,
        split_metrics["occlusion_detection"])
  vis_paths: List[str] = []
  if result.images is not None and num_vis > 0:
    os.makedirs(os.path.join(workdir, "vis"), exist_ok=True)
    norm = primary_normalization(name)
    for k, (img, idx) in enumerate(zip(result.images, result.image_indices)):
      if k >= num_vis:
        break
      affine = (None if result.image_transforms is None
                else result.image_transforms[k])
      nb = per_image[f"baseline_all_{norm}"][idx]
      nr = per_image[f"refined_all_{norm}"][idx]
      title = (f"{result.file_names[idx]}\nNME ({norm.replace('_', '-')}) "
               f"baseline {pct(nb)}%, refined {pct(nr)}%")
      p = os.path.join(workdir, "vis", f"{file_stem}_{k}.png")
      vis_paths.append(draw_landmarks(p, img, result, idx, affine,
                                      thr["weight_threshold"], title))
  out["vis"] = vis_paths
  return out
