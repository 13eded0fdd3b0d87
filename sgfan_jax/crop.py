"""Face crops: the square around a face box, its transforms, image reading.

Shared by the TFDS builders (tfds_builders/) and inference (landmarker.py).

Geometry follows docs/DESIGN.md: points are 0-based with the pixel-centre
convention (the centre of ``image[i, j]`` is ``(x=j, y=i)``, so pixel ``j``
covers ``[j - 1/2, j + 1/2]``). The crop is the square ``[ex, ex + L] x
[ey, ey + L]`` (edges, image coordinates) centred on the face box centre,
``L = crop_context * max(box w, box h)``, resized to ``T = crop_size``. With
``s = L / T`` crop pixel ``u`` covers ``[ex + u s, ex + (u + 1) s]``, so

  image x = s * u + ex + s / 2        (crop_to_image)
  crop  u = (x - ex) / s - 1 / 2      (image_to_crop)

which is DESIGN.md's ``x -> (x + 0.5) * T / S - 0.5`` after the shift.

Images are resampled with PIL: an exact integer box-average reduction when the
crop is much larger than ``T`` (``Image.reduce``), then an antialiased
bilinear resize of the float crop box (``Image.resize(box=...)``), both in
PIL's edge coordinates (``x + 1/2``). Parts of the crop outside the image are
zero.
"""

from __future__ import annotations

import math
import os
from typing import Tuple

import numpy as np
from PIL import Image
from PIL import ImageOps

CROP_CONTEXT = 2.2
CROP_SIZE = 256

# Decompression-bomb guard off: 300-W originals reach 4288 px a side and the
# COFW/300-W files are trusted research data.
Image.MAX_IMAGE_PIXELS = None


class DataError(ValueError):
  """Bad or missing source data; the message names the file."""


def load_image_rgb(path: os.PathLike | str) -> Image.Image:
  """Opens an image file as an RGB PIL image (grayscale/palette/RGBA -> RGB).

  The stored pixel grid is used as is (EXIF orientation is ignored): the
  landmark annotations refer to it.

  Raises:
    DataError: missing or unreadable file (message names it).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise DataError(f"image file not found: {path}")
  try:
    with Image.open(path) as im:
      im.load()
      return to_rgb(im, path)
  except DataError:
    raise
  except Exception as e:  # PIL raises many kinds (OSError, SyntaxError, ...)
    raise DataError(f"cannot read image {path}: {e}") from None


def load_photo(source, name: str = "image") -> Image.Image:
  """A user's photo as an RGB PIL image, upright.

  Unlike :func:`load_image_rgb` (dataset files, whose annotations refer to
  the stored pixel grid), the EXIF orientation is applied, as a photo viewer
  shows it. Reads any mode PIL opens: grayscale, palette, RGBA/LA (alpha
  dropped), CMYK, 16-bit.

  Args:
    source: a file path, a PIL image or a ``[H, W]`` / ``[H, W, 1|3|4]``
      array.
    name: what to call it in error messages (file paths name themselves).

  Raises:
    DataError: missing, empty, truncated or unreadable (names the file).
  """
  if isinstance(source, np.ndarray):
    a = source[..., :3] if source.ndim == 3 and source.shape[2] == 4 else source
    return array_to_pil(a, name)
  if isinstance(source, Image.Image):
    return to_rgb(ImageOps.exif_transpose(source), name)
  path = os.fspath(source)
  if not os.path.isfile(path):
    raise DataError(f"{path}: not found")
  if os.path.getsize(path) == 0:
    raise DataError(f"{path}: empty file")
  try:
    with Image.open(path) as im:
      im.load()
      return to_rgb(ImageOps.exif_transpose(im), path)
  except DataError:
    raise
  except Image.UnidentifiedImageError:
    raise DataError(f"{path}: not an image PIL can read") from None
  except Exception as e:  # truncated data, bad EXIF, decoder errors
    raise DataError(f"{path}: cannot read image ({e})") from None


def to_rgb(im: Image.Image, name: str = "image") -> Image.Image:
  """Converts a PIL image of any common mode to 8-bit RGB."""
  if im.mode == "RGB":
    return im
  if im.mode in ("I;16", "I;16B", "I;16L", "I"):
    a = np.asarray(im, dtype=np.float64)
    hi = a.max() if a.size else 1.0
    a = np.clip(a * (255.0 / (65535.0 if hi > 255 else 255.0)), 0, 255)
    return Image.fromarray(a.astype(np.uint8), "L").convert("RGB")
  if im.mode == "F":
    raise DataError(f"{name}: floating-point images are not supported")
  return im.convert("RGB")


def array_to_pil(a: np.ndarray, name: str) -> Image.Image:
  """uint8-like array ``[H, W]``, ``[H, W, 1]`` or ``[H, W, 3]`` -> RGB image."""
  a = np.asarray(a)
  if a.ndim == 3 and a.shape[2] == 1:
    a = a[:, :, 0]
  if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
    raise DataError(f"{name}: image has shape {a.shape}, expected [H, W] or "
                    "[H, W, 3]")
  if a.shape[0] < 1 or a.shape[1] < 1:
    raise DataError(f"{name}: empty image of shape {a.shape}")
  if a.dtype != np.uint8:
    if np.issubdtype(a.dtype, np.floating) and a.size and a.max() <= 1.0:
      a = a * 255.0
    a = np.clip(np.round(a), 0, 255).astype(np.uint8)
  im = Image.fromarray(np.ascontiguousarray(a), "L" if a.ndim == 2 else "RGB")
  return im.convert("RGB")


def landmark_box(points: np.ndarray) -> np.ndarray:
  """``[N, 2]`` points -> float32 ``[4]`` box ``[x0, y0, x1, y1]``."""
  p = np.asarray(points, np.float64)
  return np.array([p[:, 0].min(), p[:, 1].min(), p[:, 0].max(),
                   p[:, 1].max()], np.float32)


def crop_transform(face_box: np.ndarray, crop_context: float = CROP_CONTEXT
                   ) -> Tuple[float, float, float]:
  """Crop square for a face box.

  Args:
    face_box: ``[x0, y0, x1, y1]`` in image coordinates.

  Returns:
    ``(side, ex, ey)``: crop side ``L`` in image pixels and the crop's
    left/top *edge* in image coordinates (the crop covers
    ``[ex, ex + L] x [ey, ey + L]``; pixel ``j`` covers ``[j - 1/2, j + 1/2]``).
  """
  x0, y0, x1, y1 = [float(v) for v in face_box]
  side = crop_context * max(x1 - x0, y1 - y0)
  if not side > 0 or not math.isfinite(side):
    raise DataError(f"degenerate face box {face_box}")
  cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
  return side, cx - side / 2.0, cy - side / 2.0


def crop_to_image_matrix(side: float, ex: float, ey: float,
                         crop_size: int = CROP_SIZE) -> np.ndarray:
  """float32 ``[2, 3]`` affine: crop pixel coords -> image coords.

  Crop pixel ``u`` spans ``[ex + u s, ex + (u + 1) s]`` (``s = side / T``),
  so its centre is at ``x = s u + ex + s / 2``.
  """
  s = side / crop_size
  return np.array([[s, 0.0, ex + 0.5 * s], [0.0, s, ey + 0.5 * s]],
                  np.float64).astype(np.float32)


def image_to_crop(points: np.ndarray, side: float, ex: float, ey: float,
                  crop_size: int = CROP_SIZE) -> np.ndarray:
  """Maps ``[N, 2]`` image points into crop coordinates (float32)."""
  s = side / crop_size
  p = np.asarray(points, np.float64)
  out = np.stack([(p[:, 0] - ex) / s - 0.5, (p[:, 1] - ey) / s - 0.5], -1)
  return out.astype(np.float32)


def crop_image(im: Image.Image, side: float, ex: float, ey: float,
               crop_size: int = CROP_SIZE) -> np.ndarray:
  """Resamples the crop square of an RGB image to uint8 ``[T, T, 3]``.

  Pixels outside the image are zero. Uses PIL edge coordinates (``x + 1/2``).
  """
  # Integer box-average pre-reduction keeps the padded window small and
  # avoids aliasing for big originals (exact: edge coords scale by 1/k).
  k = max(1, int(side // (2 * crop_size)))
  ex_e, ey_e = ex + 0.5, ey + 0.5          # PIL edge coordinates
  if k > 1:
    im = im.reduce(k)
    ex_e, ey_e, side = ex_e / k, ey_e / k, side / k
  ix0, iy0 = math.floor(ex_e), math.floor(ey_e)
  ix1, iy1 = math.ceil(ex_e + side), math.ceil(ey_e + side)
  window = im.crop((ix0, iy0, ix1, iy1))   # zero-padded outside the image
  box = (ex_e - ix0, ey_e - iy0, ex_e - ix0 + side, ey_e - iy0 + side)
  out = window.resize((crop_size, crop_size), Image.Resampling.BILINEAR,
                      box=box)
  return np.asarray(out, dtype=np.uint8)
