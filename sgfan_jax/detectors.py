"""Face detectors behind one small interface.

A detector is any object with ``detect(image) -> (boxes, scores)``:

* ``image``: uint8 ``[H, W, 3]`` RGB numpy array;
* ``boxes``: float32 ``[K, 4]`` ``[x0, y0, x1, y1]`` in the image's 0-based
  pixel-centre coordinates (docs/DESIGN.md: the centre of ``image[i, j]`` is
  ``(x=j, y=i)``, so pixel ``j`` covers ``[j - 1/2, j + 1/2]``);
* ``scores``: float32 ``[K]``, boxes sorted by score, highest first.

Detector boxes are in the *detector's own* convention (for dlib's HOG
detector a roughly square box from the brows to the chin); the model's face
box is the tight landmark box. ``sgfan_jax.box_map`` converts between the two.

Implementations:

* ``DlibHOGDetector``: ``dlib.get_frontal_face_detector()``.
  dlib returns ``dlib.rectangle(left, top, right, bottom)`` with *inclusive*
  integer pixel indices (the box covers pixels ``left..right``). Here that is
  the float box of the covered pixel area, i.e. of the pixels' edges::

      x0 = left - 0.5,  y0 = top - 0.5,  x1 = right + 0.5,  y1 = bottom + 0.5

  (``dlib_rect_to_box``; ``box_to_dlib_rect`` is its rounding inverse). This
  convention scales exactly under resizing: a box found on a copy resized by
  ``s`` maps back with ``x -> (x + 0.5) / s - 0.5`` (DESIGN.md's resize rule).
* ``WholeImageDetector``: one box covering the whole image, score 1
  (detector name ``'none'``: for images that are already face crops).
* ``BlazeFaceDetector``: MediaPipe's BlazeFace ported to Flax
  (``sgfan_jax/blazeface.py``; jitted, any JAX backend, no dlib): names
  ``'blazeface'`` (full-range model, photo letterboxed into 192x192) and
  ``'blazeface_short'`` (short-range model, 128x128). Boxes are the model's
  square-ish face boxes (brows to chin, cheek to cheek) in the convention
  above; ``detect_with_keypoints`` also gives its six keypoints
  (``blazeface.KEYPOINT_NAMES``). ``pad_pass=True`` also runs the photo
  padded to twice its size (so a face filling the frame looks half as
  big; the full-range model under-scores faces that fill its input) in the
  same batch and merges the two passes by NMS.

``get_detector(name)`` builds one by name: ``'blazeface'`` (default),
``'dlib_hog'``, ``'blazeface_short'`` or ``'none'``;
``detector_from_config(name, config.predict)`` with the config's options.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from PIL import Image

DETECTOR_NAMES = ("dlib_hog", "blazeface", "blazeface_short", "none")
# Detector name -> BlazeFace model (sgfan_jax/blazeface.py).
BLAZEFACE_MODELS = {"blazeface": "full_range",
                    "blazeface_short": "short_range"}
DEFAULT_DETECTOR = "blazeface"
SHORT_PASS_MODES = ("always", "fallback", "off")

_DLIB_MISSING = ("the dlib face detector needs the 'dlib' package, which is "
                 "not installed; install the prebuilt wheel with "
                 "`pip install dlib-bin` (or build `pip install dlib`), or use "
                 "detector='none' / pass face boxes explicitly")


def import_dlib():
  """Imports dlib or raises an ImportError that says how to install it."""
  try:
    import dlib  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(_DLIB_MISSING) from e
  return dlib


def check_image(image, name: str = "image") -> np.ndarray:
  """Validates a uint8 ``[H, W, 3]`` RGB array (returns it C-contiguous)."""
  if not isinstance(image, np.ndarray):
    raise TypeError(f"{name}: expected a uint8 [H, W, 3] numpy array, got "
                    f"{type(image).__name__}")
  if image.ndim != 3 or image.shape[2] != 3:
    raise ValueError(f"{name}: expected shape [H, W, 3] (RGB), got "
                     f"{image.shape}")
  if image.dtype != np.uint8:
    raise ValueError(f"{name}: expected dtype uint8, got {image.dtype}")
  if image.shape[0] < 1 or image.shape[1] < 1:
    raise ValueError(f"{name}: empty image of shape {image.shape}")
  return np.ascontiguousarray(image)


def dlib_rect_to_box(left: int, top: int, right: int, bottom: int
                     ) -> np.ndarray:
  """dlib's inclusive integer rectangle -> float ``[x0, y0, x1, y1]`` (edges)."""
  return np.array([left - 0.5, top - 0.5, right + 0.5, bottom + 0.5],
                  np.float32)


def box_to_dlib_rect(box) -> Tuple[int, int, int, int]:
  """Float ``[x0, y0, x1, y1]`` (edges) -> nearest inclusive integer
  ``(left, top, right, bottom)``; the inverse of ``dlib_rect_to_box``."""
  x0, y0, x1, y1 = [float(v) for v in box]
  if not all(np.isfinite([x0, y0, x1, y1])):
    raise ValueError(f"box {list(box)} has non-finite values")
  left, top = int(round(x0 + 0.5)), int(round(y0 + 0.5))
  right, bottom = int(round(x1 - 0.5)), int(round(y1 - 0.5))
  return left, top, max(right, left), max(bottom, top)


def whole_image_box(height: int, width: int) -> np.ndarray:
  """float32 ``[4]`` box of the whole image's pixel area."""
  return np.array([-0.5, -0.5, width - 0.5, height - 0.5], np.float32)


class WholeImageDetector:
  """One box = the whole image (its pixel area), score 1."""

  name = "none"

  def detect(self, image) -> Tuple[np.ndarray, np.ndarray]:
    image = check_image(image)
    h, w = image.shape[:2]
    return whole_image_box(h, w)[None], np.ones([1], np.float32)

  def __repr__(self):
    return "WholeImageDetector()"


class DlibHOGDetector:
  """dlib's HOG + linear-SVM frontal face detector.

  Args:
    upsample: times dlib upsamples the image before detecting (each doubles
      the side; 1 finds faces down to ~40 px, 0 down to ~80 px).
    max_side: images whose longer side exceeds this are detected on a copy
      downscaled to this longer side (antialiased), and the boxes are scaled
      back to full resolution; ``None`` = always full resolution. Bounds the
      cost on multi-megapixel photos (300-W originals reach 4288 px).
    adjust_threshold: dlib's score threshold offset; detections with score
      above it are returned (dlib's own operating point is 0; negative values
      return weaker detections too, with their scores).
  """

  name = "dlib_hog"

  def __init__(self, upsample: int = 1, max_side: Optional[int] = 1024,
               adjust_threshold: float = -0.5):
    if int(upsample) != upsample or upsample < 0:
      raise ValueError(f"upsample must be an integer >= 0, got {upsample}")
    if max_side is not None and (int(max_side) != max_side or max_side < 16):
      raise ValueError(f"max_side must be an integer >= 16 or None, got "
                       f"{max_side}")
    self.upsample = int(upsample)
    self.max_side = None if max_side is None else int(max_side)
    self.adjust_threshold = float(adjust_threshold)
    self._dlib = import_dlib()
    self._detector = self._dlib.get_frontal_face_detector()

  def __repr__(self):
    return (f"DlibHOGDetector(upsample={self.upsample}, max_side="
            f"{self.max_side}, adjust_threshold={self.adjust_threshold})")

  def detect(self, image) -> Tuple[np.ndarray, np.ndarray]:
    image = check_image(image)
    h, w = image.shape[:2]
    scale_x = scale_y = 1.0
    work = image
    if self.max_side is not None and max(h, w) > self.max_side:
      f = self.max_side / max(h, w)
      sw, sh = max(1, int(round(w * f))), max(1, int(round(h * f)))
      work = np.asarray(Image.fromarray(image).resize(
          (sw, sh), Image.BILINEAR, reducing_gap=None))
      work = np.ascontiguousarray(work)
      scale_x, scale_y = w / sw, h / sh
    rects, scores, _ = self._detector.run(work, self.upsample,
                                          self.adjust_threshold)
    if not rects:
      return np.zeros([0, 4], np.float32), np.zeros([0], np.float32)
    boxes = np.stack([dlib_rect_to_box(r.left(), r.top(), r.right(),
                                       r.bottom()) for r in rects])
    boxes = boxes.astype(np.float64)
    # Edges scale with the image: x -> (x + 0.5) * s - 0.5.
    boxes[:, [0, 2]] = (boxes[:, [0, 2]] + 0.5) * scale_x - 0.5
    boxes[:, [1, 3]] = (boxes[:, [1, 3]] + 0.5) * scale_y - 0.5
    scores = np.asarray(scores, np.float64)
    order = np.argsort(-scores, kind="stable")
    return boxes[order].astype(np.float32), scores[order].astype(np.float32)


class BlazeFaceDetector:
  """MediaPipe's BlazeFace face detector (Flax port, ``blazeface.py``).

  Args:
    model: 'full_range' (detector name 'blazeface') or 'short_range'
      ('blazeface_short').
    pad_pass: also detect on the image padded to twice its size (one batch
      of two letterboxed inputs) and merge both passes by greedy NMS (the
      higher score wins an overlap above ``iou_threshold``).
    min_score: keep detections scoring at least this (sigmoid score).
    pad_min_score: the padded pass's own threshold (None = ``min_score``);
      a higher one trades recall on close-up faces for fewer false faces
      (half-size round objects, e.g. coins, score up to ~0.6 there).
    iou_threshold: MediaPipe's weighted-NMS threshold, also used to merge
      the passes.
    max_detections: faces kept per pass.
    short_pass: also run the short-range model (128 px letterbox of the
      whole image) and merge it in like the padded pass: True / 'always',
      'fallback' (only when the full-range passes found no face: the
      short-range pass costs about as much as the full-range one), or
      False / 'off'. The full-range
      model under-scores faces that fill the frame, most of all occluded
      ones; the short-range model is made for them (occluded copy of the
      300-W common set: 98.0 % found alone vs 72.0 %, benchmarks/
      detectors.py).
    short_min_score: the short-range pass's threshold (None = min_score).
    tile_grid: also run the full-range model on a ``tile_grid x tile_grid``
      grid of overlapping tiles (each ``tile_overlap`` larger than its cell)
      of photos whose longer side is at least ``tile_min_side`` px, merged
      by NMS: small faces in large photos shrink below what a 192 px
      letterbox can see (0 or 1 = off).
  """

  def __init__(self, model: str = "full_range", pad_pass: bool = False,
               min_score: float = 0.5, iou_threshold: float = 0.3,
               max_detections: int = 64,
               pad_min_score: Optional[float] = None,
               short_pass: bool = False,
               short_min_score: Optional[float] = None,
               tile_grid: int = 0, tile_overlap: float = 0.25,
               tile_min_side: int = 640):
    from sgfan_jax import blazeface  # pylint: disable=g-import-not-at-top
    self._bf = blazeface
    self.model = blazeface.shared(model, min_score=min_score,
                                  iou_threshold=iou_threshold,
                                  max_detections=max_detections)
    self.name = {v: k for k, v in BLAZEFACE_MODELS.items()}[model]
    self.pad_pass = bool(pad_pass)
    self.pad_min_score = float(min_score if pad_min_score is None
                               else pad_min_score)
    self.keypoint_names = blazeface.KEYPOINT_NAMES
    if short_pass is True:
      short_pass = "always"
    elif short_pass in (False, None):
      short_pass = "off"
    if short_pass not in SHORT_PASS_MODES:
      raise ValueError(f"short_pass must be one of {SHORT_PASS_MODES}, got "
                       f"{short_pass!r}")
    self.short_mode = "off" if model == "short_range" else short_pass
    self.short_pass = self.short_mode != "off"
    self.short_min_score = float(min_score if short_min_score is None
                                 else short_min_score)
    self.short_model = (blazeface.shared(
        "short_range", min_score=self.short_min_score,
        iou_threshold=iou_threshold, max_detections=max_detections)
                        if self.short_pass else None)
    self.tile_grid = int(tile_grid)
    self.tile_overlap = float(tile_overlap)
    self.tile_min_side = int(tile_min_side)

  def __repr__(self):
    return (f"BlazeFaceDetector({self.model.model!r}, pad_pass="
            f"{self.pad_pass}, min_score={self.model.min_score}, "
            f"pad_min_score={self.pad_min_score}, short_pass="
            f"{self.short_mode!r}, short_min_score={self.short_min_score}, "
            f"tile_grid={self.tile_grid}, "
            f"iou_threshold={self.model.iou_threshold}, max_detections="
            f"{self.model.max_detections})")

  def detect_with_keypoints(self, image
                            ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(boxes [K, 4], scores [K], keypoints [K, 6, 2])`` float32, image
    pixel-centre coordinates, best first; keypoints in
    ``blazeface.KEYPOINT_NAMES`` order (the subject's right eye first)."""
    image = check_image(image)
    zooms = (1.0, 0.5) if self.pad_pass else (1.0,)
    passes = self.model.detect(image, zooms)
    if self.pad_pass:
      keep = passes[1][1] >= self.pad_min_score
      passes[1] = tuple(a[keep] for a in passes[1])
    if self.short_mode == "always" or (
        self.short_mode == "fallback" and not any(len(p[1]) for p in passes)):
      passes += self.short_model.detect(image, (1.0,))
    if self.tile_grid > 1 and max(image.shape[:2]) >= self.tile_min_side:
      passes += self._tile_passes(image)
    boxes = np.concatenate([p[0] for p in passes])
    scores = np.concatenate([p[1] for p in passes])
    kps = np.concatenate([p[2] for p in passes])
    if len(passes) > 1:
      keep = self._bf.hard_nms(boxes, scores, self.model.iou_threshold)
    else:
      keep = np.argsort(-scores, kind="stable")
    return (boxes[keep].astype(np.float32).reshape(-1, 4),
            scores[keep].astype(np.float32),
            kps[keep].astype(np.float32).reshape(-1, 6, 2))

  def _tile_passes(self, image):
    """Full-range detections on overlapping tiles, in image coordinates."""
    h, w = image.shape[:2]
    n = self.tile_grid
    out = []
    for ty0, ty1 in tile_ranges(h, n, self.tile_overlap):
      for tx0, tx1 in tile_ranges(w, n, self.tile_overlap):
        boxes, scores, kps = self.model.detect(
            np.ascontiguousarray(image[ty0:ty1, tx0:tx1]), (1.0,))[0]
        # Pixel (x, y) of the tile is pixel (x + tx0, y + ty0) of the image.
        out.append((boxes + np.array([tx0, ty0, tx0, ty0], np.float32),
                    scores, kps + np.array([tx0, ty0], np.float32)))
    return out

  def detect(self, image) -> Tuple[np.ndarray, np.ndarray]:
    boxes, scores, _ = self.detect_with_keypoints(image)
    return boxes, scores


def tile_ranges(length: int, n: int, overlap: float):
  """``n`` integer ranges ``[a, b)`` covering ``[0, length)``: cells of
  ``length / n`` grown by ``overlap`` of a cell (half on each side)."""
  cell = length / n
  grow = overlap * cell / 2
  return [(max(0, int(np.floor(i * cell - grow))),
           min(length, int(np.ceil((i + 1) * cell + grow))))
          for i in range(n)]


def detector_from_config(name: Optional[str], predict_config):
  """A detector by name with the options of ``config.predict``
  (``detector_upsample``, ``detector_max_side``, ``min_box_score`` for
  dlib; ``blazeface_*`` for BlazeFace)."""
  pc = predict_config
  if name is None:
    name = pc.detector
  if name == "dlib_hog":
    return get_detector(name, upsample=pc.detector_upsample,
                        max_side=pc.detector_max_side,
                        adjust_threshold=pc.min_box_score)
  if name in BLAZEFACE_MODELS:
    return get_detector(name, pad_pass=bool(pc.blazeface_pad_pass),
                        min_score=float(pc.blazeface_min_score),
                        iou_threshold=float(pc.blazeface_iou_threshold),
                        max_detections=int(pc.blazeface_max_detections),
                        pad_min_score=float(pc.blazeface_pad_min_score),
                        short_pass=pc.blazeface_short_pass,
                        short_min_score=float(pc.blazeface_short_min_score),
                        tile_grid=int(pc.blazeface_tile_grid))
  return get_detector(name)


def get_detector(name: Optional[str] = DEFAULT_DETECTOR, **kwargs):
  """Builds a detector by name: 'blazeface' (default), 'dlib_hog',
  'blazeface_short' or 'none'.

  ``kwargs`` go to the detector's constructor (``DlibHOGDetector``'s
  ``upsample``, ``max_side``, ``adjust_threshold``; ``BlazeFaceDetector``'s
  ``pad_pass``, ``min_score``, ``pad_min_score``, ``iou_threshold``,
  ``max_detections``, ``short_pass``, ``short_min_score``, ``tile_grid``),
  whose defaults are the class's (no short-range pass, no tiles); the
  shipped photo path's settings are the config's: ``detector_from_config``.
  """
  if name is None:
    name = DEFAULT_DETECTOR
  if name == "dlib_hog":
    return DlibHOGDetector(**kwargs)
  if name in BLAZEFACE_MODELS:
    return BlazeFaceDetector(BLAZEFACE_MODELS[name], **kwargs)
  if name == "none":
    if kwargs:
      raise TypeError(f"detector 'none' takes no options, got {sorted(kwargs)}")
    return WholeImageDetector()
  raise ValueError(f"unknown face detector {name!r}; valid names: "
                   f"{', '.join(repr(n) for n in DETECTOR_NAMES)}")
