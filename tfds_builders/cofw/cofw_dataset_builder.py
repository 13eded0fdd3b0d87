"""COFW (29 points) and COFW-68 (68 points) as a TFDS builder.

Images come from COFW's .mat files (MATLAB 7.3/HDF5 or MATLAB 5; see
``matfile.py``); the 68-point test annotations from Ghiasi and Fowlkes'
COFW-68 release. Examples have the features of docs/DESIGN.md; all MATLAB
coordinates (1-based) are stored 0-based. Written as ``array_record`` and read
with ``tfds.data_source`` without TensorFlow.
"""

from __future__ import annotations

import os
from typing import Dict, Iterator, Optional, Tuple

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from sgfan_jax import crop
from tfds_builders import features
from tfds_builders.cofw import matfile

TEST_FILES = ("COFW_test_color.mat", "COFW_test.mat")
TRAIN_FILES = ("COFW_train_color.mat", "COFW_train.mat")
ANNOTATION_DIRS = ("cofw68", ".")  # searched in this order
POINTS_DIR = "test_annotations"
BBOX_FILE = "cofw68_test_bboxes.mat"

LAYOUTS = {"test68": "ibug68", "train29": "cofw29", "test29": "cofw29"}
NUM_POINTS = {"test68": 68, "train29": 29, "test29": 29}


def _first_existing(manual_dir: str, names) -> Optional[str]:
  for name in names:
    path = os.path.join(manual_dir, name)
    if os.path.isfile(path):
      return path
  return None


def find_annotation_dir(manual_dir: str) -> Optional[str]:
  """The COFW-68 annotation folder (``cofw68/`` or the manual dir itself)."""
  for sub in ANNOTATION_DIRS:
    d = os.path.normpath(os.path.join(manual_dir, sub))
    if (os.path.isdir(os.path.join(d, POINTS_DIR)) or
        os.path.isfile(os.path.join(d, BBOX_FILE))):
      return d
  return None


def xywh_to_box(b: np.ndarray, name: str) -> np.ndarray:
  """1-based MATLAB ``[x, y, w, h]`` -> 0-based ``[x0, y0, x1, y1]``.

  The box's top-left pixel (x, y) (1-based) becomes (x - 1, y - 1) and the box
  spans w x h pixels from there.
  """
  b = np.asarray(b, np.float64).reshape(-1)
  if b.shape != (4,) or not np.all(np.isfinite(b)) or b[2] <= 0 or b[3] <= 0:
    raise crop.DataError(f"{name}: bad box [x, y, w, h] = {b.tolist()}")
  x0, y0 = b[0] - 1.0, b[1] - 1.0
  return np.array([x0, y0, x0 + b[2], y0 + b[3]], np.float32)


def read_phis(mat: matfile.MatFile, var: str, n_images: int):
  """29-point shapes from a ``phis`` array ``[n, 87]`` (or ``[n, 58]``).

  Returns:
    ``(points [n, 29, 2] float32 0-based, visible [n, 29] bool)``.
  """
  phis = np.asarray(mat.array(var), np.float64)
  if (phis.ndim == 2 and phis.shape[0] in (58, 87) and
      phis.shape[1] == n_images != phis.shape[0]):
    phis = phis.T  # stored with the coordinates along the first axis
  if phis.ndim != 2 or phis.shape[1] not in (58, 87):
    raise crop.DataError(f"{mat.path}: {var} has shape {phis.shape}, expected "
                         "[n, 87] (29 x, 29 y, 29 occlusion flags)")
  if phis.shape[0] != n_images:
    raise crop.DataError(f"{mat.path}: {var} has {phis.shape[0]} rows but "
                         f"there are {n_images} images")
  points = np.stack([phis[:, :29], phis[:, 29:58]], -1) - 1.0
  if phis.shape[1] == 87:
    visible = phis[:, 58:87] == 0
  else:
    visible = np.ones(phis.shape[:1] + (29,), np.bool_)
  return points.astype(np.float32), visible


def read_boxes(mat: matfile.MatFile, var: str, n_images: int) -> np.ndarray:
  """``[n, 4]`` MATLAB ``[x, y, w, h]`` boxes (as stored)."""
  b = np.asarray(mat.array(var), np.float64)
  if b.ndim == 2 and b.shape[0] == 4 and b.shape[1] == n_images != 4:
    b = b.T
  if b.ndim != 2 or b.shape != (n_images, 4):
    raise crop.DataError(f"{mat.path}: {var} has shape {b.shape}, expected "
                         f"[{n_images}, 4] ([x, y, w, h] per image)")
  return b


def read_cofw68_points(path: str) -> Tuple[np.ndarray, np.ndarray]:
  """One ``{i}_points.mat``: ``(points [68, 2] 0-based, visible [68])``."""
  if not os.path.isfile(path):
    raise crop.DataError(f"COFW-68 annotation file not found: {path}")
  try:
    with matfile.MatFile(path) as m:
      pts = np.asarray(m.array("Points"), np.float64)
      occ = np.asarray(m.array("Occ")).reshape(-1)
  except matfile.MatError as e:
    raise crop.DataError(str(e)) from None
  if pts.shape == (2, 68):
    pts = pts.T
  if pts.shape != (68, 2) or occ.shape != (68,):
    raise crop.DataError(f"{path}: Points {pts.shape} / Occ {occ.shape}, "
                         "expected [68, 2] / [1, 68]")
  if not np.all(np.isfinite(pts)):
    raise crop.DataError(f"{path}: non-finite landmark values")
  return (pts - 1.0).astype(np.float32), occ == 0


class Builder(tfds.core.GeneratorBasedBuilder):
  """COFW: occluded faces, 29-point (COFW) and 68-point (COFW-68) splits."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: 2.2x box crops, 256 px."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Caltech Occluded Faces in the Wild (COFW, Burgos-Artizzu et al. 2013):
  download COFW_train_color.mat and COFW_test_color.mat (or the grayscale
  COFW_train.mat / COFW_test.mat) from
  https://data.caltech.edu/records/bc0bf-nc666 (Caltech). For the 68-point
  test split also download the COFW-68 annotations of Ghiasi and Fowlkes
  (https://github.com/golnazghiasi/cofw68-benchmark: test_annotations/ and
  cofw68_test_bboxes.mat). Either MATLAB 7.3 (HDF5) or MATLAB 5 .mat files
  work. Research use only. Layout:

    <manual_dir>/COFW_test_color.mat        (or COFW_test.mat): IsT, phisT,
                                            bboxesT (507 faces)
    <manual_dir>/COFW_train_color.mat       (or COFW_train.mat): IsTr,
                                            phisTr, bboxesTr (1,345 faces)
    <manual_dir>/cofw68/test_annotations/{i}_points.mat   (i = 1..507)
    <manual_dir>/cofw68/cofw68_test_bboxes.mat
  (the cofw68/ contents may also sit directly in <manual_dir>).

  Splits: test68 (507 faces, 68 points, visible = Occ == 0, face box = the
  COFW-68 box), train29 (1,345) and test29 (507): 29 points from phisTr /
  phisT (29 x, 29 y, 29 occlusion flags; visible = flag == 0) with boxes
  bboxesTr / bboxesT. Boxes are 1-based [x, y, w, h]; stored as 0-based
  [x0, y0, x1, y1] = [x - 1, y - 1, x - 1 + w, y - 1 + h].
  A missing train file or annotation folder skips its splits with a warning.
  """

  def __init__(self, *, file_format=None, **kwargs):
    super().__init__(file_format=file_format or "array_record", **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return features.dataset_info(
        self, None, "https://data.caltech.edu/records/bc0bf-nc666",
        layout=dict(LAYOUTS), num_points=dict(NUM_POINTS),
        coordinates="0-based, pixel centre (docs/DESIGN.md); MATLAB values "
                    "minus 1")

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    test_path = _first_existing(manual_dir, TEST_FILES)
    train_path = _first_existing(manual_dir, TRAIN_FILES)
    ann_dir = find_annotation_dir(manual_dir)
    if test_path is None and train_path is None:
      raise crop.DataError(
          f"no COFW data in {manual_dir}: none of "
          f"{', '.join(TEST_FILES + TRAIN_FILES)} exists (see the manual "
          "download instructions)")
    splits = {}
    if train_path is not None:
      splits["train29"] = self._generate_examples(
          "29", manual_dir=manual_dir, path=train_path, image_var="IsTr",
          phis_var="phisTr", box_var="bboxesTr", subset="cofw29_train")
    else:
      logging.warning("COFW: %s missing in %s, split train29 skipped",
                      " / ".join(TRAIN_FILES), manual_dir)
    if test_path is None:
      logging.warning("COFW: %s missing in %s, splits test29 and test68 "
                      "skipped", " / ".join(TEST_FILES), manual_dir)
      return splits
    splits["test29"] = self._generate_examples(
        "29", manual_dir=manual_dir, path=test_path, image_var="IsT",
        phis_var="phisT", box_var="bboxesT", subset="cofw29_test")
    if ann_dir is None:
      logging.warning(
          "COFW: COFW-68 annotation folder (cofw68/%s/, cofw68/%s) missing in "
          "%s, split test68 skipped", POINTS_DIR, BBOX_FILE, manual_dir)
    else:
      for needed in (os.path.join(ann_dir, POINTS_DIR),
                     os.path.join(ann_dir, BBOX_FILE)):
        if not os.path.exists(needed):
          raise crop.DataError(f"COFW-68 annotations incomplete: {needed} "
                               "not found")
      splits["test68"] = self._generate_examples(
          "68", manual_dir=manual_dir, path=test_path, ann_dir=ann_dir)
    return splits

  def _generate_examples(self, kind: str, **kwargs
                         ) -> Iterator[Tuple[str, Dict]]:
    """Examples of a 29-point (``kind='29'``) or the 68-point split."""
    if kind == "29":
      return self._generate_29(**kwargs)
    return self._generate_68(**kwargs)

  def _open(self, path: str) -> matfile.MatFile:
    try:
      return matfile.MatFile(path)
    except matfile.MatError as e:
      raise crop.DataError(str(e)) from None

  def _generate_29(self, manual_dir: str, path: str, image_var: str,
                   phis_var: str, box_var: str, subset: str
                   ) -> Iterator[Tuple[str, Dict]]:
    rel = os.path.relpath(path, manual_dir).replace(os.sep, "/")
    with self._open(path) as mat:
      try:
        n = mat.cell_length(image_var)
        points, visible = read_phis(mat, phis_var, n)
        boxes = read_boxes(mat, box_var, n)
      except matfile.MatError as e:
        raise crop.DataError(str(e)) from None
      for i, image in enumerate(self._images(mat, image_var)):
        name = f"{rel}:{image_var}{{{i + 1}}}"
        yield name, features.make_example(
            crop.array_to_pil(image, f"{path}: {image_var}{{{i + 1}}}"),
            points[i], visible[i], xywh_to_box(boxes[i], name),
            file_name=name, subset=subset)

  def _generate_68(self, manual_dir: str, path: str, ann_dir: str
                   ) -> Iterator[Tuple[str, Dict]]:
    rel = os.path.relpath(path, manual_dir).replace(os.sep, "/")
    bbox_path = os.path.join(ann_dir, BBOX_FILE)
    with self._open(bbox_path) as bmat, self._open(path) as mat:
      try:
        n = mat.cell_length("IsT")
        boxes = read_boxes(bmat, "bboxes", n)
      except matfile.MatError as e:
        raise crop.DataError(str(e)) from None
      except crop.DataError as e:
        raise crop.DataError(f"{e} (COFW-68 boxes must match {path})"
                             ) from None
      for i, image in enumerate(self._images(mat, "IsT")):
        pts_path = os.path.join(ann_dir, POINTS_DIR, f"{i + 1}_points.mat")
        points, visible = read_cofw68_points(pts_path)
        name = f"{rel}:IsT{{{i + 1}}}"
        yield name, features.make_example(
            crop.array_to_pil(image, f"{path}: IsT{{{i + 1}}}"),
            points, visible, xywh_to_box(boxes[i], bbox_path),
            file_name=name, subset="cofw68")

  @staticmethod
  def _images(mat: matfile.MatFile, var: str):
    try:
      yield from mat.cell_items(var)
    except matfile.MatError as e:
      raise crop.DataError(str(e)) from None
