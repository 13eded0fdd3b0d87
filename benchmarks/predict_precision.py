r"""The prediction path in float32 and bfloat16: speed and landmark agreement.

  .venv/bin/python benchmarks/predict_precision.py [--split val|test_common] \
      [--repeats 30] [--out_md benchmarks/results/predict_precision.md]

The shipped model (``Landmarker.from_pretrained(precision=...)``) on the
clean faces of a 300-W split with protocol (a) (the tight box of the
ground-truth landmarks, ``box_format="landmarks"``), once per precision:

* agreement: per point, the distance between the bfloat16 and the float32
  landmarks (raw = Eq. 4 heatmap decoding, refined = after Eq. 2), in
  network-output pixels (the 128 x 128 maps; image px / scale of the face's
  crop) and as a fraction of the face's inter-ocular distance; the share of
  points whose occlusion flag changes;
* accuracy: NME (inter-pupil and inter-ocular, refined and raw) in each
  precision against the annotations, and its paired difference with a
  bootstrap 95 % interval over the faces;
* speed: ``lm.predict_crops`` (network + Eq. 1 + Eq. 2 + the transfer back
  to numpy) at batch 1 and at the model's ``predict.batch_size``, median of
  ``--repeats`` after warm-up, the precisions alternating per repeat so a
  drift of the machine's load hits both alike.

``--split val`` (face300w:val, held-out training faces) is the one the
default (``inference.AUTO_PRECISION``) is chosen on; ``test_common`` (the 554
common-test faces) is reported. Runs with the tuned allocator, like
sgfan-jax's commands. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from benchmarks import compare_300w  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import timing  # pylint: disable=g-import-not-at-top,wrong-import-position

PRECISIONS = ("float32", "bfloat16")
OUT_SIDE = 128            # network output side (px)


def predict_all(lm, data, batch):
  """refined / raw points [F, 68, 2] (image px), occluded flags [F, 68] and
  the image px per network-output px of each face's crop [F]."""
  res = compare_300w.run_ours(lm, data, "landmark", batch)
  scale = []
  for d in data:
    # Image px per network-output px: the network window's side / 128.
    prepared = lm.prepare(d["image"], [d["box"].tolist()], "landmarks")
    a = np.asarray(prepared.crop_to_image[0])[:, :2]
    scale.append(abs(np.linalg.det(a)) ** 0.5 * lm.spec.window_side
                 / OUT_SIDE)
  return (res["ours_refined"]["points"], res["ours_raw"]["points"],
          res["ours_refined"]["occluded"], np.asarray(scale))


def nme_per_face(pred, gt, norm):
  from sgfan_jax import metrics  # pylint: disable=g-import-not-at-top
  return np.asarray(metrics.nme(pred, gt, normalization=norm))


def bootstrap_ci(diff, reps=2000, seed=0):
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, len(diff), size=(reps, len(diff)))
  means = diff[idx].mean(1)
  return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def time_precisions(lms, crops, mats, warmup, repeats):
  """{precision: median seconds of lm.predict_crops}, alternating."""
  for lm in lms.values():
    for _ in range(warmup):
      lm.predict_crops(crops, mats)
  times = {p: [] for p in lms}
  order = list(lms)
  for r in range(repeats):
    for p in (order if r % 2 == 0 else order[::-1]):
      t0 = time.perf_counter()
      lms[p].predict_crops(crops, mats)
      times[p].append(time.perf_counter() - t0)
  return {p: float(np.median(t)) for p, t in times.items()}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--data", default=str(REPO.parent / "shared/data/300w"))
  p.add_argument("--split", default="test_common",
                 choices=list(compare_300w.SPLIT_TITLES))
  p.add_argument("--max_faces", type=int, default=None,
                 help="the first N faces only (smoke run)")
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--repeats", type=int, default=30)
  p.add_argument("--out_md", default=str(REPO / "benchmarks/results/"
                                          "predict_precision.md"))
  args = p.parse_args(argv)
  argv = sys.argv[1:] if argv is None else list(argv)
  machine = timing.machine()

  import jax  # pylint: disable=g-import-not-at-top
  import sgfan_jax  # pylint: disable=g-import-not-at-top

  data_root = compare_300w.data_root_or_exit(args.data)
  names = compare_300w.split_names(data_root, args.split)[1][:args.max_faces]
  data = compare_300w.load_set(data_root, names, args.split)
  gt = np.stack([d["gt"] for d in data])
  print(f"{len(data)} faces of {args.split}", flush=True)

  lms = {prec: sgfan_jax.Landmarker.from_pretrained(precision=prec)
         for prec in PRECISIONS}
  batch = lms["float32"].batch_size
  out = {}
  for prec, lm in lms.items():
    t0 = time.perf_counter()
    out[prec] = predict_all(lm, data, batch)
    print(f"{prec}: {len(data)} faces in {time.perf_counter() - t0:.1f} s",
          flush=True)

  # Agreement.
  (p32, r32, o32, scale), (p16, r16, o16, _) = (out["float32"],
                                                out["bfloat16"])
  iod = np.linalg.norm(gt[:, 36] - gt[:, 45], axis=-1)
  rows_agree = []
  for name, a, b in (("raw (Eq. 4)", r32, r16), ("refined (Eq. 2)", p32, p16)):
    d_img = np.linalg.norm(a - b, axis=-1)                   # [F, 68]
    d_out = d_img / scale[:, None]
    d_iod = d_img / iod[:, None]
    rows_agree.append(
        f"| {name} | {np.median(d_out):.3f} | {d_out.mean():.3f} | "
        f"{100 * (d_out < 0.5).mean():.1f} | {100 * (d_out < 1).mean():.1f} | "
        f"{int((d_out > 1).sum())} | {d_out.max():.1f} | "
        f"{100 * d_iod.mean():.3f} |")
  flips = 100 * (o32 != o16).mean()

  # Accuracy.
  rows_acc = []
  for name, a, b in (("refined (Eq. 2)", p32, p16), ("raw (Eq. 4)", r32, r16)):
    for norm, short in (("inter_pupil", "IP"), ("inter_ocular", "IO")):
      n32, n16 = nme_per_face(a, gt, norm), nme_per_face(b, gt, norm)
      lo, hi = bootstrap_ci(n16 - n32)
      rows_acc.append(f"| {name} | {short} | {100 * n32.mean():.3f} | "
                      f"{100 * n16.mean():.3f} | "
                      f"{100 * (n16 - n32).mean():+.3f} | "
                      f"[{100 * lo:+.3f}, {100 * hi:+.3f}] |")

  # Speed.
  rows_speed = []
  for b in sorted({1, batch}):
    prepared = [lms["float32"].prepare(d["image"], [d["box"].tolist()],
                                       "landmarks") for d in data[:b]]
    crops = np.concatenate([q.crops for q in prepared])
    mats = np.concatenate([q.crop_to_image for q in prepared])
    # predict_crops pads to the Landmarker's batch_size: one per batch.
    timed = {prec: sgfan_jax.Landmarker.from_pretrained(precision=prec,
                                                        batch_size=b)
             for prec in PRECISIONS}
    med = time_precisions(timed, crops, mats, args.warmup, args.repeats)
    rows_speed.append(f"| {b} | {1e3 * med['float32']:.2f} | "
                      f"{1e3 * med['bfloat16']:.2f} | "
                      f"{med['float32'] / med['bfloat16']:.2f}x |")
    print(rows_speed[-1], flush=True)

  title = compare_300w.SPLIT_TITLES[args.split]
  md = timing.report_header(
      "Prediction in float32 and bfloat16", "benchmarks/predict_precision.py",
      argv, machine,
      f"jax {jax.__version__}, backend {jax.default_backend()}, the shipped "
      f"model `{os.path.relpath(lms['float32'].bundle.source, REPO)}`")
  md += (f"Faces: {len(data)} of {title}, protocol (a) (landmark box), "
         "clean.\n\n## Agreement: bfloat16 vs float32 landmarks\n\n"
         "Distance per point in network-output pixels (128 x 128 maps), "
         "and its mean as % of the inter-ocular distance.\n\n"
         "| points | median px | mean px | % < 0.5 px | % < 1 px | "
         "points > 1 px | max px | mean, % IOD |\n"
         "|---|---:|---:|---:|---:|---:|---:|---:|\n"
         + "\n".join(rows_agree) +
         f"\n\nOcclusion flags that differ: {flips:.2f} % of the points.\n\n"
         "## Accuracy (NME %, against the annotations)\n\n"
         "| points | norm | float32 | bfloat16 | bfloat16 - float32 | "
         "95 % bootstrap interval of the difference |\n"
         "|---|---|---:|---:|---:|---|\n" + "\n".join(rows_acc) +
         "\n\n## Speed: `predict_crops`, ms per call (median of "
         f"{args.repeats}, precisions alternating)\n\n"
         "| batch | float32 ms | bfloat16 ms | bfloat16 speed-up |\n"
         "|---:|---:|---:|---:|\n" + "\n".join(rows_speed) + "\n")
  timing.write_markdown(args.out_md, md)


if __name__ == "__main__":
  from sgfan_jax import host_allocator  # pylint: disable=g-import-not-at-top
  host_allocator.reexec_with_tuned_allocator()
  main()
