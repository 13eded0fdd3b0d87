"""Tests of sgfan_jax.occluders against a naive Python-loop reference."""

import functools
import math
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgfan_jax import layouts
from sgfan_jax import occluders
from sgfan_jax import pts_io

SAMPLE = pathlib.Path(__file__).resolve().parents[1] / "sample_data" / "300w"
REGIONS = occluders.region_indices(layouts.IBUG_68)
COVERAGE = (0.2, 0.4)
# Pixels / points this close to a primitive's boundary (relative) may fall
# either way in float32; everything else must agree exactly.
BAND = 1e-4


@functools.lru_cache(maxsize=None)
def _shapes():
  return np.stack([pts_io.read_pts(p)
                   for p in sorted(SAMPLE.rglob("*.pts"))]).astype(np.float64)


def _batch(seed, batch, size, off_frame=False):
  """Sample faces moved into a ``size`` frame (random similarity), and noise
  images in network units. ``off_frame`` pushes some faces partly out."""
  rng = np.random.default_rng(seed)
  all_shapes = _shapes()
  shapes = all_shapes[rng.integers(0, len(all_shapes), batch)]
  out = []
  for s in shapes:
    s = s - s.mean(0)
    s = s / np.ptp(s, axis=0).max() * size / 1.3 * rng.uniform(0.85, 1.15)
    a = rng.uniform(-0.5, 0.5)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    shift = rng.uniform(-0.05, 0.05, 2) * size
    if off_frame:
      shift = shift + rng.choice([-1, 1], 2) * 0.3 * size
    out.append(s @ rot.T + (size - 1) / 2 + shift)
  images = rng.uniform(-0.5, 0.5, (batch, size, size, 3))
  return jnp.asarray(images, jnp.float32), jnp.asarray(np.stack(out),
                                                       jnp.float32)


_occlude = jax.jit(occluders.occlude,
                   static_argnames=("regions", "prob", "coverage"))


def _run(key, images, landmarks, prob=1.0, coverage=COVERAGE):
  out = _occlude(jax.random.PRNGKey(key), images, landmarks, regions=REGIONS,
                 prob=prob, coverage=coverage)
  return jax.tree_util.tree_map(np.asarray, out)


# ----------------------------------------------------------- naive reference


def _unit_primitives(p):
  """One image's unit shape (face sizes), occlusion_copy's primitive dicts."""
  shape = occluders.SHAPES[int(p["shape"])]
  root = math.sqrt(math.exp(float(p["log_aspect"])))
  tilt = float(p["tilt"])
  if shape == "rectangle":
    return [dict(kind="rect", cx=0.0, cy=0.0, a=0.27 * root, b=0.27 / root,
                 angle=0.35 * tilt)]
  if shape == "ellipse":
    return [dict(kind="ellipse", cx=0.0, cy=0.0, a=0.31 * root,
                 b=0.31 / root, angle=0.5 * tilt)]
  phi = float(p["phi"])
  e1 = np.array([math.cos(phi), math.sin(phi)])
  e2 = np.array([-math.sin(phi), math.cos(phi)])
  prims = [dict(kind="ellipse", cx=0.0, cy=0.0, a=0.2, b=0.16, angle=phi)]
  lengths = np.array([0.16, 0.21, 0.2, 0.15]) * p["finger_scale"]
  for k, off in enumerate((-1.5, -0.5, 0.5, 1.5)):
    base = 0.1 * e1 + 0.07 * off * float(p["spread"]) * e2
    a = float(p["fan"]) * (k - 1.5)
    tip = base + lengths[k] * (math.cos(a) * e1 + math.sin(a) * e2)
    prims.append(dict(kind="capsule", x0=base[0], y0=base[1], x1=tip[0],
                      y1=tip[1], r=0.034))
  side = 1.0 if p["thumb_side"] else -1.0
  base = -0.02 * e1 + side * 0.13 * e2
  a = side * float(p["thumb_angle"])
  tip = base + 0.16 * (math.cos(a) * e1 + math.sin(a) * e2)
  prims.append(dict(kind="capsule", x0=base[0], y0=base[1], x1=tip[0],
                    y1=tip[1], r=0.042))
  return prims


def _placed(unit, cx, cy, size):
  out = []
  for q in unit:
    q = dict(q)
    if q["kind"] == "capsule":
      for k, c in (("x0", cx), ("x1", cx), ("y0", cy), ("y1", cy)):
        q[k] = c + size * q[k]
      q["r"] *= size
    else:
      q["cx"], q["cy"] = cx, cy
      q["a"] *= size
      q["b"] *= size
    out.append(q)
  return out


def _naive_inside(prims, x, y):
  """(inside, near the boundary) of one point, primitive by primitive."""
  hit, near = False, False
  for q in prims:
    if q["kind"] == "capsule":
      ex, ey = q["x1"] - q["x0"], q["y1"] - q["y0"]
      t = ((x - q["x0"]) * ex + (y - q["y0"]) * ey) / (ex * ex + ey * ey)
      t = min(max(t, 0.0), 1.0)
      val = ((x - q["x0"] - t * ex) ** 2
             + (y - q["y0"] - t * ey) ** 2) / q["r"] ** 2
    else:
      c, s = math.cos(q["angle"]), math.sin(q["angle"])
      dx, dy = x - q["cx"], y - q["cy"]
      u, v = c * dx + s * dy, -s * dx + c * dy
      if q["kind"] == "ellipse":
        val = (u / q["a"]) ** 2 + (v / q["b"]) ** 2
      else:
        val = max(abs(u) / q["a"], abs(v) / q["b"])
    hit |= val <= 1.0
    near |= abs(val - 1.0) < BAND
  return hit, near


def _naive_fill(p, b, i, j, images, size, centre):
  """Network-unit RGB of the fill at pixel (i, j) of image b."""
  fill = occluders.FILLS[int(p["fill"])]
  height, width = images.shape[1:3]
  if fill == "texture":
    donor = (b + 1 + int(p["donor"])) % images.shape[0]
    return images[donor, (i - int(p["roll_y"])) % height,
                  (j - int(p["roll_x"])) % width]
  if fill == "colour":
    rgb = np.asarray(p["colour"], np.float64)
  elif fill == "noise":
    k = occluders.NOISE_BLOCKS[int(p["block"])]
    rgb = np.asarray(p["noise"][i // k * k, j // k * k], np.float64)
  else:
    if fill == "skin":
      base = np.array(occluders.SKIN_TONES[int(p["tone"])]) + p["tone_jitter"]
      (lo, hi), grain = (0.8, 1.05), 4.0
    else:
      base = float(p["dark_level"]) + np.asarray(p["dark_jitter"], np.float64)
      (lo, hi), grain = (0.7, 1.3), 3.0
    a = float(p["shade_angle"])
    ramp = math.cos(a) * (j - centre[0]) + math.sin(a) * (i - centre[1])
    t = min(max(0.5 + ramp / (2 * max(0.35 * size, 1e-3)), 0.0), 1.0)
    rgb = base * (lo + (hi - lo) * t) + grain * float(p["grain"][i, j, 0])
  return np.clip(rgb, 0, 255) / 255 - 0.5


def _naive(params, images, landmarks, coverage):
  """Reference of one batch from the device's draws and fitted scales."""
  batch, height, width, _ = images.shape
  results = []
  for b in range(batch):
    p = {k: v[b] for k, v in params.items()}
    pts = np.asarray(landmarks[b], np.float64)
    x0, y0 = pts.min(0)
    x1, y1 = pts.max(0)
    face = math.sqrt((x1 - x0) * (y1 - y0))
    centre = pts[list(REGIONS[int(p["region"])])].mean(0) + (
        np.asarray(p["jitter"], np.float64) * 0.03 * face)
    size = float(p["scale"]) * face
    prims = _placed(_unit_primitives(p), centre[0], centre[1], size)
    mask = np.zeros((height, width), bool)
    near = np.zeros((height, width), bool)
    in_box = np.zeros((height, width), bool)
    fill = np.zeros((height, width, 3))
    for i in range(height):
      for j in range(width):
        mask[i, j], near[i, j] = _naive_inside(prims, float(j), float(i))
        in_box[i, j] = x0 <= j <= x1 and y0 <= i <= y1
        if mask[i, j]:
          fill[i, j] = _naive_fill(p, b, i, j, images, size, centre)
    cov = (mask & in_box).sum() / in_box.sum()
    slack = (near & in_box).sum() / in_box.sum()
    flags, flag_near = [], []
    for x, y in pts:
      hit, close = _naive_inside(prims, x, y)
      in_image = -0.5 <= x < width - 0.5 and -0.5 <= y < height - 0.5
      flags.append(hit and in_image)
      flag_near.append(close)
    results.append(dict(centre=centre, face=face, mask=mask, near=near,
                        fill=fill, coverage=cov, slack=slack,
                        flags=np.array(flags), flag_near=np.array(flag_near),
                        box=np.array([x0, y0, x1, y1])))
  return results


# --------------------------------------------------------------------- tests


def test_region_indices_follow_the_layouts():
  assert REGIONS == (tuple(range(36, 48)), tuple(range(27, 36)),
                     tuple(range(48, 68)), tuple(range(0, 9)),
                     tuple(range(8, 17)))
  assert len(occluders.region_indices(layouts.COFW_29)) == 3   # no jaw sides
  assert len(occluders.region_indices(layouts.WFLW_98)) == 5


@pytest.mark.parametrize("key,off_frame", [(0, False), (1, False),
                                           (2, True)])
def test_matches_naive_reference(key, off_frame):
  images, landmarks = _batch(key, 10, 40, off_frame)
  out, occ, mask, params = _run(key, images, landmarks)
  images, landmarks = np.asarray(images), np.asarray(landmarks)
  ref = _naive(params, images, landmarks, COVERAGE)
  for b, r in enumerate(ref):
    np.testing.assert_allclose(params["centre"][b], r["centre"], atol=1e-3)
    np.testing.assert_allclose(params["face_box"][b], r["box"], atol=1e-5)
    if not params["applied"][b]:
      assert not params["apply"][b] or not params["fits"][b]
      assert not mask[b].any() and not occ[b].any()
      np.testing.assert_array_equal(out[b], images[b])
      continue
    sure = ~r["near"]
    np.testing.assert_array_equal(mask[b][sure], r["mask"][sure])
    # The bisection stops at a step of the coverage: a few pixels sit on the
    # boundary (within BAND); no more than that.
    assert r["near"].sum() <= 8, r["near"].sum()
    np.testing.assert_array_equal(occ[b][~r["flag_near"]],
                                  r["flags"][~r["flag_near"]])
    # Covered fraction of the returned mask, and of the reference.
    assert abs(params["coverage"][b] - r["coverage"]) <= r["slack"] + 1e-6
    assert (COVERAGE[0] - r["slack"] <= r["coverage"]
            <= COVERAGE[1] + r["slack"])
    # Pixels: the fill under the mask, the input elsewhere (exactly).
    both = mask[b] & r["mask"]
    np.testing.assert_allclose(out[b][both], r["fill"][both], atol=2e-5)
    np.testing.assert_array_equal(out[b][~mask[b]], images[b][~mask[b]])


def test_reference_batches_cover_every_shape_fill_and_region():
  shapes, fills, regions = set(), set(), set()
  for key in (0, 1):
    images, landmarks = _batch(key, 10, 40)
    params = _run(key, images, landmarks)[3]
    ok = params["applied"]
    shapes |= set(params["shape"][ok].tolist())
    fills |= set(params["fill"][ok].tolist())
    regions |= set(params["region"][ok].tolist())
  assert shapes == set(range(len(occluders.SHAPES)))
  assert fills == set(range(len(occluders.FILLS)))
  assert regions == set(range(len(REGIONS)))


def test_coverage_in_configured_range_and_probability():
  coverage = (0.1, 0.25)
  images, landmarks = _batch(5, 160, 64)
  out, occ, mask, params = _run(7, images, landmarks, prob=0.5,
                                coverage=coverage)
  lm = np.asarray(landmarks)
  applied = params["applied"]
  assert params["fits"].mean() > 0.97
  assert abs(applied.mean() - 0.5) < 0.12
  np.testing.assert_array_equal(applied, params["apply"] & params["fits"])
  ys, xs = np.mgrid[0:64, 0:64]
  for b in range(len(lm)):
    x0, y0 = lm[b].min(0)
    x1, y1 = lm[b].max(0)
    in_box = (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
    cov = (mask[b] & in_box).sum() / in_box.sum()
    if applied[b]:
      assert coverage[0] <= cov <= coverage[1], (b, cov)
      assert cov == pytest.approx(float(params["coverage"][b]), abs=1e-6)
      assert cov == pytest.approx(float(params["target"][b]), abs=0.02)
      assert not np.array_equal(out[b], np.asarray(images[b]))
    else:
      assert cov == 0 and not occ[b].any()
      np.testing.assert_array_equal(out[b], np.asarray(images[b]))
  # Flagged points sit on masked pixels (nearest pixel, up to the border).
  b, n = np.nonzero(occ)
  i = np.clip(np.round(lm[b, n, 1]).astype(int), 0, 63)
  j = np.clip(np.round(lm[b, n, 0]).astype(int), 0, 63)
  assert mask[b, i, j].mean() > 0.9
  assert occ[applied].sum(1).mean() > 5      # a 10-25% occluder hides points


def test_prob_zero_and_one():
  images, landmarks = _batch(3, 8, 40)
  out, occ, mask, params = _run(0, images, landmarks, prob=0.0)
  np.testing.assert_array_equal(out, np.asarray(images))
  assert not occ.any() and not mask.any() and not params["apply"].any()
  out, occ, mask, params = _run(0, images, landmarks, prob=1.0)
  assert params["applied"].all() and mask.any(axis=(1, 2)).all()


def test_deterministic_per_key_and_compiles_once():
  images, landmarks = _batch(4, 6, 40)

  @chex.assert_max_traces(n=1)
  def fn(key, im, lm):
    return occluders.paste_occluders(key, im, lm, regions=REGIONS, prob=0.7,
                                     coverage=COVERAGE)

  jitted = jax.jit(fn)
  a = jitted(jax.random.PRNGKey(3), images, landmarks)
  b = jitted(jax.random.PRNGKey(3), images, landmarks)
  c = jitted(jax.random.PRNGKey(4), images, landmarks)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[2], c[2])
  # The same draws through another compiled program: the same mask and flags
  # (pixel values to an ulp: XLA may fuse the shading differently).
  full = _run(3, images, landmarks, prob=0.7)
  np.testing.assert_array_equal(a[1], full[1])
  np.testing.assert_array_equal(a[2], full[2])
  np.testing.assert_allclose(a[0], full[0], rtol=0, atol=1e-6)
  assert a[0].shape == images.shape and a[0].dtype == jnp.float32
  assert a[1].shape == (6, 68) and a[1].dtype == jnp.bool_
  assert a[2].shape == (6, 40, 40) and a[2].dtype == jnp.bool_


def test_bad_settings_and_shapes_raise():
  images, landmarks = _batch(0, 2, 16)
  with pytest.raises(ValueError, match="prob"):
    occluders.paste_occluders(jax.random.PRNGKey(0), images, landmarks,
                              regions=REGIONS, prob=1.5, coverage=COVERAGE)
  with pytest.raises(ValueError, match="coverage_min"):
    occluders.paste_occluders(jax.random.PRNGKey(0), images, landmarks,
                              regions=REGIONS, prob=0.5, coverage=(0.5, 0.2))
  with pytest.raises(ValueError, match="score_target"):
    occluders.check_settings(0.5, COVERAGE, "hidden")
  with pytest.raises(ValueError, match="landmarks must be"):
    occluders.paste_occluders(jax.random.PRNGKey(0), images, landmarks[:1],
                              regions=REGIONS, prob=0.5, coverage=COVERAGE)
  with pytest.raises(ValueError, match="outside the 29 landmarks"):
    occluders.paste_occluders(jax.random.PRNGKey(0), images,
                              landmarks[:, :29], regions=REGIONS, prob=0.5,
                              coverage=COVERAGE)
