"""Tiny configuration for tests: the full pipeline in seconds on a CPU.

  python main.py --config configs/test.py --workdir /tmp/sgfan_test
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.width = 16
  config.model.hourglass_depth = 2
  config.model.branch_channels = 16
  config.batch_size = 4
  config.eval.batch_size = 4
  config.num_train_steps = 6
  config.log_every_steps = 2
  config.checkpoint.every_steps = 3
  config.learning_rate = 1e-3
  config.data.num_workers = 0
  config.refine.dictionary_size = 8
  config.refine.sparsity = 2
  config.refine.ksvd_iterations = 3
  config.refine.num_neighbors = 4
  config.write_tensorboard = False
  return config
