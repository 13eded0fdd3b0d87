"""Tests of sgfan_jax.refine (Eq. 2 search + reconstruction).

``naive_refine`` is an independent, loop-by-loop numpy implementation
(similarity fits by ``np.linalg.lstsq`` on the 4-parameter linear system, not
the closed form used in refine.py); the JAX version must match it.
"""

import importlib.util

import numpy as np
import pytest

from sgfan_jax import ksvd
from sgfan_jax import refine


# ----------------------------------------------------------- naive reference
def _fit_similarity(src, dst, omega):
  """Weighted LS similarity src -> dst: returns the mapped src [N, 2]."""
  n = src.shape[0]
  a = np.zeros((2 * n, 4))
  rhs = np.zeros(2 * n)
  sw = np.zeros(2 * n)
  for i in range(n):
    x, y = src[i]
    a[2 * i] = [x, -y, 1.0, 0.0]
    a[2 * i + 1] = [y, x, 0.0, 1.0]
    rhs[2 * i], rhs[2 * i + 1] = dst[i]
    sw[2 * i] = sw[2 * i + 1] = np.sqrt(omega[i])
  sol = np.linalg.lstsq(a * sw[:, None], rhs * sw, rcond=None)[0]
  return (a @ sol).reshape(n, 2)


def naive_refine(points, weights, atoms, k, threshold, mode, ridge):
  """Eq. 2 search + least-squares reconstruction, one face at a time.

  Args:
    points [B, N, 2], weights [B, N], atoms [K, N, 2].
  Returns:
    (refined [B, N, 2], reconstruction [B, N, 2], neighbours [B, k]).
  """
  points = np.asarray(points, np.float64)
  atoms = np.asarray(atoms, np.float64)
  b_size, n, _ = points.shape
  refined = np.zeros_like(points)
  recons = np.zeros_like(points)
  nbrs = np.zeros((b_size, k), int)
  for b in range(b_size):
    s = points[b]
    w = np.clip(np.asarray(weights[b], np.float64), 0.0, 1.0)
    omega = w ** 2 + 1e-6
    omega = omega / omega.sum()
    centroid = (omega[:, None] * s).sum(axis=0)
    spread2 = sum(omega[i] * np.sum((s[i] - centroid) ** 2) for i in range(n))
    dists = []
    for atom in atoms:
      fitted = _fit_similarity(atom, s, omega)
      resid = sum(omega[i] * np.sum((fitted[i] - s[i]) ** 2)
                  for i in range(n))
      dists.append(resid / spread2)
    order = np.argsort(np.array(dists), kind="stable")[:k]
    nbrs[b] = order
    s_norm = (s - centroid) / np.sqrt(spread2)
    e = np.stack([_fit_similarity(atoms[j], s_norm, omega).reshape(-1)
                  for j in order], axis=1)                      # [2N, k]
    om2 = np.repeat(omega, 2)
    lhs = e.T @ np.diag(om2) @ e + ridge * np.eye(k)
    rhs = e.T @ (om2 * s_norm.reshape(-1)) + ridge / k
    coef = np.linalg.solve(lhs, rhs)
    recon = (e @ coef).reshape(n, 2) * np.sqrt(spread2) + centroid
    recons[b] = recon
    for i in range(n):
      if mode == "threshold":
        refined[b, i] = s[i] if weights[b, i] >= threshold else recon[i]
      else:
        refined[b, i] = w[i] * s[i] + (1 - w[i]) * recon[i]
  return refined, recons, nbrs


# ------------------------------------------------------------ synthetic data
def make_dictionary(rng, k=30, n=68):
  """k unit-norm centred 'face-like' shapes: a base shape plus variations."""
  base = rng.normal(size=(n, 2)) * [1.0, 1.3]
  atoms = base[None] + 0.25 * rng.normal(size=(k, n, 2))
  atoms -= atoms.mean(axis=1, keepdims=True)
  atoms /= np.linalg.norm(atoms, axis=(1, 2), keepdims=True)
  return atoms.astype(np.float32)


def similarity(shape, angle, scale, shift):
  c, s = np.cos(angle), np.sin(angle)
  rot = np.array([[c, -s], [s, c]])
  return scale * shape @ rot.T + np.asarray(shift)


def make_batch(rng, atoms, b_size=4):
  """Random combinations of atoms in random poses, one region displaced."""
  k_atoms, n, _ = atoms.shape
  pts, wts, gts = [], [], []
  for _ in range(b_size):
    coef = rng.dirichlet(np.ones(3))
    idx = rng.choice(k_atoms, 3, replace=False)
    gt = similarity(np.tensordot(coef, atoms[idx], axes=1),
                    rng.uniform(-0.5, 0.5), rng.uniform(100, 300),
                    rng.uniform(50, 200, size=2))
    w = rng.uniform(0.7, 1.0, size=n)
    occ = rng.choice(n, 12, replace=False)
    pred = gt + rng.normal(size=gt.shape) * 0.5
    pred[occ] += rng.normal(size=2) * 20.0
    w[occ] = rng.uniform(0.0, 0.3, size=12)
    pts.append(pred)
    wts.append(w)
    gts.append(gt)
  return (np.array(pts, np.float32), np.array(wts, np.float32),
          np.array(gts, np.float32))


@pytest.mark.parametrize("mode", ["threshold", "blend"])
def test_matches_naive_numpy(mode):
  rng = np.random.default_rng(0)
  atoms = make_dictionary(rng)
  pts, wts, _ = make_batch(rng, atoms)
  got = refine.refine_shapes_with_details(
      pts, wts, atoms, num_neighbors=6, weight_threshold=0.5, mode=mode,
      ridge=1e-2)
  ref, ref_recon, ref_nbrs = naive_refine(pts, wts, atoms, 6, 0.5, mode, 1e-2)
  np.testing.assert_array_equal(np.asarray(got["neighbors"]), ref_nbrs)
  scale = np.abs(pts).max()
  np.testing.assert_allclose(np.asarray(got["reconstruction"]), ref_recon,
                             atol=2e-4 * scale)
  np.testing.assert_allclose(np.asarray(got["refined"]), ref,
                             atol=2e-4 * scale)
  if mode == "threshold":  # reliable points are kept bit-exactly
    keep = wts >= 0.5
    np.testing.assert_array_equal(np.asarray(got["refined"])[keep], pts[keep])


def test_unoccluded_face_unchanged():
  rng = np.random.default_rng(1)
  atoms = make_dictionary(rng)
  pts, _, _ = make_batch(rng, atoms, b_size=3)
  wts = rng.uniform(0.8, 1.0, size=pts.shape[:2]).astype(np.float32)
  out = refine.refine_shapes(pts, wts, atoms, num_neighbors=5,
                             weight_threshold=0.5, mode="threshold",
                             ridge=1e-3)
  np.testing.assert_array_equal(np.asarray(out), pts)
  # Blend: an exact dictionary shape in any pose moves by < 0.5% of its size.
  face = similarity(atoms[7].astype(np.float64), 0.3, 150.0, [80.0, 60.0])
  face = face[None].astype(np.float32)
  w = np.full((1, face.shape[1]), 0.9, np.float32)
  out = refine.refine_shapes_with_details(face, w, atoms, num_neighbors=5,
                                          weight_threshold=0.5, mode="blend",
                                          ridge=1e-3)
  assert int(out["neighbors"][0, 0]) == 7
  size = np.ptp(face[0], axis=0).max()
  move = np.abs(np.asarray(out["refined"]) - face).max()
  assert move < 0.005 * size, move


def test_recovers_displaced_region_of_dictionary_shape():
  rng = np.random.default_rng(2)
  atoms = make_dictionary(rng)
  gt = similarity(atoms[4].astype(np.float64), -0.4, 200.0, [120.0, 90.0])
  pred = gt.copy()
  region = np.arange(48, 68)                  # 20 points ("mouth")
  pred[region] += [25.0, -15.0]
  w = np.ones(68)
  w[region] = 0.05
  out = refine.refine_shapes(pred[None].astype(np.float32),
                             w[None].astype(np.float32), atoms,
                             num_neighbors=5, weight_threshold=0.5,
                             mode="threshold", ridge=1e-4)
  err_before = np.linalg.norm(pred[region] - gt[region], axis=-1).mean()
  err_after = np.linalg.norm(np.asarray(out)[0, region] - gt[region],
                             axis=-1).mean()
  assert err_before == pytest.approx(np.hypot(25, 15))
  assert err_after < 0.05 * err_before, (err_before, err_after)


def test_similarity_equivariance():
  rng = np.random.default_rng(3)
  atoms = make_dictionary(rng)
  pts, wts, _ = make_batch(rng, atoms, b_size=2)
  kw = dict(num_neighbors=5, weight_threshold=0.5, mode="blend", ridge=1e-2)
  out = np.asarray(refine.refine_shapes(pts, wts, atoms, **kw))
  moved = similarity(pts.astype(np.float64), 1.1, 0.37, [-40.0, 13.0])
  out_moved = np.asarray(refine.refine_shapes(moved.astype(np.float32), wts,
                                              atoms, **kw))
  expect = similarity(out.astype(np.float64), 1.1, 0.37, [-40.0, 13.0])
  np.testing.assert_allclose(out_moved, expect, atol=1e-3 * np.abs(expect).max())


def test_dictionary_is_an_argument_and_accepts_shape_dictionary():
  rng = np.random.default_rng(4)
  atoms = make_dictionary(rng)
  pts, wts, _ = make_batch(rng, atoms, b_size=2)
  kw = dict(num_neighbors=4, weight_threshold=0.5, mode="threshold",
            ridge=1e-2)
  dic = ksvd.ShapeDictionary(atoms=atoms, mean_shape=atoms.mean(0))
  a = np.asarray(refine.refine_shapes(pts, wts, dic, **kw))
  b = np.asarray(refine.refine_shapes(pts, wts, atoms, **kw))
  np.testing.assert_allclose(a, b, rtol=1e-6)
  other = make_dictionary(np.random.default_rng(5))
  c = np.asarray(refine.refine_shapes(pts, wts, other, **kw))
  assert np.abs(c - a).max() > 1e-2      # a different dictionary is used


def test_bad_arguments():
  rng = np.random.default_rng(6)
  atoms = make_dictionary(rng, k=5)
  pts, wts, _ = make_batch(rng, atoms, b_size=1)
  with pytest.raises(ValueError, match="mode"):
    refine.refine_shapes(pts, wts, atoms, num_neighbors=3,
                         weight_threshold=0.5, mode="median", ridge=0.1)
  with pytest.raises(ValueError, match="num_neighbors"):
    refine.refine_shapes(pts, wts, atoms, num_neighbors=6,
                         weight_threshold=0.5, mode="blend", ridge=0.1)
  with pytest.raises(Exception):
    refine.refine_shapes(pts, wts[:, :10], atoms, num_neighbors=3,
                         weight_threshold=0.5, mode="blend", ridge=0.1)


# ------------------------------------------------------------ real 300-W data
def _experiment_module(repo_root):
  spec = importlib.util.spec_from_file_location(
      "occlusion_experiment", repo_root / "scripts" / "occlusion_experiment.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_small_occlusion_experiment_meets_targets(shared_data, repo_root):
  """A reduced occlusion experiment on real 300-W shapes (see the script)."""
  from configs import default as default_config  # pylint: disable=g-import-not-at-top
  exp = _experiment_module(repo_root)
  train, common, challenging = exp.load_data(shared_data)
  # face300w train split (2,012 training faces - 101 val), 300-W common
  # subset (HELEN 330 + LFPW 224 test) and iBUG.
  assert train.shape == (1911, 68, 2), train.shape
  assert common.shape == (554, 68, 2), common.shape
  assert challenging.shape == (135, 68, 2), challenging.shape
  cfg = default_config.get_config().refine
  cfg.ksvd_iterations = 3          # reduced build for test time
  rows, _ = exp.run(train, {"common": common[::3]}, cfg, seed=1,
                    modes=("threshold", "blend"))
  for r in rows:  # 'threshold' keeps untouched points; 'blend' moves them
    assert r["disp_px_after"] <= 0.5 * r["disp_px_before"], r
    assert r["untouched_move_mean"] < 0.01, r
    assert r["nme_after"] < r["nme_before"], r
  assert rows[0]["untouched_move_max"] == 0.0, rows[0]


def test_occlusion_experiment_dictionary_shapes_are_the_train_split(
    shared_data, repo_root):
  """The dictionary shapes: training folders minus face300w:val, no test face."""
  from benchmarks import compare_300w  # pylint: disable=g-import-not-at-top
  from sgfan_jax import pts_io  # pylint: disable=g-import-not-at-top
  exp = _experiment_module(repo_root)
  root = shared_data / "300w"
  train = exp.train_faces(root)
  val = set(compare_300w.val_faces(root))
  everything = {rel for rel, _, _ in pts_io.find_faces(
      root, ("afw", "helen/trainset", "lfpw/trainset"))}
  assert len(everything) == 2012 and len(val) == 101
  assert set(train) == everything - val
  assert list(train) == sorted(train)
  tests = {rel for rel, _, _ in pts_io.find_faces(root, exp.COMMON_SUBSETS)}
  assert len(tests) == 554 and not tests & set(train)
  # The arrays are the .pts of those faces, in that order.
  first = next(iter(train))
  np.testing.assert_array_equal(train[first],
                                pts_io.read_pts(root / (first + ".pts")))
  stacked, _, _ = exp.load_data(shared_data)
  np.testing.assert_array_equal(stacked, np.stack(list(train.values())))
