"""Optimiser: RMSProp with the paper's step schedule (Sec. 3.4).

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


def learning_rate_schedule(config, num_examples: int) -> optax.Schedule:
  """Piecewise-constant schedule in steps."""
  spe = steps_per_epoch(num_examples, config.batch_size)
  boundaries = {int(e * spe): config.lr_drop_factor
                for e in config.lr_drop_epochs}
  return optax.piecewise_constant_schedule(config.learning_rate, boundaries)


def create_optimizer(config, schedule: optax.Schedule):
  """RMSProp matching PyTorch's, with optional global-norm clipping."""
  rmsprop = optax.rmsprop(schedule, decay=config.rmsprop_decay,
                          eps=config.rmsprop_eps, eps_in_sqrt=False,
                          initial_scale=0.0, bias_correction=False)
  if config.grad_clip_norm and config.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm),
                       rmsprop)
  return rmsprop
