"""The main job on the bundled sample (README command one: ``make demo``).

1. builds ``sample_data/300w`` (40 real 300-W faces) with the face300w TFDS
   builder into ``WORKDIR/tensorflow_datasets``;
2. trains ``configs/lite.py:demo`` (width 64) for a few minutes on the CPU;
3. evaluates on the sample's HELEN test faces, baseline and score-guided
   refinement, and writes the report (results.md, CED plot, images with the
   predicted landmarks) into WORKDIR.

  python -m sgfan_jax.demo --workdir workdir_demo [--steps 150]
"""

import argparse
import os
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m sgfan_jax.demo",
                                   description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="workdir_demo")
  parser.add_argument("--steps", type=int, default=None,
                      help="training steps (default: configs/lite.py:demo)")
  parser.add_argument("--sample_dir", default=str(REPO / "sample_data" /
                                                  "300w"))
  args = parser.parse_args(argv)

  # pylint: disable=g-import-not-at-top
  from absl import logging
  from configs import lite
  from sgfan_jax import logs
  from sgfan_jax import run
  from tfds_builders import build
  logging.set_verbosity(logging.WARNING)
  logs.quiet_libraries()

  start = time.time()
  workdir = os.path.abspath(args.workdir)
  data_dir = os.path.join(workdir, "tensorflow_datasets")
  print(f"[1/3] Building the bundled sample {args.sample_dir} -> {data_dir}")
  builder = build.build("face300w", args.sample_dir, data_dir)
  for split, info in sorted(builder.info.splits.items()):
    print(f"      {split}: {info.num_examples} faces")

  config = lite.get_config("demo")
  config.data.data_dir = data_dir
  if args.steps is not None:
    config.num_train_steps = args.steps
  print(f"[2/3] Training configs/lite.py:demo (width {config.model.width}) "
        f"for {config.num_train_steps} steps of {config.batch_size} faces")
  print("[3/3] then evaluating (baseline and score-guided refinement)")
  paths = run.run(config, workdir)
  minutes = (time.time() - start) / 60
  if not paths:
    print("No report was written.", file=sys.stderr)
    return 1
  print()
  print(open(paths["results_md"]).read().split("## Figures")[0].strip()[:3000])
  print()
  print(f"Done in {minutes:.1f} min. Report: {paths['results_md']}")
  print(f"Figures and predictions: {workdir}")
  return 0


if __name__ == "__main__":
  from sgfan_jax import host_allocator  # pylint: disable=g-import-not-at-top
  host_allocator.reexec_with_tuned_allocator()
  sys.exit(main())
