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


def test_train_step_compiles_once_and_loss_falls(sample):
  examples, meta = sample
  config = test_config.get_config()
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
