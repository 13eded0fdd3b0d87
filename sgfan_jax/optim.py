"""Optimiser: RMSProp with the paper's step schedule (Sec. 3.4), or AdamW
with warm-up and cosine decay (the recipe search of issue 18).

lr = 1e-4, multiplied by ``lr_drop_factor`` (0.5 -> 5e-5) after each epoch
in ``lr_drop_epochs`` (20); epochs are converted to steps from the dataset
size and batch size (``input_pipeline.steps_per_epoch``).

optax vs PyTorch RMSProp (the paper trained with PyTorch):
* PyTorch ``torch.optim.RMSprop(lr, alpha=0.99, eps=1e-8)``:
  ``v = alpha v + (1 - alpha) g^2``, ``p -= lr g / (sqrt(v) + eps)``, v0 = 0.
* ``optax.rmsprop`` defaults differ: ``decay=0.9`` (PyTorch alpha = 0.99) and
  ``eps_in_sqrt=True`` (``g / sqrt(v + eps)``, eps inside the root).
We therefore use ``decay=0.99, eps=1e-8, eps_in_sqrt=False, initial_scale=0,
bias_correction=False``, which is PyTorch's update rule exactly (tested in
tests/test_optim.py against a numpy transcription of it).
"""

import optax

from sgfan_jax import input_pipeline

# Defined by the input pipeline (full batches per epoch); importable from here
# too, as ``optim.steps_per_epoch`` (train.py).
steps_per_epoch = input_pipeline.steps_per_epoch


LR_SCHEDULES = ("step", "cosine")
OPTIMIZERS = ("rmsprop", "adamw")


def learning_rate_schedule(config, num_examples: int) -> optax.Schedule:
  """The learning rate per step.

  'step' (the paper): ``learning_rate``, times ``lr_drop_factor`` after each
  epoch of ``lr_drop_epochs``. 'cosine': linear warm-up from 0 over
  ``warmup_epochs``, then cosine decay to ``learning_rate * lr_end_factor``
  at the last step of the run (``config.num_epochs`` or
  ``num_train_steps``).
  """
  spe = steps_per_epoch(num_examples, config.batch_size)
  if config.lr_schedule == "step":
    boundaries = {int(e * spe): config.lr_drop_factor
                  for e in config.lr_drop_epochs}
    return optax.piecewise_constant_schedule(config.learning_rate, boundaries)
  if config.lr_schedule == "cosine":
    total = (config.num_train_steps if config.num_train_steps > 0
             else int(config.num_epochs * spe))
    warmup = min(int(round(config.warmup_epochs * spe)), max(total - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.learning_rate,
        warmup_steps=warmup, decay_steps=max(total, warmup + 1),
        end_value=config.learning_rate * config.lr_end_factor)
  raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got "
                   f"{config.lr_schedule!r}")


def create_optimizer(config, schedule: optax.Schedule):
  """RMSProp matching PyTorch's, or AdamW; optional global-norm clipping.

  AdamW: ``optax.adamw(b1=0.9, b2=0.999, eps=1e-8,
  weight_decay=config.weight_decay)``; the decay applies to kernels only
  (not to biases or BatchNorm scales), as is usual.
  """
  if config.optimizer == "rmsprop":
    opt = optax.rmsprop(schedule, decay=config.rmsprop_decay,
                        eps=config.rmsprop_eps, eps_in_sqrt=False,
                        initial_scale=0.0, bias_correction=False)
  elif config.optimizer == "adamw":
    opt = optax.adamw(schedule, weight_decay=config.weight_decay,
                      mask=_kernels_only)
  else:
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got "
                     f"{config.optimizer!r}")
  if config.grad_clip_norm and config.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), opt)
  return opt


def _kernels_only(params):
  """Weight-decay mask: True for convolution kernels (ndim >= 2)."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)
