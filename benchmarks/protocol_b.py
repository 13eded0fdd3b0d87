r"""Protocol (b) with the shipped photo path vs protocol (a), with and
without the second pass (issue 19 §3).

For every face of a split (``--split val``: face300w:val, where the choice is
made; ``--split test_common``: the 554 common-test faces, reported only),
clean and its seeded occluded copy:

* (a) the network on the tight landmark box (``box_format="landmarks"``);
* (b) the whole photo path: ``Landmarker.detect(image)`` with the detector
  (``--detector``, default the config's), its box map, face verification,
  and the second pass off / on; the detection matching the face (IoU >= 0.3
  of the raw box with the landmark box) is scored; a face with no match
  counts as missed and is left out of the (b) NME (the count is reported).

NME inter-pupil / inter-ocular (%), refined points::

  .venv/bin/python benchmarks/protocol_b.py --split val \
      --out_md benchmarks/results/protocol_b_val.md
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from benchmarks import compare_300w  # pylint: disable=g-import-not-at-top
from benchmarks import timing  # pylint: disable=g-import-not-at-top
from sgfan_jax import box_map as box_map_lib  # pylint: disable=g-import-not-at-top
from sgfan_jax import landmarker  # pylint: disable=g-import-not-at-top
from sgfan_jax import metrics  # pylint: disable=g-import-not-at-top
from sgfan_jax import occlusion_copy  # pylint: disable=g-import-not-at-top


def run(lm, data, protocol):
  """Refined points ``[F, N, 2]`` (NaN where the face was missed)."""
  out = np.full((len(data),) + data[0]["gt"].shape, np.nan)
  for i, d in enumerate(data):
    if protocol == "a":
      faces = lm.detect(d["image"], boxes=[d["box"]], box_format="landmarks")
      out[i] = faces[0].points
      continue
    faces = lm.detect(d["image"])
    if not faces:
      continue
    boxes = np.stack([f.box for f in faces])
    j = box_map_lib.match_detections(boxes, d["box"][None],
                                     compare_300w.MATCH_MIN_IOU)[0]
    if j >= 0:
      out[i] = faces[j].points
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--data", default=str(REPO.parent / "shared/data/300w"))
  p.add_argument("--split", default="val", choices=["val", "test_common"])
  p.add_argument("--detector", default=None)
  p.add_argument("--max_faces", type=int, default=None)
  p.add_argument("--out_md", default="")
  args = p.parse_args(argv)
  argv = sys.argv[1:] if argv is None else list(argv)
  machine = timing.machine()
  root = compare_300w.data_root_or_exit(args.data)
  subsets, names = compare_300w.split_names(root, args.split)
  if args.max_faces:
    names = [names[i] for i in np.unique(np.linspace(
        0, len(names) - 1, args.max_faces).round().astype(int))]
  # A sub-sampled run (--max_faces) gets its own copy, so the full copy
  # that other tools reuse is never a partial one.
  occ_dir = pathlib.Path("/tmp/sgfan_occluded_300w" + (
      "" if args.split == "test_common" else "_" + args.split) + "_seed0" +
                         (f"_max{args.max_faces}" if args.max_faces else ""))
  if not (occ_dir / "occlusion.json").is_file():
    occlusion_copy.build_occluded_copy(
        root, subsets, occ_dir, 0,
        names=None if args.split == "test_common" and not args.max_faces
        else names)
  sets = {"clean": compare_300w.load_set(root, names, "clean"),
          "occluded": compare_300w.load_set(occ_dir, names, "occluded")}
  rows = []
  for second in (False, True):
    lm = landmarker.Landmarker.from_pretrained(detector=args.detector,
                                               second_pass=second)
    for tag, data in sets.items():
      gt = np.stack([d["gt"] for d in data])
      for protocol in ("a", "b"):
        if protocol == "a" and second:
          continue                      # (a) has no detector box
        t0 = time.perf_counter()
        pred = run(lm, data, protocol)
        sec = time.perf_counter() - t0
        found = np.isfinite(pred).all(axis=(1, 2))
        ip = metrics.mean_nme(metrics.nme(pred[found], gt[found],
                                          "inter_pupil"))
        io = metrics.mean_nme(metrics.nme(pred[found], gt[found],
                                          "inter_ocular"))
        rows.append((tag, protocol, second, int(found.sum()), len(data), ip,
                     io, 1000 * sec / len(data)))
        print(rows[-1], flush=True)
  lines = [timing.report_header(
      f"Protocol (b) vs (a), {compare_300w.SPLIT_TITLES[args.split]}",
      "benchmarks/protocol_b.py", argv, machine, ""),
           f"Detector: `{lm.detector!r}`; box map: dx={lm.box_map.dx:.4f} "
           f"dy={lm.box_map.dy:.4f} sw={lm.box_map.sw:.4f} "
           f"sh={lm.box_map.sh:.4f}; face verification "
           f"min_face_score={lm.min_face_score:g}.\n",
           "| faces | protocol | second pass | found | NME IP | NME IO | "
           "(b) / (a) IP | ms / face |", "|---|---|---|---|---|---|---|---|"]
  ref = {(r[0]): r[5] for r in rows if r[1] == "a"}
  for tag, protocol, second, n, total, ip, io, ms in rows:
    ratio = "-" if protocol == "a" else f"{ip / ref[tag]:.3f}"
    lines.append(f"| {tag} | ({protocol}) | "
                 f"{'-' if protocol == 'a' else ('on' if second else 'off')} "
                 f"| {n}/{total} | {100 * ip:.2f} | {100 * io:.2f} | {ratio} "
                 f"| {ms:.0f} |")
  text = "\n".join(lines) + "\n"
  print(text)
  if args.out_md:
    pathlib.Path(args.out_md).write_text(text)


if __name__ == "__main__":
  main()
