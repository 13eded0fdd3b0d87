"""The One Euro filter, the pose + shape smoother and the tracker's rules.

The filter is compared with a line-by-line transcription of the paper's
pseudo-code (Casiez, Roussel and Vogel, CHI 2012, Algorithm 1) in plain
Python scalars, and with closed forms: an exponential filter's step response
``1 - (1 - alpha)^n`` and its noise reduction ``alpha / (2 - alpha)`` in
variance. The tracker runs the shipped model on frames made from a bundled
300-W test photo (tests/test_video.py measures its accuracy).
"""

import math

import numpy as np
import pytest

from sgfan_jax import tracking
from sgfan_jax import video_eval
from sgfan_jax.landmarker import Landmarker
from tests import photo_fixtures as pf
from tests import video_fixtures as vf


class PaperLowPass:
  """The paper's LowPassFilter, as printed."""

  def __init__(self):
    self.first_time = True
    self.hatxprev = None

  def filter(self, x, alpha):
    if self.first_time:
      self.first_time = False
      hatx = x
    else:
      hatx = alpha * x + (1 - alpha) * self.hatxprev
    self.hatxprev = hatx
    return hatx


class PaperOneEuro:
  """The paper's OneEuroFilter (Algorithm 1), for one scalar signal, with
  the rate taken from the time stamps and the speed divided by ``scale``."""

  def __init__(self, mincutoff, beta, dcutoff):
    self.first_time = True
    self.mincutoff, self.beta, self.dcutoff = mincutoff, beta, dcutoff
    self.xfilt, self.dxfilt = PaperLowPass(), PaperLowPass()
    self.tprev = None

  @staticmethod
  def alpha(rate, cutoff):
    tau = 1.0 / (2 * math.pi * cutoff)
    te = 1.0 / rate
    return 1.0 / (1.0 + tau / te)

  def filter(self, x, t, scale=1.0):
    if self.first_time:
      self.first_time = False
      dx = 0.0
      rate = 1.0
    else:
      rate = 1.0 / (t - self.tprev)
      dx = (x - self.xfilt.hatxprev) * rate
    self.tprev = t
    edx = self.dxfilt.filter(dx, self.alpha(rate, self.dcutoff))
    cutoff = self.mincutoff + self.beta * abs(edx) / scale
    return self.xfilt.filter(x, self.alpha(rate, cutoff))


@pytest.mark.parametrize("beta,scale", [(0.0, 1.0), (0.7, 1.0), (5.0, 40.0)])
def test_one_euro_matches_the_paper(beta, scale):
  rng = np.random.default_rng(0)
  n = 60
  # Variable frame rate: periods between 10 and 60 ms.
  times = np.cumsum(rng.uniform(0.01, 0.06, n))
  signal = np.cumsum(rng.normal(0, 3, (n, 4, 2)), 0) + rng.normal(0, 1, (
      n, 4, 2))
  ours = tracking.OneEuroFilter(1.3, beta, 0.8)
  got = np.stack([ours(x, t, scale) for x, t in zip(signal, times)])
  paper = [[PaperOneEuro(1.3, beta, 0.8) for _ in range(2)] for _ in range(4)]
  want = np.array([[[paper[i][j].filter(float(x[i, j]), t, scale)
                     for j in range(2)] for i in range(4)]
                   for x, t in zip(signal, times)])
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)
  # The filter does something: the output is not the input.
  assert np.abs(got[1:] - signal[1:]).max() > 0.1


def test_step_response_is_the_exponential_filter_and_beta_removes_lag():
  period, cutoff = 1 / 30, 1.0
  t = np.arange(40) * period
  x = np.where(np.arange(40) >= 10, 1.0, 0.0)
  slow = tracking.OneEuroFilter(cutoff, 0.0, 1.0)
  out = np.array([slow(v, s) for v, s in zip(x, t)])
  alpha = 1 / (1 + 1 / (2 * math.pi * cutoff) / period)
  n = np.arange(1, 31)
  np.testing.assert_allclose(out[10:], 1 - (1 - alpha) ** n, rtol=1e-12)
  np.testing.assert_allclose(out[:10], 0.0)
  # beta = 0 (a plain low-pass at 1 Hz) lags: 10 frames after the step it
  # is still short of 90 %; with beta the cutoff rises on the jump and the
  # output is there within two frames.
  assert out[19] < 0.9
  fast = tracking.OneEuroFilter(cutoff, 10.0, 1.0)
  out_fast = np.array([fast(v, s) for v, s in zip(x, t)])
  assert out_fast[11] > 0.9, out_fast[10:14]
  assert np.abs(out_fast[20:] - 1).max() < 0.01


def test_noisy_constant_jitter_reduction():
  rng = np.random.default_rng(1)
  period = 1 / 30
  x = 5.0 + rng.normal(0, 1.0, (3000, 10))
  t = np.arange(len(x)) * period
  f = tracking.OneEuroFilter(1.0, 0.0, 1.0)
  out = np.array([f(v, s) for v, s in zip(x, t)])[100:]
  alpha = 1 / (1 + 1 / (2 * math.pi) / period)
  ratio = out.var() / x[100:].var()
  # An exponential filter's output variance: alpha / (2 - alpha) of white
  # noise's (0.099 here).
  assert ratio == pytest.approx(alpha / (2 - alpha), rel=0.1)
  assert abs(out.mean() - 5.0) < 0.05
  # With beta the cutoff rises with the noise's apparent speed (here about
  # 30 units/s: std 1 per 1/30 s), still far below the input's variance.
  g = tracking.OneEuroFilter(1.0, 0.05, 1.0)
  out_b = np.array([g(v, s) for v, s in zip(x, t)])[100:]
  assert ratio < out_b.var() / x[100:].var() < 0.4


def test_repeated_time_stamp_and_bad_parameters():
  f = tracking.OneEuroFilter(1.0, 1.0, 1.0)
  a = f(np.array([1.0, 2.0]), 0.0)
  b = f(np.array([3.0, 5.0]), 0.1)
  np.testing.assert_array_equal(f(np.array([9.0, 9.0]), 0.1), b)
  np.testing.assert_array_equal(a, [1.0, 2.0])
  with pytest.raises(ValueError, match="min_cutoff > 0"):
    tracking.OneEuroFilter(0.0, 1.0, 1.0)
  with pytest.raises(ValueError, match="beta >= 0"):
    tracking.OneEuroFilter(1.0, -1.0, 1.0)


def _moving_shape(num=40, noise=0.0, seed=0):
  """A face shape under a known similarity path (+ optional noise)."""
  _, pts = pf.sample_face()
  rng = np.random.default_rng(seed)
  centre = pts.mean(0)
  times = np.arange(num) / 25.0
  frames = []
  for t in times:
    mat = video_eval.similarity(centre, (200 + 60 * np.sin(3 * t),
                                         150 + 40 * np.cos(2 * t)),
                                0.8 + 0.2 * np.sin(t), 15 * np.sin(2.5 * t))
    frames.append(video_eval.apply_affine(mat, pts))
  truth = np.asarray(frames)
  return truth + rng.normal(0, noise, truth.shape), truth, times


def test_face_smoother_follows_head_motion_without_lag():
  """Shape constant, pose moving: the shape filter changes nothing, and
  with a pass-through pose filter the output is the input exactly."""
  points, truth, times = _moving_shape()
  s = tracking.FaceSmoother(0.5, 0.0, 1.0, 1e12, 0.0)
  out = np.stack([s(p, t) for p, t in zip(points, times)])
  np.testing.assert_allclose(out, truth, atol=1e-6)
  # The same slow filter on the raw points lags behind the moving head.
  raw = tracking.OneEuroFilter(0.5, 0.0, 1.0)
  lagged = np.stack([raw(p, t) for p, t in zip(points, times)])
  assert np.abs(lagged - truth).max() > 10.0


def test_face_smoother_reduces_jitter_of_a_moving_noisy_face():
  points, truth, times = _moving_shape(noise=1.0)
  s = tracking.FaceSmoother(1.0, 10.0, 1.0, 10.0, 100.0)
  out = np.stack([s(p, t) for p, t in zip(points, times)])
  raw_jitter = video_eval.jitter(points, truth)
  raw_error = video_eval.clip_errors(points, truth).mean()
  assert video_eval.jitter(out, truth) < 0.6 * raw_jitter
  assert video_eval.clip_errors(out, truth).mean() < 1.05 * raw_error


def test_match_boxes_and_inside_fraction():
  tracks = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], np.float32)
  dets = np.array([[21, 1, 31, 11], [100, 100, 110, 110], [1, 0, 11, 10]],
                  np.float32)
  # IoU([0,0,10,10], [1,0,11,10]) = 90 / 110; the far box matches nothing.
  assert tracking.match_boxes(tracks, dets, 0.3) == [(0, 2), (1, 0)]
  assert tracking.match_boxes(tracks, dets, 0.9) == []
  assert tracking.match_boxes(tracks[:0], dets, 0.3) == []
  # A 10 x 10 box half out of a 20 x 20 frame (pixel area [-0.5, 19.5]).
  assert tracking.inside_fraction([14.5, 0, 24.5, 10], 20, 20) == 0.5
  assert tracking.inside_fraction([30, 30, 40, 40], 20, 20) == 0.0
  assert tracking.inside_fraction([2, 2, 8, 8], 20, 20) == 1.0


@pytest.fixture(scope="module")
def lm():
  return vf.shipped_landmarker()


def test_ids_two_faces_a_face_that_leaves_and_one_that_comes_back(lm):
  """Two faces side by side keep ids 0 and 1; when the right one slides
  out of the frame its track ends; when it comes back it gets a new id."""
  rgb, pts = pf.sample_face(pf.FACES[0])
  small, spts = video_eval.resize_face(rgb, pts, 0.5)       # 192 px photos
  h, w = small.shape[:2]
  width, height = 420, 200
  frames = []
  right_x = [220] * 3 + [300, 380, 460, 460] + [300, 220, 220]
  for x in right_x:
    canvas = np.full((height, width, 3), 127, np.uint8)
    canvas[4:4 + h, 10:10 + w] = small
    x0, x1 = x, min(x + w, width)
    if x1 > x0:
      canvas[4:4 + h, x0:x1] = small[:, :x1 - x0]
    frames.append(canvas)
  out = list(lm.track(frames, detect_every=2))
  left_truth = spts + [10, 4]
  left_ids = set()
  for faces in out:
    left = min(faces, key=lambda f: np.abs(f.points - left_truth).mean())
    assert np.abs(left.points - left_truth).mean() < 10
    left_ids.add(left.face_id)
  assert len(left_ids) == 1
  ids = [sorted(f.face_id for f in faces) for faces in out]
  assert ids[0] == [0, 1] and ids[1] == [0, 1] and ids[2] == [0, 1]
  # Gone (less than half of its box inside) by the frame at x = 380 or 460.
  assert len(out[5]) == 1 and len(out[6]) == 1
  # Back in the frame: a new id, not 1 again.
  assert len(out[-1]) == 2
  assert set(ids[-1]) - left_ids and max(ids[-1]) >= 2, ids


class _FalseFirst:
  """BlazeFace, with a false detection on the grey background put first."""
  name = "false_first"

  def __init__(self):
    from sgfan_jax import detectors  # pylint: disable=g-import-not-at-top
    self.real = detectors.get_detector("blazeface")

  def detect(self, image):
    boxes, scores = self.real.detect(image)
    false = np.array([[2, 2, 70, 70]], np.float32)
    return (np.concatenate([false, boxes]),
            np.concatenate([np.float32([0.99]), scores]))


def test_rejected_detections_do_not_shift_faces_onto_other_tracks(lm):
  """Face verification on detection frames: the false box (grey canvas,
  first in the detector's list) is dropped, and the real face keeps its id
  and its own points on every frame."""
  rgb, pts = pf.sample_face(pf.FACES[0])
  small, spts = video_eval.resize_face(rgb, pts, 0.5)
  h, w = small.shape[:2]
  canvas = np.full((h + 90, w + 90, 3), 127, np.uint8)
  canvas[80:80 + h, 80:80 + w] = small
  truth = spts + [80, 80]
  verified = Landmarker(lm.bundle, detector=_FalseFirst(), batch_size=1)
  assert verified.min_face_score > 0
  out = list(verified.track([canvas] * 6, detect_every=2))
  for faces in out:
    assert len(faces) == 1
    assert faces[0].face_id == 0
    assert np.abs(faces[0].points - truth).mean() < 10
