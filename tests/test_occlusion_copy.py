"""Tests of sgfan_jax.occlusion_copy (seeded synthetic occluders)."""

import filecmp
import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from sgfan_jax import occlusion_copy as oc
from sgfan_jax import pts_io

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data" / "300w"
SAMPLE_PTS = SAMPLE / "afw" / "1051618982_1.pts"


# Independent scalar re-implementation of the occluder geometry (plain
# Python maths, one point at a time) used as the reference.
def _in_primitive(p, x, y):
  if p["kind"] in ("ellipse", "rect"):
    c, s = math.cos(p["angle"]), math.sin(p["angle"])
    u = c * (x - p["cx"]) + s * (y - p["cy"])
    v = -s * (x - p["cx"]) + c * (y - p["cy"])
    if p["kind"] == "ellipse":
      return (u * u) / (p["rx"] ** 2) + (v * v) / (p["ry"] ** 2) <= 1.0
    return abs(u) <= p["hw"] and abs(v) <= p["hh"]
  ax, ay, bx, by, r = p["x0"], p["y0"], p["x1"], p["y1"], p["r"]
  ex, ey = bx - ax, by - ay
  t = max(0.0, min(1.0, ((x - ax) * ex + (y - ay) * ey) / (ex * ex + ey * ey)))
  qx, qy = ax + t * ex, ay + t * ey
  return (x - qx) ** 2 + (y - qy) ** 2 <= r * r


def _in_shape(shape, x, y):
  return any(_in_primitive(p, x, y) for p in shape)


def _naive_coverage(shape, points, h, w):
  x0, y0 = points[:, 0].min(), points[:, 1].min()
  x1, y1 = points[:, 0].max(), points[:, 1].max()
  total = hit = 0
  for i in range(h):
    for j in range(w):
      if x0 <= j <= x1 and y0 <= i <= y1:
        total += 1
        hit += _in_shape(shape, float(j), float(i))
  return hit / total


def _face(rng, h=110, w=120):
  """A real 68-point shape scaled into a random image of size h x w."""
  pts = pts_io.read_pts(SAMPLE_PTS).astype(np.float64)
  pts -= pts.min(axis=0)
  pts *= 60.0 / pts.max()
  pts += rng.uniform([5, 5], [w - 65, h - 65])
  image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
  return image, pts


def _donor(r):
  img = np.tile(np.arange(80, dtype=np.uint8)[None, :, None], (70, 1, 3))
  return img, np.array([20.0, 20.0, 50.0, 50.0]), "donor/0"


@pytest.mark.parametrize("kind", oc.OCCLUDER_TYPES)
def test_coverage_flags_and_mask_against_naive_reference(kind):
  for k, region in enumerate(oc.REGIONS):
    rng = np.random.default_rng(100 + k)
    image, pts = _face(rng)
    out, mask, info = oc.occlude_face(image, pts, np.random.default_rng(k),
                                      donor=_donor, kind=kind, region=region)
    h, w = image.shape[:2]
    assert info["type"] == kind and info["region"] == region
    cov = _naive_coverage(info["shape"], pts, h, w)
    assert 0.2 <= cov <= 0.4, (kind, region, cov)
    assert abs(cov - info["covered_fraction"]) < 1e-12
    ref_flags = [(-0.5 <= x < w - 0.5 and -0.5 <= y < h - 0.5
                  and _in_shape(info["shape"], float(x), float(y)))
                 for x, y in pts]
    assert info["occluded"] == ref_flags
    assert any(ref_flags), (kind, region)  # an occluder over a region hides
    # The painted mask is the geometry at the pixel centres; nothing outside
    # it changed.
    ref_mask = np.array([[_in_shape(info["shape"], float(j), float(i))
                          for j in range(w)] for i in range(h)])
    np.testing.assert_array_equal(mask, ref_mask)
    np.testing.assert_array_equal(out[~mask], image[~mask])
    assert out.dtype == np.uint8 and out.shape == image.shape


def test_texture_comes_from_donor():
  rng = np.random.default_rng(3)
  image, pts = _face(rng)
  out, mask, info = oc.occlude_face(image, pts, np.random.default_rng(0),
                                    donor=_donor, kind="texture")
  assert info["donor"]["image"] == "donor/0"
  x, y, cw, ch = info["donor"]["patch_xywh"]
  # The donor is a horizontal ramp 0..79 and the patch avoids its face box
  # where it fits, so the painted values come from the donor's columns.
  assert set(np.unique(out[mask])) <= set(range(80))
  bx0, by0, bx1, by1 = 20, 20, 50, 50
  if cw <= 19 or ch <= 19:
    assert (x + cw - 0.5 < bx0 or x - 0.5 > bx1 or y + ch - 0.5 < by0
            or y - 0.5 > by1)


def test_random_choices_are_seeded():
  rng = np.random.default_rng(7)
  image, pts = _face(rng)
  a = oc.occlude_face(image, pts, np.random.default_rng(5), donor=_donor)
  b = oc.occlude_face(image, pts, np.random.default_rng(5), donor=_donor)
  np.testing.assert_array_equal(a[0], b[0])
  assert a[2] == b[2]
  kinds = {oc.occlude_face(image, pts, np.random.default_rng(s),
                           donor=_donor)[2]["type"] for s in range(40)}
  assert kinds == set(oc.OCCLUDER_TYPES)


def test_bad_input_errors():
  with pytest.raises(oc.OcclusionError, match="face.jpg.*68 landmarks"):
    oc.occlude_face(np.zeros((50, 50, 3), np.uint8), np.zeros((5, 2)),
                    np.random.default_rng(0), name="face.jpg")
  with pytest.raises(oc.OcclusionError, match="uint8"):
    oc.occlude_face(np.zeros((50, 50, 3)), np.zeros((68, 2)),
                    np.random.default_rng(0))
  with pytest.raises(FileNotFoundError, match="nothere"):
    pts_io.find_faces(SAMPLE, ["nothere"])


def test_source_photo():
  assert oc.source_photo("helen/testset/296814969_3") == \
      "helen/testset/296814969"
  assert oc.source_photo("afw/face") == "afw/face"


def _tree(d):
  return sorted(p.relative_to(d).as_posix() for p in d.rglob("*")
                if p.is_file())


def _command(*args):
  proc = subprocess.run(
      [sys.executable, "-m", "sgfan_jax.occlusion_copy", *args],
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return proc.stdout


def test_command_is_deterministic(tmp_path):
  args = ["--src", str(SAMPLE), "--subsets=afw"]
  line = _command(*args, "--seed=0", "--out", str(tmp_path / "a"))
  assert "faces 12" in line and "mean occluded points per face" in line
  _command(*args, "--seed=0", "--out", str(tmp_path / "b"))
  _command(*args, "--seed=1", "--out", str(tmp_path / "c"))
  a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
  files = _tree(a)
  assert len(files) == 2 * 12 + 1 and "occlusion.json" in files
  assert files == _tree(b) == _tree(c)
  for f in files:
    assert filecmp.cmp(a / f, b / f, shallow=False), f
  # .pts copied unchanged.
  for f in files:
    if f.endswith(".pts"):
      assert filecmp.cmp(a / f, SAMPLE / f, shallow=False)
  # A different seed changes the occluders and the images.
  assert not filecmp.cmp(a / "occlusion.json", c / "occlusion.json",
                         shallow=False)
  jpgs = [f for f in files if f.endswith(".jpg")]
  assert sum(not filecmp.cmp(a / f, c / f, shallow=False) for f in jpgs) \
      == len(jpgs)
  doc = json.loads((a / "occlusion.json").read_text())
  for rel, rec in doc["faces"].items():
    assert 0.2 <= rec["covered_fraction"] <= 0.4
    assert len(rec["occluded"]) == 68
    if rec["donor"] is not None:
      assert oc.source_photo(rec["donor"]["image"]) != oc.source_photo(rel)


def test_names_keep_only_those_faces(tmp_path):
  names = ["afw/1051618982_1", "afw/18489332_1", "afw/2406586388_3"]
  all_faces = [rel for rel, _, _ in pts_io.find_faces(SAMPLE, ["afw"])]
  assert set(names) <= set(all_faces) and len(all_faces) > len(names)
  summary = oc.build_occluded_copy(SAMPLE, ["afw"], tmp_path, seed=0,
                                   names=names[::-1])
  assert summary["faces"] == 3
  doc = oc.load_occlusion(tmp_path)
  assert sorted(doc["faces"]) == sorted(names) == doc["names"]
  assert _tree(tmp_path) == sorted(
      ["occlusion.json"] + [n + ".pts" for n in names]
      + [n + ".jpg" for n in names])
  for rec in doc["faces"].values():
    if rec["donor"] is not None:     # texture donors come from the kept faces
      assert pathlib.Path(rec["donor"]["image"]).with_suffix("").as_posix() \
          in names
  with pytest.raises(FileNotFoundError, match="afw/nope"):
    oc.build_occluded_copy(SAMPLE, ["afw"], tmp_path / "x", names=["afw/nope"])


def test_real_test_faces(shared_data, tmp_path):
  src = shared_data / "300w"
  summary = oc.build_occluded_copy(src, ["helen/testset", "lfpw/testset"],
                                   tmp_path, seed=0, max_faces=40)
  print(oc.summary_line(summary))
  assert summary["faces"] == 40
  doc = oc.load_occlusion(tmp_path)
  from PIL import Image  # pylint: disable=g-import-not-at-top
  for rel, rec in doc["faces"].items():
    pts = pts_io.read_pts(tmp_path / f"{rel}.pts")
    w, h = Image.open(tmp_path / rec["image"]).size
    flags = [(-0.5 <= x < w - 0.5 and -0.5 <= y < h - 0.5
              and _in_shape(rec["shape"], float(x), float(y)))
             for x, y in pts]
    assert rec["occluded"] == flags, rel
    assert 0.2 <= rec["covered_fraction"] <= 0.4
  assert 5 < summary["mean_occluded_points"] < 50
