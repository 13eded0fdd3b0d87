"""Reading and writing 300-W style landmark files.

``.pts`` files (300-W, iBUG, AFW, HELEN, LFPW releases) look like::

  version: 1
  n_points:  68
  {
  x y        (one line per point, 1-based pixel coordinates)
  }

Some copies circulate without the ``version`` / ``n_points`` / ``{ }`` header
(one ``x y`` pair per line); both forms are accepted. Following
docs/DESIGN.md, everything returned here is **0-based** (1 is subtracted on
read and added on write).

The 300-W test CSV files (``face_landmarks_300w_*.csv``) have the columns
``image_name, scale, center_w, center_h, original_0_x, original_0_y, ...,
original_67_y`` with raw 1-based ``.pts`` values.
"""

from __future__ import annotations

import csv
import os
import pathlib
import re
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

PathLike = Union[str, os.PathLike]

_HEADER_RE = re.compile(r"^\s*(version|n_points)\s*:\s*(\S+)\s*$", re.I)


class PtsFormatError(ValueError):
  """A landmark file that cannot be parsed; the message names the file."""


def read_pts(path: PathLike, expected_points: Optional[int] = 68) -> np.ndarray:
  """Reads a ``.pts`` file.

  Args:
    path: the ``.pts`` file (with or without the version/n_points/{ } header).
    expected_points: required number of points; ``None`` accepts any count
      (but still checks it against ``n_points`` when the header gives it).

  Returns:
    float32 ``[N, 2]`` array of ``(x, y)``, 0-based (file value - 1).

  Raises:
    FileNotFoundError: no such file.
    PtsFormatError: unparsable line or wrong number of points; the message
      names the file (and line).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"landmark file not found: {path}")
  try:
    with open(path, "r", encoding="utf-8-sig", errors="strict") as f:
      lines = f.read().splitlines()
  except UnicodeDecodeError as e:
    raise PtsFormatError(f"{path}: not a text .pts file ({e})") from None

  declared = None
  in_braces = False
  saw_open = saw_close = False
  points = []
  for lineno, raw in enumerate(lines, start=1):
    line = raw.strip()
    if not line:
      continue
    m = _HEADER_RE.match(line)
    if m:
      if m.group(1).lower() == "n_points":
        try:
          declared = int(m.group(2))
        except ValueError:
          raise PtsFormatError(
              f"{path}:{lineno}: bad n_points value {m.group(2)!r}") from None
      continue
    if line == "{":
      if saw_open:
        raise PtsFormatError(f"{path}:{lineno}: second '{{'")
      saw_open = in_braces = True
      continue
    if line == "}":
      if not in_braces:
        raise PtsFormatError(f"{path}:{lineno}: '}}' without '{{'")
      saw_close, in_braces = True, False
      continue
    if saw_close:
      raise PtsFormatError(
          f"{path}:{lineno}: unexpected text after '}}': {line!r}")
    fields = line.replace(",", " ").split()
    if len(fields) != 2:
      raise PtsFormatError(
          f"{path}:{lineno}: expected 'x y', got {line!r}")
    try:
      x, y = float(fields[0]), float(fields[1])
    except ValueError:
      raise PtsFormatError(
          f"{path}:{lineno}: cannot parse numbers in {line!r}") from None
    if not (np.isfinite(x) and np.isfinite(y)):
      raise PtsFormatError(f"{path}:{lineno}: non-finite value in {line!r}")
    points.append((x, y))

  if saw_open and not saw_close:
    raise PtsFormatError(f"{path}: missing closing '}}'")
  n = len(points)
  if declared is not None and declared != n:
    raise PtsFormatError(
        f"{path}: header says n_points {declared} but {n} points were read")
  if expected_points is not None and n != expected_points:
    raise PtsFormatError(
        f"{path}: expected {expected_points} points, found {n}")
  if n == 0:
    raise PtsFormatError(f"{path}: no points")
  return (np.asarray(points, dtype=np.float64) - 1.0).astype(np.float32)


def write_pts(path: PathLike, points_0based: np.ndarray) -> None:
  """Writes ``[N, 2]`` 0-based points as a 1-based ``.pts`` file with header."""
  pts = np.asarray(points_0based, dtype=np.float64)
  if pts.ndim != 2 or pts.shape[1] != 2:
    raise ValueError(f"{os.fspath(path)}: points must be [N, 2], got "
                     f"shape {pts.shape}")
  if not np.all(np.isfinite(pts)):
    raise ValueError(f"{os.fspath(path)}: points contain non-finite values")
  pts = pts + 1.0
  with open(path, "w", encoding="utf-8") as f:
    f.write(f"version: 1\nn_points:  {len(pts)}\n{{\n")
    for x, y in pts.tolist():
      # repr-precision floats: float32 input round-trips exactly.
      f.write(f"{x!r} {y!r}\n")
    f.write("}\n")


def read_300w_csv(path: PathLike,
                  num_points: int = 68) -> Tuple[List[str], np.ndarray]:
  """Reads a 300-W annotation CSV (``face_landmarks_300w_*.csv``).

  Args:
    path: CSV with ``image_name`` and ``original_{i}_x`` / ``original_{i}_y``
      columns (1-based values); other columns are ignored.
    num_points: points per row.

  Returns:
    ``(names, shapes)``: list of ``M`` image names, float32 ``[M, N, 2]``
    0-based shapes.

  Raises:
    FileNotFoundError: no such file.
    PtsFormatError: missing columns or unparsable values (names file and row).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"300-W annotation CSV not found: {path}")
  with open(path, "r", encoding="utf-8-sig", newline="") as f:
    reader = csv.reader(f)
    try:
      header = next(reader)
    except StopIteration:
      raise PtsFormatError(f"{path}: empty CSV file") from None
    header = [h.strip() for h in header]
    col = {h: i for i, h in enumerate(header)}
    wanted = ["image_name"] + [f"original_{i}_{a}" for i in range(num_points)
                               for a in ("x", "y")]
    missing = [w for w in wanted if w not in col]
    if missing:
      raise PtsFormatError(
          f"{path}: missing column(s) {missing[:4]}"
          f"{' ...' if len(missing) > 4 else ''}")
    idx = [col[w] for w in wanted[1:]]
    names, shapes = [], []
    for rowno, row in enumerate(reader, start=2):
      if not row or all(not c.strip() for c in row):
        continue
      if len(row) < len(header):
        raise PtsFormatError(
            f"{path}: row {rowno} has {len(row)} fields, expected "
            f"{len(header)}")
      try:
        vals = np.array([float(row[i]) for i in idx], dtype=np.float64)
      except ValueError:
        raise PtsFormatError(
            f"{path}: row {rowno}: non-numeric landmark value") from None
      names.append(row[col["image_name"]].strip())
      shapes.append(vals.reshape(num_points, 2))
  if not shapes:
    return names, np.zeros((0, num_points, 2), np.float32)
  return names, (np.stack(shapes) - 1.0).astype(np.float32)


# Image files a .pts may sit beside (300-W release: .jpg and .png).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def find_faces(root: PathLike, subsets: Sequence[str]
               ) -> List[Tuple[str, pathlib.Path, pathlib.Path]]:
  """Every annotated face of 300-W-layout folders, sorted.

  Args:
    root: the folder holding the subset folders (e.g. ``.../300w``).
    subsets: subset folders below it, e.g. ``("helen/testset",)``.

  Returns:
    ``(relative path without extension, image path, pts path)`` per face:
    each ``.pts`` with the image of the same stem beside it (``.jpg``,
    ``.jpeg`` or ``.png``, any case).

  Raises:
    FileNotFoundError: a missing subset folder, a ``.pts`` without image,
      or no ``.pts`` at all (the message names the path).
  """
  root = pathlib.Path(root)
  out = []
  for sub in subsets:
    folder = root / sub
    if not folder.is_dir():
      raise FileNotFoundError(f"face folder not found: {folder}")
    files = sorted(folder.iterdir(), key=lambda p: p.name)
    images = {p.name.lower(): p for p in files
              if p.suffix.lower() in IMAGE_EXTENSIONS}
    for pts in (p for p in files if p.suffix.lower() == ".pts"):
      image = next((images[(pts.stem + e).lower()] for e in IMAGE_EXTENSIONS
                    if (pts.stem + e).lower() in images), None)
      if image is None:
        raise FileNotFoundError(
            f"{pts}: no image beside it (looked for {pts.stem}.jpg/.png)")
      out.append((pts.relative_to(root).with_suffix("").as_posix(), image,
                  pts))
  if not out:
    raise FileNotFoundError(f"no .pts files under {root} in {list(subsets)}")
  return out
