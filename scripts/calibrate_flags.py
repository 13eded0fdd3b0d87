r"""Choose a model's occlusion-flag threshold on face300w:val (issue 18 §3).

``face.occluded`` is ``confidence < predict.occluded_threshold``. This script
runs the model once on the 101 clean face300w:val faces and on their seeded
occluded copy (``benchmarks/compare_300w.py --split val`` builds the same
copy), protocol (a) (tight landmark boxes), and sweeps the threshold:

* clean flag rate: fraction of the points of the clean faces flagged;
* precision / recall / F1 of the flags against the occluder mask of the
  occluded copy, pooled over its points.

The chosen threshold is the one with the best F1 among those flagging at
most ``--max_clean_rate`` (10 %) of the clean points. Only validation faces
are read; the test numbers are measured afterwards with
``benchmarks/compare_300w.py`` and only reported. ``--write`` stores the
threshold in the model folder's ``config.json`` (``predict.
occluded_threshold``), so ``Landmarker`` uses it::

  .venv/bin/python scripts/calibrate_flags.py \
      --model sgfan_jax/pretrained/sgfan_lite_300w --write \
      --out_md benchmarks/results/flag_threshold.md
"""

from __future__ import annotations

import argparse
import pathlib
import sys


REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from benchmarks import compare_300w  # pylint: disable=g-import-not-at-top
from sgfan_jax import inference  # pylint: disable=g-import-not-at-top
from sgfan_jax import landmarker  # pylint: disable=g-import-not-at-top
from sgfan_jax import metrics  # pylint: disable=g-import-not-at-top

def confidences(lm, data):
  out = compare_300w.run_ours(lm, data, "landmark", batch_size=16)
  return out["ours_refined"]["confidence"]


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--data", default=str(REPO.parent / "shared/data/300w"))
  p.add_argument("--model", default="",
                 help="model folder (default: the shipped model)")
  p.add_argument("--workdir", default="", help="or a training workdir")
  p.add_argument("--occlusion_seed", type=int, default=0)
  p.add_argument("--max_clean_rate", type=float, default=0.10)
  p.add_argument("--write", action="store_true",
                 help="store the threshold in --model's config.json")
  p.add_argument("--out_md", default="")
  args = p.parse_args(argv)
  data_root = compare_300w.data_root_or_exit(args.data)
  names, clean_set, occ_set, mask = compare_300w.val_with_occluded_copy(
      data_root, args.occlusion_seed)
  model_dir, bundle = compare_300w.model_bundle(args.model, args.workdir)
  lm = landmarker.Landmarker(bundle, detector="none")
  clean = confidences(lm, clean_set)
  occ = confidences(lm, occ_set)
  rows = metrics.flag_threshold_sweep(clean, occ, mask)
  best = metrics.choose_flag_threshold(rows, args.max_clean_rate)
  old = landmarker.flag_threshold(bundle.config)
  before = metrics.flag_threshold_sweep(clean, occ, mask, [old])[0]
  lines = [
      f"# Occlusion-flag threshold of `{bundle.source}`\n",
      f"Command: `python scripts/calibrate_flags.py "
      f"{' '.join(sys.argv[1:] if argv is None else argv)}`\n",
      f"face300w:val, {len(names)} clean faces and their occluded copy "
      f"(seed {args.occlusion_seed}; {mask.mean():.1%} of the points "
      "occluded), protocol (a). Rule: best F1 on the occluded copy among "
      f"thresholds flagging <= {args.max_clean_rate:.0%} of clean points.\n",
      "| threshold | clean points flagged | precision | recall | F1 |",
      "|---|---|---|---|---|"]
  for r in rows:
    mark = " **(chosen)**" if r == best else (
        " (before)" if abs(r[0] - old) < 1e-9 else "")
    lines.append(f"| {r[0]:.2f}{mark} | {r[1]:.1%} | {r[2]:.1%} | "
                 f"{r[3]:.1%} | {r[4]:.3f} |")
  lines.append(
      f"\nBefore: threshold {old:.2f} flags {before[1]:.1%} of clean points; "
      f"precision {before[2]:.1%}, recall {before[3]:.1%}. Chosen: "
      f"{best[0]:.2f}: {best[1]:.1%} of clean points, precision "
      f"{best[2]:.1%}, recall {best[3]:.1%}.\n")
  text = "\n".join(lines)
  print(text)
  if args.out_md:
    pathlib.Path(args.out_md).write_text(text)
  if args.write:
    if args.workdir:
      raise SystemExit("--write needs --model (a model folder)")
    path = inference.set_model_config_value(model_dir, "predict",
                                            "occluded_threshold", best[0])
    print(f"wrote predict.occluded_threshold = {best[0]} into {path}")


if __name__ == "__main__":
  main()
