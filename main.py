"""sgfan-jax command line: train and/or evaluate from a config file.

  python main.py --config configs/cofw.py --workdir /tmp/sgfan_cofw
  python main.py --config configs/face300w.py --workdir DIR --config.eval_only=True

Any config field can be overridden: ``--config.batch_size=20``.
"""

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from sgfan_jax import host_allocator
from sgfan_jax import logs
from sgfan_jax import run

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (get_config()).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, logs and reports go.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() "
                  "first (one process per host; see docs/USAGE.md).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logs.quiet_libraries()
  if FLAGS.distributed:
    jax.distributed.initialize()
  run.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  # Re-runs this command once with glibc malloc tunables that stop XLA:CPU
  # page-faulting its buffers on every step (host_allocator.py; no effect on
  # results; SGFAN_TUNE_MALLOC=0 disables).
  host_allocator.reexec_with_tuned_allocator()
  app.run(main)
