"""Recipe search (project issue 18): short width-64 runs on face300w:val.

Every run is ``configs/lite.py`` (the shipped network, seed 0, bfloat16 on a
CPU) shortened to ``SEARCH_EPOCHS`` epochs with no test split evaluated, plus
the knobs named after the colon, comma-separated::

  python main.py --config configs/search.py:base --workdir /work/runs/search/base
  python main.py --config configs/search.py:sigma2 --workdir /work/runs/search/sigma2
  python main.py --config configs/search.py:adamw1e-3,sigma2 --workdir ...

``scripts/recipe_search.py`` runs a list of them back to back and tabulates
them on face300w:val (heatmaps-only and refined inter-pupil NME, flags on
clean faces, flag precision / recall / AP on the occluded copy of val).
Models are chosen on val only; the test splits are never looked at here.
Results: docs/RECIPE_SEARCH.md.
"""

from configs import lite

# Equal budget for every candidate (epochs of the 1,911 training faces).
SEARCH_EPOCHS = 8
# face300w:train faces (builder 1.1.0): with extra training data the run
# keeps the steps of SEARCH_EPOCHS epochs of these.
FACE300W_TRAIN = 1911


def _sigma(s):
  def apply(c):
    c.targets.sigma = s
  return apply


def _adamw(lr):
  def apply(c):
    c.optimizer = "adamw"
    c.learning_rate = lr
    c.lr_schedule = "cosine"
    c.warmup_epochs = 1.0
    c.weight_decay = 1e-4
  return apply


def _set(path, value):
  def apply(c):
    node = c
    *parents, leaf = path.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return apply


# Knob name -> function that edits the config in place.
KNOBS = {
    "base": lambda c: None,
    # Target width (px at 128).
    "sigma2": _sigma(2.0),
    "sigma3": _sigma(3.0),
    # Loss balance.
    "lambda025": _set("loss_lambda", 0.25),
    "norm": _set("loss_normalize", True),
    "fg5": _set("heatmap_fg_weight", 5.0),
    "awing": _set("heatmap_loss", "awing"),
    # Optimiser and schedule.
    "adamw1e-3": _adamw(1e-3),
    "adamw3e-3": _adamw(3e-3),
    "adamw3e-4": _adamw(3e-4),
    # Capacity at equal wall clock: 64x64 output maps (model.output_stride).
    "out64": _set("model.output_stride", 2),
    "width96": _set("model.width", 96),
    "width128": _set("model.width", 128),
    "depth3": _set("model.hourglass_depth", 3),
    # Face-box jitter: wider scale range and shift (detector-like boxes).
    "boxjit": lambda c: (_set("augment.scale_min", 0.85)(c),
                         _set("augment.scale_max", 1.25)(c),
                         _set("augment.translate_frac", 0.08)(c)),
    # Data: the YouTube Faces frames added (tfds_builders/ytf68, held-out
    # people excluded), at the same number of steps.
    "ytf": lambda c: (_set("data.extra_train_splits", ("ytf68:train",))(c),
                      _set("num_train_steps",
                           SEARCH_EPOCHS * (FACE300W_TRAIN // c.batch_size)
                           )(c)),
    # Occluders from the start (configs/lite.py:occluded).
    "occ": lambda c: (_set("occluders.prob", 0.5)(c),
                      _set("occluders.score_target", "visibility")(c)),
}


def get_config(arg: str = "base"):
  config = lite.get_config()
  config.num_epochs = SEARCH_EPOCHS
  config.data.eval_splits = ()
  config.write_tensorboard = False
  config.checkpoint.every_steps = 500
  for name in [a for a in (arg or "base").split(",") if a]:
    if name not in KNOBS:
      raise ValueError(f"unknown search knob {name!r} (known: "
                       f"{', '.join(KNOBS)})")
    KNOBS[name](config)
  return config
