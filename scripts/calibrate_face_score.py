r"""Choose a model's face-verification threshold on validation data (issue 19 §2).

A detection is kept as a face when the network believes its landmarks:
``face.face_score`` (the mean Eq. 1 confidence of its points) >=
``predict.min_face_score``. This script measures the score on

* positives: the 101 face300w:val faces, clean and their seeded occluded
  copy (the occluded faces must survive too), each given ``--jitters`` boxes:
  the tight landmark box scaled by U(0.9, 1.15) and shifted by U(-8 %, 8 %)
  of its side, as a detector's box varies;
* negatives: face-sized and half-face-sized boxes in the face300w:val and
  face300w:train photos that overlap the face's landmark box by IoU < 0.05
  (background, hair, shoulders, clothes: what a detector's false positive
  looks like in a photo with a face);

and picks the largest threshold that rejects at most ``--max_face_loss``
(0.5 %) of the clean and of the occluded positives. It reports the fraction
of negatives rejected. No test image is read: the non-face photos of the
detector benchmark (benchmarks/detectors.py) and the tests are held out.
``--write`` stores the value in the model folder's ``config.json``::

  .venv/bin/python scripts/calibrate_face_score.py --write \
      --out_md benchmarks/results/face_score_threshold.md
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from benchmarks import compare_300w  # pylint: disable=g-import-not-at-top
from sgfan_jax import box_map as box_map_lib  # pylint: disable=g-import-not-at-top
from sgfan_jax import inference  # pylint: disable=g-import-not-at-top
from sgfan_jax import landmarker  # pylint: disable=g-import-not-at-top

NEG_MAX_IOU = 0.05


def jittered_boxes(box, rng, k):
  """``k`` boxes around a landmark box: side x U(0.9, 1.15), centre shifted
  by U(-0.08, 0.08) of the side. [k, 4]."""
  x0, y0, x1, y1 = box
  w, h = x1 - x0, y1 - y0
  cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
  s = rng.uniform(0.9, 1.15, k)
  dx, dy = rng.uniform(-0.08, 0.08, (2, k))
  cx, cy = cx + dx * w, cy + dy * h
  return np.stack([cx - s * w / 2, cy - s * h / 2, cx + s * w / 2,
                   cy + s * h / 2], 1)


def background_boxes(image_shape, face_box, rng, tries=40):
  """Face-sized and half-sized boxes inside the image with IoU < 0.05 with
  the face box (at most 4 per photo). [K, 4]."""
  h, w = image_shape[:2]
  side0 = max(face_box[2] - face_box[0], face_box[3] - face_box[1])
  out = []
  for _ in range(tries):
    side = side0 * rng.choice([0.5, 1.0])
    if side >= min(h, w):
      continue
    x0 = rng.uniform(-0.5, w - 0.5 - side)
    y0 = rng.uniform(-0.5, h - 0.5 - side)
    b = np.array([x0, y0, x0 + side, y0 + side])
    if box_map_lib.iou(b[None], np.asarray(face_box)[None])[0, 0] < NEG_MAX_IOU:
      out.append(b)
    if len(out) == 4:
      break
  return np.array(out).reshape(-1, 4)


# Candidate statistics of the [M, N] confidences; face.face_score is the one
# chosen here (landmarker.face_score_of).
STATISTICS = {
    "mean": lambda c: c.mean(axis=1),
    "median": lambda c: np.median(c, axis=1),
    "mean of the top half": lambda c: np.sort(c, axis=1)[
        :, c.shape[1] // 2:].mean(axis=1),
}


def confidences(lm, images, boxes):
  """``[M, N]`` confidences of every box of every image (landmark boxes)."""
  res = lm.detect_batch(images, boxes=[b for b in boxes],
                        box_format="landmarks")
  return np.stack([f.confidence for faces in res for f in faces])


def threshold_for(pos, max_loss):
  """The largest t (3 decimals) with <= max_loss of each positive set
  below it."""
  t = min(float(np.quantile(v, max_loss, method="lower"))
          for v in pos.values())
  return float(np.floor(t * 1000) / 1000)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--data", default=str(REPO.parent / "shared/data/300w"))
  p.add_argument("--model", default="")
  p.add_argument("--jitters", type=int, default=3)
  p.add_argument("--max_face_loss", type=float, default=0.005)
  p.add_argument("--train_photos", type=int, default=300,
                 help="face300w:train photos used for negatives")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--write", action="store_true")
  p.add_argument("--out_md", default="")
  args = p.parse_args(argv)
  rng = np.random.default_rng(args.seed)
  root = compare_300w.data_root_or_exit(args.data)
  val, clean_set, occ_set, _ = compare_300w.val_with_occluded_copy(root, 0)
  from tfds_builders.face300w import face300w_dataset_builder as b  # pylint: disable=g-import-not-at-top
  train = sorted(rel for rel, _, _ in b.train_val_faces(root)[0])
  train = [train[i] for i in np.unique(np.linspace(
      0, len(train) - 1, args.train_photos).round().astype(int))]
  model_dir, bundle = compare_300w.model_bundle(args.model)
  lm = landmarker.Landmarker(bundle, detector="none")

  pos = {}
  for tag, data in (("clean", clean_set), ("occluded", occ_set)):
    pos[tag] = confidences(lm, [d["image"] for d in data],
                      [jittered_boxes(d["box"], rng, args.jitters)
                       for d in data])
  negs = []
  for names, folder in ((val, root), (train, root)):
    data = compare_300w.load_set(folder, names, "negatives")
    boxes = [background_boxes(d["image"].shape, d["box"], rng) for d in data]
    negs.append(confidences(lm, [d["image"] for d in data], boxes))
  neg = np.concatenate(negs)
  stat_rows = []
  for name, fn in STATISTICS.items():
    sp = {k: fn(v) for k, v in pos.items()}
    tt = threshold_for(sp, args.max_face_loss)
    stat_rows.append((name, tt, float(np.mean(fn(neg) < tt))))
  used = landmarker.FACE_SCORE_STATISTIC
  pos = {k: landmarker.face_score_of(v) for k, v in pos.items()}
  neg = landmarker.face_score_of(neg)
  t = threshold_for(pos, args.max_face_loss)
  lines = [
      f"# Face-verification threshold of `{model_dir}`\n",
      f"Command: `python scripts/calibrate_face_score.py "
      f"{' '.join(sys.argv[1:] if argv is None else argv)}`\n",
      f"face_score = {used} of the Eq. 1 confidences of the points "
      "(`landmarker.face_score_of`). Positives: "
      f"face300w:val faces, {args.jitters} jittered landmark boxes each; "
      f"negatives: background boxes (IoU < {NEG_MAX_IOU} with the face) in "
      f"{len(val)} val and {len(train)} train photos.\n",
      "| set | boxes | face_score p0.5 / p5 / median / p95 | rejected at "
      "the chosen t |", "|---|---|---|---|"]
  for tag, v in list(pos.items()) + [("negatives", neg)]:
    q = np.quantile(v, [0.005, 0.05, 0.5, 0.95])
    lines.append(f"| {tag} | {len(v)} | " + " / ".join(f"{x:.3f}" for x in q)
                 + f" | {np.mean(v < t):.1%} |")
  lines.append("\nStatistics compared (threshold at the same rule; "
               "fraction of negatives rejected):\n\n| statistic | threshold "
               "| negatives rejected |\n|---|---|---|")
  lines += [f"| {n} | {tt:.3f} | {r:.1%} |" for n, tt, r in stat_rows]
  lines.append(f"\nChosen: min_face_score = {t:.3f} (the largest threshold "
               f"that rejects <= {args.max_face_loss:.1%} of the clean and "
               "of the occluded faces).\n")
  text = "\n".join(lines)
  print(text)
  if args.out_md:
    pathlib.Path(args.out_md).write_text(text)
  if args.write:
    path = inference.set_model_config_value(model_dir, "predict",
                                            "min_face_score", t)
    print(f"wrote predict.min_face_score = {t} into {path}")


if __name__ == "__main__":
  main()
