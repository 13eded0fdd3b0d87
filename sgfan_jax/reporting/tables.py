"""``results.md``: the markdown tables, with the paper's numbers.

Sections, each present only for the splits evaluated: (a) the paper's Table 1
layout for the 300-W test subsets (inter-pupil NME with the published
numbers, plus inter-ocular NME, failure rate and AUC tables), (b) COFW-68
NME / failure / success over all points and visible points only, (c)
occlusion detection and occluded-point NME where visibility flags exist, a
summary of all splits and links to the figures. NME, failure and success
rates are printed in percent, AUC as a fraction.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence

from sgfan_jax.reporting.paper import PAPER_300W_NME, PAPER_COFW
from sgfan_jax.reporting.splits import METHOD_LABELS, METHODS, split_kind

_300W_SUBSETS = (("common", "Common"), ("challenging", "Challenging"),
                 ("full", "Full"), ("private", "Private"))


def pct(x, digits=2) -> str:
  """A fraction in percent ('—' for None / NaN)."""
  if x is None or not math.isfinite(x):
    return "—"
  return f"{100 * x:.{digits}f}"


def num(x, digits=4) -> str:
  """A number ('—' for None / NaN)."""
  if x is None or not math.isfinite(x):
    return "—"
  return f"{x:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join(["---"] * len(header)) + "|"]
  lines += ["| " + " | ".join(r) + " |" for r in rows]
  return lines + [""]


def markdown(all_metrics: Dict[str, Dict[str, Any]], thr: Dict[str, float],
             layout_name: str, figures: Dict[str, Dict[str, Any]]) -> str:
  """The text of ``results.md``.

  Args:
    all_metrics: split name -> ``summary.compute_metrics`` output, made JSON
      types (``records.jsonable``: undefined numbers are None).
    thr: 'failure_threshold', 'auc_threshold', 'weight_threshold'.
    layout_name: landmark layout name.
    figures: split name -> {'ced': file, 'occlusion_pr': file or absent,
      'vis': [files]}, relative to the report directory.
  """
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
    lines += _table(header, rows_for("inter_pupil", "nme", pct) + [paper])
    lines += ["### NME (%), inter-ocular (outer eye corners) normalisation", ""]
    lines += _table(header, rows_for("inter_ocular", "nme", pct))
    lines += [f"### Failure rate (%), inter-ocular NME > {fail:g}", ""]
    lines += _table(header, rows_for("inter_ocular", "failure_rate", pct))
    lines += [f"### AUC@{auc_t:g}, inter-ocular NME", ""]
    lines += _table(header, rows_for("inter_ocular", "auc", num))

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
            row += [pct(s["nme"]), pct(s["failure_rate"]),
                    pct(s["success_rate"])]
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
                   num(d["precision"], 3), num(d["recall"], 3),
                   num(d["f1"], 3), num(d["average_precision"], 3),
                   num(m["weights"]["mean_visible"], 3),
                   num(m["weights"]["mean_occluded"], 3)])
    lines += _table(["Split", "Occluded points", "Precision", "Recall", "F1",
                     "Average precision", "Mean weight (visible)",
                     "Mean weight (occluded)"], rows)
    lines += ["### NME (%) of occluded and visible points, inter-ocular", ""]
    rows = []
    for name, m in occ.items():
      res = m["methods"]
      rows.append([f"`{name}`"] + [
          pct(res[meth][subset]["inter_ocular"]["nme"])
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
                   pct(a["inter_pupil"]["nme"]),
                   pct(a["inter_ocular"]["nme"]),
                   pct(a["bbox"]["nme"]),
                   pct(a["inter_ocular"]["failure_rate"]),
                   num(a["inter_ocular"]["auc"])])
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
