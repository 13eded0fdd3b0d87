"""Head pose (sgfan_jax/pose.py): angles, the weighted fit, the 3-D face.

Synthetic points are the shipped 3-D face projected at known angles (weak
perspective), so the true pose is known exactly; the angle convention is
checked against scipy's Euler angles and against what the face visibly does
(the nose moves right for yaw > 0, up for pitch > 0; the image-right eye
drops for roll > 0); real 300-W shapes check the sign of yaw against the
jaw asymmetry, a measurement that does not use the 3-D face.
"""

import importlib.util
import itertools

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from sgfan_jax import layouts
from sgfan_jax import pose
from sgfan_jax import pts_io
from sgfan_jax.landmarker import Face
from tests.conftest import REPO_ROOT

GRID = list(itertools.product((-60, -30, 0, 30, 60), (-30, 0, 30),
                              (-45, 0, 45)))
SCALE = 100.0                    # px between the outer eye corners
TRANSLATION = (320.0, 240.0)


@pytest.fixture(scope="module")
def shape():
  return pose.mean_shape_3d()


def _grid_points(shape, grid=GRID):
  angles = np.asarray(grid, np.float64)
  rot = pose.rotation_matrix(*angles.T)
  return angles, pose.project(shape, rot, np.full(len(angles), SCALE),
                              np.tile(TRANSLATION, (len(angles), 1)))


def _angle_error(fit_angles, true_angles):
  return np.abs((fit_angles - true_angles + 180.0) % 360.0 - 180.0)


# ------------------------------------------------------------ conventions


def test_rotation_matrix_matches_scipy_euler_and_round_trips():
  angles = np.asarray(GRID + [(12.5, -7.25, 170.0), (-89.0, 10.0, -120.0)])
  rot = pose.rotation_matrix(*angles.T)
  # R = Rz(roll) Ry(-yaw) Rx(-pitch): extrinsic x, then y, then z.
  ref = Rotation.from_euler(
      "xyz", np.stack([-angles[:, 1], -angles[:, 0], angles[:, 2]], 1),
      degrees=True).as_matrix()
  np.testing.assert_allclose(rot, ref, atol=1e-12)
  np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-12)
  np.testing.assert_allclose(pose.angles_from_rotation(rot), angles,
                             atol=1e-9)


def test_angle_signs_are_what_the_face_does(shape):
  def project(yaw=0.0, pitch=0.0, roll=0.0):
    return pose.project(shape, pose.rotation_matrix(yaw, pitch, roll), SCALE,
                        TRANSLATION)

  front = project()
  centre = lambda p: p.mean(0)
  # Nose tip (30) relative to the face's centroid.
  nose = lambda p: p[30] - centre(p)
  assert abs(nose(front)[0]) < 1e-9
  assert nose(project(yaw=20))[0] > nose(front)[0] + 5      # image right
  assert nose(project(pitch=20))[1] < nose(front)[1] - 5    # up
  eyes = lambda p: (p[36:42].mean(0), p[42:48].mean(0))
  left, right = eyes(project(roll=20))
  assert right[1] > left[1] + 5                              # right eye lower
  assert np.degrees(np.arctan2(right[1] - left[1], right[0] - left[0])) == (
      pytest.approx(20.0, abs=1.5))
  # Yaw > 0 turns the subject to their left: the image-left cheek (jaw 0-3,
  # the subject's right) shows more than the image-right one.
  p = project(yaw=30)
  assert p[30, 0] - p[0, 0] > 1.3 * (p[16, 0] - p[30, 0])


def test_in_plane_rotation_of_the_photo_only_changes_roll(shape):
  angles, pts = _grid_points(shape, [(25, -15, 5), (-40, 20, -30)])
  a = np.radians(33.0)
  rot2 = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
  turned = (pts - 50.0) @ rot2.T + 7.0
  base = pose.fit_weak_perspective(pts, shape).angles
  fit = pose.fit_weak_perspective(turned, shape).angles
  np.testing.assert_allclose(fit[:, :2], base[:, :2], atol=1e-6)
  np.testing.assert_allclose(fit[:, 2], base[:, 2] + 33.0, atol=1e-6)


# --------------------------------------------------------------- the fit


def test_noise_free_grid_recovers_angles_scale_translation(shape):
  angles, pts = _grid_points(shape)
  fit = pose.fit_weak_perspective(pts, shape)
  err = _angle_error(fit.angles, angles)
  print(f"noise-free grid ({len(GRID)} poses): max angle error "
        f"{err.max():.2e} deg")
  assert err.max() < 0.5
  assert err.max() < 1e-4         # it is an exact fit
  np.testing.assert_allclose(fit.scale, SCALE, rtol=1e-6)
  np.testing.assert_allclose(fit.translation,
                             np.tile(TRANSLATION, (len(GRID), 1)), atol=1e-4)
  assert fit.rms.max() < 1e-6


@pytest.mark.parametrize("sigma, mean_bound, max_bound",
                         [(1.0, 0.5, 2.0), (3.0, 1.5, 5.0)])
def test_gaussian_noise_error_is_bounded(shape, sigma, mean_bound,
                                         max_bound):
  rng = np.random.default_rng(0)
  angles, pts = _grid_points(shape)
  reps = 4
  noisy = np.repeat(pts, reps, 0) + rng.normal(0, sigma, (len(pts) * reps,
                                                          68, 2))
  fit = pose.fit_weak_perspective(noisy, shape)
  err = _angle_error(fit.angles, np.repeat(angles, reps, 0))
  mean, worst = err.mean(0), err.max(0)
  print(f"noise sigma {sigma} px (eye corners {SCALE:.0f} px apart), "
        f"{len(err)} fits: mean abs error yaw/pitch/roll "
        f"{np.round(mean, 2).tolist()} deg, max {np.round(worst, 2).tolist()}")
  assert mean.max() < mean_bound
  assert worst.max() < max_bound


def test_occluded_points_down_weighted_by_confidence(shape):
  """An occluder hides one region (20 of 68 points, 29 %: the image-left
  or image-right side of the face, or the mouth and chin) and the points
  under it come out far off (pushed 40 px outward, 0.4 eye-corner
  distances, plus 5 px noise), with low confidence."""
  rng = np.random.default_rng(1)
  grid = [g for g in GRID if abs(g[0]) <= 30]
  angles, pts = _grid_points(shape, grid)
  r = lambda a, b: list(range(a, b + 1))
  regions = [r(0, 8) + r(17, 21) + r(36, 41), r(8, 16) + r(22, 26) + r(42, 47),
             r(5, 11) + r(48, 60)]
  n_occ = 20
  assert all(len(set(g)) == n_occ for g in regions)
  errs_w, errs_u = [], []
  for k in range(len(pts)):
    occ = np.zeros(68, bool)
    occ[regions[k % 3]] = True
    shifted = pts[k].copy()
    out = shifted[occ].mean(0) - shifted.mean(0)
    shifted[occ] += rng.normal(0, 5, (n_occ, 2)) + 40 * out / np.linalg.norm(
        out)
    conf = np.where(occ, rng.uniform(0.0, 0.15, 68), rng.uniform(0.6, 1, 68))
    w = pose.point_weights(conf, occ)
    errs_w.append(_angle_error(
        pose.fit_weak_perspective(shifted, shape, w).angles, angles[k]))
    errs_u.append(_angle_error(
        pose.fit_weak_perspective(shifted, shape).angles, angles[k]))
  errs_w, errs_u = np.array(errs_w), np.array(errs_u)
  print(f"{n_occ} of 68 points displaced 40 px, {len(grid)} poses: weighted "
        f"mean/max error {errs_w.mean():.2f}/{errs_w.max():.2f} deg, "
        f"unweighted {errs_u.mean():.2f}/{errs_u.max():.2f} deg")
  assert errs_w.mean() < 0.5 and errs_w.max() < 3.0
  assert errs_u.mean() > 3.0 and errs_u.max() > 10.0
  assert errs_u.mean() > 10 * errs_w.mean()


def test_weights_enter_as_a_weighted_least_squares(shape):
  # Integer weights = repeated points (an independent statement of the
  # weighted objective).
  rng = np.random.default_rng(2)
  angles, pts = _grid_points(shape, [(20, 10, -5)])
  noisy = pts[0] + rng.normal(0, 4, (68, 2))
  w = rng.integers(1, 4, 68)
  fit_w = pose.fit_weak_perspective(noisy, shape, w)
  rep = np.repeat(np.arange(68), w)
  fit_r = pose.fit_weak_perspective(noisy[rep], shape[rep])
  np.testing.assert_allclose(fit_w.angles, fit_r.angles, atol=1e-5)
  np.testing.assert_allclose(fit_w.rms, fit_r.rms, rtol=1e-6)


# ------------------------------------------------------- Face / real data


def test_face_pose_property_and_json(shape):
  pts = pose.project(shape, pose.rotation_matrix(25, -10, 8), 80.0,
                     (150, 150)).astype(np.float32)
  conf = np.full(68, 0.9, np.float32)
  face = Face(points=pts, raw_points=pts, confidence=conf,
              occluded=np.zeros(68, bool), box=np.zeros(4, np.float32),
              box_score=None, face_box=np.zeros(4, np.float32),
              layout="ibug68")
  np.testing.assert_allclose(face.pose, (25, -10, 8), atol=1e-3)
  d = face.to_dict()
  assert (d["yaw"], d["pitch"], d["roll"]) == pytest.approx((25, -10, 8),
                                                           abs=0.006)
  cofw = Face(points=np.zeros((29, 2), np.float32),
              raw_points=np.zeros((29, 2), np.float32),
              confidence=np.ones(29, np.float32),
              occluded=np.zeros(29, bool), box=np.zeros(4, np.float32),
              box_score=None, face_box=np.zeros(4, np.float32))
  with pytest.raises(pose.PoseError, match="ibug68.*cofw29"):
    _ = cofw.pose
  d = cofw.to_dict()
  assert d["yaw"] is None and d["pitch"] is None and d["roll"] is None


def test_bad_inputs_raise_pose_error(shape):
  with pytest.raises(pose.PoseError, match="68 iBUG"):
    pose.head_pose(np.zeros((67, 2)))
  with pytest.raises(pose.PoseError, match="finite"):
    pose.fit_weak_perspective(np.full((68, 2), np.nan), shape)
  with pytest.raises(pose.PoseError, match="do not match"):
    pose.fit_weak_perspective(np.zeros((68, 2)), shape[:10])


def test_real_yaw_sign_agrees_with_jaw_asymmetry(shared_data):
  """300-W faces that are clearly turned: the side of the face between the
  nose tip and the jaw's end is wider on the side the face turns from."""
  paths = sorted((shared_data / "300w" / "afw").glob("*.pts"))
  shapes = np.stack([pts_io.read_pts(p) for p in paths])
  left = shapes[:, 30, 0] - shapes[:, 0, 0]      # image-left half width
  right = shapes[:, 16, 0] - shapes[:, 30, 0]
  ratio = np.log(np.maximum(left, 1e-3) / np.maximum(right, 1e-3))
  turned = np.abs(ratio) > np.log(1.5)
  fit = pose.fit_weak_perspective(shapes[turned], pose.mean_shape_3d())
  yaw = fit.angles[:, 0]
  agree = np.sign(yaw) == np.sign(ratio[turned])
  print(f"afw: {turned.sum()} of {len(paths)} faces with half-width ratio > "
        f"1.5; yaw sign agrees on {agree.sum()}; |yaw| median "
        f"{np.median(np.abs(yaw)):.1f} deg")
  assert turned.sum() >= 30
  assert agree.all(), np.asarray(paths)[turned][~agree]
  assert np.median(np.abs(yaw)) > 15.0


# ------------------------------------------------------------ the 3-D face


def test_mean_shape_file_frame(shape):
  assert shape.shape == (68, 3)
  np.testing.assert_allclose(shape.mean(0), 0.0, atol=1e-5)
  assert np.linalg.norm(shape[45] - shape[36]) == pytest.approx(1.0, abs=1e-5)
  mirrored = shape[layouts.IBUG_68.flip_permutation] * [-1, 1, 1]
  np.testing.assert_allclose(mirrored, shape, atol=1e-5)
  assert shape[30, 2] == shape[:, 2].min()            # nose toward -z
  assert shape[45, 0] > 0 and shape[8, 1] > shape[27, 1]   # x right, y down


def _load_build_script():
  spec = importlib.util.spec_from_file_location(
      "build_mean_shape_3d", REPO_ROOT / "scripts" / "build_mean_shape_3d.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_factorisation_recovers_a_known_rigid_shape(shape):
  """The build script's method on synthetic views of a known shape: the
  recovered shape equals it up to a rotation and the depth mirror."""
  build = _load_build_script()
  rng = np.random.default_rng(3)
  n = 150
  angles = np.stack([rng.uniform(-50, 50, n), rng.uniform(-25, 25, n),
                     rng.uniform(-30, 30, n)], 1)
  views = pose.project(shape, pose.rotation_matrix(*angles.T),
                       rng.uniform(50, 150, n), rng.uniform(0, 300, (n, 2)))
  views = build.normalise(views + rng.normal(0, 0.3, views.shape))
  got = build.tomasi_kanade(views)
  fit = pose.fit_weak_perspective(views, got)
  got = build.solve_points(views, fit)
  errs = []
  for mirror in (1.0, -1.0):
    g = got * [1, 1, mirror]
    g = g - g.mean(0)
    t = shape - shape.mean(0)
    u, _, vt = np.linalg.svd(t.T @ g)
    r = u @ np.diag([1, 1, np.linalg.det(u @ vt)]) @ vt
    g = g @ r.T
    g *= np.sum(g * t) / np.sum(g * g)
    errs.append(np.sqrt(np.mean(np.sum((g - t)**2, 1))))
  print(f"factorisation of 150 noisy views: shape RMS error {min(errs):.4f} "
        "eye-corner units")
  assert min(errs) < 0.02
