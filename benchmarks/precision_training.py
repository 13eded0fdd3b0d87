r"""Training in bfloat16 vs float32: validation NME of finished runs, paired.

  .venv/bin/python benchmarks/precision_training.py \
      --runs f32_s0=/work/runs/prec/ft_f32_s0,bf16_s0=/work/runs/prec/ft_bf16_s0,... \
      --pairs bf16_s0-f32_s0,bf16_s1-f32_s1,f32_s1-f32_s0 \
      [--out_md benchmarks/results/precision_training.md]

The runs (made with ``main.py ... --config.model.dtype=float32|bfloat16
--config.seed=S``; the command of each is read from nothing here, so give
it in the report) are compared on the face300w:val faces (held-out
training faces; the test split is never read), protocol (a) (tight box of
the ground-truth landmarks), each evaluated in float32
(``Landmarker(precision='float32')``) from its latest checkpoint so that
only the training differs: per face inter-pupil NME, heatmaps only (Eq. 4)
and refined (Eq. 2, each run's own shape dictionary). For each pair ``a-b``
the mean paired difference and its 95 % bootstrap interval over the faces;
a pair of float32 runs with different seeds gives the run-to-run noise. The
last ``val_nme`` line of each run's metrics.jsonl (the training loop's own
validation, heatmaps only) is listed too.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from benchmarks import compare_300w  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import predict_precision  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import timing  # pylint: disable=g-import-not-at-top,wrong-import-position


def last_val_nme(workdir):
  """(step, val_nme) of the last validation line of metrics.jsonl."""
  last = (None, float("nan"))
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      rec = json.loads(line)
      if "val_nme" in rec:
        last = (rec["step"], rec["val_nme"])
  return last


def run_nme(workdir, data, gt):
  """Per-face inter-pupil NME (heatmaps only, refined) of a run's latest
  checkpoint, predicted in float32; and the run's compute dtype."""
  from sgfan_jax import inference  # pylint: disable=g-import-not-at-top
  from sgfan_jax import landmarker  # pylint: disable=g-import-not-at-top
  from sgfan_jax import checkpoints as ckpt_lib  # pylint: disable=g-import-not-at-top
  ckpt = ckpt_lib.Checkpointer(workdir, read_only=True)
  try:
    step = ckpt.latest_step()
  finally:
    ckpt.close()
  if step is None:
    raise SystemExit(f"{workdir}: no checkpoint")
  bundle = inference.load_workdir(workdir, step)
  lm = landmarker.Landmarker(bundle, detector="none", precision="float32")
  res = compare_300w.run_ours(lm, data, "landmark", lm.batch_size)
  return ({k: predict_precision.nme_per_face(res[f"ours_{k}"]["points"], gt,
                                             "inter_pupil")
           for k in ("raw", "refined")},
          str(bundle.config.model.dtype), bundle.metadata.get("step"))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--data", default=str(REPO.parent / "shared/data/300w"))
  p.add_argument("--runs", required=True,
                 help="name=workdir,... (comma-separated)")
  p.add_argument("--pairs", required=True,
                 help="a-b,... : paired differences NME(a) - NME(b)")
  p.add_argument("--out_md", default=str(REPO / "benchmarks/results/"
                                          "precision_training.md"))
  args = p.parse_args(argv)
  argv = sys.argv[1:] if argv is None else list(argv)
  machine = timing.machine()
  runs = dict(item.split("=", 1) for item in args.runs.split(","))
  pairs = [tuple(item.split("-", 1)) for item in args.pairs.split(",")]
  for a, b in pairs:
    for name in (a, b):
      if name not in runs:
        raise SystemExit(f"--pairs: {name!r} is not one of --runs "
                         f"{sorted(runs)}")

  import jax  # pylint: disable=g-import-not-at-top
  data_root = compare_300w.data_root_or_exit(args.data)
  names = compare_300w.val_faces(data_root)
  data = compare_300w.load_set(data_root, names, "val")
  gt = np.stack([d["gt"] for d in data])

  per_run, rows = {}, []
  for name, workdir in runs.items():
    nme, dtype, step = run_nme(workdir, data, gt)
    per_run[name] = nme
    vstep, vnme = last_val_nme(workdir)
    rows.append(f"| {name} | `{workdir}` | {dtype} | {step} | "
                f"{100 * vnme:.3f} (step {vstep}) | "
                f"{100 * nme['raw'].mean():.3f} | "
                f"{100 * nme['refined'].mean():.3f} |")
    print(rows[-1], flush=True)
  prow = []
  for a, b in pairs:
    cells = []
    for k in ("raw", "refined"):
      d = per_run[a][k] - per_run[b][k]
      lo, hi = predict_precision.bootstrap_ci(d)
      cells.append(f"{100 * d.mean():+.3f} [{100 * lo:+.3f}, "
                   f"{100 * hi:+.3f}]")
    prow.append(f"| {a} - {b} | " + " | ".join(cells) + " |")
  md = timing.report_header(
      "Training in bfloat16 vs float32: face300w:val NME",
      "benchmarks/precision_training.py", argv, machine,
      f"jax {jax.__version__}, backend {jax.default_backend()}")
  md += (f"{len(data)} face300w:val faces, protocol (a), every run "
         "predicted in float32 from its latest checkpoint. Inter-pupil "
         "NME %.\n\n| run | workdir | model.dtype | step | training-loop "
         "val NME (heatmaps) | NME heatmaps only | NME refined |\n"
         "|---|---|---|---:|---:|---:|---:|\n" + "\n".join(rows) +
         "\n\nPaired differences over the faces (NME points, mean and 95 % "
         "bootstrap interval):\n\n| pair | heatmaps only | refined |\n"
         "|---|---|---|\n" + "\n".join(prow) + "\n")
  timing.write_markdown(args.out_md, md)


if __name__ == "__main__":
  from sgfan_jax import host_allocator  # pylint: disable=g-import-not-at-top
  host_allocator.reexec_with_tuned_allocator()
  main()
