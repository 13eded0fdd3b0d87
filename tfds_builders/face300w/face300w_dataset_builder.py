"""300-W (68-point iBUG layout) as a TFDS builder: face crops + landmarks.

Reads the standard 300-W folder layout from the manual dir (see
``MANUAL_DOWNLOAD_INSTRUCTIONS``) and writes ``array_record`` files readable
with ``tfds.data_source`` without TensorFlow. Example features are those of
docs/DESIGN.md; ``.pts`` coordinates (1-based) are stored 0-based.
"""

from __future__ import annotations

import collections
import os
from typing import Dict, Iterator, List, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from sgfan_jax import pts_io
from tfds_builders import crop

# Subset folder (relative to the manual dir) -> subset name.
SUBSETS = ("afw", "helen/trainset", "helen/testset", "lfpw/trainset",
           "lfpw/testset", "ibug", "01_Indoor", "02_Outdoor")

# Split -> subsets it is made of (standard 300-W protocol).
SPLITS: Dict[str, Tuple[str, ...]] = {
    "train": ("afw", "helen/trainset", "lfpw/trainset"),
    "test_common": ("helen/testset", "lfpw/testset"),
    "test_challenging": ("ibug",),
    "test_full": ("helen/testset", "lfpw/testset", "ibug"),
    "test_private": ("01_Indoor", "02_Outdoor"),
}

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
NUM_POINTS = 68


def find_faces(manual_dir: str, subset: str) -> List[Tuple[str, str]]:
  """Lists ``(image_path, pts_path)`` pairs of one subset folder, sorted.

  Every ``.pts`` file must have an image with the same stem beside it.

  Raises:
    crop.DataError: a ``.pts`` without image (message names the file).
  """
  folder = os.path.join(manual_dir, subset)
  pairs = []
  for name in sorted(os.listdir(folder)):
    stem, ext = os.path.splitext(name)
    if ext.lower() != ".pts":
      continue
    pts_path = os.path.join(folder, name)
    for image_ext in IMAGE_EXTENSIONS:
      image_path = os.path.join(folder, stem + image_ext)
      if os.path.isfile(image_path):
        break
    else:
      raise crop.DataError(
          f"{pts_path}: no image beside it (looked for {stem}.jpg/.png)")
    pairs.append((image_path, pts_path))
  return pairs


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
  rel = os.path.relpath(image_path, manual_dir).replace(os.sep, "/")
  example = crop.make_example(
      image, points, np.ones([NUM_POINTS], np.bool_), crop.landmark_box(points),
      file_name=rel, subset=subset, crop_context=crop_context,
      crop_size=crop_size)
  return rel, example


class Builder(tfds.core.GeneratorBasedBuilder):
  """300-W: 68-point faces (AFW, HELEN, LFPW, iBUG, private test)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: 2.2x landmark-box crops, 256 px."}
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
  Splits: train = afw + helen/trainset + lfpw/trainset (3,148 faces),
  test_common = helen/testset + lfpw/testset (554), test_challenging = ibug
  (135), test_full = common + challenging (689), test_private = 01_Indoor +
  02_Outdoor (600).
  """

  def __init__(self, *, file_format=None, **kwargs):
    super().__init__(file_format=file_format or "array_record", **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=crop.example_features(NUM_POINTS, crop.CROP_SIZE),
        supervised_keys=None,
        # Keep the source order (sorted files / .mat index) so that split
        # index i is the i-th face of the release; training shuffles in the
        # input pipeline.
        disable_shuffling=True,
        homepage="https://ibug.doc.ic.ac.uk/resources/300-W/",
        metadata=tfds.core.MetadataDict(
            crop_context=crop.CROP_CONTEXT,
            crop_size=crop.CROP_SIZE,
            layout="ibug68",
            num_points=NUM_POINTS,
            coordinates="0-based, pixel centre (docs/DESIGN.md); "
                        ".pts values minus 1",
        ),
    )

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
    splits = {}
    # Subsets used by several splits (test_full) are generated once and
    # cached until their last use (splits are generated one after another;
    # if not, the cache only costs recomputation).
    uses = collections.Counter()
    for split, subsets in SPLITS.items():
      have = [s for s in subsets if s in faces]
      if have:
        uses.update(have)
        splits[split] = self._generate_examples(manual_dir, have, faces)
    self._cache_uses = uses
    self._cache = {}
    return splits

  def _generate_examples(self, manual_dir: str, subsets: Sequence[str],
                         faces: Dict[str, List[Tuple[str, str]]]
                         ) -> Iterator[Tuple[str, dict]]:
    for subset in subsets:
      self._cache_uses[subset] -= 1
      cached = self._cache.pop(subset, None)
      if cached is not None and len(cached) == len(faces[subset]):
        if self._cache_uses[subset] > 0:
          self._cache[subset] = cached
        yield from cached
        continue
      keep = [] if self._cache_uses[subset] > 0 else None
      for image_path, pts_path in faces[subset]:
        key, example = load_face(manual_dir, subset, image_path, pts_path)
        if keep is not None:
          keep.append((key, example))
        yield key, example
      if keep is not None:
        self._cache[subset] = keep
