"""YouTube Faces frames with 68 points (iBUG order) as a TFDS builder.

Reads ``training_frames_keypoints.csv`` / ``training/`` and
``test_frames_keypoints.csv`` / ``test/`` from the manual dir (the layout of
``MANUAL_DOWNLOAD_INSTRUCTIONS``), pools them and splits by person
(``val_people``), because frames of one clip are near-duplicates and the
source's two files share every person. Example features are those of
docs/DESIGN.md (the face box is the landmark box, as for 300-W); CSV
coordinates are 0-based pixel centres.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
import tensorflow_datasets as tfds

from sgfan_jax import crop
from tfds_builders import features

NUM_POINTS = 68
# (CSV file, image folder) of the source, pooled before splitting.
SOURCES = (("training_frames_keypoints.csv", "training"),
           ("test_frames_keypoints.csv", "test"))
# Held-out people: the round(VAL_FRACTION * people) (at least 1) with the
# lowest sha256(f"{VAL_SEED}:{person}").
VAL_FRACTION = 0.1
VAL_SEED = 0

_FRAME = re.compile(r"^(?P<person>.+)_(?P<clip>\d)(?P<frame>\d)\.[A-Za-z]+$")


def person_of(file_name: str) -> str:
  """'Luis_Fonsi_21.jpg' -> 'Luis_Fonsi' (the name before ``_CF``).

  Raises:
    crop.DataError: a name not of the form ``Person_CF.ext``.
  """
  m = _FRAME.match(os.path.basename(file_name))
  if not m:
    raise crop.DataError(f"ytf68: frame name {file_name!r} is not "
                         "Person_CF.jpg (C = clip digit, F = frame digit)")
  return m.group("person")


def read_csv(path: str) -> List[Tuple[str, np.ndarray]]:
  """Rows ``(file name, points [68, 2] float32)`` of one keypoints CSV.

  Raises:
    crop.DataError: missing file, or a row without 136 finite numbers
      (the message names the file and line).
  """
  if not os.path.isfile(path):
    raise crop.DataError(f"ytf68: keypoints file not found: {path}")
  rows = []
  with open(path, newline="") as f:
    reader = csv.reader(f)
    next(reader, None)                              # header
    for line, row in enumerate(reader, start=2):
      if not row:
        continue
      try:
        values = np.array([float(v) for v in row[1:]], np.float64)
      except ValueError:
        raise crop.DataError(f"{path}:{line}: non-numeric coordinate in the "
                             f"row of {row[0]!r}") from None
      if values.size != 2 * NUM_POINTS or not np.all(np.isfinite(values)):
        raise crop.DataError(
            f"{path}:{line}: expected {2 * NUM_POINTS} finite coordinates "
            f"for {row[0]!r}, got {values.size}")
      rows.append((row[0], values.reshape(NUM_POINTS, 2).astype(np.float32)))
  return rows


def val_people(people: Sequence[str], fraction: float = VAL_FRACTION,
               seed: int = VAL_SEED) -> frozenset:
  """The held-out people (see VAL_FRACTION); none when fewer than two."""
  people = sorted(set(people))
  if len(people) < 2:
    return frozenset()
  k = max(1, int(round(fraction * len(people))))
  key = lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest()
  return frozenset(sorted(people, key=key)[:k])


def list_frames(manual_dir: str) -> List[Tuple[str, str, np.ndarray]]:
  """``(relative image path, source folder, points)`` of every frame."""
  frames = []
  for csv_name, folder in SOURCES:
    csv_path = os.path.join(manual_dir, csv_name)
    if not os.path.isfile(csv_path):
      continue
    for name, points in read_csv(csv_path):
      frames.append((f"{folder}/{name}", folder, points))
  if not frames:
    raise crop.DataError(
        f"ytf68: none of {', '.join(c for c, _ in SOURCES)} in {manual_dir}")
  return frames


class Builder(tfds.core.GeneratorBasedBuilder):
  """YouTube Faces frames, 68 points, split by person."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Both source files pooled; train / val by "
                            "person (10 % of people held out)."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  The 68-point YouTube Faces frames: a folder with
    <manual_dir>/training_frames_keypoints.csv + training/*.jpg
    <manual_dir>/test_frames_keypoints.csv + test/*.jpg
  CSV: a header row, then `file name, x0, y0, ..., x67, y67` (0-based pixel
  coordinates, iBUG 300-W point order). Frames are named Person_CF.jpg
  (C = clip, F = frame). Non-commercial research use.
  """

  def __init__(self, *, file_format=None, **kwargs):
    super().__init__(file_format=file_format or "array_record", **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return features.dataset_info(
        self, NUM_POINTS,
        "https://www.cs.tau.ac.il/~wolf/ytfaces/",
        layout="ibug68", num_points=NUM_POINTS, val_fraction=VAL_FRACTION,
        val_seed=VAL_SEED, val_unit="person",
        coordinates="0-based, pixel centre (docs/DESIGN.md), as in the CSV")

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    if not os.path.isdir(manual_dir):
      raise crop.DataError(f"ytf68 manual dir not found: {manual_dir}")
    frames = list_frames(manual_dir)
    held = val_people([person_of(rel) for rel, _, _ in frames])
    splits = {}
    for split in ("train", "val"):
      members = [f for f in frames
                 if (person_of(f[0]) in held) == (split == "val")]
      if members:
        splits[split] = self._generate_examples(manual_dir, members)
    return splits

  def _generate_examples(self, manual_dir: str, members
                         ) -> Iterator[Tuple[str, Dict[str, object]]]:
    for rel, folder, points in members:
      path = os.path.join(manual_dir, rel)
      if not os.path.isfile(path):
        raise crop.DataError(f"ytf68: image listed in {folder} CSV not "
                             f"found: {path}")
      image = crop.load_image_rgb(path)
      yield rel, features.make_example(
          image, points, np.ones([NUM_POINTS], np.bool_),
          crop.landmark_box(points), file_name=rel, subset=f"ytf68/{folder}")
