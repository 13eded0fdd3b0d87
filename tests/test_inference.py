"""sgfan_jax.inference: the pure prediction functions, model folders and
training checkpoints.

The network is the tiny untrained one of tests/photo_fixtures.py; every test
compares the same network under a change whose effect is known (batch
composition, a save/load round trip, a checkpoint read two ways) or checks a
coordinate map against a hand computation.
"""

import json
import os

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default as default_config
from sgfan_jax import checkpoints as ckpt_lib
from sgfan_jax import crop
from sgfan_jax import export_model
from sgfan_jax import inference
from sgfan_jax import ksvd
from sgfan_jax import model as model_lib
from sgfan_jax import optim
from sgfan_jax import run
from sgfan_jax import train
from sgfan_jax.landmarker import Landmarker
from tests import photo_fixtures as pf

KEYS = ("raw_points", "points", "confidence", "peak")


@pytest.fixture(scope="module")
def tiny():
  config, variables, dictionary = pf.tiny_parts()
  model = inference.create_model(config)
  metadata = inference.default_crop_metadata(config)
  spec = inference.inference_spec(config, metadata)
  return {"config": config, "variables": variables, "dictionary": dictionary,
          "device_dictionary": ksvd.as_device(dictionary), "model": model,
          "spec": spec, "predict": inference.make_predict_fn(model, spec)}


@pytest.fixture(scope="module")
def crops():
  """Three bundled faces cut out at their landmark boxes, as Landmarker
  does: uint8 crops [3, S, S, 3] and crop -> image affines [3, 2, 3]."""
  images, mats = [], []
  for name in pf.FACES[:3]:
    rgb, pts = pf.sample_face(name)
    side, ex, ey = crop.crop_transform(crop.landmark_box(pts))
    images.append(crop.crop_image(crop.load_photo(rgb), side, ex, ey))
    mats.append(crop.crop_to_image_matrix(side, ex, ey))
  return np.stack(images), np.stack(mats)


def _np(out):
  return {k: np.asarray(out[k]) for k in KEYS}


def _assert_same(a, b, atol_points=0.0, atol_conf=0.0):
  for key in ("raw_points", "points"):
    np.testing.assert_allclose(a[key], b[key], rtol=0, atol=atol_points,
                               err_msg=key)
  for key in ("confidence", "peak"):
    np.testing.assert_allclose(a[key], b[key], rtol=0, atol=atol_conf,
                               err_msg=key)


@pytest.fixture(scope="module")
def batch_out(tiny, crops):
  images, mats = crops
  return _np(tiny["predict"](tiny["variables"], images, mats,
                             tiny["device_dictionary"]))


# ------------------------------------------------------------ predict_crops


def test_batch_outputs_are_per_face(tiny, crops, batch_out):
  images, mats = crops
  out = batch_out
  assert out["points"].shape == (3, 68, 2)
  assert out["confidence"].shape == (3, 68)
  assert np.all((out["confidence"] >= 0) & (out["confidence"] <= 1))
  # Not a degenerate network: different faces, different points.
  assert np.abs(out["raw_points"][0] - out["raw_points"][1]).max() > 1.0
  # One face per call (another batch size: another compiled program).
  for i in range(3):
    single = _np(tiny["predict"](tiny["variables"], images[i:i + 1],
                                 mats[i:i + 1], tiny["device_dictionary"]))
    _assert_same({k: v[0] for k, v in single.items()},
                 {k: v[i] for k, v in out.items()}, atol_points=1e-3,
                 atol_conf=1e-4)
  # Same batch size, other neighbours: permuted, and zero padding as in
  # Landmarker.predict_crops.
  perm = np.array([2, 0, 1])
  permuted = _np(tiny["predict"](tiny["variables"], images[perm], mats[perm],
                                 tiny["device_dictionary"]))
  _assert_same({k: v[perm] for k, v in out.items()}, permuted,
               atol_points=1e-4, atol_conf=1e-5)
  padded = np.zeros_like(images)
  padded[0] = images[1]
  alone = _np(tiny["predict"](tiny["variables"], padded,
                              np.repeat(mats[1:2], 3, 0),
                              tiny["device_dictionary"]))
  _assert_same({k: v[0] for k, v in alone.items()},
               {k: v[1] for k, v in out.items()}, atol_points=1e-4,
               atol_conf=1e-5)


def test_points_follow_the_crop_to_image_affine(tiny, crops, batch_out):
  """The network sees only the crop; crop_to_image places the points. A
  shifted and scaled affine moves them exactly so."""
  images, mats = crops
  moved = mats.astype(np.float64).copy()
  moved[:, :, :2] *= 2.0
  moved[:, 0, 2] = 2.0 * moved[:, 0, 2] + 1000.0
  moved[:, 1, 2] = 2.0 * moved[:, 1, 2] - 30.0
  out = _np(tiny["predict"](tiny["variables"], images,
                            moved.astype(np.float32),
                            tiny["device_dictionary"]))
  for key in ("raw_points", "points"):
    expect = batch_out[key] * 2.0 + np.array([1000.0, -30.0])
    np.testing.assert_allclose(out[key], expect, rtol=0, atol=2e-3,
                               err_msg=key)
  np.testing.assert_allclose(out["confidence"], batch_out["confidence"],
                             atol=1e-6)


def test_output_to_image_hand_computation():
  rng = np.random.default_rng(0)
  points = rng.uniform(-5, 130, (2, 5, 2))
  out_to_crop = np.array([[[1.5, 0.2, 10.0], [-0.1, 1.7, -4.0]],
                          [[2.0, 0.0, 0.5], [0.0, 2.0, 7.25]]])
  crop_to_image = np.array([[[0.8, 0.0, 100.0], [0.0, 0.8, 50.0]],
                            [[1.25, -0.3, -20.0], [0.3, 1.25, 3.0]]])
  got = np.asarray(inference.output_to_image(
      jnp.asarray(points, jnp.float32), jnp.asarray(out_to_crop, jnp.float32),
      jnp.asarray(crop_to_image, jnp.float32)))
  expect = np.zeros_like(points)
  for b in range(2):
    for n in range(5):
      x, y = points[b, n]
      u = out_to_crop[b, 0, 0] * x + out_to_crop[b, 0, 1] * y + out_to_crop[b, 0, 2]
      v = out_to_crop[b, 1, 0] * x + out_to_crop[b, 1, 1] * y + out_to_crop[b, 1, 2]
      expect[b, n, 0] = (crop_to_image[b, 0, 0] * u + crop_to_image[b, 0, 1] * v
                         + crop_to_image[b, 0, 2])
      expect[b, n, 1] = (crop_to_image[b, 1, 0] * u + crop_to_image[b, 1, 1] * v
                         + crop_to_image[b, 1, 2])
  np.testing.assert_allclose(got, expect, rtol=1e-6, atol=1e-3)


def test_network_window_in_image_coordinates(tiny):
  """DESIGN.md geometry: the network input is the square of side
  face_context * (box side) centred on the face box. Its centre pixel maps
  to the box centre and its outer edges (-0.5, I - 0.5) to the window
  edges in the original image."""
  config, spec = tiny["config"], tiny["spec"]
  box = np.array([40.0, 70.0, 200.0, 250.0])     # w 160, h 180
  side, ex, ey = crop.crop_transform(box)
  mat = crop.crop_to_image_matrix(side, ex, ey)[None]
  _, out_to_crop = inference.crops_to_input(
      jnp.zeros((1, crop.CROP_SIZE, crop.CROP_SIZE, 3), jnp.uint8), spec)
  size = config.model.input_size
  probe = np.array([[[(size - 1) / 2, (size - 1) / 2], [-0.5, -0.5],
                     [size - 0.5, size - 0.5]]], np.float32)
  got = np.asarray(inference.output_to_image(probe, out_to_crop, mat))[0]
  cx, cy = 120.0, 160.0
  half = config.data.face_context * 180.0 / 2
  np.testing.assert_allclose(got[0], [cx, cy], atol=1e-3)
  np.testing.assert_allclose(got[1], [cx - half, cy - half], atol=1e-3)
  np.testing.assert_allclose(got[2], [cx + half, cy + half], atol=1e-3)
  assert spec.window_side == pytest.approx(
      crop.CROP_SIZE * config.data.face_context / crop.CROP_CONTEXT)


# ----------------------------------------------------------- model folders


def test_load_model_round_trip(tiny, crops, batch_out, tmp_path):
  folder = pf.save_tiny_model(tmp_path / "model")
  for name in (inference.VARIABLES_FILE, inference.CONFIG_FILE,
               inference.META_FILE, inference.DICTIONARY_FILE):
    assert (tmp_path / "model" / name).is_file(), name
  bundle = inference.load_model(folder)
  ref = jax.tree_util.tree_leaves_with_path(tiny["variables"])
  got = jax.tree_util.tree_leaves_with_path(bundle.variables)
  assert [p for p, _ in ref] == [p for p, _ in got]
  for (path, a), (_, b) in zip(ref, got):
    assert a.dtype == b.dtype and a.shape == b.shape, path
    np.testing.assert_array_equal(a, b, err_msg=str(path))
  assert bundle.config.to_dict() == tiny["config"].to_dict()
  assert bundle.metadata == inference.default_crop_metadata(tiny["config"])
  np.testing.assert_array_equal(bundle.dictionary.atoms,
                                tiny["dictionary"].atoms)
  assert bundle.source == os.path.abspath(folder)
  images, mats = crops
  out = _np(tiny["predict"](bundle.variables, images, mats,
                            ksvd.as_device(bundle.dictionary)))
  _assert_same(out, batch_out)          # identical, not just close


def test_load_model_errors_name_the_file(tmp_path):
  missing = tmp_path / "nowhere"
  with pytest.raises(inference.ModelFileError,
                     match="model folder not found.*nowhere"):
    inference.load_model(str(missing))

  folder = tmp_path / "m"
  pf.save_tiny_model(folder)
  variables = folder / inference.VARIABLES_FILE
  good = variables.read_bytes()

  variables.unlink()
  with pytest.raises(inference.ModelFileError,
                     match=r"variables\.msgpack: missing"):
    inference.load_model(str(folder))

  for corrupt in (good[:len(good) // 2], b"\xc1 not msgpack at all"):
    variables.write_bytes(corrupt)
    with pytest.raises(inference.ModelFileError,
                       match=r"variables\.msgpack: cannot be read"):
      inference.load_model(str(folder))

  variables.write_bytes(flax.serialization.msgpack_serialize(
      {"params": {"w": np.zeros(3, np.float32)}}))
  with pytest.raises(inference.ModelFileError,
                     match=r"variables\.msgpack: expected params and "
                           "batch_stats"):
    inference.load_model(str(folder))
  variables.write_bytes(good)
  inference.load_model(str(folder))                   # intact again

  config = folder / inference.CONFIG_FILE
  text = config.read_text()
  config.write_text(text[:len(text) // 2])
  with pytest.raises(inference.ModelFileError,
                     match=r"config\.json: not valid JSON"):
    inference.load_model(str(folder))
  config.unlink()
  with pytest.raises(inference.ModelFileError, match=r"config\.json: missing"):
    inference.load_model(str(folder))


def test_load_model_msgpack_scalar_is_a_model_file_error(tmp_path):
  folder = tmp_path / "m"
  pf.save_tiny_model(folder)
  (folder / inference.VARIABLES_FILE).write_bytes(b"\x05")
  with pytest.raises(inference.ModelFileError, match=r"variables\.msgpack"):
    inference.load_model(str(folder))


def _zeros_like_network(config):
  """Variables of ``config``'s network (shapes only: nothing compiled)."""
  model = inference.create_model(config)
  shapes = jax.eval_shape(lambda: inference.init_variables(
      model, config.model.input_size, jax.random.PRNGKey(0)))
  return jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def test_check_variables_rejects_another_network(tiny, tmp_path):
  config, model = tiny["config"], tiny["model"]
  size = config.model.input_size
  inference.check_variables(model, tiny["variables"], size, "ok")  # fits
  narrow = pf.tiny_config()
  narrow.model.width = 8
  narrow_vars = _zeros_like_network(narrow)
  with pytest.raises(inference.ModelFileError,
                     match="somewhere/variables.msgpack: the saved variables "
                           "do not match.*width"):
    inference.check_variables(model, narrow_vars, size,
                              "somewhere/variables.msgpack")
  partial = {"params": tiny["variables"]["params"],
             "batch_stats": {}}
  with pytest.raises(inference.ModelFileError, match="do not match"):
    inference.check_variables(model, partial, size, "x")
  # A folder whose config says width 16 but holds width-8 weights: the
  # Landmarker refuses it, naming the folder.
  folder = pf.save_tiny_model(tmp_path / "mismatch", variables=narrow_vars)
  with pytest.raises(inference.ModelFileError, match="mismatch.*do not match"):
    Landmarker.from_pretrained(folder, detector="none")


def test_read_config_fills_fields_added_later(tiny, tmp_path):
  folder = tmp_path / "old"
  pf.save_tiny_model(folder)
  path = folder / inference.CONFIG_FILE
  saved = json.loads(path.read_text())
  # The saved JSON round-trips to the same config (tuples included).
  full = inference.read_config(str(path))
  assert full.to_dict() == tiny["config"].to_dict()
  assert isinstance(full.data.eval_splits, tuple)
  # A model saved before config.predict and refine.ridge existed.
  del saved["predict"]
  del saved["refine"]["ridge"]
  path.write_text(json.dumps(saved))
  old = inference.read_config(str(path))
  default = default_config.get_config()
  assert old.predict.to_dict() == default.predict.to_dict()
  assert old.refine.ridge == default.refine.ridge
  assert old.model.width == 16 and old.refine.dictionary_size == 8
  assert old.refine.weight_threshold == pf.TINY_THRESHOLD
  # ... and such a folder loads into a Landmarker with the default batch.
  lm = Landmarker(inference.load_model(str(folder)), detector="none")
  assert lm.batch_size == default.predict.batch_size


# ------------------------------------------------------- training workdirs


def _perturbed(state, seed, step):
  """``state`` with moved parameters and BatchNorm statistics (host-side
  noise, so nothing equals the initialisation) at ``step``."""
  rng = np.random.default_rng(seed)
  move = lambda lo, hi: lambda x: (np.asarray(x) + rng.uniform(
      lo, hi, np.shape(x))).astype(np.float32)
  return state.replace(
      step=step, params=jax.tree_util.tree_map(move(-0.1, 0.1), state.params),
      batch_stats=jax.tree_util.tree_map(move(0.1, 0.5), state.batch_stats))


@pytest.fixture(scope="module")
def workdir(tiny, tmp_path_factory):
  """A workdir as training leaves it (train.py / run.py writers): two
  TrainState checkpoints, the earlier one best by validation NME,
  config.json, dataset_meta.json and the shape dictionary."""
  config = tiny["config"]
  wd = tmp_path_factory.mktemp("workdir")
  # train.create_train_state's TrainState, on the tiny variables (its own
  # initialisation would compile the network's init once more).
  tx = optim.create_optimizer(config, optim.learning_rate_schedule(config, 32))
  state = train.TrainState.create(
      apply_fn=tiny["model"].apply, params=tiny["variables"]["params"],
      batch_stats=tiny["variables"]["batch_stats"], tx=tx)
  best, last = _perturbed(state, 1, 3), _perturbed(state, 2, 6)
  ckpt = ckpt_lib.Checkpointer(str(wd), config.checkpoint.max_to_keep)
  ckpt.save(3, best, val_nme=0.25)
  ckpt.save(6, last, val_nme=0.75)
  ckpt.close()
  (wd / "config.json").write_text(config.to_json_best_effort(indent=2))
  inference.write_dataset_meta(str(wd), dict(
      inference.default_crop_metadata(config), num_examples=32))
  ksvd.save_dictionary(wd / inference.DICTIONARY_FILE, tiny["dictionary"])
  variables, step = inference.load_checkpoint_variables(str(wd))
  # A TrainState target of the right structure but other values (zeros), so
  # a restore that did nothing could not pass for one that worked.
  zeros = jax.tree_util.tree_map(np.zeros_like, state)
  return {"dir": wd, "best": best, "last": last, "zeros": zeros,
          "variables": variables, "step": step}


def test_checkpoint_variables_equal_the_restored_train_state(
    tiny, crops, workdir, batch_out):
  wd, config = str(workdir["dir"]), tiny["config"]
  variables = workdir["variables"]
  assert workdir["step"] == 3               # best by NME, not the latest
  assert set(variables) == {"params", "batch_stats"}
  for a, b in zip(jax.tree_util.tree_leaves(variables),
                  jax.tree_util.tree_leaves(
                      train.variables_of(workdir["best"]))):
    np.testing.assert_array_equal(a, np.asarray(b))
  # The full TrainState (optimiser included) restored into its structure.
  ckpt = ckpt_lib.Checkpointer(wd, read_only=True)
  restored = ckpt.restore(3, workdir["zeros"])
  ckpt.close()
  assert int(restored.step) == 3
  images, mats = crops
  dic = tiny["device_dictionary"]
  ours = _np(tiny["predict"](variables, images, mats, dic))
  theirs = _np(tiny["predict"](train.variables_of(restored), images, mats,
                               dic))
  _assert_same(ours, theirs)
  assert np.abs(ours["raw_points"] - batch_out["raw_points"]).max() > 1.0
  # What evaluation restores (run.restore_for_eval) is the same network.
  eval_vars, _ = run.restore_for_eval(config, wd)
  _assert_same(ours, _np(tiny["predict"](eval_vars, images, mats, dic)))
  # An explicit step reads that checkpoint.
  latest, step = inference.load_checkpoint_variables(wd, step=6)
  assert step == 6
  for a, b in zip(jax.tree_util.tree_leaves(latest),
                  jax.tree_util.tree_leaves(
                      train.variables_of(workdir["last"]))):
    np.testing.assert_array_equal(a, np.asarray(b))


def test_landmarker_from_checkpoint(tiny, crops, workdir):
  lm = Landmarker.from_checkpoint(str(workdir["dir"]), detector="none")
  assert "step 3" in lm.bundle.source
  assert lm.bundle.metadata["crop_size"] == crop.CROP_SIZE
  assert lm.bundle.dictionary is not None
  assert lm.occluded_threshold == pf.TINY_THRESHOLD
  images, mats = crops
  got = lm.predict_crops(images, mats)           # padded to batch 4
  ref = _np(tiny["predict"](workdir["variables"], images, mats,
                            tiny["device_dictionary"]))
  _assert_same({k: got[k] for k in KEYS}, ref, atol_points=1e-3,
               atol_conf=1e-4)


def test_checkpoint_errors(tmp_path):
  with pytest.raises(inference.ModelFileError, match="no checkpoints folder"):
    inference.load_checkpoint_variables(str(tmp_path))
  with pytest.raises(inference.ModelFileError, match=r"config\.json: missing"):
    Landmarker.from_checkpoint(str(tmp_path))


def test_export_model_writes_a_loadable_folder(tiny, crops, workdir,
                                               tmp_path):
  """export_model: the best checkpoint as a model folder, same outputs."""
  wd = workdir["dir"]
  (wd / "metrics.jsonl").write_text(
      '{"step": 2, "loss": 1.0, "epoch": 0.5}\n{"step": 3, "val_nme": 0.25}\n')
  out = tmp_path / "exported"
  meta = export_model.export(str(wd), str(out))
  assert meta["step"] == 3 and meta["val_nme"] == pytest.approx(0.25)
  assert meta["val_split"] == tiny["config"].data.val_split
  assert meta["epochs_trained"] == pytest.approx(3 * 0.5 / 2)
  bundle = inference.load_model(str(out))
  assert bundle.metadata["step"] == 3
  images, mats = crops
  dic = tiny["device_dictionary"]
  _assert_same(_np(tiny["predict"](bundle.variables, images, mats, dic)),
               _np(tiny["predict"](workdir["variables"], images, mats, dic)))
  # No optimiser state in the folder: parameters and statistics only.
  assert set(bundle.variables) == {"params", "batch_stats"}
  # A calibration script's value lands in the loaded config, the rest stays.
  inference.set_model_config_value(str(out), "refine", "weight_threshold",
                                   0.3)
  inference.set_model_config_value(str(out), "predict", "min_face_score",
                                   0.05)
  again = inference.load_model(str(out))
  assert again.config.refine.weight_threshold == 0.3
  assert again.config.predict.min_face_score == 0.05
  assert again.config.refine.num_neighbors == (
      bundle.config.refine.num_neighbors)
  assert again.config.model.width == bundle.config.model.width


# ------------------------------------------------------------- precision


def test_resolve_precision(monkeypatch):
  assert inference.resolve_precision("float32") == "float32"
  assert inference.resolve_precision("bfloat16", "cpu") == "bfloat16"
  # 'auto' (and None): the backend's measured entry, float32 elsewhere.
  monkeypatch.setattr(inference, "AUTO_PRECISION", {"cpu": "bfloat16"})
  assert inference.resolve_precision("auto", "cpu") == "bfloat16"
  assert inference.resolve_precision(None, "cpu") == "bfloat16"
  assert inference.resolve_precision("auto", "tpu") == "float32"
  with pytest.raises(ValueError, match="precision must be one of"):
    inference.resolve_precision("float16")


def test_create_model_dtype_override_keeps_the_variables(tiny):
  config = tiny["config"]
  model16 = inference.create_model(config, dtype="bfloat16")
  assert model16.dtype == jnp.bfloat16
  assert inference.create_model(config).dtype == model_lib.resolve_dtype(
      config.model.dtype)
  # Same parameter tree: a float32 model's variables load into it.
  inference.check_variables(model16, tiny["variables"],
                            config.model.input_size, "tiny")


def test_landmarker_precision_argument_and_config(tmp_path):
  folder = tmp_path / "m"
  pf.save_tiny_model(folder)
  lm = Landmarker.from_pretrained(str(folder), detector="none",
                                  precision="bfloat16")
  assert lm.precision == "bfloat16" and lm.model.dtype == jnp.bfloat16
  path = folder / inference.CONFIG_FILE
  saved = json.loads(path.read_text())
  saved["predict"]["precision"] = "bfloat16"
  path.write_text(json.dumps(saved))
  assert Landmarker.from_pretrained(str(folder), detector="none").precision \
      == "bfloat16"
  assert Landmarker.from_pretrained(str(folder), detector="none",
                                    precision="float32").precision == "float32"
  with pytest.raises(ValueError, match="precision must be one of"):
    Landmarker.from_pretrained(str(folder), detector="none", precision="fp8")
