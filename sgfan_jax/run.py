"""The main job: train (resuming from workdir) and evaluate, from a config.

``python main.py --config CONFIG --workdir DIR`` calls
``train_and_evaluate(config, DIR)``:

1. open the training split (TFDS, built beforehand) and the eval splits;
2. load ``DIR/shape_dictionary.npz`` or build it from the training shapes
   (K-SVD, Sec. 3.3) when refinement is enabled;
3. unless ``eval_only``: train, keeping the latest and the best checkpoints
   (validation NME on ``data.val_split``);
4. restore the best checkpoint (else the latest) and evaluate every eval
   split, baseline and refined, writing the report into DIR.
"""

import dataclasses
import json
import os
from typing import Any, Dict, Optional

import jax
import numpy as np

from sgfan_jax import evaluate
from sgfan_jax import inference
from sgfan_jax import input_pipeline
from sgfan_jax import ksvd
from sgfan_jax import layouts
from sgfan_jax import train

DICTIONARY_FILE = inference.DICTIONARY_FILE


def training_shapes(source) -> np.ndarray:
  """All training landmarks [M, N, 2] (original-image coordinates)."""
  return np.stack([np.asarray(source[i]["landmarks_original"], np.float32)
                   for i in range(len(source))])


def load_dictionary(config, workdir: str, train_source=None):
  """The shape dictionary saved beside the checkpoints (built if missing).

  Returns None when refinement is disabled.
  """
  if not config.refine.enabled:
    return None
  path = os.path.join(workdir, DICTIONARY_FILE)
  if not os.path.exists(path):
    if train_source is None:
      raise FileNotFoundError(
          f"{path} is missing and no training split is available to build it "
          f"(set --config.refine.enabled=False to evaluate without "
          "refinement)")
    print(f"Building the K-SVD shape dictionary from {len(train_source)} "
          f"training shapes -> {path}")
  dic = ksvd.load_or_build_dictionary(
      path, lambda: training_shapes(train_source), config.refine,
      layout_name=config.data.layout)
  return ksvd.as_device(dic)


def restore_for_eval(config, workdir: str):
  """``(variables, apply_fn)`` of the best checkpoint (else the latest)."""
  try:
    variables, step = inference.load_checkpoint_variables(workdir)
  except inference.ModelFileError as e:
    raise FileNotFoundError(f"{e} (drop --config.eval_only to train)") from None
  print(f"Evaluating checkpoint step {step} (best by validation NME where "
        "one was recorded, else the latest).")
  return variables, inference.create_model(config).apply


def train_and_evaluate(config, workdir: str) -> Optional[Dict[str, Any]]:
  """Trains (unless ``config.eval_only``) and evaluates; returns report paths."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  layout = layouts.get_layout(config.data.layout)
  data_dir = config.data.data_dir
  train_source, train_meta, shape_source = None, None, None
  try:
    train_source, meta, shape_source = input_pipeline.open_training_source(
        config, data_dir)
    train_meta = dataclasses.asdict(meta)
  except FileNotFoundError:
    if not config.eval_only:
      raise
    try:      # evaluation needs only the training split's shapes (D_S)
      shape_source, _ = input_pipeline.open_split(
          config.data.train_dataset, config.data.train_split, data_dir)
    except FileNotFoundError:
      pass
  if train_meta is not None and train_meta["layout"] != layout.name:
    raise ValueError(f"training split layout {train_meta['layout']} differs "
                     f"from config.data.layout {layout.name}")
  if train_meta is not None and jax.process_index() == 0:
    inference.write_dataset_meta(workdir, train_meta)
  # D_S comes from the training split's own shapes (not the extra splits).
  dictionary = load_dictionary(config, workdir, shape_source)

  if not config.eval_only:
    model_apply = inference.create_model(config).apply
    validate = None
    if config.data.val_split:
      val = evaluate.open_eval_splits((config.data.val_split,), data_dir,
                                      layout.name)
      if val:
        (source, meta), = val.values()
        eval_fn = evaluate.make_eval_step(
            model_apply, inference.inference_spec(config, meta))
        validate = lambda state: evaluate.validation_nme(  # pylint: disable=g-long-lambda
            train.variables_of(state), model_apply, source, meta, config,
            eval_fn)

    def batches(start_step):
      return input_pipeline.train_batches(
          train_source, batch_size=config.batch_size, seed=config.seed,
          start_step=start_step, num_workers=config.data.num_workers,
          prefetch=config.data.prefetch)

    state = train.train(config, workdir, batches, train_meta, validate)
    total = train.num_train_steps(config, train_meta["num_examples"])
    if int(state.step) < total:
      print(f"Training stopped at step {int(state.step)} of {total} (a "
            "checkpoint was saved); run the same command to resume.")
      return None

  variables, apply_fn = restore_for_eval(config, workdir)
  paths = evaluate.evaluate_splits(config, workdir, variables, apply_fn,
                                   dictionary, data_dir, layout.name)
  if paths and jax.process_index() == 0:
    with open(paths["results_json"]) as f:
      json.load(f)     # fail loudly on a broken report
  return paths

