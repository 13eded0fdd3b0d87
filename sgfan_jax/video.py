"""Video files in and out: frames with time stamps, overlay videos, and the
``predict clip.mp4`` outputs.

Reading and writing go through PyAV (the ``av`` wheel bundles FFmpeg's
libraries; nothing is downloaded), so the common containers (mp4, mov,
mkv, webm, avi, m4v) and codecs (H.264, HEVC, VP8/9, AV1, MPEG-4, MJPEG, ...)
read as FFmpeg reads them.

* **Time stamps**: every frame keeps its presentation time (``pts *
  time_base``, seconds), so variable-frame-rate clips keep their timing: the
  tracker's filter uses it and the overlay video is written with the same
  time stamps.
* **Rotation**: phones store portrait video as landscape frames plus a
  display matrix (``AV_FRAME_DATA_DISPLAYMATRIX`` side data, the mp4/mov
  ``tkhd`` matrix) or, in files from older muxers, a ``rotate`` stream tag.
  Frames are turned upright as a player shows them (multiples of 90
  degrees; the matrix's mirroring, rare in practice, is ignored), and all
  points are in the upright frame's pixels (0-based ``(x, y)``,
  pixel-centre convention, docs/DESIGN.md).
* **Damage**: a file FFmpeg cannot open raises :class:`VideoError`; a file
  that breaks while decoding (truncated, corrupt) ends the iteration, and
  :attr:`VideoReader.error` says where and why; the frames before it are
  kept.

Outputs of :func:`predict_video` for ``OUT/NAME``: ``NAME.jsonl`` (one JSON
object per frame: ``frame``, ``time``, ``faces`` with ``id``, ``box`` (the
tight box of the points), ``points``, ``confidence``, ``occluded``),
``NAME.npz`` (one row per face and frame: ``frame`` ``[F]``, ``time``
``[F]``, ``face_id`` ``[F]``, ``points`` ``[F, 68, 2]``, ``confidence``
``[F, 68]``, ``occluded`` ``[F, 68]``, ``box`` ``[F, 4]``; and per frame
``frame_time`` ``[T]``) and ``NAME_overlay.mp4`` (the upright frames with the
points, ids and boxes drawn, same time stamps).
"""

from __future__ import annotations

import dataclasses
import fractions
import json
import math
import os
import sys
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np
from PIL import Image
from PIL import ImageDraw

from sgfan_jax import crop
from sgfan_jax import drawing

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
# Overlay video encoders, first available wins: H.264 (libx264, in the av
# wheel) and MPEG-4 part 2 (FFmpeg's own) as the fallback.
OVERLAY_CODECS = ("libx264", "mpeg4")
# x264's default quality (crf 23) at a fast preset; the overlay is for eyes.
X264_OPTIONS = {"crf": "23", "preset": "veryfast"}
# moov atom first: the file plays (and reads) before it is fully downloaded.
MP4_OPTIONS = {"movflags": "+faststart"}
# Time base of written videos whose frames come without one (90 kHz, the
# MPEG clock: exact for 24, 25, 30 and 29.97 fps).
DEFAULT_TIME_BASE = fractions.Fraction(1, 90000)
# Frame rate assumed for a stream that declares none (FFmpeg's guess
# failed), the commonest rate.
FALLBACK_FPS = 30
COORDINATES = ("0-based (x, y) pixels of the upright frame (rotation "
               "metadata applied), pixel-centre convention (the centre of "
               "pixel [row i, column j] is x=j, y=i)")

_AV_MISSING = ("reading video needs PyAV (the 'av' package, which bundles "
               "FFmpeg): pip install av")


class VideoError(crop.DataError):
  """A video that cannot be opened or written (the message names the file)."""


def import_av():
  """Imports PyAV or raises an ImportError that says how to install it."""
  try:
    import av  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(_AV_MISSING) from e
  return av


def is_video(path: str) -> bool:
  """True for a file name with one of :data:`VIDEO_EXTENSIONS` (any case)."""
  return os.path.splitext(os.fspath(path))[1].lower() in VIDEO_EXTENSIONS


@dataclasses.dataclass
class Frame:
  """One decoded video frame.

  Attributes:
    index: 0-based position in the file's presentation order.
    time: presentation time in seconds (``pts * time_base``).
    pts: the raw time stamp in ``time_base`` units (None if the file has none).
    image: uint8 ``[H, W, 3]`` RGB, upright (rotation applied).
  """
  index: int
  time: float
  pts: Optional[int]
  image: np.ndarray


def rotation_from_metadata(display_rotation: float,
                           tags: Dict[str, str]) -> int:
  """Counter-clockwise degrees (0, 90, 180, 270) that turn a stored frame
  upright.

  Args:
    display_rotation: the display matrix's rotation as PyAV's
      ``VideoFrame.rotation`` gives it (``av_display_rotation_get``: the angle
      the matrix rotates the frame counter-clockwise, in [-180, 180]).
    tags: the stream's metadata; its ``rotate`` tag (clockwise degrees, the
      older convention) counts when there is no display matrix.
  """
  degrees = float(display_rotation or 0.0)
  if not degrees and tags.get("rotate"):
    try:
      degrees = -float(tags["rotate"])
    except ValueError:
      degrees = 0.0
  return int(round(degrees / 90.0)) % 4 * 90


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
  """Turns ``[H, W, C]`` by ``rotation`` degrees counter-clockwise (a
  multiple of 90)."""
  k = (rotation // 90) % 4
  return np.ascontiguousarray(np.rot90(image, k)) if k else image


class VideoReader:
  """Frames of a video file, in presentation order, upright.

  Usage::

    with VideoReader("clip.mp4") as reader:
      for frame in reader:            # video.Frame
        ...
      if reader.error: ...            # damaged after reader.frames_read

  Attributes (after opening): ``width``, ``height`` (upright), ``frames``
  (the count the container declares; 0 = unknown), ``rate`` (average frame
  rate, ``fractions.Fraction`` or None), ``time_base``, ``codec``,
  ``rotation`` (of the first frame, degrees counter-clockwise), ``error``
  (None, or why decoding stopped early), ``frames_read``.

  Raises:
    VideoError: missing, empty or not a video FFmpeg can read.
  """

  def __init__(self, path: str):
    av = import_av()
    self.path = os.fspath(path)
    if not os.path.isfile(self.path):
      raise VideoError(f"{self.path}: not found")
    if os.path.getsize(self.path) == 0:
      raise VideoError(f"{self.path}: empty file")
    try:
      self._container = av.open(self.path)
    except av.error.FFmpegError as e:
      raise VideoError(f"{self.path}: not a video FFmpeg can read "
                       f"({_ffmpeg_message(e)})") from None
    if not self._container.streams.video:
      self._container.close()
      raise VideoError(f"{self.path}: no video stream")
    # FFmpeg's default slice threading: frame threading hides a damaged
    # packet's error and loses the frames queued in its threads.
    self._stream = self._container.streams.video[0]
    self.frames = int(self._stream.frames or 0)
    self.rate = self._stream.average_rate or self._stream.guessed_rate
    self.time_base = self._stream.time_base or DEFAULT_TIME_BASE
    self.codec = self._stream.codec_context.name
    self.tags = dict(self._stream.metadata)
    self.rotation = rotation_from_metadata(0, self.tags)
    w, h = self._stream.codec_context.width, self._stream.codec_context.height
    self.width, self.height = (h, w) if self.rotation % 180 else (w, h)
    self.error: Optional[str] = None
    self.frames_read = 0
    self._started = False
    self._last_time: Optional[float] = None

  def __enter__(self) -> "VideoReader":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def close(self) -> None:
    self._container.close()

  def __iter__(self) -> Iterator[Frame]:
    if self._started:
      raise RuntimeError(f"{self.path}: a VideoReader is read once")
    self._started = True
    av = import_av()
    stream = self._stream
    packets = self._container.demux(stream)
    while True:
      try:
        packet = next(packets)
        decoded = stream.decode(packet)
      except StopIteration:
        break
      except av.error.FFmpegError as e:
        for frame in self._drain():
          yield self._frame(frame)
        self.error = (f"damaged or truncated after {self.frames_read} "
                      f"frames ({_ffmpeg_message(e)})")
        break
      for frame in decoded:
        yield self._frame(frame)
    if self.error is None and self.frames and self.frames_read < self.frames:
      self.error = (f"the video ends after {self.frames_read} of its "
                    f"{self.frames} frames (truncated or damaged)")

  def _drain(self) -> list:
    """Frames still inside the decoder (after a damaged packet)."""
    try:
      return list(self._stream.decode(None))
    except Exception:  # pylint: disable=broad-except
      return []

  def _frame(self, frame) -> Frame:
    rotation = rotation_from_metadata(frame.rotation, self.tags)
    image = upright(frame.to_ndarray(format="rgb24"), rotation)
    if self.frames_read == 0:
      self.rotation = rotation
      self.height, self.width = image.shape[:2]
    time = frame.time
    if frame.pts is not None and time is not None and math.isfinite(time):
      time, pts = float(time), int(frame.pts)
    else:
      # No time stamp (some AVI files; frames drained after damage): one
      # nominal frame period after the previous frame.
      step = 1.0 / float(self.rate or FALLBACK_FPS)
      time = (self._last_time + step if self._last_time is not None
              else 0.0)
      pts = None
    self._last_time = time
    out = Frame(self.frames_read, time, pts, image)
    self.frames_read += 1
    return out


def _ffmpeg_message(e: Exception) -> str:
  """FFmpeg's reason without PyAV's errno and file-name decoration."""
  text = getattr(e, "strerror", None) or str(e)
  return str(text).strip()


def read_frames(path: str) -> List[Frame]:
  """All frames of a video (small clips; raises :class:`VideoError` when the
  file is damaged, naming where)."""
  with VideoReader(path) as reader:
    frames = list(reader)
  if reader.error:
    raise VideoError(f"{path}: {reader.error}")
  return frames


class VideoWriter:
  """Writes RGB frames at given times to a video file (H.264 in mp4 etc.).

  Args:
    path: output file; the container follows the extension.
    rate: nominal frame rate (the encoder's; time stamps rule the timing).
    time_base: units of the written time stamps (e.g. the source stream's,
      so its time stamps are kept exactly).
    codec: encoder name, or None = the first available of
      :data:`OVERLAY_CODECS`.
    rotation: degrees counter-clockwise stored as the stream's display
      matrix (a player, and :class:`VideoReader`, shows the frames turned by
      it); 0 = none.

  Frames may have any size (the first frame's); odd sides are padded by one
  edge pixel (4:2:0 chroma needs even sides). Times must increase; a time
  that does not (after rounding to ``time_base``) is moved one tick after
  the previous one.
  """

  def __init__(self, path: str, rate: Optional[fractions.Fraction] = None,
               time_base: Optional[fractions.Fraction] = None,
               codec: Optional[str] = None, rotation: int = 0):
    self.av = import_av()
    self.rotation = rotation
    self.path = os.fspath(path)
    self.rate = fractions.Fraction(rate or 30).limit_denominator(100000)
    self.time_base = fractions.Fraction(time_base or DEFAULT_TIME_BASE)
    if codec is None:
      codec = next((c for c in OVERLAY_CODECS
                    if c in self.av.codecs_available), OVERLAY_CODECS[-1])
    self.codec = codec
    options = (MP4_OPTIONS if os.path.splitext(self.path)[1].lower() in
               (".mp4", ".mov", ".m4v") else {})
    try:
      self._container = self.av.open(self.path, "w", options=dict(options))
    except (self.av.error.FFmpegError, ValueError) as e:
      raise VideoError(f"{self.path}: cannot write a video here "
                       f"({_ffmpeg_message(e)})") from None
    self._stream = None
    self._last_pts = None
    self.size = None
    self.frames_written = 0

  def __enter__(self) -> "VideoWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def _open_stream(self, width: int, height: int) -> None:
    stream = self._container.add_stream(self.codec, rate=self.rate)
    stream.width, stream.height = width + width % 2, height + height % 2
    stream.pix_fmt = "yuv420p"
    stream.time_base = self.time_base
    stream.codec_context.time_base = self.time_base
    if self.codec == "libx264":
      stream.options = dict(X264_OPTIONS)
    if self.rotation:
      stream.set_display_rotation(self.rotation)
    self._stream = stream
    self.size = (width, height)

  def write(self, image, time: float) -> None:
    """Adds one frame (uint8 ``[H, W, 3]`` array or PIL image) shown from
    ``time`` seconds."""
    a = np.asarray(image.convert("RGB") if isinstance(image, Image.Image)
                   else image, np.uint8)
    h, w = a.shape[:2]
    if self._stream is None:
      self._open_stream(w, h)
    elif (w, h) != self.size:
      raise ValueError(f"{self.path}: frame size {w}x{h} differs from the "
                       f"video's {self.size[0]}x{self.size[1]}")
    if w % 2 or h % 2:
      a = np.pad(a, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    pts = int(round(float(time) / self.time_base))
    if self._last_pts is not None and pts <= self._last_pts:
      pts = self._last_pts + 1
    self._last_pts = pts
    frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(a),
                                            format="rgb24")
    frame.pts = pts
    frame.time_base = self.time_base
    for packet in self._stream.encode(frame):
      self._container.mux(packet)
    self.frames_written += 1

  def close(self) -> None:
    if self._container is None:
      return
    if self._stream is not None:
      for packet in self._stream.encode():
        self._container.mux(packet)
    self._container.close()
    self._container = None


def write_video(path: str, frames: Sequence[Any], times: Sequence[float],
                rate: Optional[float] = None,
                time_base: Optional[fractions.Fraction] = None,
                codec: Optional[str] = None, rotation: int = 0) -> None:
  """Writes frames (uint8 ``[H, W, 3]`` arrays) at ``times`` (seconds).

  ``rotation`` (degrees counter-clockwise, as :class:`VideoReader` applies
  it) is stored as the stream's display matrix: a player (and the reader)
  shows the frames turned by it. Used to make test clips.
  """
  with VideoWriter(path, rate=rate, time_base=time_base, codec=codec,
                   rotation=rotation) as writer:
    for image, t in zip(frames, times):
      writer.write(image, t)


# ------------------------------------------------------------------ overlay


def overlay(image, faces) -> Image.Image:
  """One overlay frame: ``drawing.face_overlay`` with each face's box the
  tight box of its points and its ``face_id`` written above the box."""
  pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
  shown = [dataclasses.replace(f, box=crop.landmark_box(f.points))
           for f in faces]
  out = drawing.face_overlay(pil, shown)
  d = ImageDraw.Draw(out)
  r = drawing.marker_radius(out.size)
  for f in shown:
    if f.face_id is None:
      continue
    x0, y0 = float(f.box[0]) + 0.5, float(f.box[1]) + 0.5
    d.text((x0, max(0.0, y0 - 4 * r - 10)), f"id {f.face_id}",
           fill=drawing.BOX)
  return out


# ------------------------------------------------------------- the command


def face_record(face) -> Dict[str, Any]:
  """A face's JSON line entry (lists, rounded)."""
  return {
      "id": None if face.face_id is None else int(face.face_id),
      "box": np.round(crop.landmark_box(face.points), 2).tolist(),
      "points": np.round(face.points, 3).tolist(),
      "confidence": np.round(face.confidence, 4).tolist(),
      "occluded": np.asarray(face.occluded, bool).tolist(),
  }


@dataclasses.dataclass
class VideoResult:
  """What :func:`predict_video` did with one file."""
  frames: int                 # frames read and written
  face_ids: int               # distinct face ids
  error: Optional[str]        # None, or why the file could not be read whole
  outputs: List[str]


def predict_video(lm, path: str, base: str, *, overlay_video: bool = True,
                  progress: bool = True, model: str = "",
                  precision: str = "", **track_kwargs) -> VideoResult:
  """Tracks the faces of one video; writes ``base.jsonl``, ``base.npz`` and
  (``overlay_video``) ``base_overlay.mp4``.

  Args:
    lm: a ``Landmarker``.
    path: the video file.
    base: output path without extension (``OUT/NAME``).
    overlay_video: write the overlay video.
    progress: a tqdm bar with frames/s on stderr.
    model, precision: recorded in the ``.npz``.
    **track_kwargs: ``tracking.FaceTracker`` settings.

  Returns:
    a :class:`VideoResult`; damaged files keep the frames before the damage
    (``error`` says where).

  Raises:
    VideoError: the file cannot be opened as a video (nothing written).
  """
  import tqdm  # pylint: disable=g-import-not-at-top
  from sgfan_jax import tracking  # pylint: disable=g-import-not-at-top

  tracker = tracking.FaceTracker(lm, **track_kwargs)
  reader = VideoReader(path)
  os.makedirs(os.path.dirname(base) or ".", exist_ok=True)
  outputs = [base + ".jsonl", base + ".npz"]
  writer = None
  if overlay_video:
    try:
      writer = VideoWriter(base + "_overlay.mp4", rate=reader.rate,
                           time_base=reader.time_base)
    except VideoError:
      reader.close()
      raise
    outputs.append(base + "_overlay.mp4")
  rows: Dict[str, list] = {k: [] for k in ("frame", "time", "face_id",
                                           "points", "confidence",
                                           "occluded", "box")}
  frame_times: List[float] = []
  ids = set()
  error = None
  bar = tqdm.tqdm(total=reader.frames or None, unit="frame",
                  disable=not progress, file=sys.stderr, leave=False,
                  desc=os.path.basename(path))
  try:
    with open(base + ".jsonl", "w") as jf:
      try:
        for frame in reader:
          faces = tracker.step(frame)
          frame_times.append(frame.time)
          jf.write(json.dumps({"frame": frame.index,
                               "time": round(frame.time, 6),
                               "faces": [face_record(f) for f in faces]})
                   + "\n")
          for f in faces:
            ids.add(f.face_id)
            rows["frame"].append(frame.index)
            rows["time"].append(frame.time)
            rows["face_id"].append(f.face_id)
            rows["points"].append(f.points)
            rows["confidence"].append(f.confidence)
            rows["occluded"].append(f.occluded)
            rows["box"].append(crop.landmark_box(f.points))
          if writer is not None:
            writer.write(overlay(frame.image, faces), frame.time)
          bar.update(1)
      except (crop.DataError, ValueError) as e:
        error = f"stopped at frame {len(frame_times)}: {e}"
      error = error or reader.error
  finally:
    bar.close()
    reader.close()
    if writer is not None:
      writer.close()
  n = len(rows["frame"])
  num = lm.layout.num_points
  np.savez_compressed(
      base + ".npz",
      frame=np.asarray(rows["frame"], np.int32),
      time=np.asarray(rows["time"], np.float64),
      face_id=np.asarray(rows["face_id"], np.int32),
      points=np.asarray(rows["points"], np.float32).reshape(n, num, 2),
      confidence=np.asarray(rows["confidence"], np.float32).reshape(n, num),
      occluded=np.asarray(rows["occluded"], bool).reshape(n, num),
      box=np.asarray(rows["box"], np.float32).reshape(n, 4),
      frame_time=np.asarray(frame_times, np.float64),
      video=os.path.abspath(path), width=reader.width, height=reader.height,
      rotation=reader.rotation, model=model, precision=precision,
      coordinates=COORDINATES)
  if writer is not None and writer.frames_written == 0:
    outputs.remove(base + "_overlay.mp4")      # no frame: no video
    if os.path.exists(base + "_overlay.mp4"):
      os.remove(base + "_overlay.mp4")
  return VideoResult(len(frame_times), len(ids), error, outputs)
