"""Face detectors compared: dlib's HOG vs the Flax BlazeFace port.

Candidates (``sgfan_jax/detectors.py``, options of ``configs/default.py``'s
``predict``): ``dlib_hog`` (as the predict command runs it), BlazeFace
short-range (letterbox 128), full-range (letterbox 192) and full-range with
the padded second pass (the photo also padded to 2x, merged by NMS).

Sets (a *hit* = a detection whose IoU with the face's tight landmark box,
the ``.pts`` points 1-based -> 0-based, is >= 0.3):

* **clean**: the 554 common-test faces (300-W ``helen/testset`` +
  ``lfpw/testset``; one image file per face);
* **occluded**: the project's seeded occluded copy of the same faces
  (``sgfan_jax/occlusion_copy.py``, seed 0; built into ``--occluded_dir``
  when missing, as benchmarks/compare_300w.py does);
* **turned**: the clean and occluded results binned by the jaw asymmetry
  ``r = max(dR, dL) / min(dR, dL)``, ``dR`` / ``dL`` = mean distance from
  the nose tip (point 30) to jaw points 0-3 / 13-16 (r ~ 1 frontal, growing
  with yaw; a profile hides one side);
* **multi-face photos**: the afw photos with >= 2 annotated faces (every
  annotated face must be hit; afw is in the landmark model's training data,
  which does not matter for the detectors);
* **non-face photos**: scikit-image's bundled sample photos (objects,
  animals, landscapes, text, microscopy, astronomy; a benchmark-only
  dependency, benchmarks/requirements-bench.txt): every detection is a
  false face; plus ``camera.png`` (a three-quarter face: should be found)
  and ``astronaut.png`` (one face: exactly one detection, not the patch).

ms per image: mean wall time of ``detect`` over the clean set (host letterbox
or downscale included; jitted functions compiled before timing).

Command::

  .venv/bin/python benchmarks/detectors.py --data /work/shared/data/300w
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from typing import Dict, List

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from benchmarks import timing  # pylint: disable=g-import-not-at-top
from configs import default as default_config  # pylint: disable=g-import-not-at-top
from sgfan_jax import crop  # pylint: disable=g-import-not-at-top
from sgfan_jax import detectors  # pylint: disable=g-import-not-at-top
from sgfan_jax import occlusion_copy  # pylint: disable=g-import-not-at-top
from sgfan_jax import pts_io  # pylint: disable=g-import-not-at-top

TEST_SUBSETS = ("helen/testset", "lfpw/testset")
HIT_IOU = 0.3
# Jaw-asymmetry bins (lower edges of r).
YAW_BINS = (1.0, 1.5, 2.5, 4.0)
FACE_PHOTOS = ("astronaut.png", "camera.png")


def candidates(pc) -> Dict[str, object]:
  """Name -> detector, with the config's options."""
  opts = dict(min_score=pc.blazeface_min_score,
              iou_threshold=pc.blazeface_iou_threshold,
              max_detections=pc.blazeface_max_detections)
  return {
      "dlib HOG": detectors.detector_from_config("dlib_hog", pc),
      "BlazeFace short-range, 128": detectors.get_detector(
          "blazeface_short", pad_pass=False, **opts),
      "BlazeFace full-range, 192": detectors.get_detector(
          "blazeface", pad_pass=False, **opts),
      "full-range + padded pass": detectors.get_detector(
          "blazeface", pad_pass=True, **opts),
      "full-range + padded pass (its min score 0.6)": detectors.get_detector(
          "blazeface", pad_pass=True, pad_min_score=0.6, **opts),
      "full-range + short-range pass": detectors.get_detector(
          "blazeface", pad_pass=False, short_pass=True, **opts),
      "full-range + padded + short-range pass": detectors.get_detector(
          "blazeface", pad_pass=True, short_pass=True, **opts),
      "full-range + short-range pass when it finds none":
          detectors.get_detector("blazeface", pad_pass=False,
                                 short_pass="fallback", **opts),
  }


def iou_many(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  iw = np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0])
  ih = np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1])
  inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
  union = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) +
           (box[2] - box[0]) * (box[3] - box[1]) - inter)
  return inter / np.maximum(union, 1e-12)


def jaw_asymmetry(points: np.ndarray) -> float:
  nose = points[30]
  d_r = np.linalg.norm(points[0:4] - nose, axis=1).mean()
  d_l = np.linalg.norm(points[13:17] - nose, axis=1).mean()
  return float(max(d_r, d_l) / max(min(d_r, d_l), 1e-9))


def image_path(stem: pathlib.Path) -> pathlib.Path:
  for ext in (".jpg", ".png"):
    if stem.with_suffix(ext).is_file():
      return stem.with_suffix(ext)
  raise FileNotFoundError(f"no image for {stem} (.jpg/.png)")


def face_set(root: pathlib.Path, names) -> List[dict]:
  out = []
  for rel in names:
    stem = root / rel
    pts = pts_io.read_pts(stem.with_suffix(".pts"))
    out.append({"rel": rel, "path": image_path(stem),
                "boxes": [crop.landmark_box(pts).astype(np.float64)],
                "points": [pts]})
  return out


def multi_face_set(root: pathlib.Path) -> List[dict]:
  """afw photos with >= 2 annotated faces (one .jpg copy per face)."""
  groups: Dict[str, list] = {}
  for rel, _, _ in pts_io.find_faces(root, ["afw"]):
    groups.setdefault(rel.rsplit("_", 1)[0], []).append(rel)
  out = []
  for photo, rels in sorted(groups.items()):
    if len(rels) < 2:
      continue
    pts = [pts_io.read_pts((root / r).with_suffix(".pts")) for r in rels]
    out.append({"rel": photo, "path": image_path(root / sorted(rels)[0]),
                "boxes": [crop.landmark_box(p).astype(np.float64)
                          for p in pts], "points": pts})
  return out


def run_set(det, items, timed=False):
  """Per item: hits per annotated face (bool list), detections, seconds."""
  res = []
  for it in items:
    image = np.asarray(crop.load_image_rgb(it["path"]))
    t0 = time.perf_counter()
    boxes, scores = det.detect(image)
    dt = time.perf_counter() - t0
    hits = [bool(len(boxes) and iou_many(boxes, b).max() >= HIT_IOU)
            for b in it["boxes"]]
    res.append({"hits": hits, "n": len(boxes), "scores": scores,
                "seconds": dt})
  return res


def skimage_photos():
  """(name, uint8 RGB image) of scikit-image's bundled photos."""
  import skimage  # pylint: disable=g-import-not-at-top
  from skimage import io  # pylint: disable=g-import-not-at-top
  data = pathlib.Path(skimage.__file__).parent / "data"
  out = []
  for p in sorted(data.glob("*")):
    if p.suffix not in (".png", ".jpg"):
      continue
    im = np.asarray(io.imread(p))
    if im.ndim == 2:
      im = np.repeat(im[..., None], 3, -1)
    if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] not in (3, 4):
      continue
    out.append((p.name, np.ascontiguousarray(im[..., :3])))
  return out


def pct(k, n):
  return f"{100.0 * k / n:.1f} % ({k}/{n})" if n else "-"


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--data", default=str(REPO.parent / "shared/data/300w"))
  ap.add_argument("--occluded_dir", default="/tmp/sgfan_occluded_300w_seed0")
  ap.add_argument("--occlusion_seed", type=int, default=0)
  ap.add_argument("--max_faces", type=int, default=None,
                  help="evenly sub-sample the 554 faces (quick runs)")
  ap.add_argument("--no_multi", action="store_true",
                  help="skip the afw multi-face photos")
  ap.add_argument("--only", nargs="*", default=None,
                  help="run only the candidates with these names (exact)")
  ap.add_argument("--out_md", default=str(REPO / "benchmarks/results/"
                                          "detectors.md"))
  args = ap.parse_args(argv)
  argv = sys.argv[1:] if argv is None else list(argv)
  machine = timing.machine()
  root = pathlib.Path(args.data)
  if not root.is_dir():
    raise SystemExit(f"300-W data not found at {root} (--data)")
  names = [rel for rel, _, _ in pts_io.find_faces(root, TEST_SUBSETS)]
  total = len(names)
  if args.max_faces is not None and args.max_faces < total:
    idx = np.unique(np.linspace(0, total - 1, args.max_faces).round()
                    .astype(int))
    names = [names[i] for i in idx]

  occ_dir = pathlib.Path(args.occluded_dir)
  if not (occ_dir / "occlusion.json").is_file():
    print(f"building the occluded copy in {occ_dir}", flush=True)
    occlusion_copy.build_occluded_copy(root, TEST_SUBSETS, occ_dir,
                                       args.occlusion_seed)
  doc = occlusion_copy.load_occlusion(occ_dir)
  if doc.get("seed") != args.occlusion_seed or any(
      n not in doc["faces"] for n in names):
    raise SystemExit(f"{occ_dir} holds a different occluded copy")

  sets = {"clean": face_set(root, names), "occluded": face_set(occ_dir, names)}
  if not args.no_multi:
    sets["multi"] = multi_face_set(root)
  ratios = np.array([jaw_asymmetry(it["points"][0]) for it in sets["clean"]])
  bins = np.searchsorted(YAW_BINS, ratios, side="right") - 1
  photos = skimage_photos()

  pc = default_config.get_config().predict
  results = {}
  for name, det in candidates(pc).items():
    if args.only is not None and name not in args.only:
      continue
    warm = np.asarray(crop.load_image_rgb(sets["clean"][0]["path"]))
    det.detect(warm)
    det.detect(warm)
    r = {k: run_set(det, v) for k, v in sets.items()}
    r["photos"] = {n: det.detect(im) for n, im in photos}
    results[name] = r
    print(f"{name}: clean {sum(x['hits'][0] for x in r['clean'])}/"
          f"{len(r['clean'])}, occluded "
          f"{sum(x['hits'][0] for x in r['occluded'])}/"
          f"{len(r['occluded'])}, {1e3 * np.mean([x['seconds'] for x in r['clean']]):.1f} ms",
          flush=True)

  # ------------------------------------------------------------ tables
  n = len(names)
  lines = []
  head = ("| detector | clean common | occluded copy | multi-face photos "
          "(afw) | false faces on non-face photos | camera.png | "
          "astronaut.png | ms / image |")
  lines += [head, "|" + " --- |" * 8]
  nonface = [p for p, _ in photos if p not in FACE_PHOTOS]
  for name, r in results.items():
    clean = sum(x["hits"][0] for x in r["clean"])
    occl = sum(x["hits"][0] for x in r["occluded"])
    if "multi" in r:
      mh = sum(sum(x["hits"]) for x in r["multi"])
      mn = sum(len(x["hits"]) for x in r["multi"])
      multi = pct(mh, mn)
    else:
      multi = "-"
    false = {p: len(r["photos"][p][0]) for p in nonface}
    nfalse = sum(false.values())
    where = ", ".join(f"{p}: {k}" for p, k in false.items() if k)
    cam_b, cam_s = r["photos"].get("camera.png", ([], []))
    ast_b, ast_s = r["photos"].get("astronaut.png", ([], []))
    ms = 1e3 * np.mean([x["seconds"] for x in r["clean"]])
    lines.append(
        f"| {name} | {pct(clean, n)} | {pct(occl, n)} | {multi} | "
        f"{nfalse} in {len(nonface)} photos{' (' + where + ')' if where else ''}"
        f" | {'found' if len(cam_b) else 'missed'} ({len(cam_b)} det.) | "
        f"{len(ast_b)} det. | {ms:.1f} |")
  table = "\n".join(lines)

  ylines = ["| detector | set | " + " | ".join(
      f"r {lo:g}-{hi:g}" for lo, hi in zip(YAW_BINS, YAW_BINS[1:] + (
          float("inf"),))) + " |", "|" + " --- |" * (2 + len(YAW_BINS))]
  for name, r in results.items():
    for ds in ("clean", "occluded"):
      cells = []
      for b in range(len(YAW_BINS)):
        sel = np.flatnonzero(bins == b)
        cells.append(pct(sum(r[ds][i]["hits"][0] for i in sel), len(sel)))
      ylines.append(f"| {name} | {ds} | " + " | ".join(cells) + " |")
  ytable = "\n".join(ylines)

  import jax  # pylint: disable=g-import-not-at-top
  text = timing.report_header(
      "Face detectors: dlib HOG vs BlazeFace (Flax port)",
      "benchmarks/detectors.py", argv, machine,
      f"jax {jax.__version__} on {jax.default_backend()}; BlazeFace "
      f"min_score {pc.blazeface_min_score}, NMS IoU "
      f"{pc.blazeface_iou_threshold}; dlib upsample {pc.detector_upsample}, "
      f"max_side {pc.detector_max_side}, threshold {pc.min_box_score}")
  text += (
      f"A hit: a detection with IoU >= {HIT_IOU} with the face's tight "
      f"landmark box. Clean common: {n} faces of 300-W helen/testset + "
      f"lfpw/testset{'' if n == total else f' (sub-sampled from {total})'};"
      " occluded copy: the same faces with the project's seeded occluders "
      f"(seed {args.occlusion_seed}, sgfan_jax/occlusion_copy.py); "
      "multi-face: the afw photos with >= 2 annotated faces (each annotated "
      "face must be hit); non-face photos: scikit-image's bundled photos "
      f"other than {', '.join(FACE_PHOTOS)} ({', '.join(nonface)}). "
      "ms / image: mean detect() wall time over the clean set, one image at "
      "a time, on the loaded machine named above.\n\n" + table + "\n\n"
      "Turned faces: the clean / occluded results binned by the jaw "
      "asymmetry r (mean nose-tip-to-jaw distance, far side over near side, "
      "points 0-3 vs 13-16; r grows with yaw). Faces per bin: " +
      ", ".join(f"r {lo:g}+: {int((bins == b).sum())}"
                for b, lo in enumerate(YAW_BINS)) + ".\n\n" + ytable + "\n")
  for name, r in results.items():
    cam = r["photos"].get("camera.png")
    ast = r["photos"].get("astronaut.png")
    text += (f"\n{name}: camera.png scores "
             f"{np.round(cam[1], 3).tolist() if cam else '-'}, astronaut.png "
             f"boxes {np.round(ast[0], 1).tolist() if ast else '-'} scores "
             f"{np.round(ast[1], 3).tolist() if ast else '-'}")
  timing.write_markdown(args.out_md, text + "\n")


if __name__ == "__main__":
  main()
