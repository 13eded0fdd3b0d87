"""RMSProp matches PyTorch's update rule; the schedule drops at epoch 20."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sgfan_jax import optim
from configs import default


def torch_rmsprop_reference(p, grads, lr, alpha, eps):
  """numpy transcription of torch.optim.RMSprop (centered=False, momentum=0)."""
  v = np.zeros_like(p)
  for g in grads:
    v = alpha * v + (1 - alpha) * g * g
    p = p - lr * g / (np.sqrt(v) + eps)
  return p


def test_rmsprop_matches_pytorch_rule():
  config = default.get_config()
  config.learning_rate = 1e-2
  config.lr_drop_epochs = ()
  schedule = optim.learning_rate_schedule(config, num_examples=100)
  tx = optim.create_optimizer(config, schedule)
  rng = np.random.default_rng(0)
  p0 = rng.normal(size=(5,)).astype(np.float64)
  grads = [rng.normal(size=(5,)) * 1e-3 for _ in range(6)]
  params = jnp.asarray(p0, jnp.float32)
  state = tx.init(params)
  for g in grads:
    upd, state = tx.update(jnp.asarray(g, jnp.float32), state, params)
    params = params + upd
  ref = torch_rmsprop_reference(p0, grads, 1e-2, 0.99, 1e-8)
  np.testing.assert_allclose(np.asarray(params), ref, rtol=1e-5, atol=1e-6)
  # optax's default (eps inside the sqrt, decay 0.9) would differ clearly.
  tx_default = __import__("optax").rmsprop(1e-2)
  st = tx_default.init(jnp.asarray(p0, jnp.float32))
  q = jnp.asarray(p0, jnp.float32)
  for g in grads:
    u, st = tx_default.update(jnp.asarray(g, jnp.float32), st, q)
    q = q + u
  assert np.abs(np.asarray(q) - ref).max() > 1e-3


def test_schedule_paper_epochs():
  config = default.get_config()       # lr 1e-4, drop x0.5 at epoch 20
  schedule = optim.learning_rate_schedule(config, num_examples=3148)
  spe = 3148 // 10
  assert float(schedule(0)) == pytest.approx(1e-4)
  assert float(schedule(20 * spe - 1)) == pytest.approx(1e-4)
  assert float(schedule(20 * spe + 1)) == pytest.approx(5e-5)
  assert float(schedule(80 * spe)) == pytest.approx(5e-5)


def test_too_small_split_is_a_clear_error():
  config = ml_collections.ConfigDict(default.get_config())
  with pytest.raises(ValueError, match="fewer than one batch"):
    optim.learning_rate_schedule(config, num_examples=3)


def test_cosine_schedule_hand_computed():
  config = default.get_config()
  config.lr_schedule = "cosine"
  config.learning_rate = 1e-3
  config.num_epochs = 4
  config.warmup_epochs = 1.0
  config.lr_end_factor = 0.1
  schedule = optim.learning_rate_schedule(config, num_examples=100)  # 10/ep
  assert float(schedule(0)) == pytest.approx(0.0)
  assert float(schedule(5)) == pytest.approx(5e-4)           # half warm-up
  assert float(schedule(10)) == pytest.approx(1e-3)          # peak
  # Cosine over the remaining 30 steps: halfway = (peak + end) / 2.
  assert float(schedule(25)) == pytest.approx((1e-3 + 1e-4) / 2, rel=1e-4)
  assert float(schedule(40)) == pytest.approx(1e-4, rel=1e-4)


def test_adamw_matches_the_adam_rule_and_decays_kernels_only():
  config = default.get_config()
  config.optimizer = "adamw"
  config.learning_rate = 1e-2
  config.lr_drop_epochs = ()
  config.weight_decay = 0.1
  tx = optim.create_optimizer(
      config, optim.learning_rate_schedule(config, num_examples=100))
  rng = np.random.default_rng(0)
  params = {"kernel": rng.normal(size=(3, 2)), "bias": rng.normal(size=(2,))}
  grads = [{k: rng.normal(size=v.shape) for k, v in params.items()}
           for _ in range(4)]
  p = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
  state = tx.init(p)
  for g in grads:
    upd, state = tx.update({k: jnp.asarray(v, jnp.float32)
                            for k, v in g.items()}, state, p)
    p = {k: p[k] + upd[k] for k in p}
  # numpy Adam (Kingma & Ba, bias-corrected) + decoupled decay on the kernel.
  for name, decay in (("kernel", 0.1), ("bias", 0.0)):
    q = params[name].copy()
    m = np.zeros_like(q)
    v = np.zeros_like(q)
    for t, g in enumerate(grads, 1):
      m = 0.9 * m + 0.1 * g[name]
      v = 0.999 * v + 0.001 * g[name] ** 2
      mh, vh = m / (1 - 0.9 ** t), v / (1 - 0.999 ** t)
      q = q - 1e-2 * (mh / (np.sqrt(vh) + 1e-8) + decay * q)
    np.testing.assert_allclose(np.asarray(p[name]), q, rtol=1e-5, atol=1e-6)


def test_unknown_optimizer_and_schedule_are_clear_errors():
  config = default.get_config()
  config.optimizer = "sgd"
  with pytest.raises(ValueError, match="optimizer must be one of"):
    optim.create_optimizer(config, optim.learning_rate_schedule(config, 100))
  config.lr_schedule = "linear"
  with pytest.raises(ValueError, match="lr_schedule must be one of"):
    optim.learning_rate_schedule(config, 100)
