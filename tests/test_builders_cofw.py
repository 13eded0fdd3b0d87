"""Tests for the cofw TFDS builder and the .mat reader (v7.3 and v5)."""

import logging
import os
import sys

import h5py
import numpy as np
import pytest
import scipy.io
from scipy import ndimage

from tests import fixtures_cofw as fx
from tfds_builders import build as build_lib
from sgfan_jax import crop
from tfds_builders.cofw import matfile


def _build(manual, data):
  return build_lib.build("cofw", str(manual), str(data))


def _counts(builder):
  return {k: v.num_examples for k, v in builder.info.splits.items()}


def _by_index(source):
  """Examples keyed by their 1-based cell index (from file_name)."""
  out = {}
  for i in range(len(source)):
    ex = source[i]
    name = ex["file_name"].decode()
    out[int(name.rsplit("{", 1)[1].rstrip("}"))] = ex
  return out


def _xywh_to_box(b):
  return np.array([b[0] - 1, b[1] - 1, b[0] - 1 + b[2], b[1] - 1 + b[3]])


def _check_geometry(ex, src_0based):
  m = ex["crop_to_image"].astype(np.float64)
  back = ex["landmarks"] @ m[:, :2].T + m[:, 2]
  np.testing.assert_allclose(back, src_0based, atol=0.5)
  assert np.abs(back - src_0based).max() < 1e-3 * max(1.0, m[0, 0]) + 1e-3


def _check_pixels(ex, image):
  """Stored crop vs independent bilinear resampling of the source image."""
  img = np.asarray(image, np.float64)
  if img.ndim == 2:
    img = np.repeat(img[..., None], 3, axis=-1)
  m = ex["crop_to_image"].astype(np.float64)
  v, u = np.mgrid[0:256, 0:256].astype(np.float64)
  x, y = m[0, 0] * u + m[0, 2], m[1, 1] * v + m[1, 2]
  ref = np.stack([ndimage.map_coordinates(img[..., c], [y, x], order=1,
                                          cval=0.0) for c in range(3)], -1)
  got = ex["image"].astype(np.float64)
  mad = np.abs(got - ref).mean()
  assert mad < 3.0, mad
  assert np.abs(np.roll(got, 4, axis=0) - ref).mean() > 2 * mad + 0.5


@pytest.mark.parametrize("fmt", ["v73", "v5"])
def test_matfile_reads_both_formats(tmp_path, fmt):
  rng = np.random.default_rng(3)
  images = [fx.smooth_image(rng, 30, 40, gray=False),
            fx.smooth_image(rng, 25, 20, gray=True)]
  phis = rng.uniform(1, 20, size=(2, 87))
  path = tmp_path / f"x_{fmt}.mat"
  fx.write_mat(path, {"IsT": images, "phisT": phis}, fmt)
  if fmt == "v73":
    # The fixture has the real MATLAB 7.3 layout.
    assert open(path, "rb").read(10) == b"MATLAB 7.3"
    with h5py.File(path, "r") as f:
      assert "#refs#" in f
      assert f["phisT"].shape == (87, 2)            # transposed
      assert f["IsT"].dtype == h5py.ref_dtype
      assert f["IsT"].attrs["MATLAB_class"] == b"cell"
      assert f[f["IsT"][0, 0]].shape == (3, 40, 30)  # [H, W, 3] transposed
    with pytest.raises(NotImplementedError):
      scipy.io.loadmat(path)                        # scipy cannot read it
  with matfile.MatFile(path) as m:
    assert m.format == fmt.replace("v73", "v7.3")
    assert m.variables() == ["IsT", "phisT"]
    np.testing.assert_array_equal(m.array("phisT"), phis)
    assert m.cell_length("IsT") == 2
    got = list(m.cell_items("IsT"))
    np.testing.assert_array_equal(got[0], images[0])
    np.testing.assert_array_equal(got[1], images[1])
    assert got[1].shape == (25, 20) and got[0].dtype == np.uint8
    with pytest.raises(matfile.MatError, match=f"x_{fmt}.mat.*'IsTr'"):
      m.cell_length("IsTr")
    with pytest.raises(matfile.MatError, match="not a cell array"):
      m.cell_length("phisT")


@pytest.mark.parametrize("fmt", ["v73", "v5"])
def test_build_matches_sources(tmp_path, fmt):
  truth = fx.make_cofw_tree(tmp_path / "manual", fmt=fmt, n_train=3,
                            n_test=4, seed={"v73": 0, "v5": 1}[fmt])
  builder = _build(tmp_path / "manual", tmp_path / "data")
  assert _counts(builder) == {"train29": 3, "test29": 4, "test68": 4}
  md = builder.info.metadata
  assert md["crop_context"] == pytest.approx(2.2) and md["crop_size"] == 256
  assert build_lib.split_layout(builder, "test68") == "ibug68"
  assert build_lib.split_layout(builder, "train29") == "cofw29"
  assert build_lib.split_layout(builder, "test29") == "cofw29"
  assert "tensorflow" not in sys.modules

  for split, key, n_pts in (("train29", "train", 29), ("test29", "test", 29)):
    examples = _by_index(builder.as_data_source(split=split))
    t = truth[key]
    assert sorted(examples) == list(range(1, len(t["images"]) + 1))
    for i, ex in examples.items():
      assert ex["image"].shape == (256, 256, 3)
      assert ex["landmarks"].shape == (n_pts, 2)
      assert ex["landmarks"].dtype == np.float32
      assert ex["visible"].shape == (n_pts,) and ex["visible"].dtype == bool
      phis = t["phis"][i - 1]
      src = np.stack([phis[:29], phis[29:58]], -1) - 1.0
      np.testing.assert_allclose(ex["landmarks_original"], src, atol=1e-4)
      np.testing.assert_array_equal(ex["visible"], phis[58:] == 0)
      np.testing.assert_allclose(ex["face_box"],
                                 _xywh_to_box(t["bboxes"][i - 1]), atol=1e-4)
      _check_geometry(ex, src)
      _check_pixels(ex, t["images"][i - 1])
      if t["images"][i - 1].ndim == 2:
        assert (ex["image"][..., 0] == ex["image"][..., 1]).all()
    assert not all(ex["visible"].all() for ex in examples.values())

  examples = _by_index(builder.as_data_source(split="test68"))
  c68 = truth["cofw68"]
  for i, ex in examples.items():
    assert ex["landmarks"].shape == (68, 2)
    assert ex["subset"] == b"cofw68"
    src = c68["points"][i - 1] - 1.0
    np.testing.assert_allclose(ex["landmarks_original"], src, atol=1e-4)
    np.testing.assert_array_equal(ex["visible"], c68["occ"][i - 1] == 0)
    np.testing.assert_allclose(ex["face_box"],
                               _xywh_to_box(c68["bboxes"][i - 1]), atol=1e-4)
    _check_geometry(ex, src)
    _check_pixels(ex, truth["test"]["images"][i - 1])


def test_missing_train_and_annotations_skip_with_warning(tmp_path, caplog):
  fx.make_cofw_tree(tmp_path / "manual", fmt="v5", n_test=2,
                    with_train=False, with_annotations=False)
  with caplog.at_level(logging.WARNING):
    builder = _build(tmp_path / "manual", tmp_path / "data")
  assert _counts(builder) == {"test29": 2}
  assert "COFW_train_color.mat" in caplog.text
  assert "test_annotations" in caplog.text and "test68 skipped" in caplog.text


def test_no_files_is_an_error(tmp_path):
  (tmp_path / "manual").mkdir()
  (tmp_path / "manual" / "notes.txt").write_text("x")
  with pytest.raises(crop.DataError, match="COFW_test_color.mat.*COFW_train"):
    _build(tmp_path / "manual", tmp_path / "data")


def test_missing_points_file_names_it(tmp_path):
  fx.make_cofw_tree(tmp_path / "manual", fmt="v5", n_train=1, n_test=3)
  os.remove(tmp_path / "manual" / "cofw68" / "test_annotations" /
            "2_points.mat")
  with pytest.raises(crop.DataError, match="2_points.mat"):
    _build(tmp_path / "manual", tmp_path / "data")


def test_missing_bbox_file_names_it(tmp_path):
  fx.make_cofw_tree(tmp_path / "manual", fmt="v5", n_train=1, n_test=2)
  os.remove(tmp_path / "manual" / "cofw68" / "cofw68_test_bboxes.mat")
  with pytest.raises(crop.DataError, match="cofw68_test_bboxes.mat"):
    _build(tmp_path / "manual", tmp_path / "data")


def test_corrupt_mat_names_it(tmp_path):
  fx.make_cofw_tree(tmp_path / "manual", fmt="v73", n_train=1, n_test=2)
  (tmp_path / "manual" / "COFW_train_color.mat").write_bytes(b"garbage" * 20)
  with pytest.raises(crop.DataError,
                     match="cannot read MATLAB file .*COFW_train_color.mat"):
    _build(tmp_path / "manual", tmp_path / "data")


def test_bad_phis_shape_names_file_and_variable(tmp_path):
  fx.make_cofw_tree(tmp_path / "manual", fmt="v73", n_train=2, n_test=2,
                    with_annotations=False)
  truth_images = [np.zeros((50, 50), np.uint8)] * 2
  fx.write_mat_v73(tmp_path / "manual" / "COFW_train_color.mat",
                   {"IsTr": truth_images, "phisTr": np.zeros((2, 80)),
                    "bboxesTr": np.ones((2, 4))})
  with pytest.raises(crop.DataError,
                     match="COFW_train_color.mat: phisTr has shape"):
    _build(tmp_path / "manual", tmp_path / "data")


def test_bbox_count_mismatch(tmp_path):
  fx.make_cofw_tree(tmp_path / "manual", fmt="v5", n_train=1, n_test=3,
                    cofw68_boxes=None)
  scipy.io.savemat(tmp_path / "manual" / "cofw68" / "cofw68_test_bboxes.mat",
                   {"bboxes": np.ones((5, 4), np.int16)})
  with pytest.raises(crop.DataError, match="bboxes has shape .*5, 4"):
    _build(tmp_path / "manual", tmp_path / "data")


def test_real_cofw68_annotations(shared_data, tmp_path):
  """Three real COFW-68 annotation files with synthetic images."""
  ann = shared_data / "cofw68"
  if not (ann / "cofw68_test_bboxes.mat").is_file():
    pytest.skip(f"no COFW-68 annotations in {ann}")
  n = 3
  real = [scipy.io.loadmat(ann / "test_annotations" / f"{i}_points.mat")
          for i in range(1, n + 1)]
  boxes = scipy.io.loadmat(ann / "cofw68_test_bboxes.mat")["bboxes"][:n]
  sizes = []
  for r, b in zip(real, boxes):
    ext = max(r["Points"].max(), b[0] + b[2], b[1] + b[3])
    sizes.append((int(ext) + 20, int(ext) + 30))
  fx.make_cofw_tree(tmp_path / "manual", fmt="v73", n_train=1, n_test=n,
                    cofw68_points=[r["Points"] for r in real],
                    cofw68_occ=[r["Occ"] for r in real],
                    cofw68_boxes=boxes, image_sizes=sizes)
  builder = _build(tmp_path / "manual", tmp_path / "data")
  examples = _by_index(builder.as_data_source(split="test68"))
  assert sorted(examples) == [1, 2, 3]
  for i, ex in examples.items():
    src = real[i - 1]["Points"] - 1.0
    np.testing.assert_allclose(ex["landmarks_original"], src, atol=1e-4)
    np.testing.assert_array_equal(ex["visible"],
                                  real[i - 1]["Occ"].reshape(-1) == 0)
    b = boxes[i - 1].astype(np.float64)
    np.testing.assert_allclose(ex["face_box"], _xywh_to_box(b), atol=1e-4)
    _check_geometry(ex, src)
  # Real data has occluded points (about 23% overall).
  assert not all(ex["visible"].all() for ex in examples.values())
