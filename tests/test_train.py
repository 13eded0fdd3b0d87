"""Train/eval steps and the training loop on real sample faces."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import test as test_config
from sgfan_jax import augment
from sgfan_jax import checkpoints as ckpt_lib
from sgfan_jax import evaluate
from sgfan_jax import inference
from sgfan_jax import train
from tfds_builders import build

FIELDS = ("image", "landmarks", "visible", "crop_to_image",
          "landmarks_original")


@pytest.fixture(scope="module")
def sample(sample_tfds_dir):
  builder = build.load_builder("face300w", sample_tfds_dir)
  src = builder.as_data_source(split="train")
  examples = [src[i] for i in range(len(src))]
  meta = dict(builder.info.metadata)
  meta["num_examples"] = len(examples)
  return examples, meta


def stack(examples):
  return {k: np.stack([np.asarray(e[k]) for e in examples]) for k in FIELDS}


def fixed_batches(examples, batch_size):
  """Deterministic stream: batch k = examples k*B..(k+1)*B (mod len)."""
  def from_step(start):
    step = start
    while True:
      idx = [(step * batch_size + i) % len(examples)
             for i in range(batch_size)]
      yield stack([examples[i] for i in idx])
      step += 1
  return from_step


@pytest.mark.parametrize("output_stride", [1, 2])
def test_train_step_compiles_once_and_loss_falls(sample, output_stride):
  examples, meta = sample
  config = test_config.get_config()
  config.model.output_stride = output_stride
  chex.clear_trace_counter()           # parametrized: one count per case
  # LeCun-scale heads (PyTorch-like init): the loss starts at unit-variance
  # noise over every map pixel and must fall fast (the small default head
  # init starts near the all-zero plateau instead).
  config.model.head_init_scale = 1.0
  spec = train.step_spec(config, meta)
  state = train.create_train_state(config, 68, meta["num_examples"],
                                   jax.random.PRNGKey(0))

  @chex.assert_max_traces(n=1)
  def step_impl(state, batch, rng):
    return train.train_step(state, batch, rng, spec=spec)

  step = jax.jit(step_impl, donate_argnums=(0,))
  batches = fixed_batches(examples, config.batch_size)(0)
  first = np.stack([examples[i]["image"] for i in range(4)])
  losses = []
  for _ in range(12):
    state, metrics = step(state, next(batches), jax.random.PRNGKey(1))
    losses.append(float(metrics["loss"]))
    assert np.isfinite(float(metrics["grad_norm"]))
  assert int(state.step) == 12
  assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses
  del first


def test_checkpoint_resume_is_exact(sample, tmp_path):
  examples, meta = sample
  config = test_config.get_config()
  config.num_train_steps = 6
  config.checkpoint.every_steps = 3
  batches = fixed_batches(examples, config.batch_size)

  full = train.train(config, str(tmp_path / "full"), batches, meta,
                     progress=False)
  # "Crash" after step 3: a run configured to stop there, then a restart.
  config.num_train_steps = 3
  part = train.train(config, str(tmp_path / "resumed"), batches, meta,
                     progress=False)
  ckpt = ckpt_lib.Checkpointer(str(tmp_path / "resumed"))
  assert ckpt.latest_step() == 3
  restored = ckpt.restore(3, part)
  chex.assert_trees_all_equal(restored.params, part.params)
  chex.assert_trees_all_equal(restored.opt_state, part.opt_state)
  ckpt.close()
  config.num_train_steps = 6
  resumed = train.train(config, str(tmp_path / "resumed"), batches, meta,
                        progress=False)
  assert int(resumed.step) == 6
  chex.assert_trees_all_close(resumed.params, full.params, rtol=0, atol=0)
  chex.assert_trees_all_close(resumed.batch_stats, full.batch_stats,
                              rtol=0, atol=0)
  lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
  assert any('"images_per_sec"' in l for l in lines)


def test_init_from_continues_another_runs_state(sample, tmp_path):
  """config.checkpoint.init_from: a new workdir starts from another run's
  whole train state, so 3 + 3 steps equal one 6-step run exactly."""
  examples, meta = sample
  config = test_config.get_config()
  config.checkpoint.every_steps = 3
  batches = fixed_batches(examples, config.batch_size)
  config.num_train_steps = 6
  full = train.train(config, str(tmp_path / "full"), batches, meta,
                     progress=False)
  config.num_train_steps = 3
  train.train(config, str(tmp_path / "src"), batches, meta, progress=False)

  config.num_train_steps = 6
  config.checkpoint.init_from = str(tmp_path / "src")  # its latest: step 3
  ft = train.train(config, str(tmp_path / "ft"), batches, meta,
                   progress=False)
  assert int(ft.step) == 6
  chex.assert_trees_all_close(ft.params, full.params, rtol=0, atol=0)
  chex.assert_trees_all_close(ft.batch_stats, full.batch_stats,
                              rtol=0, atol=0)
  # 'DIR:STEP' names the step.
  fresh = train.create_train_state(config, 68, meta["num_examples"],
                                   jax.random.PRNGKey(0))
  at3 = train.restore_init_from(f"{tmp_path / 'src'}:3", fresh)
  assert int(at3.step) == 3
  # The source run is untouched (read only) ...
  src = ckpt_lib.Checkpointer(str(tmp_path / "src"), read_only=True)
  assert src.all_steps() == [3]
  src.close()
  # ... and once the new workdir has checkpoints, resuming wins.
  config.checkpoint.init_from = str(tmp_path / "nowhere")
  config.num_train_steps = 6
  again = train.train(config, str(tmp_path / "ft"), batches, meta,
                      progress=False)
  chex.assert_trees_all_close(again.params, full.params, rtol=0, atol=0)


def test_init_from_errors_name_the_problem(sample, tmp_path):
  examples, meta = sample
  config = test_config.get_config()
  config.num_train_steps = 2
  batches = fixed_batches(examples, config.batch_size)
  config.checkpoint.init_from = str(tmp_path / "missing")
  with pytest.raises(FileNotFoundError, match="no checkpoints folder in .*"
                     "missing"):
    train.train(config, str(tmp_path / "a"), batches, meta, progress=False)
  config.checkpoint.init_from = ""
  train.train(config, str(tmp_path / "src"), batches, meta, progress=False)
  config.checkpoint.init_from = f"{tmp_path / 'src'}:7"
  with pytest.raises(FileNotFoundError, match=r"step 7 not in .*steps: \[2\]"):
    train.train(config, str(tmp_path / "b"), batches, meta, progress=False)
  from configs import lite  # pylint: disable=g-import-not-at-top
  ft = lite.get_config("occluded_finetune")
  assert ft.checkpoint.init_from is None and ft.num_epochs == 82
  config.checkpoint.init_from = None
  with pytest.raises(ValueError, match="init_from=DIR"):
    train.train(config, str(tmp_path / "c"), batches, meta, progress=False)


def test_nan_loss_stops_with_message(sample, tmp_path):
  examples, meta = sample
  config = test_config.get_config()
  config.learning_rate = 1e30          # explodes within a few steps
  config.num_train_steps = 6
  with pytest.raises(train.TrainingDiverged, match="diverged at step"):
    train.train(config, str(tmp_path), fixed_batches(examples, 4), meta,
                progress=False)
  # Nothing non-finite was checkpointed.
  ckpt = ckpt_lib.Checkpointer(str(tmp_path))
  for step in ckpt.all_steps():
    s = ckpt.restore(step, train.create_train_state(
        config, 68, meta["num_examples"], jax.random.PRNGKey(0)))
    leaves = jax.tree_util.tree_leaves(s.params)
    assert all(bool(jnp.all(jnp.isfinite(l))) for l in leaves)
  ckpt.close()


def test_eval_step_compiles_once_and_maps_to_image(sample):
  examples, meta = sample
  config = test_config.get_config()
  spec = train.step_spec(config, meta)
  state = train.create_train_state(config, 68, meta["num_examples"],
                                   jax.random.PRNGKey(0))

  variables = train.variables_of(state)

  @chex.assert_max_traces(n=1)
  def eval_impl(variables, batch):
    return evaluate.eval_step(variables, batch, None, apply_fn=state.apply_fn,
                              spec=spec.inference)

  eval_fn = jax.jit(eval_impl)
  for start in (0, 4, 8):
    batch = stack(examples[start:start + 4])
    out = eval_fn(variables, batch)
    assert out["points"].shape == (4, 68, 2)
    assert out["weights"].shape == (4, 68)
  # The coordinate chain: ground truth in network-input coordinates maps
  # back onto the original-image annotation.
  batch = stack(examples[:4])
  _, pts_in, out_to_crop = augment.eval_transform(
      batch["image"], batch["landmarks"], window_side=spec.window_side,
      out_size=spec.input_size)
  back = inference.output_to_image(pts_in, out_to_crop, batch["crop_to_image"])
  np.testing.assert_allclose(np.asarray(back), batch["landmarks_original"],
                             atol=1e-2)


# ------------------------------------------- synthetic occluders (occluders.py)
# pylint: disable=g-import-not-at-top,wrong-import-position
import types

import optax

from sgfan_jax import occluders
from sgfan_jax import targets


def _paper_train_step(state, batch, rng, *, spec):
  """train_step as recorded before the occluders existed (the paper step)."""
  step_rng = jax.random.fold_in(rng, state.step)
  images, points, _ = augment.train_transform(
      step_rng, batch["image"], batch["landmarks"], batch["visible"],
      aug=types.SimpleNamespace(**dict(spec.aug)),
      flip_perm=jnp.asarray(spec.flip_perm), window_side=spec.window_side,
      out_size=spec.input_size)
  heat_gt, score_gt = targets.render_targets(
      points, spec.input_size, spec.sigma, spec.score_radius)
  grad_fn = jax.value_and_grad(train._forward_loss, has_aux=True)  # pylint: disable=protected-access
  (loss, (terms, batch_stats)), grads = grad_fn(
      state.params, state, images, heat_gt, score_gt, spec)
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  return new_state, {"loss": loss, "heatmap_loss": terms["heatmap"].mean(),
                     "score_loss": terms["score"].mean(),
                     "grad_norm": optax.global_norm(grads)}


def test_occluders_off_is_bit_for_bit_the_paper_step(sample):
  examples, meta = sample
  config = test_config.get_config()
  assert config.occluders.prob == 0.0            # default: off
  spec = train.step_spec(config, meta)
  states = [train.create_train_state(config, 68, meta["num_examples"],
                                     jax.random.PRNGKey(0)) for _ in range(2)]
  ours = jax.jit(lambda s, b, r: train.train_step(s, b, r, spec=spec))
  paper = jax.jit(lambda s, b, r: _paper_train_step(s, b, r, spec=spec))
  batches = fixed_batches(examples, config.batch_size)(0)
  for _ in range(2):
    batch = next(batches)
    states[0], m0 = ours(states[0], batch, jax.random.PRNGKey(1))
    states[1], m1 = paper(states[1], batch, jax.random.PRNGKey(1))
    assert set(m0) == set(m1)                    # no occluder metric
    chex.assert_trees_all_equal(m0, m1)
  for name in ("params", "batch_stats", "opt_state"):
    chex.assert_trees_all_equal(getattr(states[0], name),
                                getattr(states[1], name))


@pytest.mark.parametrize("score_target", occluders.SCORE_TARGETS)
def test_occluded_steps_zero_score_targets_where_flagged(sample,
                                                         score_target):
  examples, meta = sample
  config = test_config.get_config()
  config.occluders.prob = 1.0
  config.occluders.score_target = score_target
  spec = train.step_spec(config, meta)
  hash(spec)
  state = train.create_train_state(config, 68, meta["num_examples"],
                                   jax.random.PRNGKey(0))
  chex.clear_trace_counter()           # parametrized: one count per case

  @chex.assert_max_traces(n=1)
  def step_impl(state, batch, rng):
    return train.train_step(state, batch, rng, spec=spec)

  step = jax.jit(step_impl, donate_argnums=(0,))
  inputs = jax.jit(lambda b, r: train.step_inputs(b, r, spec))
  batches = fixed_batches(examples, config.batch_size)(0)
  rng = jax.random.PRNGKey(1)
  for k in range(3):
    batch = next(batches)
    state, metrics = step(state, batch, rng)
    for name in ("loss", "heatmap_loss", "score_loss", "grad_norm"):
      assert np.isfinite(float(metrics[name])), (name, metrics)
    assert 0.0 < float(metrics["occluded_points"]) < 1.0
    # The step's targets: the paper's heatmaps; score maps zero exactly on
    # the occluded points for 'visibility', the paper's otherwise.
    step_rng = jax.random.fold_in(rng, k)
    images, heat, score, occ = jax.tree_util.tree_map(
        np.asarray, inputs(batch, step_rng))
    plain, points, _ = augment.train_transform(
        step_rng, batch["image"], batch["landmarks"], batch["visible"],
        aug=types.SimpleNamespace(**dict(spec.aug)),
        flip_perm=jnp.asarray(spec.flip_perm), window_side=spec.window_side,
        out_size=spec.input_size)
    heat_ref, score_ref = jax.tree_util.tree_map(np.asarray,
                                                 targets.render_targets(
        points, spec.input_size, spec.sigma, spec.score_radius))
    assert occ.shape == (4, 68) and occ.any(axis=1).all()
    np.testing.assert_array_equal(heat, heat_ref)
    flagged = np.broadcast_to(occ[:, None, None, :], score.shape)
    if score_target == "visibility":
      np.testing.assert_array_equal(score[flagged], 0.0)
      assert score_ref[flagged].sum() > 0          # the paper's were not
      np.testing.assert_array_equal(score[~flagged], score_ref[~flagged])
    else:
      np.testing.assert_array_equal(score, score_ref)
    # The occluder changed pixels of every image.
    assert (np.abs(images - np.asarray(plain)).max(axis=(1, 2, 3)) > 0).all()
  assert int(state.step) == 3
