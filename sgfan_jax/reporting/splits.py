"""One evaluated split: its per-face arrays and its name.

Split names are ``builder:split`` strings (config ``data.eval_splits``);
:func:`split_kind` recognises the 300-W test subsets (``face300w:test_common``
/ ``test_challenging`` / ``test_full`` / ``test_private``) and COFW
(builder name starting with ``cofw``). :func:`safe_name` is the split name
in file names: every character outside ``[A-Za-z0-9_.-]`` replaced by ``_``
(``face300w:test_common`` -> ``face300w_test_common``).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional, Sequence, Tuple

import numpy as np

METHODS = ("baseline", "refined")
METHOD_LABELS = {"baseline": "Baseline (heatmap decoding)",
                 "refined": "Refined (score-guided)"}


@dataclasses.dataclass
class SplitResult:
  """Per-face evaluation arrays of one split (M faces, N landmarks).

  All landmark arrays must be in the same coordinate frame (e.g. original
  image pixels, 0-based).

  Attributes:
    gt: [M, N, 2] ground-truth landmarks.
    baseline: [M, N, 2] predictions of heatmap decoding alone.
    refined: [M, N, 2] predictions after score-guided refinement.
    weights: [M, N] Eq. 1 landmark weights.
    file_names: [M] source file names.
    visible: optional [M, N] bool (False = annotated occluded).
    boxes: optional [M, 4] face boxes (x0, y0, x1, y1) for 'bbox' NME; None
      uses the ground-truth landmark box.
    images: optional sequence of K uint8 [H, W, 3] images to draw.
    image_indices: optional [K] face index of each image (default 0..K-1).
    image_transforms: optional [K, 2, 3] affine maps from landmark
      coordinates to the image's pixel coordinates (default identity), e.g.
      the inverse of ``crop_to_image`` when the images are the stored crops.
  """
  gt: np.ndarray
  baseline: np.ndarray
  refined: np.ndarray
  weights: np.ndarray
  file_names: Sequence[str]
  visible: Optional[np.ndarray] = None
  boxes: Optional[np.ndarray] = None
  images: Optional[Sequence[np.ndarray]] = None
  image_indices: Optional[Sequence[int]] = None
  image_transforms: Optional[np.ndarray] = None

  def __post_init__(self):
    self.gt = np.asarray(self.gt, dtype=np.float64)
    if self.gt.ndim != 3 or self.gt.shape[-1] != 2:
      raise ValueError(f"gt must have shape [M, N, 2], got {self.gt.shape}")
    m, n = self.gt.shape[:2]
    for name in ("baseline", "refined"):
      arr = np.asarray(getattr(self, name), dtype=np.float64)
      if arr.shape != self.gt.shape:
        raise ValueError(f"{name} must have shape {self.gt.shape} like gt, "
                         f"got {arr.shape}")
      if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
      setattr(self, name, arr)
    if not np.all(np.isfinite(self.gt)):
      raise ValueError("gt contains NaN or inf")
    self.weights = np.asarray(self.weights, dtype=np.float64)
    if self.weights.shape != (m, n):
      raise ValueError(f"weights must have shape {(m, n)}, got "
                       f"{self.weights.shape}")
    if not np.all(np.isfinite(self.weights)):
      raise ValueError("weights contain NaN or inf")
    self.file_names = [str(f) for f in self.file_names]
    if len(self.file_names) != m:
      raise ValueError(f"{len(self.file_names)} file names for {m} faces")
    if self.visible is not None:
      vis = np.asarray(self.visible)
      if vis.shape != (m, n):
        raise ValueError(f"visible must have shape {(m, n)}, got {vis.shape}")
      self.visible = vis.astype(bool)
    if self.boxes is not None:
      self.boxes = np.asarray(self.boxes, dtype=np.float64)
      if self.boxes.shape != (m, 4):
        raise ValueError(f"boxes must have shape {(m, 4)}, got "
                         f"{self.boxes.shape}")
    if self.images is not None:
      k = len(self.images)
      for img in self.images:
        if np.ndim(img) != 3 or np.shape(img)[-1] != 3:
          raise ValueError(f"images must be [H, W, 3], got {np.shape(img)}")
      if self.image_indices is None:
        self.image_indices = list(range(k))
      self.image_indices = [int(i) for i in self.image_indices]
      if len(self.image_indices) != k or any(
          not 0 <= i < m for i in self.image_indices):
        raise ValueError("image_indices must give one face index in [0, M) "
                         "per image")
      if self.image_transforms is not None:
        self.image_transforms = np.asarray(self.image_transforms, np.float64)
        if self.image_transforms.shape != (k, 2, 3):
          raise ValueError(f"image_transforms must have shape {(k, 2, 3)}, "
                           f"got {self.image_transforms.shape}")

  @property
  def num_images(self) -> int:
    return int(self.gt.shape[0])

  @property
  def has_occlusion(self) -> bool:
    """True when visibility flags mark at least one point occluded."""
    return self.visible is not None and bool((~self.visible).any())

  def predictions(self, method: str) -> np.ndarray:
    if method not in METHODS:
      raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return getattr(self, method)


def split_kind(name: str) -> Tuple[str, Optional[str]]:
  """Classifies a 'builder:split' name.

  Returns:
    ('300w', 'common' | 'challenging' | 'full' | 'private' | None),
    ('cofw', None) or ('other', None).
  """
  builder, _, split = name.partition(":")
  builder = builder.lower()
  split = split.lower() or builder
  if "300w" in builder:
    for key in ("common", "challeng", "full", "private"):
      if key in split:
        return "300w", "challenging" if key == "challeng" else key
    return "300w", None
  if builder.startswith("cofw"):
    return "cofw", None
  return "other", None


def safe_name(name: str) -> str:
  """File-name-safe version of a split name."""
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "split"


def primary_normalization(name: str) -> str:
  """Normalisation of a split's CED plot: 300-W inter-pupil, else ocular."""
  return "inter_pupil" if split_kind(name)[0] == "300w" else "inter_ocular"
