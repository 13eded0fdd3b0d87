"""Aligned face chips (sgfan_jax/chips.py), Face.chip and predict --chips.

* the similarity fit against a generic least-squares solve;
* the pixel convention end to end: Gaussian markers drawn at five points
  land (centroid) on the template coordinates of the chip;
* a real 300-W photo moved by a known similarity with scipy's
  ``ndimage.affine_transform`` (an independent warper): the chip transform
  follows it exactly and the two chips agree to a few grey levels;
* the shipped model on a rotated photo: the *annotated* eyes of its chip are
  level and on the template;
* refined points (not raw) are what a chip uses.
"""

import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from sgfan_jax import chips
from sgfan_jax import crop
from sgfan_jax import predict
from sgfan_jax.landmarker import Face
from sgfan_jax.landmarker import Landmarker
from tests import photo_fixtures as pf


def _similarity(angle_deg, scale, tx, ty):
  a = np.radians(angle_deg)
  return np.array([[scale * np.cos(a), -scale * np.sin(a), tx],
                   [scale * np.sin(a), scale * np.cos(a), ty]])


def _apply(m, p):
  return np.asarray(p, np.float64) @ m[:, :2].T + m[:, 2]


def _scipy_warp(rgb, m, out_hw):
  """Output[q] = bilinear input at m^-1 q (pixel-centre index coordinates,
  scipy's own convention); x/y swapped to scipy's (row, col)."""
  inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))
  swap = np.array([[0, 1], [1, 0]])
  mat = swap @ inv[:2, :2] @ swap
  off = swap @ inv[:2, 2]
  chans = [ndimage.affine_transform(rgb[..., c].astype(np.float64), mat,
                                    offset=off, output_shape=out_hw, order=1,
                                    mode="constant", cval=0.0)
           for c in range(3)]
  return np.clip(np.round(np.stack(chans, -1)), 0, 255).astype(np.uint8)


# ------------------------------------------------------------- geometry


def test_template_numbers_and_scaling():
  t = chips.template(112)
  np.testing.assert_array_equal(t, [[38.2946, 51.6963], [73.5318, 51.5014],
                                    [56.0252, 71.7366], [41.5493, 92.3655],
                                    [70.7299, 92.2041]])
  # DESIGN.md resize rule x -> (x + 1/2) T / S - 1/2.
  np.testing.assert_allclose(chips.template(224)[0],
                             [38.2946 * 2 + 0.5, 51.6963 * 2 + 0.5])
  np.testing.assert_allclose(chips.template(56)[4],
                             [70.7299 / 2 - 0.25, 92.2041 / 2 - 0.25])
  for bad in (0, -3, 11.5, True, "112"):
    with pytest.raises(chips.ChipError, match="positive integer"):
      chips.template(bad)


def test_five_points_from_the_68():
  rng = np.random.default_rng(0)
  p = rng.uniform(0, 300, (68, 2))
  five = chips.five_points(p)
  np.testing.assert_allclose(five[0], p[36:42].mean(0))   # image-left eye
  np.testing.assert_allclose(five[1], p[42:48].mean(0))
  np.testing.assert_array_equal(five[2:], p[[30, 48, 54]])
  with pytest.raises(chips.ChipError, match=r"68 iBUG.*\(29, 2\)"):
    chips.five_points(np.zeros((29, 2)))


def _generic_similarity(src, dst):
  """Least squares over (a, b, tx, ty) of [[a, -b, tx], [b, a, ty]]."""
  rows, rhs = [], []
  for (x, y), (u, v) in zip(src, dst):
    rows += [[x, -y, 1, 0], [y, x, 0, 1]]
    rhs += [u, v]
  a, b, tx, ty = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
  return np.array([[a, -b, tx], [b, a, ty]])


def test_umeyama_equals_generic_least_squares():
  rng = np.random.default_rng(1)
  for trial in range(30):
    src = rng.uniform(-100, 300, (5, 2))
    if trial % 3 == 0:       # a mirrored target: best fit is no reflection
      dst = src * [-1, 1] + rng.normal(0, 5, (5, 2))
    else:
      dst = _apply(_similarity(rng.uniform(-180, 180), rng.uniform(0.2, 3),
                               *rng.uniform(-50, 50, 2)), src)
      dst += rng.normal(0, 3, (5, 2))
    m = chips.similarity_transform(src, dst)
    np.testing.assert_allclose(m, _generic_similarity(src, dst), atol=1e-8)
    assert m[0, 0] == pytest.approx(m[1, 1]) and m[0, 1] == pytest.approx(
        -m[1, 0])                                     # det > 0 form
  exact = _similarity(-37.0, 1.8, 12.0, -4.0)
  src = rng.uniform(0, 100, (5, 2))
  np.testing.assert_allclose(chips.similarity_transform(src,
                                                        _apply(exact, src)),
                             exact, atol=1e-10)
  with pytest.raises(chips.ChipError, match="coincide"):
    chips.similarity_transform(np.ones((5, 2)), src)


@pytest.mark.parametrize("size, source_scale", [(112, 1.7), (224, 1.3),
                                                (112, 0.45), (64, 4.0)])
def test_markers_land_on_the_template(size, source_scale):
  """A Gaussian blob at each of five source points; the intensity centroid
  of each in the chip is the template point (sub-pixel: a half-pixel slip
  of the convention would show as ~0.2-0.5 px)."""
  t = chips.template(size)
  src = _apply(_similarity(23.0, source_scale, 150.3, 170.8), t - t.mean(0))
  m = chips.similarity_transform(src, t)
  yy, xx = np.mgrid[0:360, 0:330].astype(np.float64)
  sigma = 2.5 * source_scale
  worst = 0.0
  for k in range(5):
    blob = np.exp(-((xx - src[k, 0])**2 + (yy - src[k, 1])**2) /
                  (2 * sigma**2))
    img = np.repeat(np.round(blob * 255)[..., None], 3, 2).astype(np.uint8)
    chip = chips.warp_affine(img, m, size)
    assert chip.shape == (size, size, 3) and chip.dtype == np.uint8
    c = chip[..., 0].astype(np.float64)
    cy, cx = np.mgrid[0:size, 0:size]
    got = np.array([(cx * c).sum(), (cy * c).sum()]) / c.sum()
    worst = max(worst, float(np.abs(got - t[k]).max()))
  print(f"size {size}, face scale {source_scale}: worst marker centroid "
        f"offset {worst:.4f} px")
  assert worst < 0.05


# ------------------------------------------------------------ real photo


@pytest.fixture(scope="module")
def moved_face():
  """A bundled 300-W photo and the same photo rotated 25 deg, scaled 1.4 and
  shifted (scipy warp), with both sets of annotated points."""
  rgb, pts = pf.sample_face(pf.FACES[0])
  g = _similarity(25.0, 1.4, 130.0, -40.0)
  moved = _scipy_warp(rgb, g, (560, 600))
  return rgb, pts, moved, _apply(g, pts), g


def test_chip_of_a_moved_photo(moved_face):
  rgb, pts, moved, moved_pts, g = moved_face
  m1 = chips.chip_transform(pts)
  m2 = chips.chip_transform(moved_pts)
  g3 = np.vstack([g, [0, 0, 1]])
  np.testing.assert_allclose(np.vstack([m2, [0, 0, 1]]) @ g3,
                             np.vstack([m1, [0, 0, 1]]), atol=1e-9)
  r1 = chips.template_residual(pts)
  r2 = chips.template_residual(moved_pts)
  np.testing.assert_allclose(r1, r2, atol=1e-9)
  rms = float(np.sqrt(np.mean(r1**2)))
  a = chips.face_chip(rgb, pts).astype(np.int32)
  b = chips.face_chip(moved, moved_pts).astype(np.int32)
  diff = np.abs(a - b)
  print(f"five-point residual to the template: RMS {rms:.2f} px, max "
        f"{r1.max():.2f} px (112 chip); chip of moved photo vs original: "
        f"mean |diff| {diff.mean():.2f}, 99th pct {np.percentile(diff, 99):.0f}"
        f", max {diff.max()} grey levels")
  assert rms < 4.0
  assert diff.mean() < 3.0
  assert np.percentile(diff, 99) < 25
  # Not trivially equal: a chip one pixel off differs much more.
  shifted = chips.warp_affine(rgb, m1 + [[0, 0, 1.0], [0, 0, 0]], 112)
  assert np.abs(a - shifted.astype(np.int32)).mean() > 2 * diff.mean()


def test_face_chip_uses_refined_points(moved_face):
  rgb, pts, _, _, _ = moved_face
  raw = pts.copy()
  raw[36:48] += [0.0, 25.0]          # raw eyes dragged onto the cheeks
  face = Face(points=pts.astype(np.float32), raw_points=raw.astype(np.float32),
              confidence=np.ones(68, np.float32),
              occluded=np.arange(68) // 12 == 3, box=np.zeros(4, np.float32),
              box_score=None, face_box=np.zeros(4, np.float32))
  chip = face.chip(rgb)
  np.testing.assert_array_equal(chip, chips.face_chip(rgb, face.points))
  from_raw = chips.face_chip(rgb, face.raw_points)
  assert np.abs(chip.astype(int) - from_raw).mean() > 10
  assert face.chip(Image.fromarray(rgb), size=64).shape == (64, 64, 3)
  cofw = Face(points=np.zeros((29, 2), np.float32),
              raw_points=np.zeros((29, 2), np.float32),
              confidence=np.ones(29, np.float32), occluded=np.zeros(29, bool),
              box=np.zeros(4, np.float32), box_score=None,
              face_box=np.zeros(4, np.float32))
  with pytest.raises(chips.ChipError, match="cofw29"):
    cofw.chip(rgb)


@pytest.fixture(scope="module")
def shipped():
  return Landmarker.from_pretrained(detector="none")


def test_shipped_model_chip_eyes_level_and_on_template(shipped, moved_face):
  _, _, moved, moved_pts, _ = moved_face
  face, = shipped.detect(moved, boxes=[crop.landmark_box(moved_pts)],
                         box_format="landmarks")
  m = chips.chip_transform(face.points)
  true_eyes = _apply(m, [moved_pts[36:42].mean(0), moved_pts[42:48].mean(0)])
  t = chips.template()
  roll = np.degrees(np.arctan2(*(true_eyes[1] - true_eyes[0])[::-1]))
  t_roll = np.degrees(np.arctan2(*(t[1] - t[0])[::-1]))
  err = np.linalg.norm(true_eyes - t[:2], axis=1)
  print(f"shipped model, photo rotated 25 deg: annotated eyes in the chip: "
        f"roll {roll - t_roll:+.2f} deg from the template's, offsets "
        f"{np.round(err, 2).tolist()} px")
  assert abs(roll - t_roll) < 2.0
  assert err.max() < 3.0
  np.testing.assert_array_equal(face.chip(moved),
                                chips.face_chip(moved, face.points))


def test_predict_writes_chips(shipped, moved_face, tmp_path):
  rgb, _, _, _, _ = moved_face
  Image.fromarray(rgb).save(tmp_path / "face.png")
  out = tmp_path / "out"
  rows = predict.predict_paths(shipped, [str(tmp_path / "face.png")],
                               str(out), progress=False, chips=96)
  assert rows[0]["status"] == "ok"
  chip_path = out / "face_1_chip.png"
  assert str(chip_path) in rows[0]["outputs"].split(";")
  face, = shipped.detect(str(tmp_path / "face.png"))
  with Image.open(chip_path) as im:
    np.testing.assert_array_equal(np.asarray(im), face.chip(rgb, 96))
  record = json.loads((out / "face.json").read_text())["faces"][0]
  assert [record[k] for k in ("yaw", "pitch", "roll")] == [
      round(a, 2) for a in face.pose]
  # No chips by default.
  predict.predict_paths(shipped, [str(tmp_path / "face.png")],
                        str(tmp_path / "out2"), progress=False)
  assert not list((tmp_path / "out2").glob("*_chip.png"))
