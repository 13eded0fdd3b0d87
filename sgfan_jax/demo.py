"""The bundled-sample demo (README, "The two commands": ``make demo``).

The shipped model first, then a short training demonstration:

1. builds ``sample_data/300w`` (40 real 300-W faces) with the face300w TFDS
   builder into ``WORKDIR/tensorflow_datasets``;
2. evaluates the shipped model (``sgfan_jax/pretrained/``) on the sample's
   12 HELEN test faces (never seen in training), heatmaps only and with
   score-guided refinement, and prints its NME on them:
   ``WORKDIR/pretrained/results.md``, CED plot, ``vis/``;
3. runs the predict command (bundled face detector) on those test photos:
   ``WORKDIR/photos/*.png`` overlays, ``.json``, ``.pts``;
4. a training demonstration, not a model: ``configs/lite.py:demo`` (width 64,
   a few dozen steps from random weights, about a minute of compute) trains,
   checkpoints and evaluates on the same sample, to show the pipeline run
   (``WORKDIR/train``; ``--steps=0`` skips it).

  python -m sgfan_jax.demo --workdir workdir_demo [--steps N]
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time
from typing import Dict, Optional, Sequence

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
EVAL_SPLIT = "face300w:test_common"

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("workdir", "workdir_demo", "Output folder.")
  flags.DEFINE_integer("steps", None, "Training steps of the training "
                       "demonstration (default: configs/lite.py:demo; 0 = "
                       "skip it).")
  flags.DEFINE_string("sample_dir", str(REPO / "sample_data" / "300w"),
                      "300-W-layout folder to build and evaluate on.")
  flags.DEFINE_string("model", landmarker_lib.DEFAULT_MODEL,
                      "Shipped model name or model folder to evaluate.")


def evaluate_model(model: str, data_dir: str, out: str):
  """Evaluates a model folder on the sample's test split; report paths."""
  lm = landmarker_lib.Landmarker.from_pretrained(model, detector="none")
  config = lm.config.copy_and_resolve_references()
  config.data.data_dir = data_dir
  config.data.eval_splits = (EVAL_SPLIT,)
  config.eval.num_vis_images = 12
  dictionary = (ksvd.as_device(lm.bundle.dictionary)
                if lm.bundle.dictionary is not None else None)
  return lm, evaluate.evaluate_splits(config, out, lm.bundle.variables,
                                      lm.model.apply, dictionary, data_dir,
                                      config.data.layout)


def split_nme(results_json: str, split: str = EVAL_SPLIT
              ) -> Dict[str, float]:
  """Inter-pupil NME (%) per method ('baseline', 'refined') of a report."""
  with open(results_json) as f:
    methods = json.load(f)["splits"][split]["methods"]
  return {name: 100 * m["all"]["inter_pupil"]["nme"]
          for name, m in methods.items()}


def num_faces(results_json: str, split: str = EVAL_SPLIT) -> int:
  """Faces evaluated on ``split`` in a report."""
  with open(results_json) as f:
    return int(json.load(f)["splits"][split]["num_images"])


def training_losses(workdir: str):
  """``(first, last)`` logged training loss of ``workdir/metrics.jsonl``."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    losses = [r["loss"] for r in map(json.loads, f) if "loss" in r]
  return losses[0], losses[-1]


def train_demonstration(config, workdir: str,
                        shipped_nme: Optional[float]) -> bool:
  """Trains ``config`` into ``workdir`` and says what it is (not a model)."""
  print(f"[4/4] Training demonstration (a pipeline demonstration, NOT a "
        f"model): configs/lite.py:demo, width {config.model.width}, from "
        f"random weights for {config.num_train_steps} steps of "
        f"{config.batch_size} faces -> {workdir}")
  print("      Data pipeline, augmentation, the jitted train step, "
        "checkpointing and evaluation run end to end; the first step "
        "compiles (most of the time).")
  paths = run.train_and_evaluate(config, workdir)
  if not paths:
    print("No report was written for the training demonstration.",
          file=sys.stderr)
    return False
  first, last = training_losses(workdir)
  nme = split_nme(paths["results_json"])
  print(f"      loss {first:.4g} -> {last:.4g} over "
        f"{config.num_train_steps} steps; refined inter-pupil NME "
        f"{nme['refined']:.2f} % on {num_faces(paths['results_json'])} test "
        "faces" + (f" (the shipped model: {shipped_nme:.2f} %)"
                   if shipped_nme is not None else ""))
  print("      This short run demonstrates the pipeline; it is not a model "
        "(the shipped model took 80 epochs, ~5 h here: `python main.py "
        "--config configs/lite.py --workdir DIR` on the full 300-W data).")
  return True


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

  print(f"[2/4] The shipped model {FLAGS.model} on the sample's HELEN test "
        "faces (never trained on): heatmaps only and with score-guided "
        "refinement")
  try:
    lm, paths = evaluate_model(FLAGS.model, data_dir,
                               os.path.join(workdir, "pretrained"))
  except inference.ModelFileError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  if not paths:
    print("No report was written.", file=sys.stderr)
    return 1
  nme = split_nme(paths["results_json"])
  print(f"      inter-pupil NME on {num_faces(paths['results_json'])} faces: "
        f"heatmaps only {nme['baseline']:.2f} %, refined "
        f"{nme['refined']:.2f} % (report: {paths['results_md']})")

  photos = os.path.join(FLAGS.sample_dir, SAMPLE_TEST)
  out = os.path.join(workdir, "photos")
  print(f"[3/4] Predicting on the photos in {photos} with the bundled face "
        f"detector -> {out}")
  detecting = landmarker_lib.Landmarker(lm.bundle)
  rows = predict.predict_paths(detecting, [photos], out, progress=False)
  found = sum(r["status"] == "ok" for r in rows)
  print(f"      faces found in {found} of {len(rows)} photos; overlays "
        f"(green = visible, red = flagged occluded): {out}/*.png")

  config = lite.get_config("demo")
  config.data.data_dir = data_dir
  if FLAGS.steps is not None:
    config.num_train_steps = FLAGS.steps
  if config.num_train_steps > 0:
    if not train_demonstration(config, os.path.join(workdir, "train"),
                               nme["refined"]):
      return 1
  else:
    print("[4/4] Training demonstration skipped (--steps=0)")
  minutes = (time.time() - start) / 60
  print(f"Done in {minutes:.1f} min. The shipped model: {paths['results_md']}"
        f", overlays {out}/*.png")
  return 0


def cli(argv: Optional[Sequence[str]] = None) -> None:
  define_flags()
  app.run(lambda a: sys.exit(main(a)), argv=argv)


if __name__ == "__main__":
  host_allocator.reexec_with_tuned_allocator()
  cli()
