"""End to end: main.py trains and evaluates on the bundled sample."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import test as test_config
from sgfan_jax import landmarker
from sgfan_jax import metrics
from sgfan_jax import predict
from sgfan_jax import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(data_dir):
  config = test_config.get_config()
  config.data.data_dir = str(data_dir)
  config.data.eval_splits = ("face300w:test_common",
                             "face300w:test_challenging")
  return config


@pytest.fixture(scope="module")
def trained(sample_tfds_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("main_job")
  paths = run.train_and_evaluate(_config(sample_tfds_dir), str(workdir))
  return workdir, paths


def test_train_then_report(trained):
  workdir, paths = trained
  for name in ("results.json", "results.md", "metrics.jsonl",
               "shape_dictionary.npz", "config.json",
               "predictions_face300w_test_common.npz",
               "ced_face300w_test_common.png"):
    assert (workdir / name).exists(), name
  results = json.loads((workdir / "results.json").read_text())
  text = json.dumps(results)
  assert "face300w:test_common" in text
  # test_challenging is not in the sample: skipped, not an error.
  assert "test_challenging" not in text
  # The report's numbers agree with an independent recomputation from the
  # saved per-face predictions.
  pred = np.load(workdir / "predictions_face300w_test_common.npz")
  assert pred["gt"].shape == (12, 68, 2)
  ip = metrics.nme(pred["baseline"], pred["gt"], "inter_pupil",
                   layout="ibug68")
  assert f"{100 * ip.mean():.2f}" in (workdir / "results.md").read_text()
  # The validation NME of the best checkpoint was recorded while training.
  lines = [json.loads(l) for l in
           (workdir / "metrics.jsonl").read_text().splitlines()]
  assert any("val_nme" in l for l in lines)
  losses = [l["loss"] for l in lines if "loss" in l]
  assert len(losses) >= 2 and all(np.isfinite(losses))
  assert paths["results_md"].endswith("results.md")


def test_main_py_eval_only(trained, sample_tfds_dir):
  workdir, _ = trained
  os.remove(workdir / "results.json")
  proc = subprocess.run(
      [sys.executable, "main.py", "--config", "configs/test.py",
       "--workdir", str(workdir), "--config.eval_only=True",
       f"--config.data.data_dir={sample_tfds_dir}",
       "--config.data.eval_splits=('face300w:test_common',)"],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Evaluating checkpoint step" in proc.stdout
  assert (workdir / "results.json").exists()


def test_predict_on_a_photo(trained, tmp_path):
  """The predict command on the trained workdir, with a user box."""
  workdir, _ = trained
  folder = os.path.join(ROOT, "sample_data", "300w", "helen", "testset")
  image = os.path.join(folder, sorted(f for f in os.listdir(folder)
                                      if f.endswith(".jpg"))[0])
  lm = landmarker.Landmarker.from_checkpoint(str(workdir), detector="none")
  rows = predict.predict_paths(lm, [image], str(tmp_path),
                               box=predict.parse_box("60,60,200,220"),
                               progress=False)
  assert [r["status"] for r in rows] == ["ok"]
  name = os.path.splitext(os.path.basename(image))[0]
  record = json.loads((tmp_path / (name + ".json")).read_text())
  face, = record["faces"]
  assert np.asarray(face["points"]).shape == (68, 2)
  conf = np.asarray(face["confidence"])
  assert conf.shape == (68,) and conf.min() >= 0 and conf.max() <= 1
  assert face["box"] == [60.0, 60.0, 200.0, 220.0]
  for suffix in ("_1.pts", ".json", ".png"):
    assert (tmp_path / (name + suffix)).exists()
  with pytest.raises(predict.InputError, match="--box must be"):
    predict.parse_box("10,10,5")


def test_missing_dataset_is_a_clear_error(tmp_path):
  config = _config(tmp_path / "empty_tfds")
  with pytest.raises(FileNotFoundError, match="tfds_builders.build face300w"):
    run.train_and_evaluate(config, str(tmp_path / "w"))


def test_eval_only_without_checkpoint_is_a_clear_error(sample_tfds_dir,
                                                       tmp_path):
  config = _config(sample_tfds_dir)
  config.eval_only = True
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    run.train_and_evaluate(config, str(tmp_path))
