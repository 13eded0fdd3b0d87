"""Helpers for the inference / Landmarker / predict tests.

* a tiny untrained model folder (configs/test.py network, random weights,
  a K-SVD dictionary of the bundled sample shapes), built once per process;
* the bundled real faces of ``sample_data/300w`` (HELEN test faces, not
  training data) and photos composed from them (faces pasted into larger
  canvases at known offsets, several faces on one canvas);
* image files in unusual formats (EXIF orientation, truncated JPEG, ...).

The model is random, so its points are not near the faces; every test
compares predictions of *the same* network under transformations whose
effect on the coordinates is known exactly.
"""

from __future__ import annotations

import atexit
import functools
import io
import os
import pathlib
import shutil
import tempfile
from typing import Dict, List, Sequence, Tuple

import jax
import numpy as np
from PIL import Image

from configs import test as test_config
from sgfan_jax import crop
from sgfan_jax import inference
from sgfan_jax import ksvd
from sgfan_jax import pts_io

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data" / "300w"
HELEN_TEST = SAMPLE / "helen" / "testset"
# Faces dlib's HOG detector finds with a high score (>= 2) in their own
# image; 3160369021_1 is not square (384 wide, 291 high).
FACES = ("296814969_3", "3160369021_1", "3214115970_3", "3059898383_1")
# Occlusion threshold of the tiny model: with random weights and this
# threshold a face has both "visible" and "occluded" points.
TINY_THRESHOLD = 0.25
TINY_BATCH = 4


def face_path(name: str = FACES[0]) -> pathlib.Path:
  return HELEN_TEST / f"{name}.jpg"


def sample_face(name: str = FACES[0]) -> Tuple[np.ndarray, np.ndarray]:
  """(uint8 RGB [H, W, 3], 0-based points [68, 2]) of a bundled face."""
  with Image.open(face_path(name)) as im:
    rgb = np.asarray(im.convert("RGB"))
  return rgb, pts_io.read_pts(HELEN_TEST / f"{name}.pts")


def face_box(name: str = FACES[0]) -> np.ndarray:
  """The tight landmark box of a bundled face (float32 [4])."""
  return crop.landmark_box(sample_face(name)[1])


def all_sample_shapes() -> np.ndarray:
  paths = sorted(SAMPLE.rglob("*.pts"))
  return np.stack([pts_io.read_pts(p) for p in paths])


def tiny_config():
  config = test_config.get_config()
  # Random heads with unit-scale weights: maps with distinct peaks and
  # confidences spread over [0, 1] (the default 0.01 makes them ~flat).
  config.model.head_init_scale = 1.0
  # A float32 model like the shipped one (the prediction tests compare the
  # Landmarker, float32 by default on CPU, with the pure functions of
  # create_model(config)).
  config.model.dtype = "float32"
  config.refine.weight_threshold = TINY_THRESHOLD
  config.predict.batch_size = TINY_BATCH
  return config


@functools.lru_cache(maxsize=None)
def tiny_parts():
  """(config, variables as numpy, host shape dictionary), built once."""
  config = tiny_config()
  model = inference.create_model(config)
  variables = inference.init_variables(model, config.model.input_size,
                                       jax.random.PRNGKey(0))
  variables = jax.tree_util.tree_map(np.asarray, variables)
  dictionary = ksvd.build_dictionary(all_sample_shapes(), config.refine,
                                     layout_name=config.data.layout)
  return config, variables, dictionary


def save_tiny_model(directory, config=None, variables=None,
                    dictionary="default") -> str:
  """Writes a model folder with ``inference.save_model``; returns its path."""
  base_config, base_vars, base_dic = tiny_parts()
  config = base_config if config is None else config
  variables = base_vars if variables is None else variables
  dictionary = base_dic if dictionary == "default" else dictionary
  inference.save_model(str(directory), variables, config,
                       inference.default_crop_metadata(config), dictionary)
  return str(directory)


@functools.lru_cache(maxsize=None)
def tiny_model_dir() -> str:
  """A model folder of the tiny model, shared by the test modules."""
  root = tempfile.mkdtemp(prefix="sgfan_tiny_model_")
  atexit.register(shutil.rmtree, root, True)
  return save_tiny_model(os.path.join(root, "tiny"))


# ------------------------------------------------------------------ photos


def paste(canvas_hw: Tuple[int, int], items: Sequence[Tuple[np.ndarray,
                                                            Tuple[int, int]]],
          background: int = 0) -> np.ndarray:
  """uint8 canvas ``[H, W, 3]`` with each ``(image, (x, y))`` pasted with its
  top-left pixel at column x, row y."""
  canvas = np.full(tuple(canvas_hw) + (3,), background, np.uint8)
  for image, (x, y) in items:
    h, w = image.shape[:2]
    canvas[y:y + h, x:x + w] = image
  return canvas


def group_photo(names: Sequence[str] = FACES[:3], gap: int = 24
                ) -> Tuple[np.ndarray, List[np.ndarray]]:
  """Several bundled faces side by side on a grey canvas.

  Returns the canvas and each face's landmark box in canvas coordinates.
  """
  faces = [sample_face(n) for n in names]
  height = max(f[0].shape[0] for f in faces) + 2 * gap
  width = sum(f[0].shape[1] for f in faces) + (len(faces) + 1) * gap
  items, boxes, x = [], [], gap
  for rgb, pts in faces:
    items.append((rgb, (x, gap)))
    boxes.append(crop.landmark_box(pts + np.array([x, gap], np.float32)))
    x += rgb.shape[1] + gap
  return paste((height, width), items, background=128), boxes


def save_exif_jpeg(path, upright: np.ndarray, orientation: int) -> np.ndarray:
  """Stores ``upright`` rotated so that EXIF ``orientation`` (6 or 8) turns
  it upright again; returns the stored (decoded) pixel grid."""
  if orientation == 6:      # viewer rotates 90 degrees clockwise
    stored = np.rot90(upright, 1)
  elif orientation == 8:    # viewer rotates 90 degrees counter-clockwise
    stored = np.rot90(upright, -1)
  else:
    raise ValueError(orientation)
  exif = Image.Exif()
  exif[0x0112] = orientation
  Image.fromarray(np.ascontiguousarray(stored)).save(
      path, "JPEG", quality=95, exif=exif.tobytes())
  with Image.open(path) as im:      # the decoded stored grid, no transpose
    return np.asarray(im.convert("RGB"))


def jpeg_bytes(rgb: np.ndarray, quality: int = 90) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
  return buf.getvalue()


def write_bad_files(folder) -> Dict[str, str]:
  """A text file named .jpg, an empty .png and a truncated .jpg in
  ``folder``; returns {kind: path}."""
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  text = folder / "notes_not_image.jpg"
  text.write_text("this is a text file, not a JPEG\n")
  empty = folder / "empty.png"
  empty.write_bytes(b"")
  data = jpeg_bytes(sample_face()[0])
  truncated = folder / "truncated.jpg"
  truncated.write_bytes(data[:len(data) // 2])
  return {"text": str(text), "empty": str(empty), "truncated": str(truncated)}


def read_pts_text(path) -> np.ndarray:
  """Parses a .pts file by hand (the 1-based values as written)."""
  lines = pathlib.Path(path).read_text().splitlines()
  start, end = lines.index("{"), lines.index("}")
  assert lines[0] == "version: 1", lines[0]
  assert lines[1].split(":")[1].strip() == str(end - start - 1)
  return np.array([[float(v) for v in l.split()] for l in
                   lines[start + 1:end]])
