"""Tests for the face300w TFDS builder (array_record, read without TF)."""

import hashlib
import logging
import os
import pathlib
import shutil
import sys
import time

import numpy as np
from PIL import Image
import pytest
from scipy import ndimage

from sgfan_jax import pts_io
from tfds_builders import build as build_lib
from tfds_builders.face300w import face300w_dataset_builder as builder_lib
from sgfan_jax import crop

SAMPLE = pathlib.Path(__file__).resolve().parents[1] / "sample_data" / "300w"


def _raw_pts(path):
  """Independent .pts parse: numeric 'x y' lines as float64, 1-based."""
  vals = []
  for line in open(path):
    parts = line.split()
    if len(parts) == 2 and parts[0] not in ("version:", "n_points:"):
      vals.append((float(parts[0]), float(parts[1])))
  return np.array(vals)


def _stems(folder, n):
  return sorted(p.stem for p in (SAMPLE / folder).glob("*.pts"))[:n]


def _copy_face(src_dir, stem, dst_dir, new_stem=None):
  dst_dir.mkdir(parents=True, exist_ok=True)
  new_stem = new_stem or stem
  shutil.copy(src_dir / f"{stem}.jpg", dst_dir / f"{new_stem}.jpg")
  shutil.copy(src_dir / f"{stem}.pts", dst_dir / f"{new_stem}.pts")


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory):
  """A small 300-W tree from the bundled sample, with awkward cases.

  afw: 3 faces: one re-encoded as .png, one grayscale, one upscaled 8x
  (3072 px, exercising big originals); helen/trainset: 3 faces, one with a
  header-less .pts; helen/testset: 3 faces; ibug: 2 faces and 01_Indoor:
  1 face as .png (copies; 02_Outdoor is absent).
  """
  root = tmp_path_factory.mktemp("face300w_manual")
  afw = _stems("afw", 3)
  for stem in afw:
    _copy_face(SAMPLE / "afw", stem, root / "afw")
  # .png
  png_stem = afw[0]
  im = Image.open(root / "afw" / f"{png_stem}.jpg")
  im.save(root / "afw" / f"{png_stem}.png")
  os.remove(root / "afw" / f"{png_stem}.jpg")
  # grayscale
  gray_stem = afw[1]
  Image.open(root / "afw" / f"{gray_stem}.jpg").convert("L").save(
      root / "afw" / f"{gray_stem}.jpg", quality=95)
  # upscaled 8x: point p (0-based, pixel centre) -> 8 p + 3.5.
  big_stem = afw[2]
  im = Image.open(root / "afw" / f"{big_stem}.jpg")
  im.resize((im.width * 8, im.height * 8), Image.Resampling.BILINEAR).save(
      root / "afw" / f"{big_stem}.jpg", quality=90)
  pts = pts_io.read_pts(root / "afw" / f"{big_stem}.pts")
  pts_io.write_pts(root / "afw" / f"{big_stem}.pts", pts * 8 + 3.5)

  helen_tr = _stems("helen/trainset", 3)
  for stem in helen_tr:
    _copy_face(SAMPLE / "helen/trainset", stem, root / "helen/trainset")
  raw = _raw_pts(root / "helen/trainset" / f"{helen_tr[0]}.pts")
  (root / "helen/trainset" / f"{helen_tr[0]}.pts").write_text(
      "".join(f"{x} {y}\n" for x, y in raw))
  for stem in _stems("helen/testset", 3):
    _copy_face(SAMPLE / "helen/testset", stem, root / "helen/testset")
  for i, stem in enumerate(_stems("helen/testset", 2)):
    _copy_face(SAMPLE / "helen/testset", stem, root / "ibug", f"image_{i:03d}")
  stem = _stems("helen/trainset", 4)[3]
  _copy_face(SAMPLE / "helen/trainset", stem, root / "01_Indoor",
             "indoor_001")
  jpg = root / "01_Indoor" / "indoor_001.jpg"
  Image.open(jpg).save(jpg.with_suffix(".png"))
  os.remove(jpg)
  return root


@pytest.fixture(scope="module")
def built(manual_dir, tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("face300w_data")
  builder = build_lib.build("face300w", str(manual_dir), str(data_dir))
  return builder, data_dir


def _all(source):
  return [source[i] for i in range(len(source))]


def test_split_counts_and_metadata(built):
  builder, _ = built
  counts = {k: v.num_examples for k, v in builder.info.splits.items()}
  md = builder.info.metadata
  # 6 training faces: 1 held out for validation (max(1, round(5% of 6))).
  assert counts == {"train": 5, "val": 1, "test_common": 3,
                    "test_challenging": 2, "test_full": 5, "test_private": 1}
  assert md["val_fraction"] == pytest.approx(0.05) and md["val_seed"] == 0
  assert md["crop_context"] == pytest.approx(2.2)
  assert md["crop_size"] == 256
  assert md["layout"] == "ibug68"
  assert build_lib.split_layout(builder, "train") == "ibug68"
  assert str(builder.info.file_format.value) == "array_record"


def test_examples_match_source_files(built, manual_dir):
  builder, data_dir = built
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  seen = {}
  for split in ("train", "val", "test_common", "test_challenging",
                "test_full", "test_private"):
    source = tfds.data_source("face300w", split=split, data_dir=str(data_dir))
    for ex in _all(source):
      name = ex["file_name"].decode()
      subset = ex["subset"].decode()
      assert name.startswith(subset + "/")
      assert ex["image"].shape == (256, 256, 3)
      assert ex["image"].dtype == np.uint8
      for key in ("landmarks", "landmarks_original"):
        assert ex[key].shape == (68, 2) and ex[key].dtype == np.float32
      assert ex["visible"].dtype == np.bool_ and ex["visible"].all()
      assert ex["crop_to_image"].shape == (2, 3)
      # Independent reference: the raw 1-based .pts values.
      pts_path = (manual_dir / name).with_suffix(".pts")
      src = _raw_pts(pts_path) - 1.0
      np.testing.assert_allclose(ex["landmarks_original"], src, atol=1e-3)
      np.testing.assert_array_equal(ex["landmarks_original"],
                                    pts_io.read_pts(pts_path))
      m = ex["crop_to_image"].astype(np.float64)
      back = ex["landmarks"] @ m[:, :2].T + m[:, 2]
      np.testing.assert_allclose(back, src, atol=0.5)
      assert np.abs(back - src).max() < 0.01 * max(1.0, m[0, 0])
      # Face box = landmark box; crop centred on it, 2.2x its larger side.
      box = np.array([src[:, 0].min(), src[:, 1].min(), src[:, 0].max(),
                      src[:, 1].max()])
      np.testing.assert_allclose(ex["face_box"], box, atol=1e-3)
      side = 2.2 * max(box[2] - box[0], box[3] - box[1])
      assert m[0, 0] == pytest.approx(side / 256, rel=1e-5)
      centre = m @ np.array([127.5, 127.5, 1.0])
      np.testing.assert_allclose(
          centre, [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], atol=1e-3)
      seen.setdefault(split, set()).add(name)
  assert seen["test_full"] == seen["test_common"] | seen["test_challenging"]
  assert not seen["train"] & seen["val"]
  assert seen["val"] == set(builder_lib.val_names(
      sorted(seen["train"] | seen["val"])))
  assert {n.split("/")[0] for n in seen["train"]} == {"afw", "helen"}
  assert any(n.endswith(".png") for n in seen["train"])
  assert seen["test_private"] == {"01_Indoor/indoor_001.png"}


def test_crop_pixels_match_source(built, manual_dir):
  """Stored crop vs an independent bilinear resampling of the source image."""
  builder, _ = built
  checked = 0
  for ex in (_all(builder.as_data_source(split="train")) +
             _all(builder.as_data_source(split="val"))):
    name = ex["file_name"].decode()
    img = np.asarray(Image.open(manual_dir / name).convert("RGB"), np.float64)
    m = ex["crop_to_image"].astype(np.float64)
    v, u = np.mgrid[0:256, 0:256].astype(np.float64)
    x = m[0, 0] * u + m[0, 2]
    y = m[1, 1] * v + m[1, 2]
    ref = np.stack([ndimage.map_coordinates(img[..., c], [y, x], order=1,
                                            cval=0.0) for c in range(3)], -1)
    got = ex["image"].astype(np.float64)
    mad = np.abs(got - ref).mean()
    # A crop shifted by 3 px must be clearly worse (the test can fail).
    mad_shift = np.abs(np.roll(got, 3, axis=1) - ref).mean()
    assert mad < 4.0, (name, mad)
    assert mad_shift > 3 * mad, (name, mad, mad_shift)
    if "gray" in name or np.allclose(img[..., 0], img[..., 1]):
      assert (ex["image"][..., 0] == ex["image"][..., 2]).all()
    checked += 1
  assert checked == 6


def test_load_builder_without_tensorflow(built):
  _, data_dir = built
  builder = build_lib.load_builder("face300w", str(data_dir))
  source = builder.as_data_source(split="test_common")
  assert len(source) == 3
  assert source[0]["landmarks"].shape == (68, 2)
  assert "tensorflow" not in sys.modules


def test_load_builder_not_built(tmp_path):
  with pytest.raises(FileNotFoundError, match="face300w is not built"):
    build_lib.load_builder("face300w", str(tmp_path))


def test_missing_folders_warn(tmp_path, caplog):
  manual = tmp_path / "manual"
  _copy_face(SAMPLE / "helen/testset", _stems("helen/testset", 1)[0],
             manual / "helen/testset")
  with caplog.at_level(logging.WARNING):
    builder = build_lib.build("face300w", str(manual), str(tmp_path / "data"))
  text = caplog.text
  for missing in ("afw/", "helen/trainset/", "lfpw/testset/", "ibug/",
                  "01_Indoor/"):
    assert missing in text
  assert set(builder.info.splits.keys()) == {"test_common", "test_full"}


def test_no_data_is_an_error(tmp_path):
  (tmp_path / "manual").mkdir()
  with pytest.raises(crop.DataError, match="manual.* is empty"):
    build_lib.build("face300w", str(tmp_path / "manual"),
                    str(tmp_path / "data"))
  (tmp_path / "manual" / "readme.txt").write_text("nothing here")
  with pytest.raises(crop.DataError, match="no 300-W data"):
    build_lib.build("face300w", str(tmp_path / "manual"),
                    str(tmp_path / "data"))
  with pytest.raises(crop.DataError, match="nowhere"):
    build_lib.build("face300w", str(tmp_path / "nowhere"),
                    str(tmp_path / "data"))


def _one_face_tree(tmp_path):
  manual = tmp_path / "manual"
  stem = _stems("afw", 1)[0]
  _copy_face(SAMPLE / "afw", stem, manual / "afw")
  return manual, stem


def test_bad_pts_names_file(tmp_path):
  manual, stem = _one_face_tree(tmp_path)
  raw = _raw_pts(manual / "afw" / f"{stem}.pts")
  (manual / "afw" / f"{stem}.pts").write_text(
      "".join(f"{x} {y}\n" for x, y in raw[:67]))
  with pytest.raises(ValueError, match=f"{stem}.pts.*expected 68 points"):
    build_lib.build("face300w", str(manual), str(tmp_path / "data"))


def test_unreadable_image_names_file(tmp_path):
  manual, stem = _one_face_tree(tmp_path)
  (manual / "afw" / f"{stem}.jpg").write_bytes(b"not a jpeg at all")
  with pytest.raises(crop.DataError, match=f"cannot read image .*{stem}.jpg"):
    build_lib.build("face300w", str(manual), str(tmp_path / "data"))


def test_pts_without_image_names_file(tmp_path):
  manual, stem = _one_face_tree(tmp_path)
  os.remove(manual / "afw" / f"{stem}.jpg")
  with pytest.raises(crop.DataError, match=f"{stem}.pts: no image"):
    build_lib.build("face300w", str(manual), str(tmp_path / "data"))


def test_val_names_reference():
  """Held-out names vs a naive recomputation of the documented rule."""
  names = [f"afw/{i:04d}.jpg" for i in range(57)] + [
      f"lfpw/trainset/image_{i:04d}.png" for i in range(43)]
  got = builder_lib.val_names(names)
  assert len(got) == 5                       # round(0.05 * 100)
  digests = {n: hashlib.sha256(("0:" + n).encode()).hexdigest() for n in names}
  cut = sorted(digests.values())[4]
  assert got == {n for n, d in digests.items() if d <= cut}
  # Order of the input does not matter; another seed gives another set.
  assert builder_lib.val_names(names[::-1]) == got
  assert builder_lib.val_names(names, seed=1) != got
  assert len(builder_lib.val_names(names, fraction=0.1)) == 10
  assert builder_lib.val_names(names[:1]) == frozenset()
  assert len(builder_lib.val_names(names[:3])) == 1


def test_cli(tmp_path, capsys):
  manual, _ = _one_face_tree(tmp_path)
  rc = build_lib.main(["face300w", "--manual_dir", str(manual),
                       "--data_dir", str(tmp_path / "data")])
  assert rc == 0
  assert "train: 1 examples" in capsys.readouterr().out
  rc = build_lib.main(["face300w", "--manual_dir", str(tmp_path / "nope"),
                       "--data_dir", str(tmp_path / "data2")])
  assert rc == 1
  assert "nope" in capsys.readouterr().err


def test_bundled_sample_builds(tmp_path):
  builder = build_lib.build("face300w", str(SAMPLE), str(tmp_path))
  counts = {k: v.num_examples for k, v in builder.info.splits.items()}
  assert counts == {"train": 27, "val": 1, "test_common": 12, "test_full": 12}
  n_files = len(list(SAMPLE.rglob("*.pts")))
  assert n_files == 40
  size = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
  assert size < 5e6


def test_full_shared_data(shared_data, tmp_path):
  """Whole shared 300-W copy: 2,012 training faces (1,911 train + 101 val)
  and the 554 common-test faces."""
  start = time.time()
  builder = build_lib.build("face300w", str(shared_data / "300w"),
                            str(tmp_path))
  elapsed = time.time() - start
  counts = {k: v.num_examples for k, v in builder.info.splits.items()}
  assert counts == {"train": 1911, "val": 101, "test_common": 554,
                    "test_full": 554}
  val = builder.as_data_source(split="val")
  val_subsets = {val[i]["subset"].decode() for i in range(len(val))}
  # Every training subset contributes; no test face is held out.
  assert val_subsets == {"afw", "helen/trainset", "lfpw/trainset"}
  # benchmarks/compare_300w.py --split val picks the same 101 faces from
  # the folders (model selection between trained variants).
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
  from benchmarks import compare_300w  # pylint: disable=g-import-not-at-top
  val_files = {os.path.splitext(val[i]["file_name"].decode())[0]
               for i in range(len(val))}
  assert set(compare_300w.val_faces(shared_data / "300w")) == val_files
  source = builder.as_data_source(split="test_common")
  # Every common-test face against its own .pts (independent parse).
  for i in range(0, len(source), 7):
    ex = source[i]
    src = _raw_pts(shared_data / "300w" /
                   pathlib.Path(ex["file_name"].decode()).with_suffix(".pts"))
    np.testing.assert_allclose(ex["landmarks_original"], src - 1, atol=1e-3)
    m = ex["crop_to_image"]
    back = ex["landmarks"] @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(back, src - 1, atol=0.5)
  print(f"full 300-W shared build: {elapsed:.1f} s")
