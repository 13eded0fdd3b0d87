"""Every config loads, adds no field of its own, and the GPU one trains."""

import importlib
import json
import math

import pytest

from configs import default
from sgfan_jax import run

CONFIGS = ("default", "face300w", "face300w_gpu", "cofw", "lite", "test",
           "search", "shipped")


def _flat(d, prefix=""):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, prefix + k + "."))
    else:
      out[prefix + k] = v
  return out


@pytest.mark.parametrize("name", CONFIGS)
def test_config_fields_come_from_default(name):
  config = importlib.import_module(f"configs.{name}").get_config()
  fields = set(_flat(config.to_dict()))
  assert fields == set(_flat(default.get_config().to_dict()))
  # Every config selects its checkpoint on held-out training faces.
  assert config.data.val_split in ("face300w:val", "")
  for split in config.data.eval_splits:
    assert split != config.data.val_split


def test_gpu_config_scales_the_paper_recipe():
  paper = importlib.import_module("configs.face300w").get_config()
  gpu = importlib.import_module("configs.face300w_gpu").get_config()
  assert {k: v for k, v in gpu.model.items() if k != "conv_impl"} == {
      k: v for k, v in paper.model.items() if k != "conv_impl"}
  assert gpu.model.conv_impl == "xla"
  assert gpu.learning_rate == pytest.approx(
      paper.learning_rate * math.sqrt(gpu.batch_size / paper.batch_size))
  assert gpu.num_epochs == paper.num_epochs
  assert gpu.lr_drop_epochs == paper.lr_drop_epochs


def test_gpu_config_runs_a_few_steps_on_cpu(sample_tfds_dir, tmp_path):
  """The paper network with stock XLA convolutions, 2 steps on the CPU."""
  config = importlib.import_module("configs.face300w_gpu").get_config()
  config.data.data_dir = str(sample_tfds_dir)
  config.batch_size = 4                 # the CPU; the GPU run uses 40
  config.num_train_steps = 2
  config.data.num_workers = 0
  config.data.val_split = ""
  config.data.eval_splits = ()
  config.refine.enabled = False
  config.write_tensorboard = False
  config.log_every_steps = 1
  run.train_and_evaluate(config, str(tmp_path))
  lines = [json.loads(l) for l in
           (tmp_path / "metrics.jsonl").read_text().splitlines()]
  losses = [l["loss"] for l in lines if "loss" in l]
  assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
  assert lines[0]["lr"] == pytest.approx(2e-4)
  assert (tmp_path / "checkpoints" / "2").is_dir()


def test_shipped_occlusion_stage_continues_the_main_run():
  shipped = importlib.import_module("configs.shipped")
  main, occ = shipped.get_config(), shipped.get_config("occluded_finetune")
  # Same network, targets and optimiser (init_from restores its state).
  assert occ.model == main.model and occ.targets == main.targets
  assert occ.optimizer == main.optimizer == "adamw"
  assert occ.num_epochs == main.num_epochs + shipped.OCC_EPOCHS
  assert main.occluders.prob == 0 and occ.occluders.prob > 0
  long = shipped.get_config("occluded_finetune_long")
  assert long.model == main.model and long.occluders == occ.occluders
  assert long.num_epochs == main.num_epochs + shipped.OCC_LONG_EPOCHS
  # Its drops fall inside the stage, after the main run's last epoch.
  assert all(main.num_epochs < e < long.num_epochs
             for e in long.lr_drop_epochs)
  with pytest.raises(ValueError, match="occluded_finetune"):
    shipped.get_config("nope")
