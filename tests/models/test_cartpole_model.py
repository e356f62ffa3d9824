"""Acceptance: an ensemble fitted on 2,000 random-policy cart-pole transitions predicts
held-out transitions well (normalised one-step MSE < 0.05)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax import envs
from mbrl_jax.models import FitConfig, check_fit, make_ensemble, make_trainer

pytestmark = pytest.mark.full_compile   # runtime-bound (tests/conftest.py)


def _random_transitions(key, num_envs, steps):
  env = envs.make("cartpole_continuous")
  tr, _ = jax.jit(lambda k: envs.batch_rollout(env, envs.random_policy(1), k, num_envs, steps))(key)
  return jax.tree.map(lambda a: a.reshape(num_envs * steps, *a.shape[2:]), tr)


def test_cartpole_one_step_error_is_small():
  train = _random_transitions(jax.random.key(0), 20, 100)       # 2,000 transitions
  test = _random_transitions(jax.random.key(1), 10, 100)        # 1,000 held out
  ens = make_ensemble(4, 1, num_members=5, hidden_sizes=(200, 200, 200))
  trainer = make_trainer(ens, FitConfig(max_epochs=50, batch_size=32, holdout_ratio=0.1))
  state, metrics = jax.jit(trainer.fit)(jax.random.key(2), trainer.init(ens.init(
      jax.random.key(3))), train, jnp.ones((2000,), bool))
  check_fit(metrics)
  pred = ens.predict(state.params, jax.random.key(4), test.obs, test.action, mode="expectation",
                     sample=False).next_obs
  true_delta = np.asarray(test.next_obs - test.obs)
  err = np.mean((np.asarray(pred - test.obs) - true_delta) ** 2, axis=0) / true_delta.var(0)
  print(f"normalised one-step MSE per dim {np.round(err, 5)}, mean {err.mean():.5f}, "
        f"epochs {int(metrics.epochs)}")
  assert err.mean() < 0.05
