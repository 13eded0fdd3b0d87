"""Tests of sgfan_jax.input_pipeline: grain loaders over random-access data."""

import math

import numpy as np
import pytest

from sgfan_jax import augment
from sgfan_jax import input_pipeline as ip

NUM_POINTS = 5
SIDE = 8


def _fake_source(num):
  """List of DESIGN.md examples whose id is readable from every feature."""
  return [dict(
      image=np.full((SIDE, SIDE, 3), i % 251, np.uint8),
      landmarks=np.full((NUM_POINTS, 2), i, np.float32),
      landmarks_original=np.full((NUM_POINTS, 2), 2 * i, np.float32),
      visible=(np.arange(NUM_POINTS) + i) % 3 != 0,
      crop_to_image=np.array([[1, 0, i], [0, 1, -i]], np.float32),
      face_box=np.zeros(4, np.float32),
      file_name=f"img{i}.jpg".encode(), subset=b"afw") for i in range(num)]


def _ids(batch):
  return batch["landmarks"][:, 0, 0].astype(int)


def _take(iterator, num):
  out = [next(iterator) for _ in range(num)]
  iterator.close()
  return out


# ------------------------------------------------------------------- eval


@pytest.mark.parametrize("num,batch_size", [(23, 5), (10, 5), (3, 8), (1, 1)])
def test_eval_batches_cover_every_example_once_in_order(num, batch_size):
  source = _fake_source(num)
  batches = list(ip.eval_batches(source, batch_size=batch_size))
  assert len(batches) == math.ceil(num / batch_size)
  index = np.concatenate([b["index"] for b in batches])
  mask = np.concatenate([b["mask"] for b in batches])
  num_pad = len(batches) * batch_size - num
  np.testing.assert_array_equal(index, list(range(num)) + [-1] * num_pad)
  np.testing.assert_array_equal(mask, [True] * num + [False] * num_pad)
  for b in batches:
    assert b["index"].dtype == np.int32 and b["mask"].dtype == np.bool_
    real = b["mask"]
    np.testing.assert_array_equal(_ids(b)[real], b["index"][real])
    for i, row in zip(b["index"][real], np.flatnonzero(real)):
      np.testing.assert_array_equal(b["image"][row], source[i]["image"])
      np.testing.assert_array_equal(b["visible"][row], source[i]["visible"])
    # Padding rows are all zero.
    assert not b["image"][~real].any() and not b["landmarks"][~real].any()
    assert not b["visible"][~real].any()


def test_eval_batch_shapes_and_dtypes():
  batch = next(ip.eval_batches(_fake_source(7), batch_size=4))
  expected = {
      "image": ((4, SIDE, SIDE, 3), np.uint8),
      "landmarks": ((4, NUM_POINTS, 2), np.float32),
      "landmarks_original": ((4, NUM_POINTS, 2), np.float32),
      "visible": ((4, NUM_POINTS), np.bool_),
      "crop_to_image": ((4, 2, 3), np.float32),
      "mask": ((4,), np.bool_),
      "index": ((4,), np.int32),
  }
  assert set(batch) == set(expected)
  for key, (shape, dtype) in expected.items():
    assert batch[key].shape == shape, key
    assert batch[key].dtype == dtype, key


# ------------------------------------------------------------------ train


def test_train_batches_shapes_and_dtypes():
  batch = next(ip.train_batches(_fake_source(9), batch_size=4, seed=0))
  assert set(batch) == set(ip.BATCH_FEATURES)
  assert batch["image"].shape == (4, SIDE, SIDE, 3)
  assert batch["image"].dtype == np.uint8
  assert batch["landmarks"].shape == (4, NUM_POINTS, 2)
  assert batch["visible"].shape == (4, NUM_POINTS)
  assert batch["visible"].dtype == np.bool_
  assert batch["crop_to_image"].shape == (4, 2, 3)
  # Rows are whole examples: every feature agrees on the example id.
  ids = _ids(batch)
  np.testing.assert_array_equal(batch["image"][:, 0, 0, 0], ids % 251)
  np.testing.assert_array_equal(batch["landmarks_original"][:, 0, 0], 2 * ids)
  np.testing.assert_array_equal(batch["crop_to_image"][:, 0, 2], ids)


def test_train_epochs_are_reshuffled_permutations():
  num, batch_size = 23, 5
  steps = ip.steps_per_epoch(num, batch_size)
  assert steps == 4
  batches = _take(ip.train_batches(_fake_source(num), batch_size=batch_size,
                                   seed=7), 3 * steps)
  epochs = [np.concatenate([_ids(b) for b in batches[e * steps:
                                                     (e + 1) * steps]])
            for e in range(3)]
  for order in epochs:
    # Each epoch: 20 distinct examples (the 3 left over are dropped).
    assert len(set(order)) == steps * batch_size
    assert set(order) <= set(range(num))
  assert not np.array_equal(epochs[0], epochs[1])
  assert not np.array_equal(epochs[1], epochs[2])
  # Shuffled, not the source order.
  assert not np.array_equal(epochs[0], np.arange(steps * batch_size))


def test_train_order_is_deterministic_by_seed():
  source = _fake_source(17)
  a = [_ids(b) for b in _take(ip.train_batches(source, batch_size=4, seed=3),
                              8)]
  b = [_ids(b) for b in _take(ip.train_batches(source, batch_size=4, seed=3),
                              8)]
  c = [_ids(b) for b in _take(ip.train_batches(source, batch_size=4, seed=4),
                              8)]
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


@pytest.mark.parametrize("start_step", [1, 4, 9])
def test_resume_equals_uninterrupted_stream(start_step):
  source = _fake_source(13)
  full = _take(ip.train_batches(source, batch_size=3, seed=11), 14)
  resumed = _take(ip.train_batches(source, batch_size=3, seed=11,
                                   start_step=start_step), 14 - start_step)
  for want, got in zip(full[start_step:], resumed):
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


def test_worker_processes_give_the_same_stream():
  source = _fake_source(13)
  ref = _take(ip.train_batches(source, batch_size=3, seed=5, start_step=2), 7)
  got = _take(ip.train_batches(source, batch_size=3, seed=5, start_step=2,
                               num_workers=2, prefetch=2), 7)
  for want, have in zip(ref, got):
    for key in want:
      np.testing.assert_array_equal(have[key], want[key])


def test_loader_errors_are_clear():
  source = _fake_source(3)
  with pytest.raises(ValueError, match="fewer than one batch"):
    ip.train_batches(source, batch_size=4, seed=0)
  with pytest.raises(ValueError, match="seed"):
    ip.train_batches(source, batch_size=2, seed=-1)
  with pytest.raises(ValueError, match="empty"):
    ip.eval_batches([], batch_size=2)
  broken = [{k: v for k, v in ex.items() if k != "visible"} for ex in source]
  with pytest.raises(KeyError, match="visible"):
    next(ip.eval_batches(broken, batch_size=2))
  with pytest.raises(ValueError, match="builder:split"):
    ip.parse_split_spec("face300w")
  assert ip.parse_split_spec("cofw:test") == ("cofw", "test")


# ------------------------------------------------------ real built dataset


@pytest.fixture(scope="module")
def sample_tfds(repo_root, tmp_path_factory):
  """The bundled 300-W sample built with the face300w builder into a tmp dir."""
  build = pytest.importorskip("tfds_builders.build")
  manual = repo_root / "sample_data" / "300w"
  if not manual.is_dir():
    pytest.skip(f"bundled sample not found at {manual}")
  data_dir = tmp_path_factory.mktemp("tfds")
  build.build("face300w", str(manual), str(data_dir))
  return data_dir


def test_open_split_on_built_sample(sample_tfds):
  source, meta = ip.open_split("face300w", "train", str(sample_tfds))
  assert meta == ip.SplitMetadata(dataset="face300w", split="train",
                                  crop_size=256, crop_context=2.2,
                                  layout="ibug68", num_examples=len(source))
  # 12 afw + 16 helen/trainset (README), less the faces held out in 'val'.
  val, _ = ip.open_split("face300w", "val", str(sample_tfds))
  assert len(source) + len(val) == 28 and len(val) >= 1
  batch = next(ip.train_batches(source, batch_size=4, seed=0,
                                num_threads=2))
  assert batch["image"].shape == (4, 256, 256, 3)
  assert batch["image"].dtype == np.uint8 and batch["image"].std() > 10
  assert batch["landmarks"].shape == (4, 68, 2)
  # Crop points map to the original points through crop_to_image.
  np.testing.assert_allclose(
      augment.apply_affine(batch["landmarks"], batch["crop_to_image"]),
      batch["landmarks_original"], rtol=1e-4, atol=0.05)


def test_eval_on_built_sample_maps_back_to_original(sample_tfds):
  source, meta = ip.open_split("face300w", "test_common", str(sample_tfds))
  window = augment.input_window_side(meta.crop_size, meta.crop_context, 1.3)
  seen = []
  for batch in ip.eval_batches(source, batch_size=5):
    _, points, out_to_crop = augment.eval_transform(
        batch["image"], batch["landmarks"], window_side=window, out_size=128)
    # Network-input coords -> crop -> original image (the eval path).
    crop_pts = augment.apply_affine(points, out_to_crop)
    orig = np.asarray(augment.apply_affine(crop_pts, batch["crop_to_image"]))
    real = batch["mask"]
    np.testing.assert_allclose(orig[real], batch["landmarks_original"][real],
                               rtol=1e-4, atol=0.05)
    # The face (landmark box) fills most of the window on a centred crop.
    assert np.all(np.asarray(points)[real] > -1)
    assert np.all(np.asarray(points)[real] < 128)
    seen.extend(batch["index"][real].tolist())
  assert seen == list(range(meta.num_examples)) == list(range(12))


def test_open_split_errors_name_the_fix(sample_tfds, tmp_path):
  with pytest.raises(FileNotFoundError, match="tfds_builders.build face300w"):
    ip.open_split("face300w", "train", str(tmp_path / "nothing_here"))
  with pytest.raises(ValueError, match="test_challenging.*test_common"):
    ip.open_split("face300w", "test_challenging", str(sample_tfds))
  with pytest.raises(ValueError, match="unknown"):
    ip.open_split("no_such_set", "train", str(tmp_path))
