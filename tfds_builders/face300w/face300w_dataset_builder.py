"""300-W (68-point iBUG layout) as a TFDS builder: face crops + landmarks.

Reads the standard 300-W folder layout from the manual dir (see
``MANUAL_DOWNLOAD_INSTRUCTIONS``) and writes ``array_record`` files readable
with ``tfds.data_source`` without TensorFlow. Example features are those of
docs/DESIGN.md; ``.pts`` coordinates (1-based) are stored 0-based.
"""

from __future__ import annotations

import collections
import hashlib
import os
from typing import Dict, Iterator, List, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from sgfan_jax import pts_io
from sgfan_jax import crop
from tfds_builders import features

# Subset folder (relative to the manual dir) -> subset name.
SUBSETS = ("afw", "helen/trainset", "helen/testset", "lfpw/trainset",
           "lfpw/testset", "ibug", "01_Indoor", "02_Outdoor")

# Split -> subsets it is made of (standard 300-W protocol). The 300-W
# training faces are divided into ``train`` and ``val`` (see VAL_FRACTION).
TRAIN_SUBSETS = ("afw", "helen/trainset", "lfpw/trainset")
SPLITS: Dict[str, Tuple[str, ...]] = {
    "train": TRAIN_SUBSETS,
    "val": TRAIN_SUBSETS,
    "test_common": ("helen/testset", "lfpw/testset"),
    "test_challenging": ("ibug",),
    "test_full": ("helen/testset", "lfpw/testset", "ibug"),
    "test_private": ("01_Indoor", "02_Outdoor"),
}

# Held-out validation faces for model selection, taken from the 300-W
# training set: the round(VAL_FRACTION * n) faces (at least 1) with the
# lowest sha256("{VAL_SEED}:{file name}"). Hashing the file name keeps a face
# in the same split when other faces are added or removed; no test face is
# ever in ``val``. Stored in the builder metadata.
VAL_FRACTION = 0.05
VAL_SEED = 0

NUM_POINTS = 68


def find_faces(manual_dir: str, subset: str) -> List[Tuple[str, str]]:
  """Lists ``(image_path, pts_path)`` pairs of one subset folder, sorted.

  Every ``.pts`` file must have an image with the same stem beside it.

  Raises:
    crop.DataError: a ``.pts`` without image (message names the file).
  """
  try:
    faces = pts_io.find_faces(manual_dir, [subset])
  except FileNotFoundError as e:
    if "no .pts files" in str(e):
      return []
    raise crop.DataError(str(e)) from None
  return [(str(image), str(pts)) for _, image, pts in faces]


def val_names(names: Sequence[str], fraction: float = VAL_FRACTION,
              seed: int = VAL_SEED) -> frozenset:
  """The validation subset of the training file names (see VAL_FRACTION).

  Args:
    names: training image paths relative to the manual dir, e.g.
      ``afw/1051618982_1.jpg``.
    fraction: share of the faces held out.
    seed: hash seed.

  Returns:
    The ``max(1, round(fraction * len(names)))`` names (none when fewer than
    two names) with the lowest ``sha256(f"{seed}:{name}")``.
  """
  if len(names) < 2:
    return frozenset()
  k = max(1, int(round(fraction * len(names))))
  key = lambda n: hashlib.sha256(f"{seed}:{n}".encode()).hexdigest()
  return frozenset(sorted(names, key=key)[:k])


def train_val_faces(manual_dir) -> Tuple[list, list]:
  """The ``train`` and ``val`` faces of the training folders, as
  ``pts_io.find_faces`` tuples ``(relative path without extension, image,
  pts)``, each sorted: the builder's selection (``val_names`` of the image
  paths relative to ``manual_dir``), for tools that read the folders
  directly (benchmarks/compare_300w.py --split val,
  scripts/occlusion_experiment.py)."""
  faces = pts_io.find_faces(manual_dir, TRAIN_SUBSETS)
  rel_img = [os.path.relpath(img, manual_dir).replace(os.sep, "/")
             for _, img, _ in faces]
  held = val_names(sorted(rel_img))
  train = [f for f, r in zip(faces, rel_img) if r not in held]
  val = [f for f, r in zip(faces, rel_img) if r in held]
  return train, val


def present_subsets(manual_dir: str) -> Tuple[List[str], List[str]]:
  """``(present, missing)`` subset folders of the manual dir."""
  present = [s for s in SUBSETS if os.path.isdir(os.path.join(manual_dir, s))]
  missing = [s for s in SUBSETS if s not in present]
  return present, missing


def load_face(manual_dir: str, subset: str, image_path: str, pts_path: str,
              crop_context: float = crop.CROP_CONTEXT,
              crop_size: int = crop.CROP_SIZE):
  """Reads one face and returns ``(key, example)``."""
  points = pts_io.read_pts(pts_path, expected_points=NUM_POINTS)
  image = crop.load_image_rgb(image_path)
  rel = _relpath(manual_dir, image_path)
  example = features.make_example(
      image, points, np.ones([NUM_POINTS], np.bool_), crop.landmark_box(points),
      file_name=rel, subset=subset, crop_context=crop_context,
      crop_size=crop_size)
  return rel, example


class Builder(tfds.core.GeneratorBasedBuilder):
  """300-W: 68-point faces (AFW, HELEN, LFPW, iBUG, private test)."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release: 2.2x landmark-box crops, 256 px.",
      "1.1.0": "Held-out `val` split (5% of the 300-W training faces, "
               "seeded by file name); `train` is the rest.",
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download the 300-W data from the iBUG site
  (https://ibug.doc.ic.ac.uk/resources/300-W/ and
  https://ibug.doc.ic.ac.uk/resources/facial-point-annotations/): the
  re-annotated AFW, HELEN, LFPW and iBUG archives, and (optionally) the 300-W
  private test set (300w_cropped: 01_Indoor, 02_Outdoor). Non-commercial
  research use only. Extract them so that the manual dir contains:

    <manual_dir>/afw/*.jpg + *.pts
    <manual_dir>/helen/trainset/*.jpg + *.pts
    <manual_dir>/helen/testset/*.jpg + *.pts
    <manual_dir>/lfpw/trainset/*.png + *.pts
    <manual_dir>/lfpw/testset/*.png + *.pts
    <manual_dir>/ibug/*.jpg + *.pts
    <manual_dir>/01_Indoor/*.png + *.pts     (optional, private test)
    <manual_dir>/02_Outdoor/*.png + *.pts    (optional, private test)

  Each image has a 68-point .pts file with the same stem beside it (1-based
  coordinates, with or without the version/n_points/{ } header). Images may
  be .jpg or .png, colour or grayscale. Missing folders are skipped with a
  warning; a split none of whose folders exist is not generated.
  Splits: train = afw + helen/trainset + lfpw/trainset (3,148 faces) minus
  val (5% of them, chosen by a seeded hash of the file name; used for model
  selection, never for reporting), test_common = helen/testset + lfpw/testset (554), test_challenging = ibug
  (135), test_full = common + challenging (689), test_private = 01_Indoor +
  02_Outdoor (600).
  """

  def __init__(self, *, file_format=None, **kwargs):
    super().__init__(file_format=file_format or "array_record", **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return features.dataset_info(
        self, NUM_POINTS, "https://ibug.doc.ic.ac.uk/resources/300-W/",
        layout="ibug68", num_points=NUM_POINTS, val_fraction=VAL_FRACTION,
        val_seed=VAL_SEED,
        coordinates="0-based, pixel centre (docs/DESIGN.md); .pts values "
                    "minus 1")

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    if not os.path.isdir(manual_dir):
      raise crop.DataError(f"300-W manual dir not found: {manual_dir}")
    present, missing = present_subsets(manual_dir)
    if not present:
      raise crop.DataError(
          f"no 300-W data in {manual_dir}: none of the folders "
          f"{', '.join(s + '/' for s in SUBSETS)} exists (see the manual "
          "download instructions)")
    if missing:
      msg = (f"300-W: subset folder(s) missing in {manual_dir}, skipped: "
             f"{', '.join(s + '/' for s in missing)}")
      logging.warning(msg)
    faces = {}
    for subset in present:
      faces[subset] = find_faces(manual_dir, subset)
      if not faces[subset]:
        raise crop.DataError(
            f"300-W subset folder {os.path.join(manual_dir, subset)} has no "
            ".pts files")
    held_out = val_names([
        _relpath(manual_dir, image_path)
        for subset in TRAIN_SUBSETS for image_path, _ in faces.get(subset, ())])
    splits = {}
    # Faces used by several splits (test_full) are generated once and cached
    # until their last use (splits are generated one after another; if not,
    # the cache only costs recomputation).
    uses = collections.Counter()
    for split, subsets in SPLITS.items():
      members = []
      for subset in subsets:
        for image_path, pts_path in faces.get(subset, ()):
          if split in ("train", "val"):
            is_val = _relpath(manual_dir, image_path) in held_out
            if is_val != (split == "val"):
              continue
          members.append((subset, image_path, pts_path))
      if members:
        uses.update(image_path for _, image_path, _ in members)
        splits[split] = self._generate_examples(manual_dir, members)
    self._cache_uses = uses
    self._cache = {}
    return splits

  def _generate_examples(self, manual_dir: str,
                         members: Sequence[Tuple[str, str, str]]
                         ) -> Iterator[Tuple[str, dict]]:
    for subset, image_path, pts_path in members:
      self._cache_uses[image_path] -= 1
      if image_path in self._cache:
        item = self._cache[image_path]
      else:
        item = load_face(manual_dir, subset, image_path, pts_path)
      if self._cache_uses[image_path] > 0:
        self._cache[image_path] = item
      else:
        self._cache.pop(image_path, None)
      yield item


def _relpath(manual_dir: str, image_path: str) -> str:
  return os.path.relpath(image_path, manual_dir).replace(os.sep, "/")
