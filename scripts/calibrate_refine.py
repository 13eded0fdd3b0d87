r"""Choose a model's refinement threshold on face300w:val (issue 18).

Eq. 2 re-estimates the points whose Eq. 1 confidence is below
``refine.weight_threshold`` from the shape dictionary. The paper's 0.5 suits
a network whose score maps are believed only near 1; a network trained with
another recipe puts its clean points elsewhere on the confidence scale, and
re-estimating good points costs accuracy on clean faces while keeping too
few costs it on occluded ones.

This script runs the model on the 101 clean face300w:val faces and on their
seeded occluded copy (the copy ``benchmarks/compare_300w.py --split val``
builds), protocol (a) (tight landmark boxes), once per threshold of
``--thresholds``, and keeps the one with the lowest mean of the clean and the
occluded inter-pupil NME (``metrics.choose_refine_threshold``). Only
validation faces are read; test numbers are measured afterwards with
``benchmarks/compare_300w.py`` and only reported. ``--write`` stores it in the
model folder's ``config.json`` (``refine.weight_threshold``)::

  .venv/bin/python scripts/calibrate_refine.py \
      --model sgfan_jax/pretrained/sgfan_lite_300w --write \
      --out_md benchmarks/results/refine_threshold.md

The occlusion flags have their own threshold (``predict.occluded_threshold``,
``scripts/calibrate_flags.py``); they do not change with this one unless the
model has none (models from before it existed flag below
``refine.weight_threshold``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from benchmarks import compare_300w  # pylint: disable=g-import-not-at-top
from sgfan_jax import inference  # pylint: disable=g-import-not-at-top
from sgfan_jax import landmarker  # pylint: disable=g-import-not-at-top
from sgfan_jax import metrics  # pylint: disable=g-import-not-at-top

THRESHOLDS = (0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)


def evaluate(bundle, threshold, clean, occ, mask):
  """NMEs of the model with ``refine.weight_threshold = threshold``."""
  b = dataclasses.replace(bundle, config=copy.deepcopy(bundle.config))
  b.config.refine.weight_threshold = float(threshold)
  lm = landmarker.Landmarker(b, detector="none")
  out = {}
  for name, data in (("clean", clean), ("occluded", occ)):
    res = compare_300w.run_ours(lm, data, "landmark", batch_size=16)
    res = res["ours_refined"]
    gt = np.stack([d["gt"] for d in data])
    out[name] = metrics.mean_nme(metrics.nme(res["points"], gt,
                                             "inter_pupil"))
    if name == "occluded":
      occm = compare_300w.occlusion_metrics(res, gt, mask)
      out["occluded_points_io"] = occm["nme_occluded"]
      out["visible_points_io"] = occm["nme_visible"]
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--data", default=str(REPO.parent / "shared/data/300w"))
  p.add_argument("--model", default="",
                 help="model folder (default: the shipped model)")
  p.add_argument("--workdir", default="", help="or a training workdir")
  p.add_argument("--thresholds", type=float, nargs="+",
                 default=list(THRESHOLDS))
  p.add_argument("--occlusion_seed", type=int, default=0)
  p.add_argument("--write", action="store_true",
                 help="store the chosen threshold in the model's config.json")
  p.add_argument("--out_md", default="")
  args = p.parse_args(argv)
  if args.write and args.workdir:
    raise SystemExit("--write needs --model (a model folder)")
  data_root = compare_300w.data_root_or_exit(args.data)
  names, clean, occ, mask = compare_300w.val_with_occluded_copy(
      data_root, args.occlusion_seed)
  model_dir, bundle = compare_300w.model_bundle(args.model, args.workdir)
  if bundle.dictionary is None or not bundle.config.refine.enabled:
    raise SystemExit(f"{bundle.source}: no refinement (refine.enabled off or "
                     "no shape dictionary), nothing to calibrate")
  old = float(bundle.config.refine.weight_threshold)
  thresholds = sorted(set(args.thresholds) | {old}, reverse=True)
  results = {t: evaluate(bundle, t, clean, occ, mask) for t in thresholds}
  rows = [(t, r["clean"], r["occluded"]) for t, r in results.items()]
  best = metrics.choose_refine_threshold(rows)
  lines = [
      f"# Refinement threshold of `{bundle.source}`\n",
      f"Command: `python scripts/calibrate_refine.py "
      f"{' '.join(sys.argv[1:] if argv is None else argv)}`\n",
      f"face300w:val, {len(names)} clean faces and their occluded copy "
      f"(seed {args.occlusion_seed}; {mask.mean():.1%} of the points "
      "occluded), protocol (a), refined points. Rule: the lowest mean of the "
      "clean and the occluded inter-pupil NME. NME in %; the last two "
      "columns are inter-ocular NME over the occluded and the visible points "
      "of the occluded copy.\n",
      "| refine.weight_threshold | clean NME IP | occluded NME IP | mean | "
      "occluded points IO | visible points IO |",
      "|---|---|---|---|---|---|"]
  for t, r in results.items():
    mark = " **(chosen)**" if t == best[0] else (
        " (before)" if abs(t - old) < 1e-9 else "")
    lines.append(
        f"| {t:.2f}{mark} | {100 * r['clean']:.2f} | "
        f"{100 * r['occluded']:.2f} | "
        f"{50 * (r['clean'] + r['occluded']):.2f} | "
        f"{100 * r['occluded_points_io']:.2f} | "
        f"{100 * r['visible_points_io']:.2f} |")
  lines.append(f"\nBefore: {old:.2f}. Chosen: {best[0]:.2f}.\n")
  text = "\n".join(lines)
  print(text)
  if args.out_md:
    pathlib.Path(args.out_md).write_text(text)
  if args.write:
    path = inference.set_model_config_value(model_dir, "refine",
                                            "weight_threshold", best[0])
    print(f"wrote refine.weight_threshold = {best[0]} into {path}")


if __name__ == "__main__":
  main()
