"""The main job on the bundled sample (README command one: ``make demo``).

1. builds ``sample_data/300w`` (40 real 300-W faces) with the face300w TFDS
   builder into ``WORKDIR/tensorflow_datasets``;
2. trains ``configs/lite.py:demo`` (width 64) for a few minutes, to show
   training run (``--steps=0`` skips it);
3. evaluates the shipped model (``sgfan_jax/pretrained/``) on the sample's
   12 HELEN test faces (never seen in training), baseline and score-guided
   refinement: ``WORKDIR/pretrained/results.md``, CED plot, ``vis/``;
4. runs the predict command (bundled face detector) on those test photos:
   ``WORKDIR/photos/*.png`` overlays, ``.json``, ``.pts``.

  python -m sgfan_jax.demo --workdir workdir_demo [--steps 150]
"""

from __future__ import annotations

import os
import pathlib
import sys
import time
from typing import Optional, Sequence

from absl import app
from absl import flags
from absl import logging

from configs import lite
from sgfan_jax import evaluate
from sgfan_jax import host_allocator
from sgfan_jax import inference
from sgfan_jax import ksvd
from sgfan_jax import landmarker as landmarker_lib
from sgfan_jax import logs
from sgfan_jax import predict
from sgfan_jax import run
from tfds_builders import build

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLE_TEST = "helen/testset"

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("workdir", "workdir_demo", "Output folder.")
  flags.DEFINE_integer("steps", None, "Training steps of the short run "
                       "(default: configs/lite.py:demo; 0 = no training).")
  flags.DEFINE_string("sample_dir", str(REPO / "sample_data" / "300w"),
                      "300-W-layout folder to build and evaluate on.")
  flags.DEFINE_string("model", landmarker_lib.DEFAULT_MODEL,
                      "Shipped model name or model folder to evaluate.")


def evaluate_model(model: str, data_dir: str, out: str):
  """Evaluates a model folder on the sample's test split; report paths."""
  lm = landmarker_lib.Landmarker.from_pretrained(model, detector="none")
  config = lm.config.copy_and_resolve_references()
  config.data.data_dir = data_dir
  config.data.eval_splits = ("face300w:test_common",)
  config.eval.num_vis_images = 12
  dictionary = (ksvd.as_device(lm.bundle.dictionary)
                if lm.bundle.dictionary is not None else None)
  return lm, evaluate.evaluate_splits(config, out, lm.bundle.variables,
                                      lm.model.apply, dictionary, data_dir,
                                      config.data.layout)


def main(argv: Sequence[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  logs.quiet_libraries()
  start = time.time()
  workdir = os.path.abspath(FLAGS.workdir)
  data_dir = os.path.join(workdir, "tensorflow_datasets")
  print(f"[1/4] Building the bundled sample {FLAGS.sample_dir} -> {data_dir}")
  builder = build.build("face300w", FLAGS.sample_dir, data_dir)
  for split, info in sorted(builder.info.splits.items()):
    print(f"      {split}: {info.num_examples} faces")

  config = lite.get_config("demo")
  config.data.data_dir = data_dir
  if FLAGS.steps is not None:
    config.num_train_steps = FLAGS.steps
  if config.num_train_steps > 0:
    print(f"[2/4] Training configs/lite.py:demo (width {config.model.width}) "
          f"for {config.num_train_steps} steps of {config.batch_size} faces "
          f"-> {workdir}/train (a short run: it shows training, the shipped "
          "model is what aligns faces)")
    run.train_and_evaluate(config, os.path.join(workdir, "train"))
  else:
    print("[2/4] Training skipped (--steps=0)")

  print(f"[3/4] Evaluating the shipped model {FLAGS.model} on the sample's "
        "test faces (baseline and score-guided refinement)")
  try:
    lm, paths = evaluate_model(FLAGS.model, data_dir,
                               os.path.join(workdir, "pretrained"))
  except inference.ModelFileError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  if not paths:
    print("No report was written.", file=sys.stderr)
    return 1
  print()
  print(open(paths["results_md"]).read().split("## Figures")[0].strip()[:3000])
  print()

  photos = os.path.join(FLAGS.sample_dir, SAMPLE_TEST)
  out = os.path.join(workdir, "photos")
  print(f"[4/4] Predicting on the photos in {photos} with the bundled face "
        f"detector -> {out}")
  detecting = landmarker_lib.Landmarker(lm.bundle)
  rows = predict.predict_paths(detecting, [photos], out, progress=False)
  found = sum(r["status"] == "ok" for r in rows)
  print(f"      faces found in {found} of {len(rows)} photos "
        f"({os.path.join(out, 'summary.csv')})")
  minutes = (time.time() - start) / 60
  print(f"Done in {minutes:.1f} min. Report: {paths['results_md']}; "
        f"overlays: {out}/*.png")
  return 0


def cli(argv: Optional[Sequence[str]] = None) -> None:
  define_flags()
  app.run(lambda a: sys.exit(main(a)), argv=argv)


if __name__ == "__main__":
  host_allocator.reexec_with_tuned_allocator()
  cli()
