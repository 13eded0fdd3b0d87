"""Video without video: clips made from a still photo along a known path,
and the error and jitter of landmarks through them.

A :class:`MotionPath` moves, zooms and rotates the photo smoothly over time
(sums of sines); :func:`moving_face_clip` renders the frames (each output
pixel centre sampled bilinearly from the photo, so the warp is exact in the
pixel-centre convention of docs/DESIGN.md) and moves the photo's annotated
points with the same similarity transform: the true points of every frame.

Measures over a clip of ``T`` frames, predictions ``P_t`` and truth
``G_t`` (``[N, 2]``), ``d_t`` the true inter-ocular distance (outer eye
corners):

* **error**: mean over frames of the NME, ``mean_i |P_ti - G_ti| / d_t``;
* **jitter**: mean over frames ``1..T-2`` and points of the second
  difference of the residual ``R_t = P_t - G_t``,
  ``|R_{t+1} - 2 R_t + R_{t-1}| / d_t``: the frame-to-frame shake that is
  not in the true motion (a constant or steadily growing offset, e.g. lag
  on a steady motion, adds none; white noise of std ``s`` per coordinate
  adds about ``sqrt(6) s`` per coordinate, ``~2.2 s`` in the 2-D norm's
  mean).

Both are fractions of the inter-ocular distance (x 100 = percent).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from scipy import ndimage

from sgfan_jax import crop
from sgfan_jax import metrics


@dataclasses.dataclass
class MotionPath:
  """A smooth similarity-transform path of a face through a frame.

  The face's landmark-box centre goes to ``(cx + ax sin(2 pi fx t), cy + ay
  sin(2 pi fy t + phase))`` (fractions of the frame's width and height), its
  landmark-box size (geometric mean of the sides) to ``size * (1 + zoom
  sin(2 pi fz t))`` (fraction of the frame's shorter side), and it turns by
  ``angle sin(2 pi fa t)`` degrees (counter-clockwise on screen). Times in
  seconds, frequencies in Hz.
  """
  cx: float = 0.5
  cy: float = 0.5
  ax: float = 0.12
  ay: float = 0.08
  fx: float = 0.7
  fy: float = 0.9
  phase: float = 0.5
  size: float = 0.4
  zoom: float = 0.12
  fz: float = 0.5
  angle: float = 12.0
  fa: float = 0.6

  def at(self, t: float, width: int, height: int
         ) -> Tuple[float, float, float, float]:
    """(centre x, centre y, face size in pixels, angle in degrees) at t."""
    x = (self.cx + self.ax * math.sin(2 * math.pi * self.fx * t)) * width
    y = (self.cy + self.ay * math.sin(2 * math.pi * self.fy * t + self.phase)
         ) * height
    size = self.size * min(width, height) * (
        1 + self.zoom * math.sin(2 * math.pi * self.fz * t))
    angle = self.angle * math.sin(2 * math.pi * self.fa * t)
    return x, y, size, angle


def similarity(centre_src, centre_dst, scale: float, angle_deg: float
               ) -> np.ndarray:
  """float64 ``[2, 3]`` map ``q = scale R (p - centre_src) + centre_dst``,
  ``R`` turning counter-clockwise on screen (y down) by ``angle_deg``."""
  a = math.radians(angle_deg)
  # y points down: a counter-clockwise turn on screen is (x, y) ->
  # (x cos a + y sin a, -x sin a + y cos a).
  rot = scale * np.array([[math.cos(a), math.sin(a)],
                          [-math.sin(a), math.cos(a)]])
  shift = np.asarray(centre_dst, np.float64) - rot @ np.asarray(centre_src,
                                                                np.float64)
  return np.concatenate([rot, shift[:, None]], 1)


def apply_affine(mat: np.ndarray, points: np.ndarray) -> np.ndarray:
  """``[2, 3]`` affine applied to ``[N, 2]`` points."""
  p = np.asarray(points, np.float64)
  return p @ mat[:, :2].T + mat[:, 2]


def warp_image(image: np.ndarray, mat: np.ndarray, width: int, height: int,
               background: int = 127) -> np.ndarray:
  """Renders ``image`` under the source->frame affine ``mat`` into a uint8
  ``[height, width, 3]`` frame: each frame pixel centre ``(x=j, y=i)`` takes
  the bilinear sample of the source at ``mat^-1 (x, y)``."""
  inv = np.linalg.inv(np.vstack([mat, [0.0, 0.0, 1.0]]))[:2]
  jj, ii = np.meshgrid(np.arange(width, dtype=np.float64),
                       np.arange(height, dtype=np.float64))
  sx = inv[0, 0] * jj + inv[0, 1] * ii + inv[0, 2]
  sy = inv[1, 0] * jj + inv[1, 1] * ii + inv[1, 2]
  out = np.empty((height, width, 3), np.uint8)
  src = np.asarray(image, np.float32)
  for c in range(3):
    out[..., c] = np.clip(np.round(ndimage.map_coordinates(
        src[..., c], [sy, sx], order=1, mode="constant", cval=background)),
                          0, 255).astype(np.uint8)
  return out


def resize_face(image: np.ndarray, points: np.ndarray, factor: float
                ) -> Tuple[np.ndarray, np.ndarray]:
  """Antialiased resize of a photo by about ``factor`` with its points
  (DESIGN.md: ``x -> (x + 0.5) * T / S - 0.5`` per axis)."""
  h, w = image.shape[:2]
  nw, nh = max(1, int(round(w * factor))), max(1, int(round(h * factor)))
  out = np.asarray(Image.fromarray(image).resize(
      (nw, nh), Image.Resampling.LANCZOS))
  p = np.asarray(points, np.float64)
  q = np.stack([(p[:, 0] + 0.5) * nw / w - 0.5,
                (p[:, 1] + 0.5) * nh / h - 0.5], -1)
  return out, q


def moving_face_clip(image: np.ndarray, points: np.ndarray, width: int,
                     height: int, num_frames: int, fps: float,
                     path: Optional[MotionPath] = None,
                     background: int = 127):
  """Frames of a photo moved along ``path``, with the moved true points.

  Args:
    image: uint8 ``[H, W, 3]`` photo.
    points: ``[N, 2]`` its annotated points (0-based).
    width, height: frame size.
    num_frames, fps: frame ``k`` is at ``k / fps`` seconds.
    path: the motion (default :class:`MotionPath()`).
    background: grey level around the photo.

  Returns:
    ``(frames uint8 [T, height, width, 3], true points float32 [T, N, 2],
    times float64 [T])``.
  """
  path = path or MotionPath()
  box = crop.landmark_box(points)
  size0 = math.sqrt((box[2] - box[0]) * (box[3] - box[1]))
  # Pre-shrink (antialiased) so the warp itself never shrinks much.
  smallest = path.size * min(width, height) * (1 - abs(path.zoom)) / size0
  if smallest < 0.9:
    image, points = resize_face(image, points, smallest)
    box = crop.landmark_box(points)
    size0 = math.sqrt((box[2] - box[0]) * (box[3] - box[1]))
  centre = ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0)
  frames, truth, times = [], [], []
  for k in range(num_frames):
    t = k / fps
    x, y, size, angle = path.at(t, width, height)
    mat = similarity(centre, (x, y), size / size0, angle)
    frames.append(warp_image(image, mat, width, height, background))
    truth.append(apply_affine(mat, points))
    times.append(t)
  return (np.stack(frames), np.asarray(truth, np.float32),
          np.asarray(times, np.float64))


# ----------------------------------------------------------------- measures


def clip_errors(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
  """Per-frame inter-ocular NME of ``[T, N, 2]`` predictions (fractions)."""
  return metrics.nme(pred, truth, "inter_ocular")


def jitter(pred: np.ndarray, truth: np.ndarray) -> float:
  """Mean ``|R_{t+1} - 2 R_t + R_{t-1}| / d_t`` over frames and points,
  ``R = pred - truth`` (module docstring; a fraction of the inter-ocular
  distance). Needs ``T >= 3``."""
  pred = np.asarray(pred, np.float64)
  truth = np.asarray(truth, np.float64)
  if pred.shape != truth.shape or pred.ndim != 3 or len(pred) < 3:
    raise ValueError(f"jitter needs [T >= 3, N, 2] predictions and truth of "
                     f"one shape, got {pred.shape} and {truth.shape}")
  d = metrics.normalizing_distance(truth, "inter_ocular")
  r = pred - truth
  second = r[2:] - 2 * r[1:-1] + r[:-2]
  return float((np.linalg.norm(second, axis=-1) / d[1:-1, None]).mean())


def track_points(frames_faces: Sequence[Sequence], truth: np.ndarray
                 ) -> Tuple[np.ndarray, np.ndarray]:
  """The predicted points of the face nearest the truth in every frame.

  Returns ``(points float32 [T, N, 2], found bool [T])``; frames without a
  face get the truth (error 0) and ``found`` False, so count ``found``
  separately.
  """
  out = np.array(truth, np.float32)
  found = np.zeros(len(truth), bool)
  for k, faces in enumerate(frames_faces):
    if not faces:
      continue
    dist = [np.abs(f.points - truth[k]).mean() for f in faces]
    out[k] = faces[int(np.argmin(dist))].points
    found[k] = True
  return out, found
