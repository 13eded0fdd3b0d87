"""Aligned face chips: five landmarks warped onto the recognition template.

  chip = face.chip("photo.jpg", size=112)            # uint8 [112, 112, 3]
  chip = chips.face_chip(image, points68, size=112)  # the same, by hand
  matrix = chips.chip_transform(points68, size)      # [2, 3] image -> chip

The template is the standard 112x112 five-point one of face-recognition
models (ArcFace, Deng et al. 2019; InsightFace's ``arcface_dst`` in
``python-package/insightface/utils/face_align.py``, MIT licence; it is the
SphereFace/CosFace 96x112 template moved 8 px right). Its points, in
*image* order (the subject's right eye is on the image left):

  0 image-left eye centre   (38.2946, 51.6963)
  1 image-right eye centre  (73.5318, 51.5014)
  2 nose tip                (56.0252, 71.7366)
  3 image-left mouth corner (41.5493, 92.3655)
  4 image-right mouth corner(70.7299, 92.2041)

**Pixel convention.** Those numbers are used with OpenCV's
``cv2.warpAffine(img, M, (112, 112))``, which samples output pixel
``[row y, column x]`` at ``M^-1 (x, y)``: integer coordinates are pixel
*centres* (pixel indices), the convention of this project (0-based,
pixel-centre, docs/DESIGN.md). So the numbers are used unchanged: a chip of
this module and an InsightFace ``norm_crop`` of the same five points are the
same warp. For another ``size`` the template is resized as DESIGN.md resizes
any image, ``t -> (t + 0.5) * size / 112 - 0.5`` (a ``size`` chip is the
112 chip resampled; InsightFace's ``t * size / 112`` differs from it by
``(size / 112 - 1) / 2`` px, 0.5 px at 224).

**Five points from the iBUG 68** (0-based; "left" = image left, as the
annotation is ordered): eye centres = mean of 36-41 (image left) and 42-47
(image right), nose tip 30, mouth corners 48 (image left) and 54 (image
right).

**Transform**: the least-squares similarity (rotation, uniform scale,
translation; no reflection) from the five points to the template, by
Umeyama's closed form (Umeyama 1991, IEEE TPAMI 13(4)).

**Warp**: bilinear (PIL ``Image.transform`` with the inverse map, in PIL's
edge coordinates ``x + 1/2``), black outside the photo. When the chip is
smaller than the face by a factor ``k >= 2`` the photo is first box-reduced
by the integer ``k`` (as ``crop.crop_image`` does) so that big photos do not
alias.
"""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np
from PIL import Image

from sgfan_jax import crop
from sgfan_jax import layouts

# ArcFace / InsightFace 112x112 template (see the module docstring), 0-based
# pixel-centre (x, y) of: image-left eye, image-right eye, nose tip,
# image-left mouth corner, image-right mouth corner.
ARCFACE_TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014],
                                 [56.0252, 71.7366], [41.5493, 92.3655],
                                 [70.7299, 92.2041]], np.float64)
TEMPLATE_SIZE = 112
DEFAULT_SIZE = 112
# iBUG-68 indices (0-based) averaged into each template point, in template
# order.
IBUG68_FIVE_POINTS: Tuple[Tuple[int, ...], ...] = (
    tuple(range(36, 42)), tuple(range(42, 48)), (30,), (48,), (54,))


class ChipError(ValueError):
  """A chip asked of bad points or a bad size."""


def template(size: int = DEFAULT_SIZE) -> np.ndarray:
  """The five template points for a ``size x size`` chip: float64 ``[5, 2]``
  (0-based pixel-centre ``(x, y)``)."""
  size = _check_size(size)
  return (ARCFACE_TEMPLATE_112 + 0.5) * (size / TEMPLATE_SIZE) - 0.5


def five_points(points: np.ndarray) -> np.ndarray:
  """``[68, 2]`` iBUG points -> float64 ``[5, 2]`` in template order."""
  p = np.asarray(points, np.float64)
  if p.shape != (layouts.IBUG_68.num_points, 2):
    raise ChipError(f"face chips need the 68 iBUG points [68, 2], got shape "
                    f"{p.shape}")
  if not np.isfinite(p).all():
    raise ChipError("face chip points must be finite")
  return np.stack([p[list(idx)].mean(0) for idx in IBUG68_FIVE_POINTS])


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
  """Least-squares similarity ``dst ~ s R src + t`` (Umeyama 1991).

  Args:
    src, dst: ``[K, 2]`` corresponding points (K >= 2, ``src`` not all
      equal).

  Returns:
    float64 ``[2, 3]`` ``[[a, -b, tx], [b, a, ty]]`` (``a = s cos``,
    ``b = s sin``; a rotation, never a reflection), minimising
    ``sum_k |A src_k - dst_k|^2``.
  """
  src = np.asarray(src, np.float64)
  dst = np.asarray(dst, np.float64)
  if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or (
      len(src) < 2):
    raise ChipError(f"similarity_transform needs two [K, 2] arrays (K >= 2), "
                    f"got {src.shape} and {dst.shape}")
  mu_s, mu_d = src.mean(0), dst.mean(0)
  xs, xd = src - mu_s, dst - mu_d
  var_s = (xs**2).sum() / len(src)
  if var_s <= 0:
    raise ChipError("similarity_transform: the source points coincide")
  cov = xd.T @ xs / len(src)                  # Sigma_xy of Umeyama (Eq. 38)
  u, d, vt = np.linalg.svd(cov)
  sign = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
  rot = u @ sign @ vt
  scale = np.trace(np.diag(d) @ sign) / var_s
  t = mu_d - scale * rot @ mu_s
  return np.concatenate([scale * rot, t[:, None]], 1)


def chip_transform(points: np.ndarray, size: int = DEFAULT_SIZE) -> np.ndarray:
  """``[68, 2]`` iBUG image points -> float64 ``[2, 3]`` image -> chip map."""
  return similarity_transform(five_points(points), template(size))


def warp_affine(image, matrix: np.ndarray, size: int) -> np.ndarray:
  """Bilinear warp of ``image`` by ``matrix`` (output = ``matrix`` applied
  to the input, both 0-based pixel-centre) into uint8 ``[size, size, 3]``.

  Args:
    image: a path, PIL image or ``[H, W(, 3)]`` array (``crop.load_photo``).
    matrix: ``[2, 3]`` image -> chip affine map (invertible).
    size: output side.
  """
  size = _check_size(size)
  im = crop.load_photo(image)
  m = np.concatenate([np.asarray(matrix, np.float64), [[0.0, 0.0, 1.0]]])
  inv = np.linalg.inv(m)                      # chip centre -> image centre
  # Integer pre-reduction when the chip is >= 2x smaller than the photo.
  scale = math.sqrt(abs(np.linalg.det(m[:2, :2])))
  k = max(1, int(1.0 / scale)) if scale > 0 else 1
  k = min(k, max(1, min(im.size)))
  if k > 1:
    im = im.reduce(k)
  # PIL works in edge coordinates (centre + 1/2): chip edge q_e ->
  # image edge p_e = inv (q_e - 1/2) + 1/2, then / k after the reduction.
  shift = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1.0]])
  unshift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1.0]])
  edge = np.diag([1.0 / k, 1.0 / k, 1.0]) @ unshift @ inv @ shift
  out = im.transform((size, size), Image.Transform.AFFINE,
                     tuple(edge[:2].reshape(-1)),
                     resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
  return np.asarray(out, np.uint8)


def face_chip(image, points: np.ndarray, size: int = DEFAULT_SIZE
              ) -> np.ndarray:
  """The aligned chip of one face: uint8 RGB ``[size, size, 3]``.

  Args:
    image: the photo the points are in (path, PIL image or array; read as
      the Landmarker reads it, EXIF-upright).
    points: ``[68, 2]`` iBUG points, 0-based ``(x, y)`` image pixels.
    size: chip side (112 = the recognition template's own size).
  """
  return warp_affine(image, chip_transform(points, size), size)


def template_residual(points: np.ndarray, size: int = DEFAULT_SIZE
                      ) -> np.ndarray:
  """``[5]`` distances (chip pixels) between the mapped five points and the
  template: how far the face's shape is from the template's."""
  m = chip_transform(points, size)
  five = five_points(points)
  mapped = five @ m[:, :2].T + m[:, 2]
  return np.linalg.norm(mapped - template(size), axis=1)


def _check_size(size) -> int:
  if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or (
      size < 1):
    raise ChipError(f"chip size must be a positive integer, got {size!r}")
  return int(size)

