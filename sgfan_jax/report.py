"""Evaluation report: results.json, results.md, CED plots, visualisations.

The evaluation loop collects, for every evaluated split, the per-face arrays
in a :class:`SplitResult` and calls :func:`write_report`, which writes into
``workdir``:

* ``results.json``: every number (fractions, not percent; ``null`` where a
  metric is undefined, e.g. no occluded point), see
  ``reporting/records.py`` and :func:`compute_metrics`;
* ``results.md``: human-readable tables with the paper's numbers
  (``reporting/tables.py``);
* ``ced_<split>.png``, ``occlusion_pr_<split>.png`` and
  ``vis/<split>_<k>.png``: figures (``reporting/plots.py``);
* ``predictions_<split>.npz``: per-face arrays (``gt``, ``baseline``,
  ``refined``, ``weights``, ``file_names``, optional ``visible`` and
  ``boxes``, and per-image NMEs ``nme_<method>_<subset>_<normalization>``).

``<split>`` is :func:`safe_name` of the split name (``face300w:test_common``
-> ``face300w_test_common``). :func:`split_kind` decides which tables a split
appears in (300-W test subsets, COFW); any other split appears in the summary
table only.

This module only puts the pieces together; each concern lives in
``sgfan_jax/reporting/`` (see its ``__init__``). The names other modules use
(``SplitResult``, ``split_kind``, ``safe_name``, ...) are importable from
here.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Union

import ml_collections

from sgfan_jax import layouts as layouts_lib
from sgfan_jax.reporting import plots
from sgfan_jax.reporting import records
from sgfan_jax.reporting import summary
from sgfan_jax.reporting import tables
from sgfan_jax.reporting.paper import PAPER_300W_NME, PAPER_COFW
from sgfan_jax.reporting.plots import (draw_landmarks, plot_ced,
                                       plot_occlusion_pr)
from sgfan_jax.reporting.splits import (METHOD_LABELS, METHODS, SplitResult,
                                        primary_normalization, safe_name,
                                        split_kind)
from sgfan_jax.reporting.summary import compute_metrics, per_image_nme

# The report's public names (most defined in sgfan_jax/reporting/).
__all__ = ["METHODS", "METHOD_LABELS", "PAPER_300W_NME", "PAPER_COFW",
           "SplitResult", "compute_metrics", "draw_landmarks",
           "per_image_nme", "plot_ced", "plot_occlusion_pr",
           "primary_normalization", "safe_name", "split_kind", "thresholds",
           "write_report"]


def thresholds(config: ml_collections.ConfigDict) -> Dict[str, float]:
  """The report's thresholds, read from the run config."""
  return {
      "failure_threshold": float(config.eval.failure_threshold),
      "auc_threshold": float(config.eval.auc_threshold),
      "weight_threshold": float(config.refine.weight_threshold),
  }


def write_report(workdir: str, results: Mapping[str, SplitResult],
                 layout: Union[str, layouts_lib.LandmarkLayout],
                 config: ml_collections.ConfigDict) -> Dict[str, Any]:
  """Computes every metric and writes the report files into ``workdir``.

  Args:
    workdir: output directory (created if missing).
    results: split name ('builder:split') -> SplitResult. Splits absent here
      are absent from every table.
    layout: landmark layout (name or LandmarkLayout) of all splits.
    config: the run config; read: eval.failure_threshold,
      eval.auc_threshold, eval.num_vis_images, refine.weight_threshold.

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
  thr = thresholds(config)
  num_vis = int(config.eval.num_vis_images)
  os.makedirs(workdir, exist_ok=True)

  paths = {"ced": {}, "occlusion_pr": {}, "predictions": {}, "vis": {}}
  all_metrics, figures = {}, {}
  for name, res in results.items():
    per_image = summary.per_image_nme(res, lay)      # once per split
    m = summary.compute_metrics(res, per_image, lay.name, **thr)
    m["dataset_kind"], m["subset"] = split_kind(name)
    all_metrics[name] = m
    paths["predictions"][name] = records.write_predictions(
        os.path.join(workdir, f"predictions_{safe[name]}.npz"), res,
        per_image)
    split_figs = plots.write_split_figures(workdir, name, safe[name], res,
                                           per_image, m, thr, num_vis)
    paths["ced"][name] = split_figs["ced"]
    fig = {"ced": os.path.basename(split_figs["ced"])}
    if "occlusion_pr" in split_figs:
      paths["occlusion_pr"][name] = split_figs["occlusion_pr"]
      fig["occlusion_pr"] = os.path.basename(split_figs["occlusion_pr"])
    paths["vis"][name] = split_figs["vis"]
    fig["vis"] = [os.path.relpath(p, workdir) for p in split_figs["vis"]]
    figures[name] = fig

  paths["results_json"] = records.write_results_json(
      os.path.join(workdir, "results.json"), all_metrics, thr, lay.name)
  md_path = os.path.join(workdir, "results.md")
  with open(md_path, "w") as f:
    f.write(tables.markdown(records.jsonable(all_metrics), thr, lay.name,
                            figures))
  paths["results_md"] = md_path
  return paths
