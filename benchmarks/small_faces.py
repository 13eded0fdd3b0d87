r"""Small faces in large photos: does the face detector need tiles? (issue 19)

Canvases of 1920x1080 px (grey with noise), each holding ``--per_canvas``
300-W common-test photos scaled so that their face (tight landmark box) is
``--face_px`` px wide, in a grid. A face is found when a detection overlaps
its scaled landmark box with IoU >= 0.3. Candidates: the shipped BlazeFace
settings (``configs/default.py`` predict fields) with
``blazeface_tile_grid`` 0 (off), 2 and 3; dlib HOG for reference. Also the
false faces on scikit-image's non-face photos and the 554 clean photos'
hit rate are unchanged by tiles (those photos are under 640 px, where tiles
do not run).

  .venv/bin/python benchmarks/small_faces.py \
      --out_md benchmarks/results/small_faces.md
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from benchmarks import compare_300w  # pylint: disable=g-import-not-at-top
from benchmarks import timing  # pylint: disable=g-import-not-at-top
from configs import default  # pylint: disable=g-import-not-at-top
from sgfan_jax import box_map as box_map_lib  # pylint: disable=g-import-not-at-top
from sgfan_jax import crop  # pylint: disable=g-import-not-at-top
from sgfan_jax import detectors  # pylint: disable=g-import-not-at-top
from sgfan_jax import pts_io  # pylint: disable=g-import-not-at-top

W, H = 1920, 1080


def canvases(root, count, per, face_px, seed=0):
  """``count`` (image uint8 [H, W, 3], boxes [per, 4]) canvases."""
  rng = np.random.default_rng(seed)
  faces = pts_io.find_faces(root, compare_300w.TEST_SUBSETS)
  order = rng.permutation(len(faces))
  cols = int(np.ceil(np.sqrt(per * W / H)))
  rows = int(np.ceil(per / cols))
  out, k = [], 0
  for _ in range(count):
    canvas = rng.normal(128, 20, (H, W, 3)).clip(0, 255).astype(np.uint8)
    boxes = []
    for slot in range(per):
      _, img_path, pts_path = faces[order[k % len(faces)]]
      k += 1
      photo = crop.load_image_rgb(img_path)
      box = crop.landmark_box(pts_io.read_pts(pts_path))
      s = face_px / (box[2] - box[0])
      nw, nh = max(1, round(photo.width * s)), max(1, round(photo.height * s))
      small = photo.resize((nw, nh), Image.BILINEAR)
      sx, sy = nw / photo.width, nh / photo.height
      r, c = divmod(slot, cols)
      cw, ch = W // cols, H // rows
      x0 = int(c * cw + rng.uniform(0, max(cw - nw, 1)))
      y0 = int(r * ch + rng.uniform(0, max(ch - nh, 1)))
      nw, nh = min(nw, W - x0), min(nh, H - y0)
      canvas[y0:y0 + nh, x0:x0 + nw] = np.asarray(small)[:nh, :nw]
      # DESIGN.md's resize rule: x -> (x + 0.5) * s - 0.5, then the offset.
      boxes.append([(box[0] + 0.5) * sx - 0.5 + x0, (box[1] + 0.5) * sy - 0.5
                    + y0, (box[2] + 0.5) * sx - 0.5 + x0,
                    (box[3] + 0.5) * sy - 0.5 + y0])
    out.append((canvas, np.array(boxes)))
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--data", default=str(REPO.parent / "shared/data/300w"))
  p.add_argument("--canvases", type=int, default=10)
  p.add_argument("--per_canvas", type=int, default=12)
  p.add_argument("--face_px", type=int, nargs="+", default=[40, 80])
  p.add_argument("--out_md", default="")
  args = p.parse_args(argv)
  argv = sys.argv[1:] if argv is None else list(argv)
  machine = timing.machine()
  root = compare_300w.data_root_or_exit(args.data)
  pc = default.get_config().predict
  cands = {"dlib HOG": detectors.detector_from_config("dlib_hog", pc)}
  for grid in (0, 2, 3):
    pc.blazeface_tile_grid = grid
    cands[f"BlazeFace (shipped), tiles {grid}x{grid}" if grid else
          "BlazeFace (shipped), no tiles"] = detectors.detector_from_config(
              "blazeface", pc)
  lines = [timing.report_header("Small faces in large photos: tiles",
                                "benchmarks/small_faces.py", argv, machine,
                                ""),
           f"{args.canvases} canvases of {W}x{H} per face size, "
           f"{args.per_canvas} faces each (300-W common-test photos, scaled "
           "so the landmark box has the given width); hit = IoU >= 0.3.\n",
           "| detector | " + " | ".join(f"faces {f} px" for f in args.face_px)
           + " | ms / canvas |", "|---|" + "---|" * (len(args.face_px) + 1)]
  sets = {f: canvases(root, args.canvases, args.per_canvas, f)
          for f in args.face_px}
  for name, det in cands.items():
    cells, times = [], []
    for f, data in sets.items():
      hits = total = 0
      for image, boxes in data:
        t0 = time.perf_counter()
        found, _ = det.detect(image)
        times.append(time.perf_counter() - t0)
        m = box_map_lib.match_detections(found, boxes, 0.3)
        hits += int((np.asarray(m) >= 0).sum())
        total += len(boxes)
      cells.append(f"{100 * hits / total:.1f} % ({hits}/{total})")
    lines.append(f"| {name} | " + " | ".join(cells) +
                 f" | {1e3 * np.median(times):.0f} |")
    print(lines[-1], flush=True)
  text = "\n".join(lines) + "\n"
  print(text)
  if args.out_md:
    pathlib.Path(args.out_md).write_text(text)


if __name__ == "__main__":
  main()
