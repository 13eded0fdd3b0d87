"""Fits a detector's box -> landmark box map on 300-W TRAINING faces.

Runs the detector (``--detector``: 'dlib_hog' or 'blazeface', with the
settings of ``configs/default.py``'s ``predict`` fields) over every
face of the 300-W training folders (``afw``, ``helen/trainset``,
``lfpw/trainset``; never the test faces), matches the detections to the
face's tight landmark box by IoU (raw boxes, IoU >= --min_iou), fits
``sgfan_jax.box_map.BoxMap`` (medians) on the matched pairs, and writes the
map with its provenance (faces used / missed, median IoU with the landmark
box before and after mapping, the command) to
``sgfan_jax/data/<detector>_box_map.json``.

Commands::

  .venv/bin/python scripts/fit_box_map.py --data /work/shared/data/300w
  .venv/bin/python scripts/fit_box_map.py --data /work/shared/data/300w \
      --detector blazeface
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

from sgfan_jax import box_map as box_map_lib  # pylint: disable=g-import-not-at-top
from sgfan_jax import detectors  # pylint: disable=g-import-not-at-top
from sgfan_jax import pts_io  # pylint: disable=g-import-not-at-top
from sgfan_jax import crop  # pylint: disable=g-import-not-at-top

TRAIN_SUBSETS = ("afw", "helen/trainset", "lfpw/trainset")
TEST_SUBSETS = ("helen/testset", "lfpw/testset")


def detect_and_match(detector, faces, min_iou, progress=True):
  """Runs the detector on each face's image and matches it to its landmark
  box. Returns (landmark boxes [M, 4], matched detector boxes [M, 4] with NaN
  rows where missed)."""
  lm_boxes, det_boxes = [], []
  t0 = time.time()
  for i, (img_path, pts_path) in enumerate(faces):
    image = np.asarray(crop.load_image_rgb(img_path))
    lb = crop.landmark_box(pts_io.read_pts(pts_path)).astype(np.float64)
    boxes, _ = detector.detect(image)
    j = box_map_lib.match_detections(boxes, lb[None], min_iou)[0]
    lm_boxes.append(lb)
    det_boxes.append(boxes[j].astype(np.float64) if j >= 0
                     else np.full(4, np.nan))
    if progress and (i + 1) % 200 == 0:
      print(f"  {i + 1}/{len(faces)} faces, {time.time() - t0:.0f} s",
            flush=True)
  return np.stack(lm_boxes), np.stack(det_boxes)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--data", default=str(REPO.parent / "shared/data/300w"),
                 help="300-W root (release layout)")
  p.add_argument("--detector", default="dlib_hog",
                 choices=sorted(box_map_lib.DEFAULT_MAPS))
  p.add_argument("--out", default="",
                 help="default: the bundled map of --detector")
  p.add_argument("--min_iou", type=float, default=0.3,
                 help="IoU (raw detector box vs landmark box) for a match")
  args = p.parse_args(argv)

  from configs import default  # pylint: disable=g-import-not-at-top
  if args.detector == "dlib_hog":
    detector = detectors.DlibHOGDetector()
    settings = {"upsample": detector.upsample, "max_side": detector.max_side,
                "adjust_threshold": detector.adjust_threshold}
    conventions = ("detector box: dlib's inclusive rectangle as pixel "
                   "edges (left-0.5, top-0.5, right+0.5, bottom+0.5); ")
  else:
    detector = detectors.detector_from_config(args.detector,
                                              default.get_config().predict)
    settings = {"repr": repr(detector)}
    conventions = ("detector box: BlazeFace's decoded box mapped back from "
                   "the letterbox (sgfan_jax/blazeface.py); ")
  args.out = args.out or str(box_map_lib.DEFAULT_MAPS[args.detector])
  faces = [(image, pts) for _, image, pts in
           pts_io.find_faces(args.data, TRAIN_SUBSETS)]
  print(f"{len(faces)} training faces; detector {detector!r}", flush=True)
  lm, det = detect_and_match(detector, faces, args.min_iou)
  hit = np.all(np.isfinite(det), axis=1)
  if not hit.any():
    raise SystemExit("the detector matched no face; nothing to fit")
  before = np.array([box_map_lib.iou(d[None], l[None])[0, 0]
                     for d, l in zip(det[hit], lm[hit])])
  command = ("python scripts/fit_box_map.py "
             + " ".join(argv if argv is not None else sys.argv[1:])).strip()
  bm = box_map_lib.BoxMap.fit(det[hit], lm[hit])
  after = np.array([box_map_lib.iou(d[None], l[None])[0, 0]
                    for d, l in zip(bm.apply(det[hit]), lm[hit])])
  meta = {
      "detector": args.detector,
      "detector_settings": settings,
      "box_conventions": (conventions + "target: tight box of the 68 "
                          "landmarks; both 0-based pixel-centre coordinates"),
      "parametrisation": ("landmark centre = detector centre + (dx*w, dy*h); "
                          "landmark size = (sw*w, sh*h); w, h = detector box "
                          "size; medians over matched pairs"),
      "fit_data": "300-W training faces: " + ", ".join(TRAIN_SUBSETS),
      "faces_total": int(len(faces)),
      "faces_used": int(hit.sum()),
      "faces_missed": int((~hit).sum()),
      "match_min_iou": float(args.min_iou),
      "median_iou_before": round(float(np.median(before)), 4),
      "median_iou_after": round(float(np.median(after)), 4),
      "mean_iou_before": round(float(np.mean(before)), 4),
      "mean_iou_after": round(float(np.mean(after)), 4),
      "command": command,
  }
  bm = box_map_lib.BoxMap(dx=round(bm.dx, 6), dy=round(bm.dy, 6),
                          sw=round(bm.sw, 6), sh=round(bm.sh, 6), meta=meta)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  bm.to_json(args.out)
  print(f"fitted dx={bm.dx:.4f} dy={bm.dy:.4f} sw={bm.sw:.4f} sh={bm.sh:.4f} "
        f"on {meta['faces_used']}/{meta['faces_total']} faces "
        f"({meta['faces_missed']} missed); median IoU "
        f"{meta['median_iou_before']:.3f} -> {meta['median_iou_after']:.3f}; "
        f"wrote {args.out}")


if __name__ == "__main__":
  main()
