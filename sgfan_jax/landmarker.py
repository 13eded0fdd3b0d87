"""Landmarks on anyone's photos: ``sgfan_jax.Landmarker``.

  lm = sgfan_jax.Landmarker.from_pretrained()          # shipped model, offline
  lm = sgfan_jax.Landmarker.from_checkpoint(workdir)    # any training workdir
  faces = lm.detect("photo.jpg")                        # bundled face detector
  faces = lm.detect(image, boxes=[[x0, y0, x1, y1]])    # your boxes (detector
                                                        # convention)
  faces = lm.detect(image, boxes=b, box_format="landmarks")  # tight boxes of
                                                        # the 68 points
  face.points, face.raw_points, face.confidence, face.occluded, face.box

Each face box is turned into the model's face box (the tight landmark box
it was trained with: ``box_map`` maps the detector's convention to it), cut
out as in the TFDS builders (``crop.crop_image``: a square of
``crop_context`` times the box side), and every face of every image goes
through one jitted :func:`inference.predict_crops` in chunks of at most
``predict.batch_size`` faces, each padded to the next of a few fixed sizes
(1, 2, 4, ..., ``batch_size``): one face costs one face, and face counts
cause at most that many compiles.
Coordinates are 0-based ``(x, y)`` pixels of the original (EXIF-upright)
image, pixel-centre convention (docs/DESIGN.md).
"""

from __future__ import annotations

import dataclasses
import os
from typing import (Any, Dict, Iterable, Iterator, List, Optional, Sequence,
                    Tuple, Union)

import jax
import numpy as np
from PIL import Image

from sgfan_jax import box_map as box_map_lib
from sgfan_jax import chips as chips_lib
from sgfan_jax import crop
from sgfan_jax import detectors as detectors_lib
from sgfan_jax import inference
from sgfan_jax import ksvd
from sgfan_jax import layouts
from sgfan_jax import pose as pose_lib

PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              "pretrained")
DEFAULT_MODEL = "sgfan_lite_300w"
BOX_FORMATS = ("detector", "landmarks")

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]


@dataclasses.dataclass
class Face:
  """One face's landmarks (original-image pixels, 0-based ``(x, y)``).

  Attributes:
    points: float32 ``[N, 2]`` refined landmarks (Eq. 2; = raw_points for
      points the refinement keeps).
    raw_points: float32 ``[N, 2]`` heatmap decoding (Eq. 4).
    confidence: float32 ``[N]`` Eq. 1 confidence in [0, 1].
    occluded: bool ``[N]``: confidence below the model's flag threshold
      (``Landmarker.occluded_threshold``: ``predict.occluded_threshold``,
      chosen on validation faces so that few points of clean faces are
      flagged; ``flag_threshold``).
    box: float32 ``[4]`` the face box as found or given, ``[x0, y0, x1, y1]``
      in its own convention (``box_format``).
    box_score: detector score (None for boxes given by the caller).
    face_box: float32 ``[4]`` the box in the model's convention (the tight
      landmark box the crop is centred on).
    face_id: the face's id through a video (:meth:`Landmarker.track`;
      ``sgfan_jax/tracking.py``), None for photos.
    layout: the points' layout name (``layouts.py``); None = the layout of
      their count.
  """
  points: np.ndarray
  raw_points: np.ndarray
  confidence: np.ndarray
  occluded: np.ndarray
  box: np.ndarray
  box_score: Optional[float]
  face_box: np.ndarray
  face_id: Optional[int] = None
  layout: Optional[str] = None
  is_face: Optional[bool] = None

  @property
  def face_score(self) -> float:
    """How much the network believes this is a face (face verification,
    ``min_face_score``): ``face_score_of(confidence)``."""
    return float(face_score_of(self.confidence))

  @property
  def layout_name(self) -> str:
    return self.layout or layouts.get_layout(len(self.points)).name

  @property
  def pose(self) -> Tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees (``sgfan_jax/pose.py``: conventions,
    the 3-D face and the fit), from ``points`` weighted by ``confidence``
    (occluded points down-weighted). iBUG-68 layouts only
    (``pose.PoseError`` otherwise)."""
    return pose_lib.head_pose(self.points, self.confidence, self.occluded,
                              self.layout_name)

  def chip(self, image: ImageLike, size: int = chips_lib.DEFAULT_SIZE
           ) -> np.ndarray:
    """The face aligned onto the 112x112 five-point recognition template
    (scaled to ``size``; ``sgfan_jax/chips.py``), from the refined
    ``points``: uint8 RGB ``[size, size, 3]``. ``image``: the photo the face
    was found in (path, PIL image or array)."""
    if self.layout_name != layouts.IBUG_68.name:
      raise chips_lib.ChipError(f"face chips need the 68 iBUG points, this "
                                f"face has layout {self.layout_name!r}")
    return chips_lib.face_chip(image, self.points, size)

  def to_dict(self) -> Dict[str, Any]:
    """JSON-ready dict (lists, rounded; ``face_id`` only when set)."""
    out = {} if self.face_id is None else {"face_id": int(self.face_id)}
    return out | {
        "box": np.round(self.box, 2).tolist(),
        "box_score": (None if self.box_score is None
                      else round(float(self.box_score), 4)),
        "face_box": np.round(self.face_box, 2).tolist(),
        "points": np.round(self.points, 3).tolist(),
        "raw_points": np.round(self.raw_points, 3).tolist(),
        "confidence": np.round(self.confidence, 4).tolist(),
        "occluded": self.occluded.astype(bool).tolist(),
        "face_score": round(self.face_score, 4),
    } | ({} if self.is_face is None else {"is_face": bool(self.is_face)}
        ) | self._pose_dict()

  def _pose_dict(self) -> Dict[str, Optional[float]]:
    """``yaw``, ``pitch``, ``roll`` (degrees, 2 decimals; None for layouts
    without a 3-D face)."""
    if self.layout_name != layouts.IBUG_68.name:
      return {"yaw": None, "pitch": None, "roll": None}
    return dict(zip(("yaw", "pitch", "roll"),
                    (round(a, 2) for a in self.pose)))


@dataclasses.dataclass
class PreparedImage:
  """One image read and cropped, waiting for the network (``prepare``)."""
  image: Image.Image            # RGB, EXIF-upright
  boxes: np.ndarray             # [K, 4] boxes as found / given
  scores: List[Optional[float]]
  face_boxes: np.ndarray        # [K, 4] model-convention boxes
  crops: np.ndarray             # uint8 [K, S, S, 3]
  crop_to_image: np.ndarray     # [K, 2, 3]
  # Set by Landmarker.finish: detections dropped as not a face.
  rejected: int = 0


class Landmarker:
  """68 landmarks with per-point confidence for every face in an image.

  Args:
    bundle: the model (``inference.load_model`` / ``load_workdir``).
    detector: a detector name ('dlib_hog', 'none'), a detector object with
      ``detect(image) -> (boxes, scores)`` or None (= ``predict.detector``
      of the model's config).
    box_map: maps the detector's boxes (and ``box_format='detector'`` user
      boxes) to the model's box convention; None = the bundled map of the
      detector (of the default detector for detectors without one).
    batch_size: most faces per forward pass (None = ``predict.batch_size``);
      fewer faces run at the next power of two (``batch_sizes_up_to``).
    refine: apply the score-guided refinement (Eq. 2) when the model has a
      shape dictionary.
    precision: compute dtype of the forward pass: 'float32', 'bfloat16' or
      'auto' (the measured choice of the backend,
      ``inference.AUTO_PRECISION``); None = ``predict.precision`` of the
      model's config. The resolved dtype is ``self.precision``.
    occluded_threshold: ``face.occluded`` = confidence below this; None =
      ``predict.occluded_threshold`` of the model's config (chosen on
      validation faces, ``scripts/calibrate_flags.py``), else
      ``refine.weight_threshold``.
    min_face_score: face verification: a *detection* whose
      ``face.face_score`` (mean confidence) is below this is not a face and
      is dropped (counted in ``PreparedImage.rejected``); boxes given by
      the caller and detector 'none' (the image is the face) are never
      dropped. None = ``predict.min_face_score`` of the
      model's config (chosen on validation faces and background boxes,
      ``scripts/calibrate_face_score.py``); 0 = off.
    keep_all: keep rejected detections too, with ``face.is_face = False``.
    second_pass: re-crop every *detected* face on the tight box of its
      first-pass points (the training box convention) and run the network
      again, so the result no longer depends on how the detector's box sat
      on the face. None = ``predict.second_pass`` of the model's config.
  """

  def __init__(self, bundle: inference.ModelBundle, *,
               detector: Any = None,
               box_map: Optional[box_map_lib.BoxMap] = None,
               batch_size: Optional[int] = None, refine: bool = True,
               precision: Optional[str] = None,
               occluded_threshold: Optional[float] = None,
               min_face_score: Optional[float] = None,
               keep_all: bool = False,
               second_pass: Optional[bool] = None):
    self.bundle = bundle
    self.config = bundle.config
    pc = self.config.predict
    self.layout = layouts.get_layout(self.config.data.layout)
    self.precision = inference.resolve_precision(
        pc.get("precision") if precision is None else precision)
    self.model = inference.create_model(self.config, dtype=self.precision)
    inference.check_variables(self.model, bundle.variables,
                              self.config.model.input_size, bundle.source)
    self.variables = jax.device_put(bundle.variables)
    self.spec = inference.inference_spec(self.config, bundle.metadata)
    self.crop_size = int(bundle.metadata["crop_size"])
    self.crop_context = float(bundle.metadata["crop_context"])
    self.batch_size = int(batch_size or pc.batch_size)
    self.batch_sizes = batch_sizes_up_to(self.batch_size)
    self.dictionary = (ksvd.as_device(bundle.dictionary)
                       if refine and bundle.dictionary is not None else None)
    self.occluded_threshold = flag_threshold(self.config,
                                             occluded_threshold)
    if min_face_score is None:
      min_face_score = pc.get("min_face_score")
    self.min_face_score = float(min_face_score or 0.0)
    self.keep_all = bool(keep_all)
    self.second_pass = bool(pc.get("second_pass") if second_pass is None
                            else second_pass)
    self._predict = inference.make_predict_fn(self.model, self.spec)
    if detector is None:
      detector = pc.detector
    if isinstance(detector, str):
      name = detector
      detector = detectors_lib.detector_from_config(name, pc)
    self.detector = detector
    self.detector_name = getattr(detector, "name", type(detector).__name__)
    if box_map is None:
      # The detector's own map; detectors without one (e.g. 'none', whose
      # whole-image box is not mapped) read box_format='detector' user
      # boxes in the default detector's convention.
      box_map = box_map_lib.load_default(
          self.detector_name if self.detector_name in
          box_map_lib.DEFAULT_MAPS else detectors_lib.DEFAULT_DETECTOR)
    self.box_map = box_map

  # ----------------------------------------------------------- construction

  @classmethod
  def from_pretrained(cls, name_or_path: str = DEFAULT_MODEL,
                      **kwargs) -> "Landmarker":
    """The model shipped in ``sgfan_jax/pretrained/`` (offline), by name or
    a model folder's path."""
    path = name_or_path
    if not os.path.isdir(path):
      path = os.path.join(PRETRAINED_DIR, name_or_path)
    if not os.path.isdir(path):
      have = (sorted(os.listdir(PRETRAINED_DIR))
              if os.path.isdir(PRETRAINED_DIR) else [])
      raise inference.ModelFileError(
          f"no pretrained model {name_or_path!r} (shipped: "
          f"{', '.join(have) or 'none'}; or give a model folder path)")
    return cls(inference.load_model(path), **kwargs)

  @classmethod
  def from_checkpoint(cls, workdir: str, step: Optional[int] = None,
                      **kwargs) -> "Landmarker":
    """A training workdir: its best checkpoint (else latest, or ``step``)."""
    return cls(inference.load_workdir(workdir, step), **kwargs)

  # -------------------------------------------------------------- detection

  def face_boxes(self, image: np.ndarray, boxes=None,
                 box_format: str = "detector"):
    """The faces of one image: ``(boxes, scores, face_boxes)``.

    Args:
      image: uint8 ``[H, W, 3]``.
      boxes: ``[K, 4]`` boxes or None (run the detector).
      box_format: 'detector' (the detector's convention, mapped by
        ``box_map``) or 'landmarks' (tight boxes of the points).

    Returns:
      float32 ``[K, 4]`` boxes as given/found, their scores (None for given
      boxes), and float32 ``[K, 4]`` boxes in the model's convention.
    """
    if box_format not in BOX_FORMATS:
      raise ValueError(f"box_format must be one of {BOX_FORMATS}, got "
                       f"{box_format!r}")
    if boxes is not None:
      boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
      bad = ~((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) &
              np.isfinite(boxes).all(1))
      if bad.any():
        raise ValueError(f"face boxes must be [x0, y0, x1, y1] with x1 > x0 "
                         f"and y1 > y0, got {boxes[bad][0].tolist()}")
      scores = [None] * len(boxes)
      if box_format == "landmarks":
        return boxes, scores, boxes.copy()
      return boxes, scores, self.box_map.apply(boxes).astype(np.float32)
    found, found_scores = self.detector.detect(image)
    found = np.asarray(found, np.float32).reshape(-1, 4)
    scores = [float(s) for s in np.asarray(found_scores).reshape(-1)]
    if self.detector_name == "none":
      whole = self.whole_image_face_box(image)
      return found, scores, np.repeat(whole[None], len(found), 0)
    return found, scores, self.box_map.apply(found).astype(np.float32)

  def whole_image_face_box(self, image: np.ndarray) -> np.ndarray:
    """Model-convention face box for which the network sees the whole
    (centred, shorter-side) image: side ``min(H, W) / face_context``."""
    h, w = image.shape[:2]
    side = min(w, h) / float(self.config.data.face_context)
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    return np.asarray([cx - side / 2, cy - side / 2, cx + side / 2,
                       cy + side / 2], np.float32)

  def detect(self, image: ImageLike, boxes=None,
             box_format: str = "detector") -> List[Face]:
    """Landmarks of every face of one image (``[]`` when there is none).

    Args:
      image: a file path, a PIL image or an ``[H, W, 3]`` uint8 array.
      boxes: ``[[x0, y0, x1, y1], ...]`` face boxes, or None to detect.
      box_format: 'detector' or 'landmarks' (see :meth:`face_boxes`).
    """
    return self.detect_batch([image], None if boxes is None else [boxes],
                             box_format)[0]

  def track(self, frames: Iterable[Any], **kwargs) -> Iterator[List[Face]]:
    """Landmarks through a video: one ``Face`` list per frame, in order.

    Detects on the first frame, then crops each face from its previous
    points, detecting again every ``detect_every`` frames or when a face is
    lost; every face gets a ``face_id`` that stays with it; points are
    smoothed by the One Euro filter (``sgfan_jax/tracking.py``).

    Args:
      frames: any iterable of frames: uint8 ``[H, W, 3]`` arrays, PIL
        images, or ``video.Frame`` objects (their ``time`` drives the
        filter; otherwise frame ``i`` is at ``i / fps`` seconds).
      **kwargs: ``tracking.FaceTracker`` settings (``detect_every``,
        ``smooth``, ``min_confidence``, ``fps``, ...; default: the ``video``
        field of the model's config).

    Returns:
      a generator of ``List[Face]`` (sorted by ``face_id``).
    """
    from sgfan_jax import tracking  # pylint: disable=g-import-not-at-top
    return tracking.FaceTracker(self, **kwargs).track(frames)

  def detect_batch(self, images: Sequence[ImageLike],
                   boxes: Optional[Sequence[Any]] = None,
                   box_format: str = "detector") -> List[List[Face]]:
    """:meth:`detect` over many images; all faces share padded batches.

    ``boxes``: None, or one entry per image (None = detect in that image).
    """
    if boxes is not None and len(boxes) != len(images):
      raise ValueError(f"got {len(boxes)} box lists for {len(images)} images")
    prepared = [self.prepare(source, None if boxes is None else boxes[i],
                             box_format) for i, source in enumerate(images)]
    return self.finish(prepared)

  def prepare(self, source: ImageLike, boxes=None,
              box_format: str = "detector") -> PreparedImage:
    """Host half of :meth:`detect`: read, find the faces, cut the crops.

    Raises:
      crop.DataError: unreadable image (the message names the file).
      ValueError: bad boxes.
    """
    pil = crop.load_photo(source)
    array = np.asarray(pil)
    found, scores, face_boxes = self.face_boxes(array, boxes, box_format)
    crops = np.zeros((len(found), self.crop_size, self.crop_size, 3),
                     np.uint8)
    mats = np.zeros((len(found), 2, 3), np.float32)
    for k, fbox in enumerate(face_boxes):
      side, ex, ey = crop.crop_transform(fbox, self.crop_context)
      crops[k] = crop.crop_image(pil, side, ex, ey, self.crop_size)
      mats[k] = crop.crop_to_image_matrix(side, ex, ey, self.crop_size)
    return PreparedImage(pil, found, list(scores), face_boxes, crops, mats)

  def finish(self, prepared: Sequence[PreparedImage],
             keep_all: Optional[bool] = None) -> List[List[Face]]:
    """Device half: every face of ``prepared`` through the network.

    ``keep_all``: keep detections that fail face verification (marked
    ``is_face = False``); None = ``self.keep_all``. With True the result
    has one face per box of ``prepared``, in order.
    """
    keep_all = self.keep_all if keep_all is None else bool(keep_all)
    counts = [len(p.boxes) for p in prepared]
    if not sum(counts):
      return [[] for _ in prepared]
    preds = self.predict_crops(np.concatenate([p.crops for p in prepared]),
                               np.concatenate([p.crop_to_image
                                               for p in prepared]))
    if self.second_pass and self.detector_name != "none":
      self._second_pass(prepared, preds)
    results, k = [], 0
    for p in prepared:
      faces = []
      p.rejected = 0
      for box, score, fbox in zip(p.boxes, p.scores, p.face_boxes):
        conf = preds["confidence"][k]
        face = Face(
            points=preds["points"][k], raw_points=preds["raw_points"][k],
            confidence=conf, occluded=conf < self.occluded_threshold,
            box=np.asarray(box, np.float32), box_score=score,
            face_box=np.asarray(fbox, np.float32), layout=self.layout.name)
        k += 1
        if (score is not None and self.min_face_score > 0
            and self.detector_name != "none"):
          # A detection: verified by the network's own confidence.
          face.is_face = face.face_score >= self.min_face_score
          if not face.is_face:
            p.rejected += 1
            if not keep_all:
              continue
        faces.append(face)
      results.append(faces)
    return results

  def _second_pass(self, prepared: Sequence[PreparedImage],
                   preds: Dict[str, np.ndarray]) -> None:
    """Re-runs the detected faces (``score`` not None) on the tight box of
    their first-pass points; updates ``preds`` and the ``face_boxes`` of
    ``prepared`` in place."""
    index, crops, mats = [], [], []
    k = 0
    for p in prepared:
      for j, score in enumerate(p.scores):
        if score is not None:
          fbox = crop.landmark_box(preds["points"][k]).astype(np.float32)
          side, ex, ey = crop.crop_transform(fbox, self.crop_context)
          crops.append(crop.crop_image(p.image, side, ex, ey, self.crop_size))
          mats.append(crop.crop_to_image_matrix(side, ex, ey,
                                                self.crop_size))
          p.face_boxes[j] = fbox
          index.append(k)
        k += 1
    if not index:
      return
    again = self.predict_crops(np.stack(crops), np.stack(mats))
    for key in preds:
      preds[key][np.asarray(index)] = again[key]

  def predict_crops(self, crops: np.ndarray,
                    crop_to_image: np.ndarray) -> Dict[str, np.ndarray]:
    """Stored-convention crops ``[M, S, S, 3]`` -> numpy predictions.

    Runs in chunks of at most ``batch_size`` faces; each chunk is padded up
    to the smallest of ``self.batch_sizes`` (powers of two up to
    ``batch_size``, and ``batch_size`` itself) that holds it. One face costs
    a batch-1 forward pass, not ``batch_size`` of them, and the jitted
    function is traced at most ``len(self.batch_sizes)`` times whatever
    ``M`` is.
    """
    m = len(crops)
    out = {}
    start = 0
    while start < m:
      n = min(m - start, self.batch_size)
      b = pick_batch_size(n, self.batch_sizes)
      chunk = crops[start:start + n]
      mats = crop_to_image[start:start + n]
      pad = b - n
      if pad:
        chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:],
                                                chunk.dtype)])
        mats = np.concatenate([mats, np.repeat(mats[:1], pad, 0)])
      pred = self._predict(self.variables, chunk, mats, self.dictionary)
      for key, value in pred.items():
        out.setdefault(key, []).append(np.asarray(value)[:n])
      start += n
    return {k: np.concatenate(v) for k, v in out.items()}


# The face score: the mean of the points' confidences. On validation faces
# and background boxes it separates faces from non-faces as well as the mean
# of the higher half (82.9 % vs 82.5 % of background boxes rejected at the
# same loss of faces) and better than the median (75.7 %)
# (scripts/calibrate_face_score.py, benchmarks/results/
# face_score_threshold.md).
FACE_SCORE_STATISTIC = "mean"


def face_score_of(confidence) -> np.ndarray:
  """Face score of ``[..., N]`` confidences -> ``[...]``: their mean."""
  return np.asarray(confidence, np.float64).mean(axis=-1)


def flag_threshold(config, override: Optional[float] = None) -> float:
  """The confidence below which a point is reported occluded: ``override``,
  else ``config.predict.occluded_threshold``, else (models saved before it
  existed) ``config.refine.weight_threshold``."""
  for value in (override, config.predict.get("occluded_threshold"),
                config.refine.weight_threshold):
    if value is not None:
      value = float(value)
      if not 0.0 <= value <= 1.0:
        raise ValueError(f"occluded_threshold must be in [0, 1], got {value}")
      return value
  raise ValueError("no occlusion threshold in the config")


def batch_sizes_up_to(max_batch: int) -> tuple:
  """The padded batch sizes used for at most ``max_batch`` faces: the powers
  of two below it and ``max_batch`` itself (8 -> (1, 2, 4, 8); 6 -> (1, 2, 4,
  6))."""
  if max_batch < 1:
    raise ValueError(f"batch_size must be >= 1, got {max_batch}")
  sizes = [1]
  while sizes[-1] * 2 < max_batch:
    sizes.append(sizes[-1] * 2)
  if sizes[-1] != max_batch:
    sizes.append(max_batch)
  return tuple(sizes)


def pick_batch_size(n: int, sizes: Sequence[int]) -> int:
  """The smallest of ``sizes`` (ascending) that holds ``n`` faces."""
  for size in sizes:
    if size >= n:
      return size
  raise ValueError(f"{n} faces exceed the largest batch {sizes[-1]}")
