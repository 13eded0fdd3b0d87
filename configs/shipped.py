"""The shipped model's recipe (project issue 18): width 64, chosen on val.

Not the paper's recipe (that is configs/face300w.py, configs/lite.py): the
same network at width 64 trained with the choices of the recipe search on
face300w:val (docs/RECIPE_SEARCH.md): AdamW at 1e-2 with one warm-up epoch
and cosine decay, heatmap targets of sigma 2 px, 64x64 output maps, for
SHIPPED_EPOCHS epochs,
then an occlusion stage. Commands (each resumes when interrupted):

  python main.py --config configs/shipped.py --workdir /work/runs/shipped \
      --config.data.data_dir=/work/tfds
  python main.py --config configs/shipped.py:occluded_finetune \
      --workdir /work/runs/shipped_occ \
      --config.checkpoint.init_from=/work/runs/shipped:STEP \
      --config.data.data_dir=/work/tfds
  python -m sgfan_jax.export_model --workdir /work/runs/shipped_occ \
      --out sgfan_jax/pretrained/sgfan_lite_300w

Expected result: see the model card of sgfan_jax/pretrained/sgfan_lite_300w
once this recipe ships (the search's 8-epoch run of it: 5.8 % heatmap
inter-pupil NME on face300w:val).

``:occluded_finetune``: OCC_EPOCHS more epochs from the whole train state
of the main run, a synthetic occluder in half of the images with score
target 0 under it (sgfan_jax/occluders.py), AdamW at a constant
OCC_LEARNING_RATE.

``:occluded_finetune_long``: the same occluders for OCC_LONG_EPOCHS more
epochs at a real learning rate, OCC_LONG_LEARNING_RATE dropped 10x at each
epoch of OCC_LONG_DROPS (counted from the end of the main run: start it from
the main run's last step, SHIPPED_EPOCHS epochs). The two stages are
compared on face300w:val in docs/RECIPE_SEARCH.md.
"""

import ml_collections

from configs import lite

SHIPPED_EPOCHS = 60
OCC_EPOCHS = 2
OCC_LEARNING_RATE = 5e-5
OCC_LONG_EPOCHS = 4
OCC_LONG_LEARNING_RATE = 1e-3
OCC_LONG_DROPS = (2, 3)
STAGES = ("occluded_finetune", "occluded_finetune_long")


def get_config(arg: str = ""):
  config = lite.get_config()
  config.num_epochs = SHIPPED_EPOCHS
  config.optimizer = "adamw"
  config.learning_rate = 1e-2
  config.lr_schedule = "cosine"
  config.warmup_epochs = 1.0
  config.weight_decay = 1e-4
  config.targets.sigma = 2.0
  config.model.output_stride = 2
  if arg and arg not in STAGES:
    raise ValueError(f"unknown shipped config argument {arg!r} (known: "
                     f"{', '.join(STAGES)})")
  if arg:
    config.lr_schedule = "step"
    config.occluders.prob = 0.5
    config.occluders.score_target = "visibility"
    config.checkpoint.init_from = ml_collections.config_dict.placeholder(str)
  if arg == "occluded_finetune":
    config.num_epochs = SHIPPED_EPOCHS + OCC_EPOCHS
    config.lr_drop_epochs = ()
    config.learning_rate = OCC_LEARNING_RATE
  elif arg == "occluded_finetune_long":
    config.num_epochs = SHIPPED_EPOCHS + OCC_LONG_EPOCHS
    config.lr_drop_epochs = tuple(SHIPPED_EPOCHS + e for e in OCC_LONG_DROPS)
    config.lr_drop_factor = 0.1
    config.learning_rate = OCC_LONG_LEARNING_RATE
  return config
