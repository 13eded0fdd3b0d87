"""Head pose (yaw, pitch, roll) from 68 landmarks and a generic 3-D face.

  yaw, pitch, roll = pose.head_pose(face.points, face.confidence,
                                    face.occluded)      # = face.pose
  fit = pose.fit_weak_perspective(points, pose.mean_shape_3d(), weights)

The 3-D face is ``data/mean_shape_3d.json``: a ``[68, 3]`` mean shape of the
iBUG-68 points built by ``scripts/build_mean_shape_3d.py`` from the 2-D
300-W training annotations alone (rigid factorisation, Tomasi and Kanade
1992, refined by alternating least squares; see the script and the JSON's
``note``). No third-party 3-D face model is used.

**Model frame** (also the camera frame of a frontal face): ``x`` to the
image right (the subject's left), ``y`` down, ``z`` away from the camera
(right-handed, the OpenCV camera axes); the face looks toward ``-z`` (the
nose tip has the smallest ``z``). Unit: the distance between the outer eye
corners (points 36 and 45, 0-based); origin: the centroid of the 68 points.

**Camera model**: weak perspective (scaled orthographic),
``p_j = s * R[:2] @ X_j + t`` for image points ``p_j`` (0-based ``(x, y)``
pixels, pixel-centre convention, docs/DESIGN.md), with ``R`` the head's
rotation in the camera frame.

**Angles** (degrees), ``R = Rz(roll) @ Ry(-yaw) @ Rx(-pitch)`` with the
right-handed elementary rotations ``Rx, Ry, Rz`` of the frame above:

* ``yaw > 0``: the subject turns to *their* left (the nose moves to the
  image right; the image-left cheek shows more);
* ``pitch > 0``: the subject looks up (the nose moves up in the image);
* ``roll > 0``: the head turns clockwise as seen in the image (in-plane;
  the image-right eye is lower). Roll is applied last, about the camera
  axis, so rotating a photo in-plane by ``a`` degrees clockwise adds ``a``
  to roll and leaves yaw and pitch unchanged.

All three are 0 for the mean face of the 300-W training set, which defines
"frontal" (yaw and roll are 0 by its mirror symmetry; pitch 0 is the
average head pitch of those photos).

**Fit**: weighted least squares over ``(R, s, t)``, minimising
``sum_j w_j |s R[:2] X_j + t - p_j|^2``: an affine least-squares start
projected onto scaled rotations (SVD), then Levenberg-Marquardt steps
(rotation updated as ``R @ expm([w]x)``), run from that start and from its
depth-mirrored twin ``D R D`` (``D = diag(1, 1, -1)``, the pose a nearly
flat face cannot tell apart from the first), keeping the lower cost.
Pure numpy, batched over faces.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Optional, Tuple

import numpy as np

from sgfan_jax import layouts

MEAN_SHAPE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                               "data", "mean_shape_3d.json")
# Weight of a point flagged occluded, relative to its confidence (the fit
# weights are confidence * (1 or OCCLUDED_WEIGHT)): occluded points keep a
# little say (their refined positions are plausible) but cannot pull the fit.
OCCLUDED_WEIGHT = 0.1
# Floor on the weights so that a face of all-zero confidences still fits.
MIN_WEIGHT = 1e-3
# Levenberg-Marquardt: most iterations, initial damping; a face is done when
# an accepted step lowers its cost by less than LM_TOLERANCE (relative) or
# its damping exceeds LM_MAX_DAMPING (no step lowers the cost).
LM_ITERATIONS = 50
LM_DAMPING = 1e-3
LM_TOLERANCE = 1e-10
LM_MAX_DAMPING = 1e8

_D = np.diag([1.0, 1.0, -1.0])


class PoseError(ValueError):
  """Head pose asked of points it cannot be computed for."""


@dataclasses.dataclass
class PoseFit:
  """A weak-perspective fit (leading batch axes as the points').

  Attributes:
    rotation: ``[..., 3, 3]`` head rotation ``R`` (det +1).
    scale: ``[...]`` pixels per model unit ``s``.
    translation: ``[..., 2]`` ``t`` (pixels).
    rms: ``[...]`` weighted RMS reprojection error (pixels),
      ``sqrt(sum w |r|^2 / sum w)``.
  """
  rotation: np.ndarray
  scale: np.ndarray
  translation: np.ndarray
  rms: np.ndarray

  @property
  def angles(self) -> np.ndarray:
    """``[..., 3]`` (yaw, pitch, roll) in degrees."""
    return angles_from_rotation(self.rotation)


# ------------------------------------------------------------------ angles


def rotation_matrix(yaw, pitch, roll) -> np.ndarray:
  """``R = Rz(roll) @ Ry(-yaw) @ Rx(-pitch)`` (degrees; broadcast) ->
  float64 ``[..., 3, 3]``."""
  y, p, r = np.broadcast_arrays(*(np.radians(np.asarray(a, np.float64))
                                  for a in (yaw, pitch, roll)))
  a, b = -y, -p                 # right-handed angles about y and x
  ca, sa, cb, sb = np.cos(a), np.sin(a), np.cos(b), np.sin(b)
  cr, sr = np.cos(r), np.sin(r)
  zero, one = np.zeros_like(y), np.ones_like(y)
  rz = np.stack([np.stack([cr, -sr, zero], -1), np.stack([sr, cr, zero], -1),
                 np.stack([zero, zero, one], -1)], -2)
  ry = np.stack([np.stack([ca, zero, sa], -1), np.stack([zero, one, zero], -1),
                 np.stack([-sa, zero, ca], -1)], -2)
  rx = np.stack([np.stack([one, zero, zero], -1),
                 np.stack([zero, cb, -sb], -1),
                 np.stack([zero, sb, cb], -1)], -2)
  return rz @ ry @ rx


def angles_from_rotation(rotation: np.ndarray) -> np.ndarray:
  """Inverse of :func:`rotation_matrix`: ``[..., 3, 3]`` -> ``[..., 3]``
  (yaw, pitch, roll) degrees, yaw in [-90, 90], pitch and roll in
  (-180, 180]."""
  r = np.asarray(rotation, np.float64)
  # Third row of Rz Ry(a) Rx(b) = (-sin a, cos a sin b, cos a cos b).
  yaw = np.degrees(np.arcsin(np.clip(r[..., 2, 0], -1.0, 1.0)))
  pitch = np.degrees(np.arctan2(-r[..., 2, 1], r[..., 2, 2]))
  # First column = (cos r cos a, sin r cos a, -sin a).
  roll = np.degrees(np.arctan2(r[..., 1, 0], r[..., 0, 0]))
  return np.stack([yaw, pitch, roll], -1)


def project(shape3d: np.ndarray, rotation: np.ndarray, scale,
            translation) -> np.ndarray:
  """Weak perspective ``s R[:2] X + t``: ``[N, 3]`` -> ``[..., N, 2]``."""
  x = np.asarray(shape3d, np.float64)
  r = np.asarray(rotation, np.float64)
  s = np.asarray(scale, np.float64)[..., None, None]
  t = np.asarray(translation, np.float64)[..., None, :]
  return s * np.einsum("...ij,nj->...ni", r[..., :2, :], x) + t


# ------------------------------------------------------------------- model


@functools.lru_cache(maxsize=1)
def _load_mean_shape(path: str) -> np.ndarray:
  with open(path) as f:
    data = json.load(f)
  shape = np.asarray(data["points"], np.float64)
  if shape.shape != (68, 3) or not np.isfinite(shape).all():
    raise PoseError(f"{path}: expected 68 finite (x, y, z) points, got "
                    f"shape {shape.shape}")
  return shape


def mean_shape_3d() -> np.ndarray:
  """The shipped generic face: float64 ``[68, 3]`` (a copy)."""
  return _load_mean_shape(MEAN_SHAPE_PATH).copy()


# --------------------------------------------------------------------- fit


def _skew(v: np.ndarray) -> np.ndarray:
  """``[..., 3]`` -> ``[..., 3, 3]`` cross-product matrices ``[v]x``."""
  z = np.zeros(v.shape[:-1])
  return np.stack([np.stack([z, -v[..., 2], v[..., 1]], -1),
                   np.stack([v[..., 2], z, -v[..., 0]], -1),
                   np.stack([-v[..., 1], v[..., 0], z], -1)], -2)


def _expm_so3(w: np.ndarray) -> np.ndarray:
  """Rodrigues: ``[..., 3]`` rotation vectors -> ``[..., 3, 3]``."""
  theta = np.linalg.norm(w, axis=-1)[..., None, None]
  k = _skew(w)
  small = theta < 1e-8
  safe = np.where(small, 1.0, theta)
  a = np.where(small, 1.0, np.sin(safe) / safe)
  b = np.where(small, 0.5, (1.0 - np.cos(safe)) / safe**2)
  return np.eye(3) + a * k + b * (k @ k)


def _cost(points, shape3d, w, rot, s, t):
  r = project(shape3d, rot, s, t) - points
  return np.sum(w * np.sum(r * r, -1), -1)


def _affine_start(points, shape3d, w):
  """Weighted affine LS ``p ~ A X + t`` projected onto scaled rotations."""
  sw = w.sum(-1, keepdims=True)[..., None]                  # [B, 1, 1]
  xm = np.einsum("bn,nj->bj", w, shape3d)[:, None] / sw     # [B, 1, 3]
  pm = np.einsum("bn,bnj->bj", w, points)[:, None] / sw     # [B, 1, 2]
  xc = shape3d[None] - xm
  pc = points - pm
  cxx = np.einsum("bn,bni,bnj->bij", w, xc, xc)
  cpx = np.einsum("bn,bni,bnj->bij", w, pc, xc)             # [B, 2, 3]
  eps = 1e-9 * np.trace(cxx, axis1=-2, axis2=-1)[..., None, None]
  a = np.linalg.solve(cxx + eps * np.eye(3), cpx.transpose(0, 2, 1))
  a = a.transpose(0, 2, 1)                                  # [B, 2, 3]
  u, sv, vt = np.linalg.svd(a, full_matrices=False)         # vt [B, 2, 3]
  r2 = u @ vt
  rot = np.concatenate([r2, np.cross(r2[:, 0], r2[:, 1])[:, None]], 1)
  s = sv.mean(-1)
  t = pm[:, 0] - s[:, None] * np.einsum("bij,bj->bi", r2, xm[:, 0])
  return rot, s, t


def _levenberg_marquardt(points, shape3d, w, rot, s, t):
  """LM over (rotation increment w, s, t); returns refined (rot, s, t)."""
  lam = np.full(len(points), LM_DAMPING)
  done = np.zeros(len(points), bool)
  cost = _cost(points, shape3d, w, rot, s, t)
  skew_x = _skew(shape3d)                                   # [N, 3, 3]
  for _ in range(LM_ITERATIONS):
    rx = np.einsum("bij,nj->bni", rot, shape3d)             # [B, N, 3]
    res = s[:, None, None] * rx[..., :2] + t[:, None] - points
    # d/dw (R expm([w]x) X) = -R [X]x, first two rows.
    j_w = -s[:, None, None, None] * np.einsum(
        "bij,njk->bnik", rot[:, :2], skew_x)                 # [B, N, 2, 3]
    j_s = rx[..., :2, None]                                   # [B, N, 2, 1]
    j_t = np.broadcast_to(np.eye(2), j_s.shape[:2] + (2, 2))
    jac = np.concatenate([j_w, j_s, j_t], -1)                 # [B, N, 2, 6]
    h = np.einsum("bn,bnki,bnkj->bij", w, jac, jac)
    g = np.einsum("bn,bnki,bnk->bi", w, jac, res)
    diag = np.einsum("bii->bi", h)
    damped = h + (lam[:, None] * np.maximum(diag, 1e-12))[..., None] * np.eye(6)
    step = -np.linalg.solve(damped, g[..., None])[..., 0]
    new_rot = rot @ _expm_so3(step[:, :3])
    new_s, new_t = s + step[:, 3], t + step[:, 4:]
    new_cost = _cost(points, shape3d, w, new_rot, new_s, new_t)
    better = (new_cost <= cost) & (new_s > 0) & ~done
    gain = np.where(better, (cost - new_cost) / np.maximum(cost, 1e-300), 0)
    rot = np.where(better[:, None, None], new_rot, rot)
    s = np.where(better, new_s, s)
    t = np.where(better[:, None], new_t, t)
    cost = np.where(better, new_cost, cost)
    lam = np.where(better, lam / 3.0, lam * 4.0)
    done |= ((better & (gain < LM_TOLERANCE)) | (lam > LM_MAX_DAMPING) |
             (cost <= 1e-24))
    if done.all():
      break
  # Re-orthonormalise (accumulated round-off of the increments).
  u, _, vt = np.linalg.svd(rot)
  return u @ vt, s, t


def fit_weak_perspective(points: np.ndarray, shape3d: np.ndarray,
                         weights: Optional[np.ndarray] = None) -> PoseFit:
  """Weighted weak-perspective pose of ``shape3d`` seen as ``points``.

  Args:
    points: ``[N, 2]`` or ``[B, N, 2]`` image points (0-based ``(x, y)``,
      pixel centres).
    shape3d: ``[N, 3]`` model points (frame of the module docstring).
    weights: ``[N]`` / ``[B, N]`` non-negative weights (None = all 1).

  Returns:
    :class:`PoseFit` with the batch shape of ``points``.
  """
  p = np.asarray(points, np.float64)
  x = np.asarray(shape3d, np.float64)
  single = p.ndim == 2
  if single:
    p = p[None]
  if p.ndim != 3 or p.shape[-1] != 2 or x.shape != (p.shape[1], 3):
    raise PoseError(f"points {np.shape(points)} and shape3d {x.shape} do not "
                    "match ([N, 2] or [B, N, 2] with a [N, 3] shape)")
  w = (np.ones(p.shape[:2]) if weights is None
       else np.broadcast_to(np.asarray(weights, np.float64), p.shape[:2]))
  if not (np.isfinite(p).all() and np.isfinite(w).all()) or (w < 0).any():
    raise PoseError("points and weights must be finite, weights >= 0")
  w = np.maximum(w, MIN_WEIGHT * np.maximum(w.max(-1, keepdims=True), 1e-12))
  rot, s, t = _affine_start(p, x, w)
  fits = []
  for start in (rot, _D @ rot @ _D):
    fits.append(_levenberg_marquardt(p, x, w, start, s.copy(), t.copy()))
  costs = np.stack([_cost(p, x, w, *f) for f in fits])
  pick = np.argmin(costs, 0)
  rot = np.where((pick == 0)[:, None, None], fits[0][0], fits[1][0])
  s = np.where(pick == 0, fits[0][1], fits[1][1])
  t = np.where((pick == 0)[:, None], fits[0][2], fits[1][2])
  rms = np.sqrt(np.min(costs, 0) / w.sum(-1))
  if single:
    rot, s, t, rms = rot[0], s[0], t[0], rms[0]
  return PoseFit(rot, s, t, rms)


def point_weights(confidence: Optional[np.ndarray],
                  occluded: Optional[np.ndarray]) -> Optional[np.ndarray]:
  """Fit weights ``confidence * (OCCLUDED_WEIGHT if occluded else 1)``
  (``[N]``; None when both are None)."""
  if confidence is None and occluded is None:
    return None
  w = (np.ones(np.shape(occluded)) if confidence is None
       else np.clip(np.asarray(confidence, np.float64), 0.0, None))
  if occluded is not None:
    w = w * np.where(np.asarray(occluded, bool), OCCLUDED_WEIGHT, 1.0)
  return w


def head_pose(points: np.ndarray, confidence: Optional[np.ndarray] = None,
              occluded: Optional[np.ndarray] = None,
              layout: str = "ibug68") -> Tuple[float, float, float]:
  """(yaw, pitch, roll) in degrees of one face's ``[68, 2]`` iBUG points.

  Args:
    points: ``[68, 2]`` 0-based ``(x, y)`` image points.
    confidence: ``[68]`` per-point confidence (weights; None = equal).
    occluded: ``[68]`` bool; occluded points' weights are multiplied by
      ``OCCLUDED_WEIGHT``.
    layout: the points' layout name; only 'ibug68' has a 3-D model.

  Raises:
    PoseError: another layout or point count.
  """
  p = np.asarray(points, np.float64)
  if layout != layouts.IBUG_68.name or p.shape != (68, 2):
    raise PoseError(f"head pose needs the 68 iBUG points (layout 'ibug68'), "
                    f"got layout {layout!r} with points of shape {p.shape}")
  fit = fit_weak_perspective(p, mean_shape_3d(),
                             point_weights(confidence, occluded))
  yaw, pitch, roll = fit.angles
  return float(yaw), float(pitch), float(roll)
