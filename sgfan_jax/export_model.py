r"""Exports a training workdir's checkpoint as a self-contained model folder.

  python -m sgfan_jax.export_model --workdir ~/sgfan/lite \
      --out sgfan_jax/pretrained/sgfan_lite_300w [--step N]

The folder (read by ``inference.load_model`` and
``sgfan_jax.Landmarker.from_pretrained``) holds parameters and batch
statistics only (``variables.msgpack``, no optimiser state), the training
config (``config.json``), ``meta.json`` (crop geometry, layout, the
checkpoint step, its validation NME, the training data) and the K-SVD shape
dictionary. The best checkpoint by validation NME is exported unless
``--step`` names another.
"""

from __future__ import annotations

import json
import os
from typing import Optional, Sequence

from absl import app
from absl import flags

from sgfan_jax import checkpoints as ckpt_lib
from sgfan_jax import inference
from sgfan_jax import logs

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("workdir", None, "Training workdir.")
  flags.DEFINE_string("out", None, "Model folder to write.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: best by "
                       "validation NME, else latest).")


def export(workdir: str, out: str, step: Optional[int] = None) -> dict:
  """Writes the model folder; returns its meta dict."""
  bundle = inference.load_workdir(workdir, step)
  step = bundle.metadata["step"]
  ckpt = ckpt_lib.Checkpointer(workdir, read_only=True)
  try:
    metrics = ckpt.metrics(step) or {}
  finally:
    ckpt.close()
  meta = dict(bundle.metadata)
  meta.update({
      "step": int(step),
      "val_nme": metrics.get(ckpt_lib.VAL_METRIC),
      "val_split": bundle.config.data.val_split,
      "val_normalization": bundle.config.eval.val_normalization,
      "train_split": "+".join(
          [f"{bundle.config.data.train_dataset}:"
           f"{bundle.config.data.train_split}"]
          + list(bundle.config.data.get("extra_train_splits", ()) or ())),
  })
  progress = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(progress):
    with open(progress) as f:
      rows = [json.loads(line) for line in f if line.strip()]
    # Epochs per step from the training log (its lines carry both).
    logged = [r for r in rows if r.get("epoch") and r.get("step")]
    if logged:
      per_step = logged[-1]["epoch"] / logged[-1]["step"]
      meta["epochs_trained"] = round(step * per_step, 3)
  inference.save_model(out, bundle.variables, bundle.config, meta,
                       bundle.dictionary)
  return meta


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.workdir or not FLAGS.out:
    raise app.UsageError("--workdir and --out are required")
  logs.quiet_libraries()
  meta = export(FLAGS.workdir, FLAGS.out, FLAGS.step)
  size = sum(os.path.getsize(os.path.join(FLAGS.out, f))
             for f in os.listdir(FLAGS.out))
  print(f"wrote {FLAGS.out} ({size / 1e6:.1f} MB): step {meta['step']}, "
        f"validation NME {meta.get('val_nme')}")


def cli(argv: Optional[Sequence[str]] = None) -> None:
  define_flags()
  app.run(main, argv=argv)


if __name__ == "__main__":
  cli()
