"""Training: TrainState, the jitted train/eval steps and the training loop.

``train_step(state, batch, rng)`` (jitted, state donated) augments the host
batch on device (and pastes synthetic occluders when configured,
occluders.py), renders the Sec. 3.2 targets, runs the network, computes
Eq. 3 and applies one RMSProp update. Prediction (evaluation, validation,
photos) is the ``inference`` layer, which this module imports.
"""

import dataclasses
import functools
import json
import os
import signal
import time
import types
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

from absl import logging
from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tensorboardX
import tqdm

from sgfan_jax import augment
from sgfan_jax import checkpoints as ckpt_lib
from sgfan_jax import inference as inference_lib
from sgfan_jax import layouts
from sgfan_jax import losses
from sgfan_jax import model as model_lib
from sgfan_jax import occluders as occluders_lib
from sgfan_jax import optim
from sgfan_jax import parallel
from sgfan_jax import targets


class TrainState(train_state.TrainState):
  """flax TrainState plus BatchNorm statistics."""
  batch_stats: Any = None


@dataclasses.dataclass(frozen=True)
class StepSpec:
  """Everything the jitted steps need besides arrays (hashable, static).

  Built from the config and the dataset metadata by ``step_spec``; the
  prediction constants (shared with inference) are ``spec.inference``.
  """
  sigma: float                # heatmap target sigma (input px)
  loss_lambda: float
  heatmap_loss: str           # 'mse' (Eq. 3) | 'awing' (losses.py)
  heatmap_fg_weight: float
  loss_normalize: bool
  mean_over_batch: bool
  flip_perm: tuple
  aug: tuple                  # sorted (name, value) of config.augment
  occluders: tuple            # sorted (name, value) of config.occluders
  occluder_regions: tuple     # point indices per region (occluders.py)
  inference: inference_lib.InferenceSpec

  # The geometry lives once, in ``inference`` (shared with prediction).
  @property
  def input_size(self) -> int:
    return self.inference.input_size

  @property
  def window_side(self) -> float:
    """Network window side in stored-crop pixels."""
    return self.inference.window_side

  @property
  def score_radius(self) -> float:
    """Score target disc radius (input px)."""
    return self.inference.score_radius

  @property
  def output_stride(self) -> int:
    """Targets are rendered at ``input_size / output_stride``."""
    return self.inference.output_stride


def step_spec(config, metadata: Dict[str, Any]) -> StepSpec:
  """Derives the step constants from ``config`` and dataset ``metadata``.

  ``metadata`` holds 'crop_size', 'crop_context' and 'layout' (the builder's
  info.metadata).
  """
  if dataclasses.is_dataclass(metadata):
    metadata = dataclasses.asdict(metadata)
  layout = layouts.get_layout(metadata["layout"])
  infer = inference_lib.inference_spec(config, metadata)
  occ = config.occluders
  occluders_lib.check_settings(occ.prob, (occ.coverage_min, occ.coverage_max),
                               occ.score_target)
  return StepSpec(
      sigma=float(config.targets.sigma),
      loss_lambda=float(config.loss_lambda),
      heatmap_loss=str(config.heatmap_loss),
      heatmap_fg_weight=float(config.heatmap_fg_weight),
      loss_normalize=bool(config.loss_normalize),
      mean_over_batch=bool(config.loss_mean_over_batch),
      flip_perm=tuple(int(i) for i in layout.flip_permutation),
      aug=tuple(sorted(config.augment.to_dict().items())),
      occluders=tuple(sorted(occ.to_dict().items())),
      occluder_regions=occluders_lib.region_indices(layout),
      inference=infer,
  )


def create_train_state(config, num_landmarks: int, num_examples: int,
                       rng) -> TrainState:
  """Initialises the model, the optimiser and the TrainState."""
  model = model_lib.create_model(config.model, num_landmarks)
  variables = inference_lib.init_variables(model, config.model.input_size, rng)
  schedule = optim.learning_rate_schedule(config, num_examples)
  tx = optim.create_optimizer(config, schedule)
  return TrainState.create(apply_fn=model.apply, params=variables["params"],
                           batch_stats=variables["batch_stats"], tx=tx)


def _forward_loss(params, state, images, heat_gt, score_gt, spec):
  (heat, score), mutated = state.apply_fn(
      {"params": params, "batch_stats": state.batch_stats}, images,
      train=True, mutable=["batch_stats"])
  terms = losses.training_loss(
      heat, score, heat_gt, score_gt, loss_lambda=spec.loss_lambda,
      heatmap_loss=spec.heatmap_loss,
      heatmap_fg_weight=spec.heatmap_fg_weight,
      normalize=spec.loss_normalize)
  total = terms["objective"].sum()
  if spec.mean_over_batch:
    total = total / images.shape[0]
  return total, (terms, mutated["batch_stats"])


def step_inputs(batch: Dict[str, jnp.ndarray], step_rng, spec: StepSpec):
  """The augmented network input and its Sec. 3.2 targets for one step.

  With ``spec.occluders`` prob > 0 an occluder is pasted after the
  augmentation (occluders.py; key ``fold_in(step_rng, 1)``); with
  score_target 'visibility' the score maps of the points under it are 0.

  Returns:
    (images, heatmaps, scores, occluded [B, N] bool or None when off).
  """
  images, points, _ = augment.train_transform(
      step_rng, batch["image"], batch["landmarks"], batch["visible"],
      aug=types.SimpleNamespace(**dict(spec.aug)),
      flip_perm=jnp.asarray(spec.flip_perm),
      window_side=spec.window_side, out_size=spec.input_size)
  occ = types.SimpleNamespace(**dict(spec.occluders))
  occluded = None
  if occ.prob > 0:
    images, occluded, _ = occluders_lib.paste_occluders(
        jax.random.fold_in(step_rng, 1), images, points,
        regions=spec.occluder_regions, prob=occ.prob,
        coverage=(occ.coverage_min, occ.coverage_max))
  stride = spec.output_stride
  heat_gt, score_gt = targets.render_targets(
      inference_lib.input_to_map(points, stride), spec.input_size // stride,
      spec.sigma / stride, spec.score_radius / stride)
  if occluded is not None and occ.score_target == "visibility":
    score_gt = jnp.where(occluded[:, None, None, :], 0.0, score_gt)
  return images, heat_gt, score_gt, occluded


def train_step(state: TrainState, batch: Dict[str, jnp.ndarray], rng,
               *, spec: StepSpec, schedule: Optional[Callable] = None):
  """One optimisation step.

  Args:
    state: TrainState (donated by the jitted wrapper).
    batch: host batch: 'image' uint8 [B, S, S, 3], 'landmarks' [B, N, 2]
      (stored-crop coordinates), 'visible' [B, N].
    rng: base PRNG key; the step's key is ``fold_in(rng, state.step)`` so a
      resumed run draws the same augmentations.
    spec: static constants (``step_spec``).
    schedule: learning-rate schedule, for logging only.

  Returns:
    (new_state, metrics) with scalar 'loss' (Eq. 3 over the batch, divided by
    B when ``mean_over_batch``), 'heatmap_loss', 'score_loss' (per-sample
    means), 'grad_norm', 'lr'; with occluders on also 'occluded_points'
    (fraction of the batch's points under an occluder).
  """
  step_rng = jax.random.fold_in(rng, state.step)
  images, heat_gt, score_gt, occluded = step_inputs(batch, step_rng, spec)
  grad_fn = jax.value_and_grad(_forward_loss, has_aux=True)
  (loss, (terms, batch_stats)), grads = grad_fn(
      state.params, state, images, heat_gt, score_gt, spec)
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  metrics = {
      "loss": loss,
      "heatmap_loss": terms["heatmap"].mean(),
      "score_loss": terms["score"].mean(),
      "grad_norm": optax.global_norm(grads),
  }
  if occluded is not None:
    metrics["occluded_points"] = occluded.mean()
  if schedule is not None:
    metrics["lr"] = schedule(state.step)
  return new_state, metrics


def variables_of(state: TrainState) -> Dict[str, Any]:
  """The inference variables ``{"params", "batch_stats"}`` of a TrainState."""
  return {"params": state.params, "batch_stats": state.batch_stats}


def make_train_step(spec: StepSpec, schedule=None, mesh=None):
  """Jitted train step with the state donated.

  With a ``mesh`` the state stays replicated across its devices (the batch
  arrives sharded, see parallel.shard_batch).
  """
  fn = functools.partial(train_step, spec=spec, schedule=schedule)
  if mesh is None:
    return jax.jit(fn, donate_argnums=(0,))
  rep = parallel.replicated(mesh)
  return jax.jit(fn, donate_argnums=(0,), out_shardings=(rep, rep))


class MetricWriter:
  """Writes scalars to ``workdir/metrics.jsonl`` and TensorBoard
  (tensorboardX)."""

  def __init__(self, workdir: str, tensorboard: bool = True):
    self._path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if tensorboard and jax.process_index() == 0:
      self._tb = tensorboardX.SummaryWriter(
          os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: Dict[str, float]) -> None:
    if jax.process_index() != 0:
      return
    with open(self._path, "a") as f:
      f.write(json.dumps({"step": int(step), **{k: float(v) for k, v in
                                                scalars.items()}}) + "\n")
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(k, float(v), int(step))
      self._tb.flush()

  def close(self):
    if self._tb is not None:
      self._tb.close()


class TrainingDiverged(RuntimeError):
  """Raised when the loss becomes NaN or Inf."""


def _check_finite(step: int, scalars: Dict[str, float], ckpt_dir: str):
  bad = {k: v for k, v in scalars.items() if not np.isfinite(v)}
  if bad:
    raise TrainingDiverged(
        f"training diverged at step {step}: non-finite {bad}. Nothing was "
        f"saved after the last good checkpoint in {ckpt_dir}; lower "
        "--config.learning_rate or set --config.grad_clip_norm and resume.")


class _StopFlag:
  """Turns SIGTERM / SIGINT into a clean 'save and stop' at the next step."""

  def __init__(self):
    self.requested = False
    self._old = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:      # not the main thread (e.g. some notebooks)
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    if self.requested:      # second signal: stop now
      raise KeyboardInterrupt
    logging.warning("Signal %d: saving a checkpoint and stopping.", signum)
    self.requested = True

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)
    return False


def _report(bar, message: str) -> None:
  """A progress line: above the progress bar when there is one."""
  if jax.process_index() != 0:
    return
  if bar is not None:
    bar.write(message)
  else:
    print(message, flush=True)


def num_train_steps(config, num_examples: int) -> int:
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  return config.num_epochs * optim.steps_per_epoch(num_examples,
                                                   config.batch_size)


def parse_init_from(spec: str) -> Tuple[str, Optional[int]]:
  """``'DIR'`` or ``'DIR:STEP'`` (config.checkpoint.init_from) -> (dir, step)."""
  head, sep, tail = spec.rpartition(":")
  if sep and tail.isdigit():
    return head, int(tail)
  return spec, None


def restore_init_from(spec: str, target: TrainState) -> TrainState:
  """The train state of another run's checkpoint (config.checkpoint.init_from).

  Args:
    spec: ``'DIR'`` (its latest checkpoint: where that run stopped, so the
      schedule goes on from there) or ``'DIR:STEP'``; DIR is a training
      workdir.
    target: a freshly created state of the same config (its structure).

  Raises:
    FileNotFoundError: DIR has no checkpoints, or not STEP (names them).
  """
  src_dir, step = parse_init_from(spec)
  if not os.path.isdir(os.path.join(src_dir, "checkpoints")):
    raise FileNotFoundError(f"config.checkpoint.init_from={spec!r}: no "
                            f"checkpoints folder in {src_dir}")
  src = ckpt_lib.Checkpointer(src_dir, read_only=True)
  try:
    steps = src.all_steps()
    if step is None:
      step = src.latest_step()
    if step is None or step not in steps:
      raise FileNotFoundError(
          f"config.checkpoint.init_from={spec!r}: step {step} not in "
          f"{src.directory} (steps: {sorted(steps)})")
    state = src.restore(step, target)
  finally:
    src.close()
  logging.info("Initialised from step %d of %s", step, src_dir)
  return state


def train(config, workdir: str, train_batches: Callable[[int], Iterator],
          metadata: Dict[str, Any],
          validate: Optional[Callable[[TrainState], float]] = None,
          progress: bool = True) -> TrainState:
  """Trains from the latest checkpoint in ``workdir`` (if any) to the end.

  Args:
    config: the ConfigDict.
    workdir: checkpoints in ``workdir/checkpoints``, metrics.jsonl, TB events.
    train_batches: ``start_step -> iterator`` of host batches; must yield the
      batches an uninterrupted run would see from ``start_step`` on.
    metadata: dataset metadata: 'crop_size', 'crop_context', 'layout',
      'num_examples'.
    validate: optional ``state -> NME`` on the validation split; run every
      ``eval.every_epochs`` epochs and at the end, used to keep the best
      checkpoint.
    progress: show a progress bar.

  Returns:
    The final TrainState.
  """
  os.makedirs(workdir, exist_ok=True)
  layout = layouts.get_layout(metadata["layout"])
  n_examples = int(metadata["num_examples"])
  total_steps = num_train_steps(config, n_examples)
  spe = optim.steps_per_epoch(n_examples, config.batch_size)
  spec = step_spec(config, metadata)
  rng = jax.random.PRNGKey(config.seed)
  init_rng, aug_rng = jax.random.split(rng)
  state = create_train_state(config, layout.num_points, n_examples, init_rng)
  schedule = optim.learning_rate_schedule(config, n_examples)
  ckpt = ckpt_lib.Checkpointer(workdir, config.checkpoint.max_to_keep)
  start = ckpt.latest_step()
  if start is not None:
    state = ckpt.restore(start, state)
    logging.info("Resumed from step %d", start)
  elif config.checkpoint.init_from is None:
    raise ValueError("this config starts from another run's checkpoint: "
                     "set --config.checkpoint.init_from=DIR (or DIR:STEP)")
  elif config.checkpoint.init_from:
    state = restore_init_from(config.checkpoint.init_from, state)
  start = int(state.step)
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  state = parallel.replicate(state, mesh)
  step_fn = make_train_step(spec, schedule, mesh)
  writer = MetricWriter(workdir, config.write_tensorboard)
  eval_every = max(1, int(config.eval.every_epochs * spe))
  bar = None
  if progress and jax.process_index() == 0:
    bar = tqdm.tqdm(total=total_steps, initial=start, unit="step",
                    dynamic_ncols=True, mininterval=1.0)
  logging.info("Training %d steps (%d per epoch), from step %d; compute "
               "dtype %s (model.dtype=%r on %s).", total_steps, spe, start,
               model_lib.resolve_dtype(config.model.dtype).name,
               str(config.model.dtype), jax.default_backend())
  batches = train_batches(start)
  pending = []          # device metrics since the last log
  t_log = time.perf_counter()
  images_since = 0
  step = start
  with _StopFlag() as stop:
    while step < total_steps:
      batch = parallel.shard_batch(next(batches), mesh)
      state, metrics = step_fn(state, batch, aug_rng)
      step += 1
      pending.append(metrics)
      images_since += batch["image"].shape[0]
      is_last = step == total_steps
      do_eval = validate is not None and (step % eval_every == 0 or is_last)
      # Sampled once: a signal landing later in this step is acted on (and
      # saved) at the next step, never between the save and the stop.
      stopping = stop.requested
      do_ckpt = (step % config.checkpoint.every_steps == 0 or is_last
                 or stopping or do_eval)
      if step % config.log_every_steps == 0 or do_ckpt:
        host = parallel.to_host(pending)
        scalars = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
        _check_finite(step, scalars, ckpt.directory)
        dt = time.perf_counter() - t_log
        scalars["images_per_sec"] = images_since / max(dt, 1e-9)
        scalars["epoch"] = step / spe
        writer.write(step, scalars)
        if bar is not None:
          bar.set_postfix(loss=f"{scalars['loss']:.4g}",
                          img_s=f"{scalars['images_per_sec']:.2f}",
                          lr=f"{scalars.get('lr', 0):.2g}")
        _report(bar, f"step {step}/{total_steps}: " + ", ".join(
            f"{k}={v:.4g}" for k, v in scalars.items()))
        pending, images_since, t_log = [], 0, time.perf_counter()
      if bar is not None:
        bar.update(1)
      if do_ckpt:
        val_nme = None
        if do_eval:
          val_nme = float(validate(state))
          writer.write(step, {"val_nme": val_nme})
          _report(bar, f"step {step}: validation NME {val_nme:.5f}")
        ckpt.save(step, state, val_nme=val_nme)
      if stopping:
        logging.warning("Stopped at step %d; resume with the same command.",
                        step)
        break
  if bar is not None:
    bar.close()
  writer.close()
  ckpt.close()
  return state
