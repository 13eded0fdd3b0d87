"""Writers for small COFW fixtures in the two real .mat formats.

* ``write_mat_v73``: MATLAB 7.3 layout written with h5py: a 512-byte user
  block holding the MATLAB text header, every array stored transposed
  (MATLAB ``[m, n]`` -> HDF5 ``[n, m]``) with a ``MATLAB_class`` attribute,
  and cell arrays as datasets of object references into the ``#refs#``
  group.
* ``write_mat_v5``: MATLAB 5 via ``scipy.io.savemat`` (cells = object arrays).

``make_cofw_tree`` writes a complete manual dir (train/test .mat files and the
COFW-68 annotation folder) with synthetic images and returns the ground truth
that was written, for tests to compare against.
"""

from __future__ import annotations

import os
import pathlib
import string
from typing import Dict, List, Optional, Sequence

import h5py
import numpy as np
from scipy import ndimage
import scipy.io

_MATLAB_CLASS = {np.dtype(np.uint8): "uint8", np.dtype(np.float64): "double",
                 np.dtype(np.int16): "int16", np.dtype(np.float32): "single",
                 np.dtype(np.bool_): "logical"}


def _ref_name(i: int) -> str:
  """MATLAB-style '#refs#' member names: a, b, ..., z, ba, bb, ..."""
  letters = string.ascii_lowercase
  name = ""
  while True:
    name = letters[i % 26] + name
    i //= 26
    if i == 0:
      return name


def write_mat_v73(path, variables: Dict[str, object]) -> None:
  """Writes a MATLAB 7.3 (HDF5) .mat file.

  Args:
    path: output file.
    variables: name -> numeric array (MATLAB orientation) or list of arrays
      (a MATLAB ``[n, 1]`` cell array).
  """
  path = os.fspath(path)
  counter = 0
  with h5py.File(path, "w", userblock_size=512) as f:
    refs = f.create_group("#refs#")
    for name, value in variables.items():
      if isinstance(value, list):
        # MATLAB [n, 1] cell -> HDF5 [1, n] references.
        ref_arr = np.empty((1, len(value)), dtype=h5py.ref_dtype)
        for i, item in enumerate(value):
          item = np.asarray(item)
          ds = refs.create_dataset(_ref_name(counter), data=item.T)
          ds.attrs["MATLAB_class"] = np.bytes_(_MATLAB_CLASS[item.dtype])
          counter += 1
          ref_arr[0, i] = ds.ref
        ds = f.create_dataset(name, data=ref_arr)
        ds.attrs["MATLAB_class"] = np.bytes_("cell")
      else:
        value = np.asarray(value)
        ds = f.create_dataset(name, data=value.T)
        ds.attrs["MATLAB_class"] = np.bytes_(_MATLAB_CLASS[value.dtype])
  text = (b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: "
          b"Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .")
  header = text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
  with open(path, "r+b") as fh:
    fh.write(header.ljust(512, b"\x00"))


def write_mat_v5(path, variables: Dict[str, object]) -> None:
  """Writes a MATLAB 5 .mat file (lists become ``[n, 1]`` cell arrays)."""
  out = {}
  for name, value in variables.items():
    if isinstance(value, list):
      cell = np.empty((len(value), 1), dtype=object)
      for i, item in enumerate(value):
        cell[i, 0] = np.asarray(item)
      out[name] = cell
    else:
      out[name] = np.asarray(value)
  scipy.io.savemat(os.fspath(path), out, format="5")


def write_mat(path, variables, fmt: str) -> None:
  {"v73": write_mat_v73, "v5": write_mat_v5}[fmt](path, variables)


def smooth_image(rng, h: int, w: int, gray: bool) -> np.ndarray:
  """Smooth random uint8 image ``[h, w]`` or ``[h, w, 3]``."""
  c = 1 if gray else 3
  noise = rng.uniform(0, 255, size=(h, w, c))
  img = ndimage.gaussian_filter(noise, sigma=(3, 3, 0))
  img = (img - img.min()) / max(np.ptp(img), 1e-6) * 255
  img = img.astype(np.uint8)
  return img[..., 0] if gray else img


def random_shapes(rng, n: int, k: int, sizes):
  """``[n, k, 2]`` 1-based points and ``[n, 4]`` [x, y, w, h] boxes."""
  pts, boxes = [], []
  for h, w in sizes:
    side = rng.uniform(0.3, 0.5) * min(h, w)
    x0 = rng.uniform(0.1 * w, w - side - 0.1 * w)
    y0 = rng.uniform(0.1 * h, h - side - 0.1 * h)
    p = np.stack([rng.uniform(x0, x0 + side, k),
                  rng.uniform(y0, y0 + side, k)], -1) + 1.0
    pts.append(p)
    boxes.append([np.floor(x0) + 1, np.floor(y0) + 1, np.ceil(side),
                  np.ceil(side)])
  return np.array(pts), np.array(boxes, np.float64)


def make_cofw_tree(root, fmt: str = "v73", n_train: int = 3, n_test: int = 4,
                   seed: int = 0, gray_test: Sequence[int] = (1,),
                   with_train: bool = True, with_annotations: bool = True,
                   cofw68_points: Optional[List[np.ndarray]] = None,
                   cofw68_occ: Optional[List[np.ndarray]] = None,
                   cofw68_boxes: Optional[np.ndarray] = None,
                   image_sizes: Optional[List[tuple]] = None) -> Dict:
  """Writes a COFW manual dir; returns the ground truth written.

  Args:
    root: manual dir to create.
    fmt: 'v73' or 'v5' for the image .mat files (annotations are always v5,
      as in the real COFW-68 release).
    gray_test: indices of test images stored grayscale ([H, W]).
    cofw68_points / cofw68_occ / cofw68_boxes: real COFW-68 values to write
      (1-based); synthetic ones otherwise.
    image_sizes: test image ``(h, w)`` sizes.

  Returns:
    dict with 'train' / 'test' -> {'images', 'phis', 'bboxes'} and 'cofw68'
    -> {'points' (1-based), 'occ', 'bboxes'}.
  """
  root = pathlib.Path(root)
  root.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  truth = {}

  def image_set(n, sizes, gray_ids):
    images = [smooth_image(rng, h, w, i in gray_ids)
              for i, (h, w) in enumerate(sizes)]
    pts, boxes = random_shapes(rng, n, 29, sizes)
    occ = (rng.uniform(size=(n, 29)) < 0.25).astype(np.float64)
    phis = np.concatenate([pts[..., 0], pts[..., 1], occ], axis=1)
    return {"images": images, "phis": phis, "bboxes": boxes}

  if image_sizes is None:
    image_sizes = [(int(rng.integers(120, 220)), int(rng.integers(120, 220)))
                   for _ in range(n_test)]
  truth["test"] = image_set(n_test, image_sizes, set(gray_test))
  write_mat(root / "COFW_test_color.mat",
            {"IsT": truth["test"]["images"], "phisT": truth["test"]["phis"],
             "bboxesT": truth["test"]["bboxes"]}, fmt)
  if with_train:
    sizes = [(int(rng.integers(120, 220)), int(rng.integers(120, 220)))
             for _ in range(n_train)]
    truth["train"] = image_set(n_train, sizes, {0})
    write_mat(root / "COFW_train_color.mat",
              {"IsTr": truth["train"]["images"],
               "phisTr": truth["train"]["phis"],
               "bboxesTr": truth["train"]["bboxes"]}, fmt)
  if with_annotations:
    ann = root / "cofw68"
    (ann / "test_annotations").mkdir(parents=True, exist_ok=True)
    if cofw68_points is None:
      pts, boxes = random_shapes(rng, n_test, 68, image_sizes)
      cofw68_points = list(pts)
      cofw68_occ = [(rng.uniform(size=(1, 68)) < 0.25).astype(np.uint8)
                    for _ in range(n_test)]
      cofw68_boxes = boxes.astype(np.int16)
    for i in range(n_test):
      scipy.io.savemat(
          ann / "test_annotations" / f"{i + 1}_points.mat",
          {"Points": np.asarray(cofw68_points[i], np.float64),
           "Occ": np.asarray(cofw68_occ[i], np.uint8).reshape(1, 68)})
    scipy.io.savemat(ann / "cofw68_test_bboxes.mat",
                     {"bboxes": np.asarray(cofw68_boxes, np.int16)})
    truth["cofw68"] = {"points": [np.asarray(p, np.float64)
                                  for p in cofw68_points],
                       "occ": [np.asarray(o).reshape(68) for o in cofw68_occ],
                       "bboxes": np.asarray(cofw68_boxes, np.float64)}
  return truth
