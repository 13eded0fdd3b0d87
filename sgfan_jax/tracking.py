"""Faces through a video: tracking, ids and the One Euro filter.

``Landmarker.track(frames)`` runs a :class:`FaceTracker`:

* **Detect** on the first frame (and on every frame while no face is
  tracked), then every ``video.detect_every`` frames, on the frame after a
  face left the picture (less than ``video.min_inside`` of its box inside
  the frame), and when a tracked face's mean Eq. 1 confidence falls below
  ``video.min_confidence`` (a jump, a cut, an occluder): then on the same
  frame, whose unsure faces are cropped again from the detections that
  overlap them (the more confident result is kept; an unsure face that no
  detection overlaps ends), and on the next one.
* **Track** in between: each face is cropped from the tight box of its
  previous frame's points (the unsmoothed network output), which is exactly
  the model's face-box convention (``Landmarker.face_boxes`` with
  ``box_format='landmarks'``), so no detector runs and the crop follows the
  face.
* **Ids** stay with the face by box overlap: on a detection frame each
  detection is matched to the track it overlaps most (greedy by IoU, at
  least ``video.iou_threshold``); a matched track is re-anchored on the
  detector's box, a detection that overlaps no track starts a new id, a
  track no detection overlaps goes on if its confidence is fine and ends if
  not. Two tracks that come to cover the same face (IoU above the
  threshold) are merged: the one with the higher mean confidence stays.
* **Smoothing** (``video.smooth``): each face id's points go through a
  :class:`FaceSmoother` (One Euro filters, with the frame time stamps, so
  variable frame rates are handled). The crops always come from the
  unsmoothed points, so the filter never feeds back into the network's
  input.

The One Euro filter (Casiez, Roussel and Vogel, "1 Euro Filter: A Simple
Speed-based Low-pass Filter for Noisy Input in Interactive Systems", CHI
2012) is an exponential low-pass filter whose cutoff frequency rises with
the signal's speed: at rest a low cutoff removes jitter, in fast motion a
high cutoff removes lag. For a sample ``x_i`` at time ``t_i`` (``T_e = t_i
- t_{i-1}``)::

  alpha(f_c) = 1 / (1 + tau / T_e),  tau = 1 / (2 pi f_c)
  dx_i   = (x_i - xhat_{i-1}) / T_e                  # speed
  dxhat_i = alpha(d_cutoff) dx_i + (1 - alpha(d_cutoff)) dxhat_{i-1}
  f_c    = min_cutoff + beta |dxhat_i|
  xhat_i = alpha(f_c) x_i + (1 - alpha(f_c)) xhat_{i-1}

with ``xhat_0 = x_0`` and ``dxhat_0 = 0``. Each coordinate is filtered
independently, as in the paper. ``min_cutoff`` (Hz) sets the steadiness at
rest, ``beta`` how fast the cutoff rises with speed (the lag in fast
motion), ``d_cutoff`` (Hz) smooths the speed estimate. Here the speed is
measured in face sizes per second (pixels divided by the face size, the
geometric mean of the sides of the tight landmark box), so ``beta`` (in
seconds per face size) means the same for small and large faces.

Filtering the 68 points directly trades jitter for lag whenever the head
moves: the whole face moves fast, so the cutoff rises and the jitter comes
back, or it does not and the points trail the face. :class:`FaceSmoother`
therefore filters a face in two parts: its **pose**, the least-squares
similarity (centre ``c``, scale-and-rotation ``z``, as complex numbers)
that maps the track's first shape onto the current points, and its
**shape**, the points in the face's own frame ``(p - c) / z``. The pose,
fitted from all 68 points, is far less noisy than any point and takes its
own, faster filter (``video.pose_min_cutoff``, ``video.pose_beta``); the
shape does not change when the head moves, turns or comes closer, only when
the expression changes, so its filter (``video.min_cutoff``, ``video.beta``)
can be slow without lagging behind head motion. The output is ``c + z *
shape``. On the synthetic moving-face clips of benchmarks/video.py this
halves the frame-to-frame jitter and does not raise the error, where the
same filter on the points themselves raises the error by half (lag) and
leaves the jitter (benchmarks/results/video.md).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from sgfan_jax import box_map as box_map_lib
from sgfan_jax import crop
from sgfan_jax import landmarker as landmarker_lib


def smoothing_factor(cutoff, period):
  """The paper's ``alpha = 1 / (1 + tau / T_e)``, ``tau = 1 / (2 pi f_c)``.

  Args:
    cutoff: cutoff frequency ``f_c`` in Hz (scalar or array).
    period: sampling period ``T_e`` in seconds.
  """
  tau = 1.0 / (2.0 * np.pi * np.asarray(cutoff, np.float64))
  return 1.0 / (1.0 + tau / period)


class OneEuroFilter:
  """The One Euro filter (Casiez et al., CHI 2012) on arrays of any shape.

  Every element is an independent 1-D signal (the paper's filter applied
  per coordinate). See the module docstring for the formulas.

  Args:
    min_cutoff: cutoff frequency at rest, Hz (> 0).
    beta: speed coefficient (>= 0): the cutoff is ``min_cutoff + beta *
      |speed|``, speed in units of the signal per second (divided by
      ``scale`` in :meth:`__call__`).
    d_cutoff: cutoff frequency of the speed estimate, Hz (> 0).
  """

  def __init__(self, min_cutoff: float, beta: float, d_cutoff: float):
    if not min_cutoff > 0 or not d_cutoff > 0 or not beta >= 0:
      raise ValueError(f"One Euro filter needs min_cutoff > 0, d_cutoff > 0 "
                       f"and beta >= 0, got min_cutoff={min_cutoff}, "
                       f"beta={beta}, d_cutoff={d_cutoff}")
    self.min_cutoff = float(min_cutoff)
    self.beta = float(beta)
    self.d_cutoff = float(d_cutoff)
    self.reset()

  def reset(self) -> None:
    """Forgets the past (the next sample passes through unchanged)."""
    self._x = None      # xhat_{i-1}
    self._dx = None     # dxhat_{i-1}
    self._t = None      # t_{i-1}

  def __call__(self, x, t: float, scale: float = 1.0) -> np.ndarray:
    """Filters one sample.

    Args:
      x: the sample (any shape; the shape must stay the same).
      t: its time in seconds. A time not after the previous one (a repeated
        time stamp) returns the previous output unchanged.
      scale: the speed is divided by this before it raises the cutoff (the
        face size in pixels, so that ``beta`` is size-independent).

    Returns:
      float64 array of ``x``'s shape: the filtered sample.
    """
    x = np.asarray(x, np.float64)
    if self._x is None:
      self._x, self._dx, self._t = x.copy(), np.zeros_like(x), float(t)
      return x.copy()
    if x.shape != self._x.shape:
      raise ValueError(f"sample shape {x.shape} differs from the filter's "
                       f"{self._x.shape}")
    period = float(t) - self._t
    if not period > 0:
      return self._x.copy()
    dx = (x - self._x) / period
    a_d = smoothing_factor(self.d_cutoff, period)
    self._dx = a_d * dx + (1.0 - a_d) * self._dx
    cutoff = self.min_cutoff + self.beta * np.abs(self._dx) / float(scale)
    a = smoothing_factor(cutoff, period)
    self._x = a * x + (1.0 - a) * self._x
    self._t = float(t)
    return self._x.copy()


class FaceSmoother:
  """One face's points smoothed as pose + shape (module docstring).

  Args:
    min_cutoff, beta: the shape filter's (speed in face sizes per second).
    d_cutoff: the speed estimates' cutoff (shape and pose).
    pose_min_cutoff, pose_beta: the pose filter's (speed of the centre in
      face sizes per second; of ``z`` relative to ``|z|``, i.e. the relative
      zoom rate and the turn rate in radians per second).
  """

  def __init__(self, min_cutoff: float, beta: float, d_cutoff: float,
               pose_min_cutoff: float, pose_beta: float):
    self.shape = OneEuroFilter(min_cutoff, beta, d_cutoff)
    self.centre = OneEuroFilter(pose_min_cutoff, pose_beta, d_cutoff)
    self.turn = OneEuroFilter(pose_min_cutoff, pose_beta, d_cutoff)
    self.reference = None     # complex [N]: first shape, unit face size

  def __call__(self, points: np.ndarray, t: float) -> np.ndarray:
    """Filters one frame's ``[N, 2]`` points taken at ``t`` seconds;
    returns float64 ``[N, 2]``."""
    p = np.asarray(points, np.float64)
    q = p[:, 0] + 1j * p[:, 1]
    c = q.mean()
    q = q - c
    if self.reference is None:
      self.reference = q / face_size(p)
    ref = self.reference
    z = np.vdot(ref, q) / np.vdot(ref, ref)      # least-squares similarity
    if not abs(z) > 1e-6:
      return p.copy()                              # degenerate points
    shape = q / z
    size = abs(z)                                  # face size in pixels
    c_hat = self.centre(np.array([c.real, c.imag]), t, size)
    z_hat = self.turn(np.array([z.real, z.imag]), t, size)
    s_hat = self.shape(np.stack([shape.real, shape.imag], -1), t)
    out = (c_hat[0] + 1j * c_hat[1]) + (z_hat[0] + 1j * z_hat[1]) * (
        s_hat[:, 0] + 1j * s_hat[:, 1])
    return np.stack([out.real, out.imag], -1)


# ------------------------------------------------------------------ tracks


def face_size(points: np.ndarray) -> float:
  """Geometric mean of the tight landmark box's sides (pixels, >= 1)."""
  b = crop.landmark_box(points)
  return max(1.0, math.sqrt(max(b[2] - b[0], 1e-6) * max(b[3] - b[1], 1e-6)))


def inside_fraction(box: np.ndarray, width: int, height: int) -> float:
  """Fraction of a ``[x0, y0, x1, y1]`` box's area inside a frame of
  ``width x height`` pixels (pixel area ``[-1/2, W - 1/2]``, DESIGN.md)."""
  x0, y0, x1, y1 = [float(v) for v in box]
  area = max(x1 - x0, 0.0) * max(y1 - y0, 0.0)
  if area <= 0:
    return 0.0
  ix = max(0.0, min(x1, width - 0.5) - max(x0, -0.5))
  iy = max(0.0, min(y1, height - 0.5) - max(y0, -0.5))
  return ix * iy / area


def match_boxes(a: np.ndarray, b: np.ndarray, threshold: float
                ) -> List[Tuple[int, int]]:
  """Greedy one-to-one matching of boxes ``a [K, 4]`` to ``b [M, 4]`` by
  IoU, highest first, pairs with IoU >= ``threshold``: ``[(i, j), ...]``."""
  if not len(a) or not len(b):
    return []
  return match_iou(box_map_lib.iou(np.asarray(a, np.float32),
                                   np.asarray(b, np.float32)), threshold)


def match_iou(iou: np.ndarray, threshold: float) -> List[Tuple[int, int]]:
  """:func:`match_boxes` on a ``[K, M]`` IoU matrix."""
  if not iou.size:
    return []
  pairs = []
  used_a, used_b = set(), set()
  for flat in np.argsort(-iou, axis=None, kind="stable"):
    i, j = np.unravel_index(flat, iou.shape)
    if iou[i, j] < threshold:
      break
    if i in used_a or j in used_b:
      continue
    pairs.append((int(i), int(j)))
    used_a.add(i)
    used_b.add(j)
  return pairs


@dataclasses.dataclass
class Track:
  """One face followed through the frames."""
  face_id: int
  points: np.ndarray                  # [N, 2] last unsmoothed points
  confidence: float                   # last mean Eq. 1 confidence
  smoother: Optional[FaceSmoother]

  @property
  def box(self) -> np.ndarray:
    """The model-convention face box of the next crop (tight box of the
    last points)."""
    return crop.landmark_box(self.points)


@dataclasses.dataclass
class Entry:
  """A face to crop on the current frame."""
  track: Optional[Track]              # None = a new face
  box: np.ndarray                     # [4] as found / given
  score: Optional[float]              # detector score (None = tracked box)
  face_box: np.ndarray                # [4] model-convention box of the crop


@dataclasses.dataclass
class TrackStats:
  """What the tracker did (for benchmarks and tests)."""
  frames: int = 0
  detections: int = 0                 # frames on which the detector ran
  faces: int = 0                      # faces predicted over all frames
  ids: int = 0                        # face ids started


def frame_image(frame: Any) -> Tuple[Image.Image, np.ndarray, Optional[float]]:
  """A frame (uint8 ``[H, W, 3]`` array, PIL image or an object with
  ``image`` and ``time``, e.g. ``video.Frame``) -> (PIL RGB, uint8 array,
  time in seconds or None)."""
  time = None
  if hasattr(frame, "image") and hasattr(frame, "time"):
    time = frame.time
    frame = frame.image
  pil = crop.load_photo(frame, name="frame")
  return pil, np.asarray(pil), (None if time is None else float(time))


class FaceTracker:
  """Tracks the faces of consecutive frames with a :class:`Landmarker`.

  Args:
    landmarker: a ``sgfan_jax.Landmarker`` (its detector, box map, crop
      geometry and network).
    detect_every: run the detector every this many frames (1 = every frame,
      i.e. no tracking; 0 = only when no face is tracked or one is lost).
    min_confidence: a face whose mean Eq. 1 confidence falls below this
      makes the next frame a detection frame.
    iou_threshold: overlap at which a detection and a track are one face.
    min_inside: a face with less of its box inside the frame has left.
    smooth: smooth each face's points (:class:`FaceSmoother`).
    min_cutoff, beta, d_cutoff, pose_min_cutoff, pose_beta: the filters'
      parameters (:class:`FaceSmoother`, module docstring).
    fps: frame rate for frames without a time stamp (frame ``i`` is at
      ``i / fps`` seconds).

  None for any of these = the ``video`` field of the model's config.
  """

  def __init__(self, landmarker, *, detect_every: Optional[int] = None,
               min_confidence: Optional[float] = None,
               iou_threshold: Optional[float] = None,
               min_inside: Optional[float] = None,
               smooth: Optional[bool] = None,
               min_cutoff: Optional[float] = None,
               beta: Optional[float] = None,
               d_cutoff: Optional[float] = None,
               pose_min_cutoff: Optional[float] = None,
               pose_beta: Optional[float] = None,
               fps: Optional[float] = None):
    vc = landmarker.config.video
    pick = lambda value, default: default if value is None else value
    self.lm = landmarker
    self.detect_every = int(pick(detect_every, vc.detect_every))
    self.min_confidence = float(pick(min_confidence, vc.min_confidence))
    self.iou_threshold = float(pick(iou_threshold, vc.iou_threshold))
    self.min_inside = float(pick(min_inside, vc.min_inside))
    self.smooth = bool(pick(smooth, vc.smooth))
    self.filter_args = (float(pick(min_cutoff, vc.min_cutoff)),
                        float(pick(beta, vc.beta)),
                        float(pick(d_cutoff, vc.d_cutoff)),
                        float(pick(pose_min_cutoff, vc.pose_min_cutoff)),
                        float(pick(pose_beta, vc.pose_beta)))
    self.fps = float(pick(fps, vc.default_fps))
    if self.detect_every < 0:
      raise ValueError(f"detect_every must be >= 0, got {self.detect_every}")
    if not self.fps > 0:
      raise ValueError(f"fps must be > 0, got {self.fps}")
    FaceSmoother(*self.filter_args)       # checks the parameters
    self.tracks: List[Track] = []
    self.next_id = 0
    self.index = 0
    self.since_detect = 0
    self.detect_next = True
    self.last_time: Optional[float] = None
    self.stats = TrackStats()

  def _new_track(self, points, confidence) -> Track:
    track = Track(self.next_id, points, confidence,
                  FaceSmoother(*self.filter_args) if self.smooth else None)
    self.next_id += 1
    self.stats.ids += 1
    return track

  def _time(self, time: Optional[float]) -> float:
    if time is None:
      time = self.index / self.fps
    return float(time)

  def _detect(self, image: np.ndarray):
    found, scores, fboxes = self.lm.face_boxes(image)
    self.stats.detections += 1
    self.since_detect = 0
    return found, scores, fboxes

  def _predict(self, pil: Image.Image, entries: Sequence[Entry]) -> List[Any]:
    """The network on each entry's crop: one ``Face`` per entry."""
    lm = self.lm
    if not entries:
      return []
    n = len(entries)
    prepared = landmarker_lib.PreparedImage(
        pil, np.zeros((n, 4), np.float32), [], np.zeros((n, 4), np.float32),
        np.zeros((n, lm.crop_size, lm.crop_size, 3), np.uint8),
        np.zeros((n, 2, 3), np.float32))
    for k, entry in enumerate(entries):
      side, ex, ey = crop.crop_transform(entry.face_box, lm.crop_context)
      prepared.crops[k] = crop.crop_image(pil, side, ex, ey, lm.crop_size)
      prepared.crop_to_image[k] = crop.crop_to_image_matrix(
          side, ex, ey, lm.crop_size)
      prepared.boxes[k] = entry.box
      prepared.face_boxes[k] = entry.face_box
      prepared.scores.append(entry.score)
    # One face per entry, in order (rejected detections marked is_face
    # False, dropped by step()).
    return lm.finish([prepared], keep_all=True)[0]

  def _entries_from_detection(self, image: np.ndarray) -> List[Entry]:
    """A detection frame: detections re-anchor the tracks they overlap or
    start new ones; unmatched tracks go on while they are confident."""
    found, scores, fboxes = self._detect(image)
    tboxes = np.asarray([t.box for t in self.tracks],
                        np.float32).reshape(-1, 4)
    pairs = {j: i for i, j in match_boxes(tboxes, fboxes,
                                          self.iou_threshold)}
    entries = [Entry(self.tracks[pairs[j]] if j in pairs else None,
                     found[j], scores[j], fboxes[j])
               for j in range(len(fboxes))]
    for i, track in enumerate(self.tracks):
      if i not in pairs.values() and track.confidence >= self.min_confidence:
        entries.append(Entry(track, track.box, None, track.box))
    return entries

  def _look_again(self, pil, image, entries: List[Entry], faces: List[Any]
                  ) -> Tuple[List[Entry], List[Any]]:
    """A tracked face came out unsure (a jump, a cut, an occluder): detect
    on this frame, crop the unsure faces again from the detections that
    overlap where they were (keeping the more confident result), drop the
    unsure faces no detection overlaps, and start the detections that
    overlap no face as new tracks."""
    unsure = {k for k, f in enumerate(faces)
              if float(np.mean(f.confidence)) < self.min_confidence}
    found, scores, fboxes = self._detect(image)
    was = np.asarray([e.face_box for e in entries], np.float32).reshape(-1, 4)
    now = np.asarray([crop.landmark_box(f.points) for f in faces],
                     np.float32).reshape(-1, 4)
    # A face overlaps a detection where it was or where it now seems to be.
    iou = (np.maximum(box_map_lib.iou(was, fboxes), box_map_lib.iou(
        now, fboxes)) if len(was) and len(fboxes) else np.zeros((0, 0)))
    pairs = match_iou(iou, self.iou_threshold)
    matched = {k for k, _ in pairs}
    redo = [(k, Entry(entries[k].track, found[j], scores[j], fboxes[j]))
            for k, j in pairs if k in unsure]
    used = {j for _, j in pairs}
    new = []
    for j in range(len(fboxes)):
      if j in used:
        continue
      overlap = [box_map_lib.iou(fboxes[j][None], b)[0] for b in (was, now)
                 if len(b)]
      if not overlap or max(o.max() for o in overlap) < self.iou_threshold:
        new.append(Entry(None, found[j], scores[j], fboxes[j]))
    again = self._predict(pil, [e for _, e in redo] + new)
    for (k, entry), face in zip(redo, again):
      if np.mean(face.confidence) > np.mean(faces[k].confidence):
        entries[k], faces[k] = entry, face
    keep = [k for k in range(len(entries)) if k not in unsure or k in matched]
    return ([entries[k] for k in keep] + new,
            [faces[k] for k in keep] + again[len(redo):])

  def step(self, frame: Any) -> List[Any]:
    """The faces of the next frame (``Face`` list sorted by ``face_id``)."""
    pil, image, time = frame_image(frame)
    time = self._time(time)
    h, w = image.shape[:2]
    detect = (not self.tracks or self.detect_next or
              (self.detect_every > 0 and
               self.since_detect >= self.detect_every))
    if detect:
      entries = self._entries_from_detection(image)
    else:
      entries = [Entry(t, t.box, None, t.box) for t in self.tracks]
    faces = self._predict(pil, entries)
    if not detect and any(np.mean(f.confidence) < self.min_confidence
                          for f in faces):
      entries, faces = self._look_again(pil, image, entries, faces)
    self.since_detect += 1
    self.detect_next = False
    # Face verification: detections the network does not believe are not
    # faces (Landmarker.min_face_score); tracked faces are never dropped here.
    kept = [(e, f) for e, f in zip(entries, faces) if f.is_face is not False]
    entries, faces = [e for e, _ in kept], [f for _, f in kept]

    tracks: List[Track] = []
    pairs_out: List[Tuple[Track, Any]] = []
    for entry, face in zip(entries, faces):
      conf = float(np.mean(face.confidence))
      track = entry.track
      if track is None:
        track = self._new_track(face.points, conf)
      else:
        track.points, track.confidence = face.points, conf
      if inside_fraction(track.box, w, h) < self.min_inside:
        self.detect_next = True          # the face left: look again
        continue
      if conf < self.min_confidence:
        # Look again on the next frame; there, a track no detection
        # overlaps is not cropped again (it has ended).
        self.detect_next = True
      tracks.append(track)
      pairs_out.append((track, face))
    # Merge tracks that now cover the same face: keep the more confident.
    order = sorted(range(len(tracks)), key=lambda k: -tracks[k].confidence)
    keep: List[int] = []
    for k in order:
      boxes = np.asarray([tracks[q].box for q in keep], np.float32)
      if keep and box_map_lib.iou(tracks[k].box[None], boxes.reshape(
          -1, 4)).max() >= self.iou_threshold:
        continue
      keep.append(k)
    keep.sort(key=lambda k: tracks[k].face_id)
    self.tracks = [tracks[k] for k in keep]

    out = []
    for k in keep:
      track, face = pairs_out[k]
      face.face_id = track.face_id
      if track.smoother is not None:
        face.points = track.smoother(face.points, time).astype(np.float32)
      out.append(face)
    self.index += 1
    self.last_time = time
    self.stats.frames += 1
    self.stats.faces += len(out)
    return out

  def track(self, frames: Iterable[Any]) -> Iterator[List[Any]]:
    """Generator: one ``Face`` list per frame, in order."""
    for frame in frames:
      yield self.step(frame)


def smooth_tracks(frames: Sequence[Sequence[Any]], times: Sequence[float],
                  *filter_args: float) -> List[List[np.ndarray]]:
  """The smoothing of :class:`FaceTracker` applied afterwards.

  Tracking crops from the unsmoothed points, so a pass with ``smooth=False``
  followed by this gives the points of a pass with ``smooth=True``; one
  pass can thus be compared under several filter settings.

  Args:
    frames: per frame, the faces (objects with ``face_id`` and unsmoothed
      ``points [N, 2]``) of a tracking pass.
    times: each frame's time in seconds.
    *filter_args: :class:`FaceSmoother`'s ``(min_cutoff, beta, d_cutoff,
      pose_min_cutoff, pose_beta)``.

  Returns:
    per frame, the faces' smoothed float32 ``[N, 2]`` points, in order.
  """
  smoothers = {}
  out = []
  for faces, t in zip(frames, times):
    row = []
    for f in faces:
      smoother = smoothers.setdefault(f.face_id, FaceSmoother(*filter_args))
      row.append(smoother(f.points, t).astype(np.float32))
    out.append(row)
  return out
