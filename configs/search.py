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
# Sizes of the extra training splits (ytf68 builder 1.0.0): runs with
# extra data have their epoch counts (epochs of the union) rescaled to the
# 300-W epochs above (_rescale_for_extra_data).
EXTRA_SIZES = {"ytf68:train": 3793}


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


def _rescale_for_extra_data(c) -> None:
  """With extra training data: the steps of the 300-W-only run, and the
  warm-up and validation at the same steps (epochs of the union are
  (FACE300W_TRAIN + extra) / FACE300W_TRAIN times longer)."""
  extra = sum(EXTRA_SIZES[spec] for spec in c.data.extra_train_splits)
  scale = FACE300W_TRAIN / (FACE300W_TRAIN + extra)
  c.num_train_steps = c.num_epochs * (FACE300W_TRAIN // c.batch_size)
  c.warmup_epochs = c.warmup_epochs * scale
  c.eval.every_epochs = c.eval.every_epochs * scale


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
    "adamw1e-2": _adamw(1e-2),
    # Capacity at equal wall clock: 64x64 output maps (model.output_stride).
    "out64": _set("model.output_stride", 2),
    "width96": _set("model.width", 96),
    "width128": _set("model.width", 128),
    "depth3": _set("model.hourglass_depth", 3),
    # Face-box jitter: wider scale range and shift (detector-like boxes).
    # (Scale 0.9-1.2 is already the default; a wider range would reach
    # past the stored 2.2x crops at +-30 deg.)
    "boxjit": _set("augment.translate_frac", 0.08),
    # Data: the YouTube Faces frames added (tfds_builders/ytf68, held-out
    # people excluded), at the same number of steps.
    "ytf": _set("data.extra_train_splits", ("ytf68:train",)),
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
  if config.data.extra_train_splits:
    _rescale_for_extra_data(config)
  return config
