"""Map between a face detector's box convention and the model's face box.

The model's face box is the tight landmark box (docs/DESIGN.md); a detector
returns its own kind of box (dlib's HOG box is roughly square, from the brows
to the chin, narrower than the jaw). ``BoxMap`` relates the two with four
numbers, for a detector box of centre ``(cx, cy)`` and size ``(w, h)``::

  landmark box centre = (cx + dx * w, cy + dy * h)
  landmark box size   = (sw * w,      sh * h)

``apply`` goes detector -> landmark box, ``inverse`` landmark -> detector box
(e.g. to give dlib's 68-point predictor the box it was trained with). Both
are exact inverses of each other. ``fit`` estimates the numbers robustly
(per-coordinate medians) from matched ``(detector box, landmark box)`` pairs;
``match_detections`` pairs detections with ground-truth faces by IoU.

Boxes are ``[..., 4]`` ``[x0, y0, x1, y1]`` float arrays (0-based pixel-centre
image coordinates). The fitted map of the bundled dlib HOG detector ships as
``sgfan_jax/data/dlib_hog_box_map.json`` (``load_default``), written by
``scripts/fit_box_map.py``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, Dict, Optional, Tuple

import numpy as np

DATA_DIR = pathlib.Path(__file__).resolve().parent / "data"
DEFAULT_MAPS = {"dlib_hog": DATA_DIR / "dlib_hog_box_map.json",
                "blazeface": DATA_DIR / "blazeface_box_map.json"}
PARAMS = ("dx", "dy", "sw", "sh")


def _as_boxes(boxes, name: str = "boxes") -> np.ndarray:
  b = np.asarray(boxes, dtype=np.float64)
  if b.shape[-1:] != (4,):
    raise ValueError(f"{name} must have shape [..., 4] (x0, y0, x1, y1), got "
                     f"{b.shape}")
  if not np.all(np.isfinite(b)):
    raise ValueError(f"{name} contain NaN or inf")
  return b


def _centre_size(b: np.ndarray):
  return ((b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2,
          b[..., 2] - b[..., 0], b[..., 3] - b[..., 1])


def _from_centre_size(cx, cy, w, h) -> np.ndarray:
  return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def iou(a, b) -> np.ndarray:
  """Pairwise IoU of boxes ``a`` [A, 4] and ``b`` [B, 4] -> [A, B] (area
  convention: width = x1 - x0)."""
  a = _as_boxes(a, "a").reshape(-1, 4)
  b = _as_boxes(b, "b").reshape(-1, 4)
  ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2])
               - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
  iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3])
               - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
  inter = ix * iy
  area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1],
                                                         0, None)
  area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1],
                                                         0, None)
  union = area_a[:, None] + area_b[None, :] - inter
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(union > 0, inter / union, 0.0)


def match_detections(detections, faces, min_iou: float = 0.3,
                     box_map: Optional["BoxMap"] = None) -> np.ndarray:
  """Pairs detections with ground-truth faces, greedily by IoU.

  Pairs are taken in decreasing IoU order, each detection and face used at
  most once, and only with IoU >= ``min_iou``.

  Args:
    detections: [K, 4] detector boxes.
    faces: [F, 4] ground-truth face boxes (landmark boxes).
    min_iou: smallest IoU that counts as a match.
    box_map: when given, IoU is measured between ``box_map.apply(detection)``
      and the face (both in the landmark-box convention); otherwise between
      the raw boxes.

  Returns:
    int [F]: index of the matched detection per face, -1 where none.
  """
  det = _as_boxes(detections, "detections").reshape(-1, 4)
  gt = _as_boxes(faces, "faces").reshape(-1, 4)
  out = np.full(len(gt), -1, np.int64)
  if not len(det) or not len(gt):
    return out
  if box_map is not None:
    det = box_map.apply(det)
  m = iou(gt, det)
  used_det = np.zeros(len(det), bool)
  for flat in np.argsort(-m, axis=None, kind="stable"):
    f, d = divmod(int(flat), len(det))
    if m[f, d] < min_iou:
      break
    if out[f] >= 0 or used_det[d]:
      continue
    out[f], used_det[d] = d, True
  return out


@dataclasses.dataclass(frozen=True)
class BoxMap:
  """Detector box -> landmark box: centre offset and size ratios.

  Attributes:
    dx, dy: landmark-box centre minus detector-box centre, in units of the
      detector box's width / height.
    sw, sh: landmark-box width / height over detector-box width / height
      (> 0).
    meta: free-form provenance (fit statistics, command); not used to map.
  """
  dx: float = 0.0
  dy: float = 0.0
  sw: float = 1.0
  sh: float = 1.0
  meta: Dict[str, Any] = dataclasses.field(default_factory=dict,
                                           compare=False)

  def __post_init__(self):
    for k in PARAMS:
      v = getattr(self, k)
      if not np.isfinite(v):
        raise ValueError(f"BoxMap.{k} must be finite, got {v}")
    if not (self.sw > 0 and self.sh > 0):
      raise ValueError(f"BoxMap size ratios must be > 0, got sw={self.sw}, "
                       f"sh={self.sh}")

  @property
  def params(self) -> Tuple[float, float, float, float]:
    return (self.dx, self.dy, self.sw, self.sh)

  def apply(self, boxes) -> np.ndarray:
    """Detector boxes [..., 4] -> landmark-convention boxes [..., 4]."""
    cx, cy, w, h = _centre_size(_as_boxes(boxes))
    return _from_centre_size(cx + self.dx * w, cy + self.dy * h,
                             self.sw * w, self.sh * h)

  def inverse(self, boxes) -> np.ndarray:
    """Landmark-convention boxes [..., 4] -> detector-like boxes [..., 4]."""
    cx, cy, w, h = _centre_size(_as_boxes(boxes))
    wd, hd = w / self.sw, h / self.sh
    return _from_centre_size(cx - self.dx * wd, cy - self.dy * hd, wd, hd)

  @classmethod
  def fit(cls, detector_boxes, landmark_boxes,
          meta: Optional[Dict[str, Any]] = None) -> "BoxMap":
    """Robust fit from matched pairs: the median of each per-pair estimate.

    Args:
      detector_boxes: [M, 4] detector boxes.
      landmark_boxes: [M, 4] the matching landmark boxes.
      meta: stored in the result's ``meta``.
    """
    d = _as_boxes(detector_boxes, "detector_boxes").reshape(-1, 4)
    t = _as_boxes(landmark_boxes, "landmark_boxes").reshape(-1, 4)
    if d.shape != t.shape:
      raise ValueError(f"detector_boxes {d.shape} and landmark_boxes "
                       f"{t.shape} must pair up")
    if not len(d):
      raise ValueError("cannot fit a BoxMap from zero box pairs")
    cx, cy, w, h = _centre_size(d)
    tx, ty, tw, th = _centre_size(t)
    if np.any(w <= 0) or np.any(h <= 0):
      raise ValueError("detector boxes must have positive width and height")
    return cls(dx=float(np.median((tx - cx) / w)),
               dy=float(np.median((ty - cy) / h)),
               sw=float(np.median(tw / w)), sh=float(np.median(th / h)),
               meta=dict(meta or {}))

  # ------------------------------------------------------------------ JSON

  def to_dict(self) -> Dict[str, Any]:
    out = {k: float(getattr(self, k)) for k in PARAMS}
    out.update(self.meta)
    return out

  @classmethod
  def from_dict(cls, d: Dict[str, Any], source: str = "box map") -> "BoxMap":
    if not isinstance(d, dict):
      raise ValueError(f"{source}: expected a JSON object, got "
                       f"{type(d).__name__}")
    missing = [k for k in PARAMS if k not in d]
    if missing:
      raise ValueError(f"{source}: missing field(s) {missing} (a box map "
                       f"needs {list(PARAMS)})")
    vals = {}
    for k in PARAMS:
      try:
        vals[k] = float(d[k])
      except (TypeError, ValueError):
        raise ValueError(f"{source}: field {k!r} is not a number: "
                         f"{d[k]!r}") from None
    meta = {k: v for k, v in d.items() if k not in PARAMS}
    try:
      return cls(**vals, meta=meta)
    except ValueError as e:
      raise ValueError(f"{source}: {e}") from None

  def to_json(self, path) -> None:
    with open(path, "w", encoding="utf-8") as f:
      json.dump(self.to_dict(), f, indent=2, sort_keys=True)
      f.write("\n")

  @classmethod
  def from_json(cls, path) -> "BoxMap":
    path = os.fspath(path)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"box map file not found: {path}")
    try:
      with open(path, "r", encoding="utf-8") as f:
        d = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: not valid JSON ({e})") from None
    return cls.from_dict(d, source=path)


def load_default(detector: str = "dlib_hog") -> BoxMap:
  """The bundled map of a detector ('dlib_hog'; 'none' = identity)."""
  if detector == "none":
    return BoxMap()
  if detector not in DEFAULT_MAPS:
    raise ValueError(f"no bundled box map for detector {detector!r}; have "
                     f"{sorted(DEFAULT_MAPS) + ['none']}")
  return BoxMap.from_json(DEFAULT_MAPS[detector])
