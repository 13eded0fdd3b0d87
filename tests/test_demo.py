"""``make demo`` (sgfan_jax/demo.py): the shipped model first, then a short
training demonstration that stays a minute's work.

The command runs for real (``python -m sgfan_jax.demo --steps=0``) on a
cut-down copy of the bundled sample (its training faces and 3 HELEN test
photos); the training demonstration's budget is checked on the config and
its summary on a hand-written log (training itself is covered by
tests/test_train.py and tests/test_main.py).
"""

import csv
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np

from configs import default
from configs import lite
from sgfan_jax import demo
from tests.test_configs import _flat  # pylint: disable=g-bad-import-order

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data" / "300w"
NUM_TEST_PHOTOS = 3
# 300-W 68-point layout (0-based): the eye contours whose means give the
# inter-pupil distance (paper Table 1 normalisation).
LEFT_EYE, RIGHT_EYE = slice(36, 42), slice(42, 48)


def test_demo_config_is_a_short_run_of_default_fields():
  config = lite.get_config("demo")
  assert set(_flat(config.to_dict())) == set(_flat(default.get_config()
                                                   .to_dict()))
  # About a minute on 2 loaded cores (most of it compiling the train step):
  # at most 30 steps of at most 4 faces, evaluated on a few faces.
  assert 0 < config.num_train_steps <= 30
  assert config.batch_size <= 4
  assert 0 < config.eval.splits_max_examples <= config.eval.batch_size
  assert config.checkpoint.every_steps >= config.num_train_steps


def test_training_losses_reads_first_and_last_logged_loss(tmp_path):
  rows = [{"step": 5, "loss": 1649.0, "lr": 1e-4}, {"step": 5, "nme": 1.2},
          {"step": 10, "loss": 1206.5}, {"step": 20, "loss": 1205.25}]
  (tmp_path / "metrics.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in rows))
  assert demo.training_losses(str(tmp_path)) == (1649.0, 1205.25)


def _small_sample(root: pathlib.Path) -> pathlib.Path:
  """The bundled sample with only the first 3 HELEN test photos."""
  sample = root / "300w"
  (sample / "helen" / "testset").mkdir(parents=True)
  os.symlink(SAMPLE / "afw", sample / "afw")
  os.symlink(SAMPLE / "helen" / "trainset", sample / "helen" / "trainset")
  photos = sorted((SAMPLE / "helen" / "testset").glob("*.jpg"))
  for jpg in photos[:NUM_TEST_PHOTOS]:
    for f in (jpg, jpg.with_suffix(".pts")):
      os.symlink(f, sample / "helen" / "testset" / f.name)
  return sample


def test_demo_shows_the_shipped_model_before_training(tmp_path):
  workdir = tmp_path / "wd"
  env = dict(os.environ)
  env.pop("PYTHONPATH", None)
  proc = subprocess.run(
      [sys.executable, "-m", "sgfan_jax.demo", "--workdir", str(workdir),
       "--sample_dir", str(_small_sample(tmp_path)), "--steps=0"],
      cwd=str(REPO), env=env, capture_output=True, text=True, timeout=600,
      check=False)
  out = proc.stdout
  assert proc.returncode == 0, proc.stdout + proc.stderr
  # The shipped model (evaluation, then the predict command) comes before
  # the training demonstration.
  order = [out.index(s) for s in ("[1/4]", "[2/4]", "[3/4]", "[4/4]")]
  assert order == sorted(order)
  assert "Training demonstration skipped (--steps=0)" in out
  assert not (workdir / "train").exists()

  # The printed NME is the report's: recompute it from the per-face
  # predictions with numpy (mean point error / inter-pupil distance).
  printed = re.search(r"on (\d+) faces: heatmaps only ([\d.]+) %, refined "
                      r"([\d.]+) %", out)
  assert printed, out
  pred = np.load(workdir / "pretrained" /
                 "predictions_face300w_test_common.npz")
  gt = pred["gt"]
  assert int(printed.group(1)) == len(gt) == NUM_TEST_PHOTOS
  pupils = np.linalg.norm(gt[:, LEFT_EYE].mean(1) - gt[:, RIGHT_EYE].mean(1),
                          axis=-1)
  for method, group in (("baseline", 2), ("refined", 3)):
    nme = np.mean(np.linalg.norm(pred[method] - gt, axis=-1).mean(1) / pupils)
    assert abs(float(printed.group(group)) - 100 * nme) <= 0.0051, method
  # The shipped model is a model: refinement well under 20 % on these faces.
  assert float(printed.group(3)) < 20

  # Overlays of the predict command, one per photo with a face.
  with open(workdir / "photos" / "summary.csv") as f:
    rows = list(csv.DictReader(f))
  ok = [r for r in rows if r["status"] == "ok"]
  assert len(rows) == NUM_TEST_PHOTOS
  assert f"faces found in {len(ok)} of {len(rows)} photos" in out
  assert ok
  for r in ok:
    stem = pathlib.Path(r["file"]).stem
    assert (workdir / "photos" / f"{stem}.png").stat().st_size > 0
