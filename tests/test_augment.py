"""Tests of sgfan_jax.augment against hand-computed and naive references."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.ndimage

from configs import default
from sgfan_jax import augment
from sgfan_jax import layouts
from sgfan_jax import pts_io

# Small geometry so tests stay fast: crop S, window and output side.
CROP = 96
OUT = 48
CROP_CONTEXT = 2.2
WINDOW = augment.input_window_side(CROP, CROP_CONTEXT,
                                   default.get_config().data.face_context)


def _aug(**overrides):
  """The default augment config with overrides (no colour jitter by default)."""
  aug = ml_collections.ConfigDict(default.get_config().augment.to_dict())
  aug.brightness = aug.contrast = aug.saturation = 0.0
  for k, v in overrides.items():
    setattr(aug, k, v)
  return aug


# ----------------------------------------------------------- naive references


def _naive_bilinear(image, x, y):
  """Zero-padded bilinear lookup of one point, written out with loops."""
  h, w, c = image.shape
  x0, y0 = math.floor(x), math.floor(y)
  out = np.zeros(c, np.float64)
  for yi in (y0, y0 + 1):
    for xi in (x0, x0 + 1):
      if 0 <= xi < w and 0 <= yi < h:
        weight = (1 - abs(x - xi)) * (1 - abs(y - yi))
        out += weight * image[yi, xi].astype(np.float64)
  return out


def _homogeneous(a):
  a = np.asarray(a, np.float64)
  return np.concatenate([a, [[0.0, 0.0, 1.0]]], 0)


def test_bilinear_sample_matches_naive_and_scipy():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (7, 9, 3)).astype(np.uint8)
  coords = rng.uniform(-2.0, 10.0, (40, 2)).astype(np.float32)
  coords[:4] = [[0, 0], [8, 6], [3, 2], [-0.5, 3.25]]  # on pixels and edge
  got = np.asarray(augment.bilinear_sample(jnp.asarray(image),
                                           jnp.asarray(coords)))
  naive = np.stack([_naive_bilinear(image, x, y) for x, y in coords])
  np.testing.assert_allclose(got, naive, atol=1e-3)
  np.testing.assert_allclose(got[1], image[6, 8], atol=1e-4)
  for ch in range(3):
    ref = scipy.ndimage.map_coordinates(
        image[..., ch].astype(np.float64), [coords[:, 1], coords[:, 0]],
        order=1, mode="grid-constant", cval=0.0)
    np.testing.assert_allclose(got[:, ch], ref, atol=1e-3)


def test_warp_images_matches_naive_loop():
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (2, 12, 12, 3)).astype(np.uint8)
  out_size = 6
  out_to_crop = np.array([[[1.3, 0.4, -1.0], [-0.3, 1.5, 2.0]],
                          [[-1.0, 0.0, 11.0], [0.2, 0.9, 0.5]]], np.float32)
  got = np.asarray(augment.warp_images(jnp.asarray(images),
                                       jnp.asarray(out_to_crop), out_size))
  assert got.shape == (2, out_size, out_size, 3)
  for b in range(2):
    for i in range(out_size):
      for j in range(out_size):
        x, y = out_to_crop[b] @ np.array([j, i, 1.0])
        np.testing.assert_allclose(got[b, i, j],
                                   _naive_bilinear(images[b], x, y),
                                   atol=1e-3)


def test_affine_helpers_match_matrix_algebra():
  rng = np.random.default_rng(2)
  a = rng.normal(size=(3, 2, 3)).astype(np.float32)
  b = rng.normal(size=(3, 2, 3)).astype(np.float32)
  pts = rng.normal(size=(3, 5, 2)).astype(np.float32)
  for k in range(3):
    ha, hb = _homogeneous(a[k]), _homogeneous(b[k])
    np.testing.assert_allclose(augment.compose_affine(a, b)[k],
                               (ha @ hb)[:2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(augment.invert_affine(a)[k],
                               np.linalg.inv(ha)[:2], rtol=1e-4, atol=1e-4)
    ref = pts[k] @ a[k, :, :2].T + a[k, :, 2]
    np.testing.assert_allclose(augment.apply_affine(pts, a)[k], ref,
                               rtol=1e-5, atol=1e-5)


def test_centred_window_of_full_crop_is_design_resize_formula():
  # With the window equal to the whole crop the map is DESIGN.md's resize
  # x -> (x + 0.5) * T / S - 0.5, per axis.
  a = np.asarray(augment.window_affine(CROP, float(CROP), OUT))
  x = np.array([[0.0, 0.0], [95.0, 10.0], [47.5, 47.5], [-0.5, 95.5]])
  expected = (x + 0.5) * OUT / CROP - 0.5
  np.testing.assert_allclose(np.asarray(augment.apply_affine(x, a)), expected,
                             atol=1e-4)


def test_window_side_from_contexts():
  assert augment.input_window_side(256, 2.2, 1.3) == pytest.approx(
      256 * 1.3 / 2.2)
  with pytest.raises(ValueError, match="positive"):
    augment.input_window_side(256, 0.0, 1.3)


# ------------------------------------------------------------ dots and points


def _dot_images(points, codes, size, sigma=1.2):
  """[B, S, S, 3] uint8: channel 0 = dots, channel 1 = dots * code (per point).

  Args:
    points: [B, N, 2] dot centres (x, y).
    codes: [N] values in (0, 1] identifying each point.
    size: S.
    sigma: Gaussian dot radius in pixels.
  """
  ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
  images = np.zeros((points.shape[0], size, size, 3), np.float64)
  for b, pts in enumerate(points):
    for (x, y), code in zip(pts, codes):
      g = np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2))
      images[b, ..., 0] += g
      images[b, ..., 1] += g * code
  return np.round(255 * np.clip(images, 0, 1)).astype(np.uint8)


def _centroid(channel, x, y, radius=4):
  """Intensity-weighted centroid of a [H, W] image near (x, y), and its mass."""
  h, w = channel.shape
  cx, cy = int(round(x)), int(round(y))
  y0, y1 = max(cy - radius, 0), min(cy + radius + 1, h)
  x0, x1 = max(cx - radius, 0), min(cx + radius + 1, w)
  patch = np.asarray(channel[y0:y1, x0:x1], np.float64)
  ys, xs = np.mgrid[y0:y1, x0:x1]
  mass = patch.sum()
  return (xs * patch).sum() / mass, (ys * patch).sum() / mass, mass


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_warped_landmarks_sit_on_their_dots(seed):
  rng = np.random.default_rng(seed)
  batch, num = 8, 6
  # Dots on a ring around the crop centre (stays inside the window under the
  # default +-30 deg, 0.9-1.2x, 5% shift), sub-pixel positions.
  angles = rng.uniform(0, 2 * np.pi) + np.arange(num) * 2 * np.pi / num
  angles = angles[None] + rng.uniform(-0.2, 0.2, (batch, num))
  radius = 0.3 * WINDOW
  centre = (CROP - 1) / 2
  points = np.stack([centre + radius * np.cos(angles),
                     centre + radius * np.sin(angles)], -1)
  codes = (np.arange(num) + 1.0) / num
  images = _dot_images(points, codes, CROP)
  flip_perm = np.array([1, 0, 3, 2, 4, 5])
  visible = np.arange(num)[None].repeat(batch, 0) % 2 == 0

  out, lm, vis = augment.train_transform(
      jax.random.PRNGKey(seed), jnp.asarray(images),
      jnp.asarray(points, jnp.float32), jnp.asarray(visible), aug=_aug(),
      flip_perm=jnp.asarray(flip_perm), window_side=WINDOW, out_size=OUT)
  out = (np.asarray(out) + 0.5) * 255.0
  lm, vis = np.asarray(lm), np.asarray(vis)

  # The dots are actually transformed (not the centred window).
  _, centred, _ = augment.eval_transform(jnp.asarray(images),
                                         jnp.asarray(points, jnp.float32),
                                         window_side=WINDOW, out_size=OUT)
  assert np.abs(lm - np.asarray(centred)).max() > 2.0

  flipped = []
  for b in range(batch):
    # Point i of a mirrored example is original point flip_perm[i]: its dot
    # carries that point's code and its visible flag.
    x0, _, _ = _centroid(out[b, ..., 0], *lm[b, 0])
    x1, _, _ = _centroid(out[b, ..., 0], *lm[b, 1])
    was_flipped = vis[b, 0] != visible[b, 0]
    flipped.append(was_flipped)
    perm = flip_perm if was_flipped else np.arange(num)
    np.testing.assert_array_equal(vis[b], visible[b, perm])
    for i in range(num):
      cx, cy, mass = _centroid(out[b, ..., 0], *lm[b, i])
      assert mass > 100, (b, i, mass)
      assert math.hypot(cx - lm[b, i, 0], cy - lm[b, i, 1]) < 1.0, (b, i)
      code_x, code_y, code_mass = _centroid(out[b, ..., 1], *lm[b, i])
      del code_x, code_y
      assert code_mass / mass == pytest.approx(codes[perm[i]], abs=0.03)
  # The batch saw both mirrored and plain examples (flip_prob 0.5).
  assert any(flipped) and not all(flipped)


def test_train_flip_without_warp_equals_mirrored_eval():
  rng = np.random.default_rng(3)
  images = rng.integers(0, 256, (3, CROP, CROP, 3)).astype(np.uint8)
  points = rng.uniform(20, 70, (3, 68, 2)).astype(np.float32)
  visible = rng.uniform(size=(3, 68)) > 0.3
  perm = layouts.IBUG_68.flip_permutation
  aug = _aug(rotation_deg=0.0, scale_min=1.0, scale_max=1.0,
             translate_frac=0.0, flip_prob=1.0)
  out, lm, vis = augment.train_transform(
      jax.random.PRNGKey(0), jnp.asarray(images), jnp.asarray(points),
      jnp.asarray(visible), aug=aug, flip_perm=perm, window_side=WINDOW,
      out_size=OUT)
  ev_img, ev_lm, _ = augment.eval_transform(
      jnp.asarray(images), jnp.asarray(points), window_side=WINDOW,
      out_size=OUT)
  ref_img, ref_lm, ref_vis = augment.flip_horizontal(
      ev_img, ev_lm, jnp.asarray(visible), perm)
  np.testing.assert_allclose(out, ref_img, atol=1e-4)
  np.testing.assert_allclose(lm, ref_lm, atol=1e-3)
  np.testing.assert_array_equal(vis, ref_vis)
  # Hand check of one point: new 36 is old 45 mirrored.
  np.testing.assert_allclose(lm[0, 36, 0], OUT - 1 - ev_lm[0, 45, 0],
                             atol=1e-3)


@pytest.mark.parametrize("layout", ["ibug68", "cofw29", "wflw98"])
def test_flip_twice_is_identity(layout):
  perm = layouts.get_layout(layout).flip_permutation
  n = len(perm)
  rng = np.random.default_rng(4)
  images = jnp.asarray(rng.uniform(size=(2, 10, 10, 3)), jnp.float32)
  points = jnp.asarray(rng.uniform(0, 9, (2, n, 2)), jnp.float32)
  visible = jnp.asarray(rng.uniform(size=(2, n)) > 0.5)
  once = augment.flip_horizontal(images, points, visible, perm)
  assert not np.allclose(once[1], points)
  twice = augment.flip_horizontal(*once, perm)
  np.testing.assert_array_equal(twice[0], images)
  np.testing.assert_allclose(twice[1], points, atol=1e-5)
  np.testing.assert_array_equal(twice[2], visible)


@pytest.mark.parametrize("layout", ["ibug68", "cofw29", "wflw98"])
def test_symmetric_shape_is_invariant_under_flip(layout):
  # Build a shape that is mirror-symmetric under the layout's pairs: pair
  # members at (x, y) and (W-1-x, y), unpaired points on the midline. A
  # flip with the right permutation must return exactly the same shape.
  lay = layouts.get_layout(layout)
  width = 40
  rng = np.random.default_rng(5)
  shape = np.zeros((lay.num_points, 2))
  shape[:, 0] = (width - 1) / 2
  shape[:, 1] = rng.uniform(0, 30, lay.num_points)
  for a, b in lay.flip_pairs:
    x, y = rng.uniform(0, 15), rng.uniform(0, 30)
    shape[a] = x, y
    shape[b] = width - 1 - x, y
  images = jnp.zeros((1, 4, width, 3))
  _, flipped, _ = augment.flip_horizontal(
      images, jnp.asarray(shape[None], jnp.float32),
      jnp.ones((1, lay.num_points), bool), lay.flip_permutation)
  np.testing.assert_allclose(flipped[0], shape, atol=1e-4)


def test_ibug68_mirror_pairs_by_hand():
  perm = layouts.IBUG_68.flip_permutation
  for a, b in ((36, 45), (39, 42), (0, 16), (8, 8), (30, 30), (48, 54),
               (17, 26), (31, 35), (62, 62)):
    assert perm[a] == b and perm[b] == a


def test_cofw29_mirror_pairs_by_hand():
  perm = layouts.COFW_29.flip_permutation
  # Pupils, outer/inner eye corners and mouth corners swap; chin stays.
  for a, b in ((16, 17), (8, 9), (10, 11), (22, 23), (28, 28)):
    assert perm[a] == b and perm[b] == a
  np.testing.assert_array_equal(perm[perm], np.arange(29))


def test_mirror_keeps_left_right_order_on_real_300w_shapes(shared_data):
  _, shapes = pts_io.read_300w_csv(
      shared_data / "300w_test_annotations" /
      "face_landmarks_300w_valid_common.csv")
  shapes = shapes[:200]
  # Mirror inside a frame wide enough for every shape.
  width = float(np.ceil(shapes[..., 0].max())) + 2.0
  lay = layouts.IBUG_68
  _, flipped, _ = augment.flip_horizontal(
      jnp.zeros((len(shapes), 1, int(width), 3)), jnp.asarray(shapes),
      jnp.ones(shapes.shape[:2], bool), lay.flip_permutation)
  flipped = np.asarray(flipped)
  # On a roughly frontal face the image-left point of every mirror pair stays
  # image-left after the flip (left eye stays left, jaw 0 stays left of 16).
  for pts in (shapes, flipped):
    assert np.mean(pts[:, 36, 0] < pts[:, 45, 0]) > 0.99
    assert np.mean(pts[:, 0, 0] < pts[:, 16, 0]) > 0.95
    left = pts[:, list(lay.left_eye), 0].mean(1)
    right = pts[:, list(lay.right_eye), 0].mean(1)
    assert np.mean(left < right) > 0.99
  agree = [np.mean(np.sign(shapes[:, a, 0] - shapes[:, b, 0]) ==
                   np.sign(flipped[:, a, 0] - flipped[:, b, 0]))
           for a, b in lay.flip_pairs]
  assert min(agree) > 0.8, agree


# ------------------------------------------------------------- eval transform


def test_eval_transform_round_trip_to_crop():
  rng = np.random.default_rng(6)
  images = rng.integers(0, 256, (2, CROP, CROP, 3)).astype(np.uint8)
  points = rng.uniform(-5, CROP + 5, (2, 29, 2)).astype(np.float32)
  out, lm, out_to_crop = augment.eval_transform(
      jnp.asarray(images), jnp.asarray(points), window_side=WINDOW,
      out_size=OUT)
  assert out.shape == (2, OUT, OUT, 3) and out.dtype == jnp.float32
  assert out_to_crop.shape == (2, 2, 3)
  np.testing.assert_allclose(augment.apply_affine(lm, out_to_crop), points,
                             atol=1e-3)
  # Hand-computed centred window: zoom OUT / WINDOW about the two centres.
  zoom = OUT / WINDOW
  expected = (points - (CROP - 1) / 2) * zoom + (OUT - 1) / 2
  np.testing.assert_allclose(lm, expected, atol=1e-3)
  # Output pixel (i, j) samples the crop at out_to_crop @ (j, i, 1).
  i, j = 5, 30
  x, y = np.asarray(out_to_crop[1]) @ np.array([j, i, 1.0])
  np.testing.assert_allclose(
      out[1, i, j], _naive_bilinear(images[1], x, y) / 255 - 0.5, atol=1e-4)


# ------------------------------------------------------------------- colour


def test_color_jitter_zero_amplitude_is_identity():
  images = jnp.asarray(np.random.default_rng(7).uniform(size=(2, 8, 8, 3)),
                       jnp.float32)
  out = augment.color_jitter(jax.random.PRNGKey(0), images, brightness=0.0,
                             contrast=0.0, saturation=0.0)
  np.testing.assert_array_equal(out, images)


def test_brightness_jitter_is_a_clipped_per_image_gain():
  images = jnp.asarray(
      np.random.default_rng(8).uniform(0.1, 0.7, (4, 8, 8, 3)), jnp.float32)
  out = np.asarray(augment.color_jitter(jax.random.PRNGKey(1), images,
                                        brightness=0.3, contrast=0.0,
                                        saturation=0.0))
  gain = out / np.asarray(images)
  for b in range(4):
    assert gain[b].max() - gain[b].min() < 1e-5    # one factor per image
    assert 0.7 - 1e-6 <= gain[b, 0, 0, 0] <= 1.3 + 1e-6
  assert gain[:, 0, 0, 0].std() > 0.01              # differs across images


def test_saturation_jitter_keeps_grey_and_moves_colour():
  grey = np.full((1, 4, 4, 3), 0.4, np.float32)
  colour = np.zeros((1, 4, 4, 3), np.float32)
  colour[..., 0] = 0.8
  images = jnp.asarray(np.concatenate([grey, colour]))
  out = np.asarray(augment.color_jitter(jax.random.PRNGKey(2), images,
                                        brightness=0.0, contrast=0.0,
                                        saturation=0.5))
  np.testing.assert_allclose(out[0], grey[0], atol=1e-6)
  # Saturation blends with luma, which it keeps: luma(out) == luma(in).
  luma = np.asarray(augment.LUMA_WEIGHTS)
  np.testing.assert_allclose(out[1] @ luma, colour[0] @ luma, atol=1e-5)
  assert np.abs(out[1] - colour[0]).max() > 1e-3


def test_color_jitter_rejects_bad_amplitude():
  with pytest.raises(ValueError, match="brightness"):
    augment.color_jitter(jax.random.PRNGKey(0), jnp.zeros((1, 2, 2, 3)),
                         brightness=-0.1, contrast=0.0, saturation=0.0)


# -------------------------------------------------------- sampling and shapes


def test_sampled_window_params_follow_config_ranges():
  aug = default.get_config().augment
  params = augment.sample_window_params(jax.random.PRNGKey(0), 4000, aug,
                                        WINDOW)
  deg = np.degrees(np.asarray(params["angle"]))
  scale = np.asarray(params["scale"])
  shift = np.asarray(params["shift"]) / WINDOW
  flip = np.asarray(params["flip"])
  assert -aug.rotation_deg <= deg.min() < -0.95 * aug.rotation_deg
  assert 0.95 * aug.rotation_deg < deg.max() <= aug.rotation_deg
  assert aug.scale_min <= scale.min() < aug.scale_min + 0.01
  assert aug.scale_max - 0.01 < scale.max() <= aug.scale_max
  assert np.abs(shift).max() <= aug.translate_frac + 1e-6
  assert np.abs(shift).max() > 0.95 * aug.translate_frac
  assert abs(flip.mean() - aug.flip_prob) < 0.04
  with pytest.raises(ValueError, match="scale_min"):
    augment.sample_window_params(jax.random.PRNGKey(0), 2,
                                 _aug(scale_min=1.5, scale_max=1.0), WINDOW)


def test_train_transform_jits_with_static_shapes_and_full_jitter():
  aug = default.get_config().augment
  rng = np.random.default_rng(9)
  images = jnp.asarray(rng.integers(0, 256, (4, CROP, CROP, 3)), jnp.uint8)
  points = jnp.asarray(rng.uniform(30, 60, (4, 68, 2)), jnp.float32)
  visible = jnp.ones((4, 68), bool)
  perm = jnp.asarray(layouts.IBUG_68.flip_permutation)

  def fn(key, im, pt, vi):
    return augment.train_transform(key, im, pt, vi, aug=aug, flip_perm=perm,
                                   window_side=WINDOW, out_size=OUT)

  key = jax.random.PRNGKey(3)
  jitted = jax.jit(fn)(key, images, points, visible)
  eager = fn(key, images, points, visible)
  out, lm, vis = jitted
  assert out.shape == (4, OUT, OUT, 3) and out.dtype == jnp.float32
  assert lm.shape == (4, 68, 2) and lm.dtype == jnp.float32
  assert vis.shape == (4, 68) and vis.dtype == jnp.bool_
  assert float(out.min()) >= -0.5 and float(out.max()) <= 0.5
  for a, b in zip(jitted, eager):
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_bad_shapes_raise_clear_errors():
  images = jnp.zeros((2, CROP, CROP, 3), jnp.uint8)
  points = jnp.zeros((2, 68, 2))
  with pytest.raises(ValueError, match="flip_perm"):
    augment.train_transform(jax.random.PRNGKey(0), images, points,
                            jnp.ones((2, 68), bool), aug=_aug(),
                            flip_perm=jnp.arange(29), window_side=WINDOW,
                            out_size=OUT)
  with pytest.raises(ValueError, match="images must be"):
    augment.eval_transform(jnp.zeros((2, CROP, CROP - 1, 3)), points,
                           window_side=WINDOW, out_size=OUT)
  with pytest.raises(ValueError, match="landmarks must be"):
    augment.eval_transform(images, jnp.zeros((3, 68, 2)), window_side=WINDOW,
                           out_size=OUT)
