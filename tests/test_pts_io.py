"""Tests for sgfan_jax.pts_io (.pts and 300-W CSV readers)."""

import csv

import numpy as np
import pytest

from sgfan_jax import pts_io


def _raw_values(path):
  """Independent parse: the numeric lines of a .pts file, as float64."""
  vals = []
  for line in open(path):
    parts = line.split()
    if len(parts) == 2:
      try:
        vals.append((float(parts[0]), float(parts[1])))
      except ValueError:
        pass
  return np.array(vals)


def test_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  pts = rng.uniform(-5, 500, size=(68, 2)).astype(np.float32)
  path = tmp_path / "a.pts"
  pts_io.write_pts(path, pts)
  text = path.read_text().splitlines()
  assert text[0] == "version: 1"
  assert text[1].split() == ["n_points:", "68"]
  assert text[2] == "{" and text[-1] == "}"
  # File values are 1-based.
  np.testing.assert_allclose(_raw_values(path), pts.astype(np.float64) + 1,
                             rtol=0, atol=1e-9)
  back = pts_io.read_pts(path)
  assert back.dtype == np.float32 and back.shape == (68, 2)
  np.testing.assert_array_equal(back, pts)


def test_headerless_and_other_counts(tmp_path):
  path = tmp_path / "noheader.pts"
  path.write_text("".join(f"{i + 1}.5 {2 * i + 1}\n" for i in range(29)))
  got = pts_io.read_pts(path, expected_points=29)
  np.testing.assert_array_equal(got[:, 0], np.arange(29) + 0.5)
  np.testing.assert_array_equal(got[:, 1], 2 * np.arange(29))
  got = pts_io.read_pts(path, expected_points=None)
  assert got.shape == (29, 2)
  with pytest.raises(pts_io.PtsFormatError, match="noheader.pts.*expected 68"):
    pts_io.read_pts(path)


@pytest.mark.parametrize("content,message", [
    ("version: 1\nn_points: 68\n{\n" + "1 2\n" * 67 + "}\n",
     "n_points 68 but 67"),
    ("version: 1\nn_points: 68\n{\n" + "1 2\n" * 67 + "1 abc\n}\n",
     "cannot parse"),
    ("version: 1\nn_points: 68\n{\n" + "1 2\n" * 67 + "1 2 3\n}\n",
     "expected 'x y'"),
    ("version: 1\nn_points: 68\n{\n" + "1 2\n" * 68, "missing closing"),
    ("", "expected 68 points, found 0"),
])
def test_bad_files_name_the_file(tmp_path, content, message):
  path = tmp_path / "broken_face.pts"
  path.write_text(content)
  with pytest.raises(pts_io.PtsFormatError) as err:
    pts_io.read_pts(path)
  assert "broken_face.pts" in str(err.value)
  assert message in str(err.value)


def test_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="nothere.pts"):
    pts_io.read_pts(tmp_path / "nothere.pts")


def test_write_rejects_bad_shape(tmp_path):
  with pytest.raises(ValueError, match="out.pts"):
    pts_io.write_pts(tmp_path / "out.pts", np.zeros((68, 3)))


def test_csv_synthetic(tmp_path):
  path = tmp_path / "ann.csv"
  rng = np.random.default_rng(1)
  shapes = rng.uniform(1, 300, size=(3, 68, 2))
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["image_name", "scale", "center_w", "center_h"] +
               [f"original_{i}_{a}" for i in range(68) for a in "xy"])
    for k in range(3):
      w.writerow([f"img{k}.jpg", 1.0, 2.0, 3.0] + list(shapes[k].reshape(-1)))
  names, got = pts_io.read_300w_csv(path)
  assert names == ["img0.jpg", "img1.jpg", "img2.jpg"]
  assert got.dtype == np.float32 and got.shape == (3, 68, 2)
  np.testing.assert_allclose(got, shapes - 1, atol=1e-4)


def test_csv_missing_column(tmp_path):
  path = tmp_path / "bad.csv"
  path.write_text("image_name,original_0_x\na.jpg,1\n")
  with pytest.raises(pts_io.PtsFormatError, match="bad.csv.*original_0_y"):
    pts_io.read_300w_csv(path)


def test_real_pts_file(shared_data):
  path = shared_data / "300w" / "afw" / "1051618982_1.pts"
  got = pts_io.read_pts(path)
  raw = _raw_values(path)
  assert raw.shape == (68, 2)
  np.testing.assert_allclose(got, raw - 1, atol=1e-4)


def test_real_csv(shared_data):
  d = shared_data / "300w_test_annotations"
  sizes = {}
  for name in ("valid_common", "valid_challenge", "valid", "test"):
    names, shapes = pts_io.read_300w_csv(
        d / f"face_landmarks_300w_{name}.csv")
    assert len(names) == shapes.shape[0]
    sizes[name] = len(names)
  assert sizes == {"valid_common": 554, "valid_challenge": 135,
                   "valid": 689, "test": 600}
  # Independent check of the first row against the raw CSV text.
  path = d / "face_landmarks_300w_valid_common.csv"
  with open(path) as f:
    rows = list(csv.reader(f))
  names, shapes = pts_io.read_300w_csv(path)
  assert names[0] == rows[1][0]
  first = np.array([float(v) for v in rows[1][4:4 + 136]]).reshape(68, 2)
  np.testing.assert_allclose(shapes[0], first - 1, atol=1e-3)


def test_find_faces_pairs_images_and_points(tmp_path):
  sub = tmp_path / "helen" / "testset"
  sub.mkdir(parents=True)
  pts = np.arange(136, dtype=np.float32).reshape(68, 2)
  for stem, ext in (("b_1", ".JPG"), ("a_2", ".png"), ("a_1", ".jpg")):
    pts_io.write_pts(sub / f"{stem}.pts", pts)
    (sub / f"{stem}{ext}").write_bytes(b"x")
  (sub / "notes.txt").write_text("ignored")
  faces = pts_io.find_faces(tmp_path, ["helen/testset"])
  assert [rel for rel, _, _ in faces] == [
      "helen/testset/a_1", "helen/testset/a_2", "helen/testset/b_1"]
  assert [img.name for _, img, _ in faces] == ["a_1.jpg", "a_2.png",
                                              "b_1.JPG"]
  pts_io.write_pts(sub / "lonely.pts", pts)
  with pytest.raises(FileNotFoundError, match="lonely.pts: no image"):
    pts_io.find_faces(tmp_path, ["helen/testset"])
  with pytest.raises(FileNotFoundError, match="no .pts files"):
    pts_io.find_faces(tmp_path, ["helen"])
