"""The same network at width 64, for training on a CPU.

  python main.py --config configs/lite.py --workdir /tmp/sgfan_lite
  python main.py --config configs/lite.py:demo --workdir /tmp/sgfan_demo

``:demo`` is the bundled-sample run behind ``make demo``: it trains on
sample_data/300w (built into WORKDIR/tensorflow_datasets) for a few minutes
and evaluates on its HELEN test faces. With so little data and time the NME
is far from the paper's; the demo shows the whole pipeline working.
"""

from configs import default


def get_config(arg: str = ""):
  config = default.get_config()
  config.model.width = 64
  if arg == "demo":
    config.data.eval_splits = ("face300w:test_common",)
    config.data.val_split = ""
    config.num_train_steps = 150
    config.log_every_steps = 10
    config.checkpoint.every_steps = 50
    config.refine.dictionary_size = 16
    config.refine.num_neighbors = 8
    config.refine.ksvd_iterations = 10
    config.write_tensorboard = False
  elif arg:
    raise ValueError(f"unknown lite config argument {arg!r} (known: 'demo')")
  return config
