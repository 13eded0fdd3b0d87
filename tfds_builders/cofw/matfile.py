"""Reads MATLAB .mat files in both forms that circulate for COFW.

* MATLAB 7.3 files are HDF5 (read with h5py). Every MATLAB array is stored
  transposed (MATLAB is column-major: a MATLAB ``[m, n]`` array is an HDF5
  ``[n, m]`` dataset), and a cell array is a dataset of HDF5 object
  references (attribute ``MATLAB_class = 'cell'``) pointing at the element
  datasets in the ``#refs#`` group. An ``[H, W, 3]`` colour image is thus an
  HDF5 ``[3, W, H]`` dataset and a grayscale ``[H, W]`` image ``[W, H]``.
* MATLAB 5 files (``scipy.io.loadmat``): arrays in MATLAB orientation, cell
  arrays as object ndarrays.

``MatFile`` hides the difference: numeric arrays come back in MATLAB
orientation (as ``scipy.io.loadmat`` gives them) and cell arrays as lists of
arrays in MATLAB's linear (column-major) order.
"""

from __future__ import annotations

import os
from typing import List

import h5py
import numpy as np
import scipy.io


class MatError(ValueError):
  """Missing, unreadable or unexpected .mat content (names the file)."""


def is_v73(path: str) -> bool:
  """True if ``path`` is an HDF5 (MATLAB 7.3) file."""
  return bool(h5py.is_hdf5(path))


class MatFile:
  """Read access to named variables of a MATLAB 5 or 7.3 .mat file.

  Use as a context manager (closes the HDF5 file of 7.3 files).
  """

  def __init__(self, path: os.PathLike | str):
    self.path = os.fspath(path)
    self.name = os.path.basename(self.path)
    if not os.path.isfile(self.path):
      raise MatError(f"file not found: {self.path}")
    self._h5 = None
    self._v5 = None
    try:
      if is_v73(self.path):
        self._h5 = h5py.File(self.path, "r")
      else:
        self._v5 = scipy.io.loadmat(self.path)
    except MatError:
      raise
    except Exception as e:  # scipy/h5py raise many kinds
      raise MatError(f"cannot read MATLAB file {self.path}: {e}") from None

  @property
  def format(self) -> str:
    return "v7.3" if self._h5 is not None else "v5"

  def close(self):
    if self._h5 is not None:
      self._h5.close()
      self._h5 = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def variables(self) -> List[str]:
    if self._h5 is not None:
      return sorted(k for k in self._h5.keys() if not k.startswith("#"))
    return sorted(k for k in self._v5 if not k.startswith("__"))

  def has(self, name: str) -> bool:
    return name in self.variables()

  def _require(self, name: str):
    if not self.has(name):
      raise MatError(f"{self.path}: no variable {name!r} (found: "
                     f"{', '.join(self.variables()) or 'none'})")

  def array(self, name: str) -> np.ndarray:
    """Numeric variable ``name`` in MATLAB orientation."""
    self._require(name)
    if self._h5 is not None:
      ds = self._h5[name]
      if not isinstance(ds, h5py.Dataset) or ds.dtype == h5py.ref_dtype:
        raise MatError(f"{self.path}: variable {name!r} is not a numeric "
                       "array")
      return self._h5_array(ds)
    a = self._v5[name]
    if a.dtype == object or a.dtype.names:
      raise MatError(f"{self.path}: variable {name!r} is not a numeric array")
    return a

  def _h5_array(self, ds) -> np.ndarray:
    if ds.attrs.get("MATLAB_empty", 0):
      return np.zeros((0,), ds.dtype)
    return np.asarray(ds[()]).T

  def cell_length(self, name: str) -> int:
    """Number of elements of cell array ``name``."""
    return len(self._cell_handles(name))

  def _cell_handles(self, name: str):
    self._require(name)
    if self._h5 is not None:
      ds = self._h5[name]
      if not isinstance(ds, h5py.Dataset) or ds.dtype != h5py.ref_dtype:
        raise MatError(f"{self.path}: variable {name!r} is not a cell array")
      # C-order ravel of the transposed HDF5 array = MATLAB linear order.
      return list(np.asarray(ds[()]).ravel(order="C"))
    a = self._v5[name]
    if a.dtype != object:
      raise MatError(f"{self.path}: variable {name!r} is not a cell array")
    return list(a.ravel(order="F"))

  def cell_item(self, name: str, index: int, handles=None) -> np.ndarray:
    """Element ``index`` (0-based, MATLAB linear order) of cell ``name``."""
    handles = self._cell_handles(name) if handles is None else handles
    item = handles[index]
    if self._h5 is not None:
      try:
        return self._h5_array(self._h5[item])
      except Exception as e:  # bad reference
        raise MatError(f"{self.path}: cannot read {name}{{{index + 1}}}: "
                       f"{e}") from None
    return np.asarray(item)

  def cell_items(self, name: str):
    """Iterates over the elements of cell ``name`` (lazily for v7.3)."""
    handles = self._cell_handles(name)
    for i in range(len(handles)):
      yield self.cell_item(name, i, handles)
