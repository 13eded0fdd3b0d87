"""The same network at width 64, for training on a CPU.

  python main.py --config configs/lite.py --workdir /tmp/sgfan_lite
  python main.py --config configs/lite.py:demo --workdir /tmp/sgfan_demo
  python main.py --config configs/lite.py:occluded --workdir /tmp/sgfan_lite_occluded
  python main.py --config configs/lite.py:occluded_finetune \
      --workdir /tmp/sgfan_lite_occ_ft --config.checkpoint.init_from=/tmp/sgfan_lite

Compute dtype: ``model.dtype='auto'`` (configs/default.py), bfloat16 on a
CPU. The shipped model was trained in float32; ``--config.model.dtype=float32``
repeats that run exactly.

``:demo`` is the training demonstration of ``make demo`` (sgfan_jax/demo.py,
after it has shown the shipped model): it trains on sample_data/300w (built
into WORKDIR/tensorflow_datasets) for 20 steps of 4 faces (about a minute on
2 cores, most of it compiling the train step) and evaluates on 4 of its
HELEN test faces. It is a pipeline demonstration, not a model: after 20
steps the network is still on the all-zero plateau of heatmap regression.

``:occluded`` is the occlusion-aware variant (beyond the paper; project issue
10, section 5): the lite run plus a synthetic occluder pasted on device in
half of the training images (sgfan_jax/occluders.py, config.occluders), with
score-map target 0 for the points under it, so the score branch (Eq. 1
weights, the refinement's reliability) learns to detect occlusion. Add
``--config.occluders.score_target=paper`` for the ablation with the same
occluders and the paper's targets. Compare each against the plain lite run
(same seed and schedule) with ``benchmarks/compare_300w.py --workdir DIR``:
NME on the common test set and its occluded copy, and the occlusion flags'
precision / recall / AP.

``:occluded_finetune`` is the shipped model's last stage: ``:occluded``
for 2 more epochs (80 -> 82, lr 5e-5) starting from the whole train state of
a finished lite run (``--config.checkpoint.init_from=DIR``, required). In
the project's equal-budget comparison (2 epochs from the same step-8,404
checkpoint, chosen on face300w:val and its occluded copy) it gave the best
occlusion AP and occluded-point NME at a clean NME within noise of the
plain run; numbers in the model card.
"""

import ml_collections

from configs import default


def get_config(arg: str = ""):
  config = default.get_config()
  config.model.width = 64
  if arg == "demo":
    config.data.eval_splits = ("face300w:test_common",)
    config.data.val_split = ""
    config.num_train_steps = 20
    config.batch_size = 4
    config.eval.splits_max_examples = 4
    config.eval.batch_size = 4
    config.eval.num_vis_images = 4
    config.log_every_steps = 5
    config.checkpoint.every_steps = 20
    config.refine.dictionary_size = 16
    config.refine.num_neighbors = 8
    config.refine.ksvd_iterations = 10
    config.write_tensorboard = False
  elif arg in ("occluded", "occluded_finetune"):
    config.occluders.prob = 0.5
    config.occluders.score_target = "visibility"
    if arg == "occluded_finetune":
      config.num_epochs = 82
      config.checkpoint.init_from = ml_collections.config_dict.placeholder(
          str)
  elif arg:
    raise ValueError(f"unknown lite config argument {arg!r} (known: 'demo', "
                     "'occluded', 'occluded_finetune')")
  return config
