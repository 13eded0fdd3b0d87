"""Landmarks with a per-point confidence on your own photos.

  python -m sgfan_jax.predict --config configs/lite.py --workdir DIR \
      --out predictions/ photo1.jpg photo2.png [--box 120,80,360,330]

For each image: the face box is ``--box x0,y0,x1,y1`` (pixels), else the
landmark box of a ``.pts`` file beside the image, else the whole image is
taken as a face crop (box = the image shrunk by ``data.face_context``, so
the network sees the whole image). The face is cropped exactly as the TFDS
builders do, the network runs, and the command writes per image:

* ``NAME.pts``: the 68 refined landmarks (300-W format, 1-based);
* ``NAME.json``: baseline and refined points (0-based pixels), the Eq. 1
  weight of every point (its confidence: low = likely occluded), and which
  points the refinement replaced;
* ``NAME.png``: the image with the points drawn, coloured by confidence.

The model is the best checkpoint in DIR (else the latest); refinement uses
``DIR/shape_dictionary.npz`` when present.
"""

import json
import os
from typing import Optional, Sequence

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

FLAGS = flags.FLAGS


def _define_flags():
  """Command-line flags (defined only when run as a command, so importing
  this module next to other absl programs does not clash)."""
  config_flags.DEFINE_config_file("config", None, "Config the model was "
                                  "trained with.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Training workdir (checkpoints).")
  flags.DEFINE_string("out", "predictions", "Output folder.")
  flags.DEFINE_string("box", None, "Face box x0,y0,x1,y1 in pixels (for "
                      "all images).")


def face_box_for(path: str, image_size, box: Optional[str], face_context):
  """[4] face box: --box, else a .pts beside the image, else the image."""
  # pylint: disable=g-import-not-at-top
  from sgfan_jax import pts_io
  from sgfan_jax import crop
  if box:
    try:
      values = [float(v) for v in box.split(",")]
    except ValueError:
      values = []
    if len(values) != 4 or values[2] <= values[0] or values[3] <= values[1]:
      raise ValueError(f"--box must be x0,y0,x1,y1 with x1 > x0 and y1 > y0, "
                       f"got {box!r}")
    return np.asarray(values, np.float32)
  pts = os.path.splitext(path)[0] + ".pts"
  if os.path.exists(pts):
    return crop.landmark_box(pts_io.read_pts(pts, expected_points=None))
  w, h = image_size
  side = min(w, h) / face_context
  cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
  return np.asarray([cx - side / 2, cy - side / 2, cx + side / 2,
                     cy + side / 2], np.float32)


def prepare(path: str, box: Optional[str], face_context: float,
            crop_size: int, crop_context: float):
  """One image -> (batch of 1 for eval_step, the PIL image)."""
  from sgfan_jax import crop  # pylint: disable=g-import-not-at-top
  im = crop.load_image_rgb(path)
  face_box = face_box_for(path, im.size, box, face_context)
  side, ex, ey = crop.crop_transform(face_box, crop_context)
  pixels = crop.crop_image(im, side, ex, ey, crop_size)
  batch = {
      "image": pixels[None],
      "landmarks": np.zeros((1, 1, 2), np.float32),   # no ground truth
      "crop_to_image": crop.crop_to_image_matrix(side, ex, ey,
                                                 crop_size)[None],
  }
  return batch, im


def draw(im, points, weights, threshold, path):
  """Saves the image with points coloured green (confident) to red."""
  from PIL import ImageDraw  # pylint: disable=g-import-not-at-top
  im = im.copy()
  d = ImageDraw.Draw(im)
  r = max(1.5, max(im.size) / 250)
  for (x, y), w in zip(points, weights):
    w = float(np.clip(w, 0, 1))
    colour = (int(255 * (1 - w)), int(200 * w), 0)
    shape = d.ellipse if w >= threshold else d.rectangle
    shape([x - r, y - r, x + r, y + r], fill=colour)
  im.save(path)


def predict_files(config, workdir: str, paths: Sequence[str], out: str,
                  box: Optional[str] = None):
  """Runs the model on image files; returns {path: result dict}."""
  # pylint: disable=g-import-not-at-top
  from sgfan_jax import layouts
  from sgfan_jax import ksvd
  from sgfan_jax import pts_io
  from sgfan_jax import run
  from sgfan_jax import train
  from sgfan_jax import crop
  layout = layouts.get_layout(config.data.layout)
  state = run.restore_for_eval(config, workdir, layout.num_points,
                               config.batch_size)
  dic_path = os.path.join(workdir, run.DICTIONARY_FILE)
  dictionary = None
  if config.refine.enabled and os.path.exists(dic_path):
    dictionary = ksvd.as_device(ksvd.load_dictionary(dic_path))
  meta = {"crop_size": crop.CROP_SIZE, "crop_context": crop.CROP_CONTEXT,
          "layout": layout.name}
  spec = train.step_spec(config, meta)
  eval_fn = train.make_eval_step(spec)
  os.makedirs(out, exist_ok=True)
  results = {}
  for path in paths:
    batch, im = prepare(path, box, config.data.face_context, crop.CROP_SIZE,
                        crop.CROP_CONTEXT)
    pred = {k: np.asarray(v)[0] for k, v in
            eval_fn(state, batch, dictionary).items()}
    replaced = (pred["weights"] < spec.refine_threshold) & (
        dictionary is not None)
    name = os.path.splitext(os.path.basename(path))[0]
    pts_io.write_pts(os.path.join(out, name + ".pts"), pred["refined"])
    result = {
        "image": os.path.abspath(path),
        "points": pred["points"].round(3).tolist(),
        "refined": pred["refined"].round(3).tolist(),
        "confidence": pred["weights"].round(4).tolist(),
        "replaced": np.flatnonzero(replaced).tolist(),
        "coordinates": "0-based pixels, x then y",
    }
    with open(os.path.join(out, name + ".json"), "w") as f:
      json.dump(result, f)
    draw(im, pred["refined"], pred["weights"], spec.refine_threshold,
         os.path.join(out, name + ".png"))
    print(f"{path}: mean confidence {pred['weights'].mean():.3f}, "
          f"{len(result['replaced'])} points re-estimated -> "
          f"{os.path.join(out, name)}.{{pts,json,png}}")
    results[path] = result
  return results


def main(argv):
  if len(argv) < 2:
    raise app.UsageError("give one or more image files")
  if not FLAGS.config or not FLAGS.workdir:
    raise app.UsageError("--config and --workdir are required")
  from sgfan_jax import logs  # pylint: disable=g-import-not-at-top
  logs.quiet_libraries()
  predict_files(FLAGS.config, FLAGS.workdir, argv[1:], FLAGS.out, FLAGS.box)


if __name__ == "__main__":
  from sgfan_jax import host_allocator  # pylint: disable=g-import-not-at-top
  host_allocator.reexec_with_tuned_allocator()
  _define_flags()
  app.run(main)
