r"""Landmarks on image files and folders: ``python -m sgfan_jax.predict``.

  python -m sgfan_jax.predict photo.jpg photos/ --out preds/
  python -m sgfan_jax.predict photos/ --out preds/ --workdir ~/sgfan/lite
  python -m sgfan_jax.predict crops/ --out preds/ --detector=none
  python -m sgfan_jax.predict group.jpg --out preds/ --box=120,80,360,330
  python -m sgfan_jax.predict photos/ --out preds/ --boxes=boxes.json
  python -m sgfan_jax.predict photos/ --out preds/ --precision=bfloat16
  sgfan-jax predict photos/ --out preds/          # installed console script

INPUT: image files and folders (searched recursively for
jpg/jpeg/png/bmp/ppm/pgm/webp/tif/tiff, any case). The model is the shipped
one (``sgfan_jax/pretrained/``) unless ``--workdir`` (a training workdir) or
``--model`` (a model folder) is given. Faces come from the bundled detector
(``--detector``), or from ``--box`` (every image) / ``--boxes FILE``
(per image: JSON ``{"image": [[x0, y0, x1, y1], ...]}`` or CSV rows
``image,x0,y0,x1,y1``; ``image`` is the path as listed or its file name;
images not in the file are detected). ``--box_format=landmarks`` says the
given boxes are tight boxes of the 68 points (the 300-W protocol) instead of
detector boxes. ``--precision`` sets the forward pass's compute dtype
(``predict.precision`` of the model's config: 'auto' = the measured choice
of the backend, docs/RESULTS.md "Speed").

Writes, for an input ``DIR/sub/NAME.jpg`` found under a folder ``DIR``,
``OUT/sub/NAME.json`` (every face: box, box score, points, raw points,
confidence, occluded, head pose yaw/pitch/roll in degrees (sgfan_jax/pose.py);
the model, the precision, the coordinate convention), ``OUT/sub/NAME_<k>.pts`` (one 300-W file per face, 1-based,
k = 1, 2, ...), ``OUT/sub/NAME.png`` (the
overlay: green dots = visible points, red crosses = occluded points, yellow
box), with ``--chips SIZE`` also ``OUT/sub/NAME_<k>_chip.png`` (each face
aligned onto the five-point recognition template, ``SIZE x SIZE``;
sgfan_jax/chips.py; images only) and, for the run, ``OUT/summary.csv``
(file, faces, status, reason, outputs, rejected: detections dropped by face
verification, see ``--keep_all``).
A bad file (not an image, empty, truncated), an unreadable folder or an
image without a face gets one summary line with the reason and the run goes
on; the exit code is 1 if any input failed, else 0.

VIDEO (mp4/mov/avi/mkv/webm/m4v, also found in folders; mixed with images
is fine): the faces are tracked (``Landmarker.track``, sgfan_jax/tracking.py:
detection on the first frame and every ``--detect_every`` frames, crops
from the previous points in between, ids kept by overlap, One Euro
smoothing unless ``--nosmooth``) and written as ``OUT/NAME.jsonl`` (one line
per frame), ``OUT/NAME.npz`` (arrays) and, unless ``--nooverlay``,
``OUT/NAME_overlay.mp4`` (sgfan_jax/video.py), with a frames/s progress bar;
its summary line counts face ids. A video that breaks part way (truncated,
damaged) keeps the frames before the damage (status ``truncated``).

  sgfan-jax predict clip.mp4 --out preds/ --detect_every=10 --nosmooth
"""

from __future__ import annotations

import csv
import json
import os
import sys
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from absl import app
from absl import flags
import numpy as np
from PIL import Image
import tqdm

from sgfan_jax import crop
from sgfan_jax import detectors as detectors_lib
from sgfan_jax import drawing
from sgfan_jax import host_allocator
from sgfan_jax import inference
from sgfan_jax import logs
from sgfan_jax import landmarker as landmarker_lib
from sgfan_jax import pts_io
from sgfan_jax import video as video_lib

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm",
                    ".webp", ".tif", ".tiff")
SUMMARY_FIELDS = ("file", "faces", "status", "reason", "outputs", "rejected")
COORDINATES = ("0-based (x, y) pixels of the EXIF-upright image, pixel-centre "
               "convention (the centre of pixel [row i, column j] is x=j, "
               "y=i); .pts files are 1-based")
# Pending crops that trigger a forward pass (a multiple of the batch keeps
# the padded batches full).
FLUSH_BATCHES = 4

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags (defined only when run as a command, so importing
  this module next to other absl programs does not clash)."""
  flags.DEFINE_string("out", "predictions", "Output folder.")
  flags.DEFINE_string("workdir", None, "Training workdir to load (best "
                      "checkpoint); default: the shipped model.")
  flags.DEFINE_string("model", None, "Model folder or shipped model name "
                      f"(default {landmarker_lib.DEFAULT_MODEL}).")
  flags.DEFINE_string("box", None, "Face box x0,y0,x1,y1 for every image.")
  flags.DEFINE_string("boxes", None, "JSON or CSV file of face boxes per "
                      "image.")
  flags.DEFINE_enum("box_format", "detector", list(landmarker_lib.BOX_FORMATS),
                    "Convention of --box/--boxes: the detector's or the tight "
                    "landmark box.")
  flags.DEFINE_string("detector", None, "Face detector: dlib_hog, "
                      "blazeface, blazeface_short or none (whole image = one "
                      "face); default: the model config's predict.detector.")
  flags.DEFINE_integer("batch_size", None, "Faces per forward pass (default: "
                       "the model config's predict.batch_size).")
  flags.DEFINE_enum("precision", None, list(inference.PRECISIONS),
                    "Compute dtype of the forward pass (default: the model "
                    "config's predict.precision; auto = the measured choice "
                    "of the backend).")
  flags.DEFINE_bool("progress", True, "Show a progress bar.")
  flags.DEFINE_integer("tiles", None, "BlazeFace: also detect on an N x N "
                       "grid of overlapping tiles of photos >= 640 px, for "
                       "small faces in large photos (default: the config's "
                       "predict.blazeface_tile_grid; 3 finds 93 % of 80 px "
                       "faces in 1920x1080 photos vs 26 % without, "
                       "benchmarks/results/small_faces.md).")
  flags.DEFINE_bool("second_pass", None, "Crop each detected face again on "
                    "its first-pass landmarks and run the network again "
                    "(default: the model's predict.second_pass; the shipped "
                    "model: on, chosen on val, "
                    "benchmarks/results/protocol_b_val.md).")
  flags.DEFINE_bool("keep_all", False, "Keep detections the network does "
                    "not believe are faces (face score below the model's "
                    "predict.min_face_score), marked \"is_face\": false.")
  flags.DEFINE_integer("chips", 0, "Write NAME_<k>_chip.png: each face "
                       "aligned onto the 112x112 five-point recognition "
                       "template scaled to this side (0 = off; images only).")
  flags.DEFINE_integer("detect_every", None, "Video: run the face detector "
                       "every N frames (1 = every frame, no tracking; 0 = "
                       "only when a face is lost); default: the model "
                       "config's video.detect_every.")
  flags.DEFINE_bool("smooth", None, "Video: One Euro smoothing of the points "
                    "(default: the model config's video.smooth, on).")
  flags.DEFINE_bool("overlay", True, "Video: write NAME_overlay.mp4.")


class InputError(ValueError):
  """A bad command-line input (message for the user)."""


def find_images(inputs: Sequence[str]) -> Iterator[Tuple[str, str, str]]:
  """Expands files and folders into ``(path, output stem, error)``.

  Folders are walked recursively (sorted); the output stem keeps the path
  below the folder. An input that is missing or an unreadable folder
  yields ``(path, '', reason)``.
  """
  used = set()

  def unique(stem):
    out, k = stem, 2
    while out in used:
      out, k = f"{stem}_{k}", k + 1
    used.add(out)
    return out

  for item in inputs:
    if os.path.isdir(item):
      errors = []
      found = []
      for root, dirs, files in os.walk(item, onerror=errors.append):
        dirs.sort()
        for name in sorted(files):
          if os.path.splitext(name)[1].lower() in (
              IMAGE_EXTENSIONS + video_lib.VIDEO_EXTENSIONS):
            found.append(os.path.join(root, name))
      for e in errors:
        yield (getattr(e, "filename", None) or item, "",
               f"unreadable folder: {e.strerror or e}")
      for path in found:
        rel = os.path.splitext(os.path.relpath(path, item))[0]
        yield path, unique(rel), ""
    elif os.path.isfile(item):
      yield item, unique(os.path.splitext(os.path.basename(item))[0]), ""
    else:
      yield item, "", "no such file or folder"


def parse_box(text: str) -> List[float]:
  try:
    values = [float(v) for v in text.split(",")]
  except ValueError:
    values = []
  if (len(values) != 4 or not values[2] > values[0] or
      not values[3] > values[1]):
    raise InputError(f"--box must be x0,y0,x1,y1 with x1 > x0 and y1 > y0, "
                     f"got {text!r}")
  return values


def read_boxes(path: str) -> Dict[str, List[List[float]]]:
  """``--boxes`` file -> {image key: [[x0, y0, x1, y1], ...]}."""
  if not os.path.isfile(path):
    raise InputError(f"--boxes {path}: file not found")
  boxes: Dict[str, List[List[float]]] = {}
  try:
    if path.lower().endswith(".json"):
      with open(path) as f:
        data = json.load(f)
      if not isinstance(data, dict):
        raise InputError(f"--boxes {path}: expected a JSON object "
                         "{image: [[x0, y0, x1, y1], ...]}")
      for key, value in data.items():
        arr = np.asarray(value, np.float64).reshape(-1, 4)
        boxes[key] = arr.tolist()
    else:
      with open(path, newline="") as f:
        for i, row in enumerate(csv.reader(f), 1):
          if not row or row[0].startswith("#"):
            continue
          if i == 1 and row[0].strip().lower() in ("file", "image", "path"):
            continue
          if len(row) != 5:
            raise InputError(f"--boxes {path}, line {i}: expected "
                             f"image,x0,y0,x1,y1, got {len(row)} fields")
          boxes.setdefault(row[0].strip(), []).append(
              [float(v) for v in row[1:]])
  except (ValueError, TypeError) as e:
    if isinstance(e, InputError):
      raise
    raise InputError(f"--boxes {path}: {e}") from None
  return boxes


def boxes_for(path: str, table: Optional[Dict[str, list]],
              box: Optional[List[float]]):
  if box is not None:
    return [box]
  if table:
    for key in (path, os.path.normpath(path), os.path.basename(path)):
      if key in table:
        return table[key]
  return None


def write_outputs(out: str, stem: str, prepared, faces, source: str,
                  model: str, precision: str, chips: int = 0) -> List[str]:
  """NAME.json, NAME_<k>.pts, NAME.png and (``chips`` > 0) NAME_<k>_chip.png
  for one image; returns paths."""
  base = os.path.join(out, stem)
  os.makedirs(os.path.dirname(base) or ".", exist_ok=True)
  written = []
  for k, face in enumerate(faces, 1):
    pts_path = f"{base}_{k}.pts"
    pts_io.write_pts(pts_path, face.points)
    written.append(pts_path)
  record = {
      "image": os.path.abspath(source),
      "width": prepared.image.width,
      "height": prepared.image.height,
      "model": model,
      "precision": precision,
      "coordinates": COORDINATES,
      "faces": [f.to_dict() for f in faces],
  }
  with open(base + ".json", "w") as f:
    json.dump(record, f)
  drawing.face_overlay(prepared.image, faces).save(base + ".png")
  written.append(base + ".png")
  for k, face in enumerate(faces, 1):
    if chips:
      chip_path = f"{base}_{k}_chip.png"
      Image.fromarray(face.chip(prepared.image, chips)).save(chip_path)
      written.append(chip_path)
  return [base + ".json"] + written


def predict_paths(lm: landmarker_lib.Landmarker, inputs: Sequence[str],
                  out: str, box: Optional[List[float]] = None,
                  boxes: Optional[Dict[str, list]] = None,
                  box_format: str = "detector",
                  progress: bool = True,
                  video_options: Optional[Dict] = None,
                  chips: int = 0) -> List[Dict[str, str]]:
  """Runs ``lm`` over image and video files/folders; returns the summary
  rows. ``video_options``: ``overlay_video`` and ``tracking.FaceTracker``
  settings for videos (``video.predict_video``). ``chips``: side of the
  aligned face chips written per image face (0 = none)."""
  os.makedirs(out, exist_ok=True)
  rows: List[Dict[str, str]] = []
  pending: List[tuple] = []       # (path, stem, prepared)
  items = list(find_images(inputs))
  bar = tqdm.tqdm(items, unit="image", disable=not progress, file=sys.stderr)

  def flush():
    if not pending:
      return
    results = lm.finish([p for _, _, p in pending])
    for (path, stem, prepared), faces in zip(pending, results):
      try:
        written = write_outputs(out, stem, prepared, faces, path,
                                lm.bundle.source, lm.precision, chips)
      except (OSError, ValueError) as e:
        # ValueError: e.g. chips.ChipError (no chip for this model's layout).
        rows.append(_row(path, len(faces), "error",
                         f"cannot write outputs: {e}"))
        continue
      note = rejected_note(prepared.rejected, lm)
      if any(f.is_face is not False for f in faces):
        rows.append(_row(path, len(faces), "ok", note, written,
                         prepared.rejected))
      else:
        rows.append(_row(path, 0, "no_face", "no face found" +
                         (f" ({note})" if note else ""), written,
                         prepared.rejected))
    pending.clear()

  for path, stem, error in bar:
    if error:
      rows.append(_row(path, 0, "error", error))
      continue
    if video_lib.is_video(path):
      rows.append(video_row(lm, path, os.path.join(out, stem), progress,
                            video_options or {}))
      continue
    try:
      prepared = lm.prepare(path, boxes_for(path, boxes, box), box_format)
    except (crop.DataError, ValueError, OSError) as e:
      rows.append(_row(path, 0, "error", str(e)))
      continue
    pending.append((path, stem, prepared))
    if sum(len(p.boxes) for _, _, p in pending) >= (
        FLUSH_BATCHES * lm.batch_size):
      flush()
  flush()
  bar.close()
  order = {path: i for i, (path, _, _) in enumerate(items)}
  rows.sort(key=lambda r: order.get(r["file"], len(order)))
  with open(os.path.join(out, "summary.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
  return rows


def rejected_note(rejected: int, lm) -> str:
  """Summary text for detections dropped by face verification."""
  if not rejected:
    return ""
  if lm.keep_all:
    return (f"{rejected} detection{'s' if rejected > 1 else ''} not "
            f"believed to be a face (face score < {lm.min_face_score:g}), "
            "kept with is_face false (--keep_all)")
  return (f"{rejected} detection{'s' if rejected > 1 else ''} rejected as "
          f"not a face (face score < {lm.min_face_score:g}; --keep_all "
          "keeps them)")


def video_row(lm, path: str, base: str, progress: bool,
              options: Dict) -> Dict[str, str]:
  """Tracks one video (``video.predict_video``); its summary row (faces =
  face ids)."""
  try:
    result = video_lib.predict_video(lm, path, base, progress=progress,
                                     model=lm.bundle.source,
                                     precision=lm.precision, **options)
  except (crop.DataError, ImportError) as e:
    return _row(path, 0, "error", str(e))
  except OSError as e:
    return _row(path, 0, "error", f"cannot write outputs: {e}")
  if result.error:
    return _row(path, result.face_ids, "truncated" if result.frames else
                "error", f"{result.error}; the {result.frames} frames "
                "before it are kept" if result.frames else result.error,
                result.outputs if result.frames else ())
  if not result.face_ids:
    return _row(path, 0, "no_face", f"no face in {result.frames} frames",
                result.outputs)
  return _row(path, result.face_ids, "ok", "", result.outputs)


def _row(path, faces, status, reason, outputs=(), rejected=0):
  # Errors from the readers start with the file name; the row has it.
  if reason.startswith(path + ": "):
    reason = reason[len(path) + 2:]
  return {"file": path, "faces": str(faces), "status": status,
          "reason": reason, "outputs": ";".join(outputs),
          "rejected": str(rejected)}


def load_landmarker(workdir: Optional[str], model: Optional[str],
                    detector: Optional[str], batch_size: Optional[int],
                    precision: Optional[str] = None,
                    keep_all: bool = False,
                    tiles: Optional[int] = None,
                    second_pass: Optional[bool] = None):
  if workdir and model:
    raise InputError("give --workdir or --model, not both")
  kwargs = {"detector": detector, "batch_size": batch_size,
            "precision": precision, "keep_all": keep_all,
            "second_pass": second_pass}
  if tiles is not None:
    if tiles < 0:
      raise InputError(f"--tiles must be >= 0, got {tiles}")
  if workdir:
    lm = landmarker_lib.Landmarker.from_checkpoint(workdir, **kwargs)
  else:
    lm = landmarker_lib.Landmarker.from_pretrained(
        model or landmarker_lib.DEFAULT_MODEL, **kwargs)
  if tiles is not None:
    if lm.detector_name not in detectors_lib.BLAZEFACE_MODELS:
      raise InputError(f"--tiles needs a BlazeFace detector, not "
                       f"{lm.detector_name!r}")
    lm.config.predict.blazeface_tile_grid = tiles
    lm.detector = detectors_lib.detector_from_config(lm.detector_name,
                                                     lm.config.predict)
  return lm


def run_command(inputs: Sequence[str]) -> int:
  """The command (flags parsed); returns the exit code."""
  if not inputs:
    raise app.UsageError("give one or more image files or folders")
  try:
    box = parse_box(FLAGS.box) if FLAGS.box else None
    table = read_boxes(FLAGS.boxes) if FLAGS.boxes else None
    if FLAGS.chips < 0:
      raise InputError(f"--chips must be >= 0 (0 = no chips), got "
                       f"{FLAGS.chips}")
    lm = load_landmarker(FLAGS.workdir, FLAGS.model, FLAGS.detector,
                         FLAGS.batch_size, FLAGS.precision, FLAGS.keep_all,
                         FLAGS.tiles, FLAGS.second_pass)
  except (InputError, inference.ModelFileError, ImportError,
          ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  video_options = {"overlay_video": FLAGS.overlay}
  if FLAGS.detect_every is not None:
    if FLAGS.detect_every < 0:
      print(f"error: --detect_every must be >= 0, got {FLAGS.detect_every}",
            file=sys.stderr)
      return 2
    video_options["detect_every"] = FLAGS.detect_every
  if FLAGS.smooth is not None:
    video_options["smooth"] = FLAGS.smooth
  rows = predict_paths(lm, inputs, FLAGS.out, box, table, FLAGS.box_format,
                       FLAGS.progress, video_options, FLAGS.chips)
  failed = [r for r in rows if r["status"] != "ok"]
  faces = sum(int(r["faces"]) for r in rows)
  rejected = sum(int(r["rejected"]) for r in rows)
  print(f"{len(rows) - len(failed)} of {len(rows)} images with faces, "
        f"{faces} faces -> {FLAGS.out} (summary.csv)"
        + (f"; {rejected} detections rejected as not faces" if rejected
           else ""))
  for r in failed:
    print(f"  {r['status']}: {r['file']}: {r['reason']}", file=sys.stderr)
  return 1 if failed else 0


def main(argv: Sequence[str]) -> int:
  logs.quiet_libraries()
  return run_command(list(argv[1:]))


def cli(argv: Optional[Sequence[str]] = None) -> None:
  """Entry point: ``python -m sgfan_jax.predict`` / ``sgfan-jax predict``."""
  define_flags()
  app.run(lambda a: sys.exit(main(a)), argv=argv)


if __name__ == "__main__":
  host_allocator.reexec_with_tuned_allocator()
  cli()
