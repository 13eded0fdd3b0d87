"""Tests for sgfan_jax.metrics: hand-computed cases and naive references."""

import math

import numpy as np
import pytest

from sgfan_jax import layouts
from sgfan_jax import metrics

# Eye points of a hand-made 68-point face (iBUG order, 0-based): left eye
# 36 (outer corner) .. 41 centred on (10, 20), right eye 42 (inner) .. 47
# centred on (50, 20); outer corners 36 = (0, 20) and 45 = (60, 20).
_LEFT_EYE = [(0, 20), (5, 15), (15, 15), (20, 20), (15, 25), (5, 25)]
_RIGHT_EYE = [(40, 20), (45, 15), (55, 15), (60, 20), (55, 25), (45, 25)]
INTER_PUPIL = 40.0
INTER_OCULAR = 60.0


def face68(rng=None):
  """[68, 2] face with known eye geometry; landmark box is [0, 60] x [0, 80]."""
  rng = rng or np.random.default_rng(0)
  pts = rng.uniform([5, 5], [55, 75], size=(68, 2))
  pts[36:42] = _LEFT_EYE
  pts[42:48] = _RIGHT_EYE
  pts[0] = (2, 0)       # top of the landmark box
  pts[8] = (30, 80)     # bottom (chin)
  return pts


def naive_nme(pred, gt, left, right, corners, visible=None):
  """Loop reference: returns (inter_pupil, inter_ocular) per-image lists."""
  ip, io = [], []
  for i in range(len(gt)):
    lx = sum(gt[i][j][0] for j in left) / len(left)
    ly = sum(gt[i][j][1] for j in left) / len(left)
    rx = sum(gt[i][j][0] for j in right) / len(right)
    ry = sum(gt[i][j][1] for j in right) / len(right)
    d_ip = math.hypot(lx - rx, ly - ry)
    a, b = corners
    d_io = math.hypot(gt[i][a][0] - gt[i][b][0], gt[i][a][1] - gt[i][b][1])
    errs = []
    for j in range(len(gt[i])):
      if visible is None or visible[i][j]:
        errs.append(math.hypot(pred[i][j][0] - gt[i][j][0],
                               pred[i][j][1] - gt[i][j][1]))
    if errs:
      ip.append(sum(errs) / len(errs) / d_ip)
      io.append(sum(errs) / len(errs) / d_io)
    else:
      ip.append(float("nan"))
      io.append(float("nan"))
  return np.array(ip), np.array(io)


# ------------------------------------------------------------------ NME


def test_nme_hand_computed_shift():
  gt = np.stack([face68(), face68(np.random.default_rng(1))])
  pred = gt + np.array([3.0, 4.0])        # every point off by 5 px
  np.testing.assert_allclose(metrics.nme(pred, gt, "inter_pupil"),
                             [5 / INTER_PUPIL] * 2, rtol=1e-12)
  np.testing.assert_allclose(metrics.nme(pred, gt, "inter_ocular"),
                             [5 / INTER_OCULAR] * 2, rtol=1e-12)
  # Landmark box 60 x 80 -> sqrt(4800).
  np.testing.assert_allclose(metrics.nme(pred, gt, "bbox"),
                             [5 / math.sqrt(4800)] * 2, rtol=1e-12)
  boxes = np.array([[0, 0, 100, 25], [10, 10, 30, 30]], float)
  np.testing.assert_allclose(metrics.nme(pred, gt, "bbox", boxes=boxes),
                             [5 / 50, 5 / 20], rtol=1e-12)


def test_nme_single_point_error_and_masks():
  gt = face68()[None]
  pred = gt.copy()
  pred[0, 30] += (6.0, 8.0)               # one point off by 10 px
  np.testing.assert_allclose(metrics.nme(pred, gt, "inter_pupil"),
                             [10 / 68 / INTER_PUPIL])
  visible = np.ones((1, 68), bool)
  visible[0, 30] = False
  visible[0, 5] = False
  # Visible-only: the erroneous point is excluded.
  np.testing.assert_allclose(
      metrics.nme(pred, gt, "inter_pupil", visible=visible), [0.0])
  # Occluded-only: mean over points 5 and 30 = (0 + 10) / 2.
  np.testing.assert_allclose(
      metrics.nme(pred, gt, "inter_ocular", visible=~visible),
      [5 / INTER_OCULAR])
  # No selected point -> NaN, and 0/1 integer masks are accepted.
  none = np.zeros((1, 68), np.int32)
  assert np.isnan(metrics.nme(pred, gt, "inter_pupil", visible=none)[0])


def test_nme_matches_naive_loop_reference():
  rng = np.random.default_rng(3)
  gt = np.stack([face68(rng) for _ in range(7)])
  gt = gt * rng.uniform(0.5, 3, (7, 1, 1)) + rng.uniform(-50, 50, (7, 1, 2))
  pred = gt + rng.normal(0, 2, gt.shape)
  visible = rng.uniform(size=(7, 68)) > 0.3
  visible[2] = False
  lay = layouts.get_layout("ibug68")
  for vis in (None, visible):
    ip, io = naive_nme(pred.tolist(), gt.tolist(), lay.left_eye, lay.right_eye,
                       lay.outer_eye_corners, vis)
    np.testing.assert_allclose(
        metrics.nme(pred, gt, "inter_pupil", visible=vis), ip, rtol=1e-10)
    np.testing.assert_allclose(
        metrics.nme(pred, gt, "inter_ocular", visible=vis, layout="ibug68"),
        io, rtol=1e-10)
  assert np.isnan(metrics.nme(pred, gt, visible=visible)[2])


def test_nme_uses_layout_eye_points_cofw29():
  # COFW-29: pupils are points 16/17, outer eye corners 8/9.
  rng = np.random.default_rng(4)
  gt = rng.uniform(0, 100, size=(2, 29, 2))
  gt[:, 16] = (30, 40)
  gt[:, 17] = (70, 40)     # inter-pupil 40
  gt[:, 8] = (10, 40)
  gt[:, 9] = (90, 40)      # inter-ocular 80
  pred = gt + np.array([0.0, 2.0])
  np.testing.assert_allclose(metrics.nme(pred, gt, "inter_pupil"),
                             [2 / 40] * 2)
  np.testing.assert_allclose(metrics.nme(pred, gt, "inter_ocular",
                                         layout="cofw29"), [2 / 80] * 2)
  lay = layouts.get_layout("cofw29")
  ip, io = naive_nme(pred.tolist(), gt.tolist(), lay.left_eye, lay.right_eye,
                     lay.outer_eye_corners)
  np.testing.assert_allclose(metrics.nme(pred, gt, "inter_pupil"), ip)
  np.testing.assert_allclose(metrics.nme(pred, gt, "inter_ocular"), io)


def test_nme_invariant_to_similarity_transform():
  rng = np.random.default_rng(5)
  gt = np.stack([face68(rng) for _ in range(4)])
  pred = gt + rng.normal(0, 3, gt.shape)
  angle, scale, shift = 0.7, 2.5, np.array([13.0, -7.0])
  rot = scale * np.array([[np.cos(angle), -np.sin(angle)],
                          [np.sin(angle), np.cos(angle)]])
  tf = lambda p: p @ rot.T + shift
  for norm in ("inter_pupil", "inter_ocular"):
    np.testing.assert_allclose(metrics.nme(tf(pred), tf(gt), norm),
                               metrics.nme(pred, gt, norm), rtol=1e-10)
  # The landmark-box normaliser is only scale/translation invariant.
  np.testing.assert_allclose(
      metrics.nme(pred * 3 + shift, gt * 3 + shift, "bbox"),
      metrics.nme(pred, gt, "bbox"), rtol=1e-10)
  assert not np.allclose(metrics.nme(tf(pred), tf(gt), "bbox"),
                         metrics.nme(pred, gt, "bbox"))


@pytest.mark.parametrize("kwargs, message", [
    (dict(pred=np.zeros((2, 68, 3))), "shape"),
    (dict(pred=np.zeros((3, 68, 2))), "differ"),
    (dict(pred=np.full((2, 68, 2), np.nan)), "NaN"),
    (dict(normalization="inter_eye"), "unknown normalization"),
    (dict(visible=np.ones((2, 67), bool)), "visible"),
    (dict(visible=np.full((2, 68), 2)), "boolean"),
    (dict(layout="cofw29"), "has 29 points"),
    (dict(boxes=np.zeros((3, 4)), normalization="bbox"), "boxes"),
])
def test_nme_bad_input_raises(kwargs, message):
  gt = np.stack([face68(), face68()])
  args = dict(pred=gt + 1, gt=gt, normalization="inter_pupil")
  args.update(kwargs)
  with pytest.raises(ValueError, match=message):
    metrics.nme(**args)


def test_nme_degenerate_normaliser_raises():
  gt = face68()[None].copy()
  gt[0, 45] = gt[0, 36]
  with pytest.raises(ValueError, match="zero inter_ocular"):
    metrics.nme(gt, gt, "inter_ocular")
  with pytest.raises(ValueError, match="No landmark layout with 5"):
    metrics.nme(np.zeros((1, 5, 2)), np.ones((1, 5, 2)))


# ------------------------------------------------- failure / CED / AUC

VALUES = np.array([0.015, 0.035, 0.055, 0.1, 0.12, np.nan])


def test_failure_success_ced_hand_made_list():
  # Five valid images; only 0.12 is > 0.1 (0.1 itself is a success).
  assert metrics.failure_rate(VALUES, 0.1) == pytest.approx(1 / 5)
  assert metrics.success_rate(VALUES, 0.1) == pytest.approx(4 / 5)
  assert metrics.failure_rate(VALUES, 0.05) == pytest.approx(3 / 5)
  assert metrics.count_valid(VALUES) == 5
  assert metrics.mean_nme(VALUES) == pytest.approx(0.325 / 5)
  np.testing.assert_allclose(
      metrics.ced(VALUES, [0.0, 0.035, 0.1, 1.0]), [0, 2 / 5, 4 / 5, 1])
  # inf is a valid failed image, not ignored.
  assert metrics.failure_rate([0.01, np.inf], 0.1) == 0.5


def test_auc_hand_computed():
  vals = VALUES[:4]      # 0.015, 0.035, 0.055, 0.1 (+ no NaN)
  # Exact: mean(max(0, 0.08 - e)) / 0.08 = (0.065 + 0.045 + 0.025) / 4 / 0.08
  expected = 0.135 / 4 / 0.08
  assert expected == pytest.approx(0.421875)
  assert metrics.exact_auc(vals, 0.08) == pytest.approx(expected)
  # Trapezoid on a 0.01 grid: CED = 0,0,.25,.25,.5,.5,.75,.75,.75 at
  # t = 0..0.08 -> sum of means 3.375 * 0.01 / 0.08.
  assert metrics.auc(vals, 0.08, step=0.01) == pytest.approx(
      3.375 * 0.01 / 0.08)
  assert metrics.auc(VALUES, 0.08) == pytest.approx(
      metrics.exact_auc(np.append(vals, 0.12), 0.08), abs=1e-4 / 0.16 + 1e-12)
  # Perfect predictions -> AUC 1; all failures -> 0.
  assert metrics.auc(np.zeros(3), 0.08) == pytest.approx(1.0)
  assert metrics.auc(np.full(3, 0.5), 0.08) == 0.0


def test_auc_against_fine_grid_reference():
  rng = np.random.default_rng(6)
  vals = rng.gamma(2.0, 0.02, size=500)
  step = 1e-3
  fine = np.linspace(0, 0.08, 80001)
  reference = np.mean(metrics.ced(vals, fine))      # Riemann, 1e-6 spacing
  exact = metrics.exact_auc(vals, 0.08)
  assert reference == pytest.approx(exact, abs=2e-5)
  # Trapezoid error bound step / (2 threshold).
  assert abs(metrics.auc(vals, 0.08, step=step) - exact) <= step / 0.16 + 1e-12
  assert metrics.auc(vals, 0.08) == pytest.approx(exact, abs=1e-4 / 0.16)


def test_aggregates_nan_policy_and_errors():
  all_nan = np.full(3, np.nan)
  assert np.isnan(metrics.mean_nme(all_nan))
  assert np.isnan(metrics.failure_rate(all_nan, 0.1))
  assert np.isnan(metrics.auc(all_nan, 0.08))
  assert np.all(np.isnan(metrics.ced(all_nan, [0.1, 0.2])))
  assert metrics.count_valid(all_nan) == 0
  with pytest.raises(ValueError, match="divide"):
    metrics.auc(VALUES, 0.08, step=0.03)
  with pytest.raises(ValueError, match=">= 0"):
    metrics.failure_rate([-0.1, 0.2], 0.1)
  with pytest.raises(ValueError, match=r"\[M\]"):
    metrics.mean_nme(np.zeros((2, 2)))
  with pytest.raises(ValueError, match="positive"):
    metrics.failure_rate(VALUES, 0.0)


def test_summarize_consistent():
  s = metrics.summarize(VALUES, 0.1, 0.08)
  assert s["num_images"] == 6 and s["num_valid"] == 5
  assert s["failure_rate"] == pytest.approx(0.2)
  assert s["success_rate"] == pytest.approx(0.8)
  assert s["auc"] == pytest.approx(metrics.auc(VALUES, 0.08))
  assert s["nme"] == pytest.approx(0.065)


# ------------------------------------------------------------- occlusion


def test_occlusion_detection_hand_case():
  weights = np.array([[0.1, 0.9, 0.3, 0.8], [0.2, 0.7, 0.6, 0.05]])
  visible = np.array([[False, True, True, False], [False, True, True, True]])
  r = metrics.occlusion_detection(weights, visible, 0.5)
  # Predicted occluded (w < 0.5): (0,0) (0,2) (1,0) (1,3).
  # Truly occluded: (0,0) (0,3) (1,0). TP=2, FP=2, FN=1, TN=3.
  assert (r["true_positives"], r["false_positives"], r["false_negatives"],
          r["true_negatives"]) == (2, 2, 1, 3)
  assert r["precision"] == pytest.approx(0.5)
  assert r["recall"] == pytest.approx(2 / 3)
  assert r["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
  assert r["accuracy"] == pytest.approx(5 / 8)
  # Nothing predicted occluded -> precision undefined.
  r0 = metrics.occlusion_detection(weights, visible, 0.0)
  assert np.isnan(r0["precision"]) and r0["recall"] == 0.0
  assert np.isnan(r0["f1"])
  with pytest.raises(ValueError, match="visible"):
    metrics.occlusion_detection(weights, visible[:, :3], 0.5)
  with pytest.raises(ValueError, match="NaN"):
    metrics.occlusion_detection(np.full((2, 4), np.nan), visible, 0.5)


def test_occlusion_pr_curve():
  rng = np.random.default_rng(7)
  visible = rng.uniform(size=(20, 68)) > 0.25
  weights = np.where(visible, rng.uniform(0.3, 1.0, visible.shape),
                     rng.uniform(0.0, 0.6, visible.shape))
  curve = metrics.occlusion_pr_curve(weights, visible)
  t = curve["thresholds"]
  assert t.shape == (101,)
  assert np.all(np.diff(curve["recall"]) >= 0)
  assert curve["recall"][-1] == 1.0          # last threshold flags all
  assert curve["precision"][-1] == pytest.approx(np.mean(~visible))
  for k in (10, 50, 90):
    r = metrics.occlusion_detection(weights, visible, t[k])
    assert curve["precision"][k] == pytest.approx(r["precision"])
    assert curve["recall"][k] == pytest.approx(r["recall"])
  assert 0.5 < curve["average_precision"] <= 1.0
  # Perfect separation: AP = 1.
  perfect = metrics.occlusion_pr_curve(np.where(visible, 1.0, 0.0), visible,
                                       thresholds=[0.5, 2.0])
  assert perfect["average_precision"] == pytest.approx(1.0)
  np.testing.assert_allclose(perfect["recall"], [1.0, 1.0])
  np.testing.assert_allclose(perfect["precision"], [1.0, np.mean(~visible)])


# ------------------------------------------------- layouts and real data


@pytest.mark.parametrize("name", ["ibug68", "cofw29", "wflw98"])
def test_normalisation_points_are_mirror_consistent(name):
  # Flipping must swap the two eyes and the two outer corners, so NME is
  # unchanged when a face and its prediction are mirrored together.
  lay = layouts.get_layout(name)
  perm = lay.flip_permutation
  assert sorted(perm[list(lay.left_eye)]) == sorted(lay.right_eye)
  a, b = lay.outer_eye_corners
  assert perm[a] == b and perm[b] == a
  rng = np.random.default_rng(8)
  gt = rng.uniform(0, 100, (3, lay.num_points, 2))
  gt[:, list(lay.left_eye), 0] -= 60     # keep the eyes apart
  pred = gt + rng.normal(0, 2, gt.shape)
  mirror = lambda p: np.stack([200 - p[..., 0], p[..., 1]], -1)[:, perm]
  for norm in ("inter_pupil", "inter_ocular"):
    np.testing.assert_allclose(metrics.nme(mirror(pred), mirror(gt), norm),
                               metrics.nme(pred, gt, norm), rtol=1e-10)


def test_real_annotations_eye_geometry(shared_data):
  """Layout eye points on real 300-W / COFW-68 shapes: left eye on the image
  left, and inter-pupil / inter-ocular close to the usual ~0.7-0.8 ratio."""
  import glob  # pylint: disable=g-import-not-at-top
  import scipy.io  # pylint: disable=g-import-not-at-top
  from sgfan_jax import pts_io  # pylint: disable=g-import-not-at-top
  files = sorted(glob.glob(str(shared_data / "300w/helen/testset/*.pts")))[:50]
  shapes = [pts_io.read_pts(f) for f in files]
  for i in range(1, 51):
    mat = scipy.io.loadmat(
        str(shared_data / f"cofw68/test_annotations/{i}_points.mat"))
    shapes.append(mat["Points"] - 1.0)
  gt = np.stack(shapes)
  lay = layouts.get_layout("ibug68")
  left_x = gt[:, list(lay.left_eye), 0].mean(axis=1)
  right_x = gt[:, list(lay.right_eye), 0].mean(axis=1)
  assert np.mean(left_x < right_x) > 0.95
  ratio = (metrics.normalizing_distance(gt, "inter_pupil")
           / metrics.normalizing_distance(gt, "inter_ocular"))
  assert 0.65 < np.median(ratio) < 0.85
  assert np.all(ratio < 1.0)


def test_flag_threshold_sweep_hand_computed():
  from sgfan_jax import metrics as m  # pylint: disable=g-import-not-at-top
  clean = np.array([[0.9, 0.8, 0.3, 0.6]])            # 1 face, 4 points
  occ = np.array([[0.1, 0.2, 0.7, 0.45], [0.35, 0.9, 0.05, 0.6]])
  mask = np.array([[True, True, False, False], [True, False, True, False]])
  rows = m.flag_threshold_sweep(clean, occ, mask, [0.25, 0.4, 0.5])
  # t=0.25: clean flags none; occ flags 0.1, 0.2, 0.05 (all occluded): P 1,
  #   R 3/4.  t=0.4: clean flags 0.3 (1/4); occ adds 0.35 (occluded): P 1,
  #   R 1.  t=0.5: occ adds 0.45 (visible): P 4/5, R 1.
  expect = [(0.25, 0.0, 1.0, 0.75, 2 * 0.75 / 1.75),
            (0.4, 0.25, 1.0, 1.0, 1.0),
            (0.5, 0.25, 0.8, 1.0, 2 * 0.8 / 1.8)]
  np.testing.assert_allclose(np.array(rows), np.array(expect), rtol=1e-9)
  assert m.choose_flag_threshold(rows, 0.3)[0] == 0.4
  assert m.choose_flag_threshold(rows, 0.1)[0] == 0.25
  with pytest.raises(ValueError, match="no threshold"):
    m.choose_flag_threshold(rows[1:], 0.1)


def test_choose_refine_threshold_weighs_clean_and_occluded_equally():
  # Means: 0.5 -> (0.050 + 0.110) / 2 = 0.080; 0.3 -> (0.046 + 0.112) / 2 =
  # 0.079 (best: the lower clean error outweighs the worse occluded one);
  # 0.1 -> (0.044 + 0.130) / 2 = 0.087.
  rows = [(0.5, 0.050, 0.110), (0.3, 0.046, 0.112), (0.1, 0.044, 0.130)]
  assert metrics.choose_refine_threshold(rows)[0] == 0.3
  # A tie goes to the higher threshold.
  assert metrics.choose_refine_threshold([(0.2, 0.25, 0.5), (0.4, 0.5, 0.25)]
                                   )[0] == 0.4
  with pytest.raises(ValueError, match="no refinement thresholds"):
    metrics.choose_refine_threshold([])
