"""envs.acting: one policy type with state, step/collect with episodes counted once, episodes
that stop at done, evaluation of complete episodes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax import envs
from mbrl_jax.envs import acting


def counting_policy(action: float = 0.0) -> acting.Policy:
  """State: steps since the episode started (reset by init), with the step as info."""
  return acting.Policy(init=lambda key: jnp.zeros((), jnp.int32),
                       act=lambda n, key, obs: (jnp.full((1,), action), n + 1, n))


def test_collect_counts_ended_episodes_once_and_resets_the_policy_state():
  env = envs.make("pendulum", episode_length=7)
  policy = counting_policy()
  actor = acting.reset(env, policy, jax.random.key(0))
  actor, tr, info, ended = jax.jit(
      lambda a, k: acting.collect(env, policy, a, k, 17))(actor, jax.random.key(1))
  # Episodes end after steps 7 and 14: two ended, three steps into the third.
  assert int(ended.count) == 2 and int(ended.length_sum) == 14
  np.testing.assert_allclose(ended.return_sum, tr.reward[:14].sum(), rtol=1e-5)
  np.testing.assert_allclose(ended.mean_return(), tr.reward[:14].sum() / 2, rtol=1e-5)
  np.testing.assert_array_equal(info, [0, 1, 2, 3, 4, 5, 6] * 2 + [0, 1, 2])   # state reset
  assert int(actor.episode_length) == 3 and int(actor.policy_state) == 3
  np.testing.assert_allclose(actor.episode_return, tr.reward[14:].sum(), rtol=1e-5)
  np.testing.assert_array_equal(np.flatnonzero(tr.truncated), [6, 13])
  assert np.isnan(acting.Episodes.none().mean_return())                   # none ended: NaN


def test_episode_stops_at_termination_and_marks_the_cut():
  env = envs.make("cartpole_continuous", episode_length=None)
  policy = counting_policy(action=1.0)            # pushes right until the pole falls
  result = jax.jit(lambda k: acting.episode(env, policy, k, 200))(jax.random.key(2))
  length = int(result.length)
  assert 5 < length < 200
  assert result.valid[:length].all() and not result.valid[length:].any()
  assert float(result.transitions.terminated[length - 1]) == 1.0
  np.testing.assert_allclose(result.ret, length)                     # reward 1 per step
  np.testing.assert_array_equal(result.info[:length], np.arange(length))   # policy's own state
  short = jax.jit(lambda k: acting.episode(env, policy, k, 4))(jax.random.key(2))
  assert int(short.length) == 4 and float(short.transitions.truncated[-1]) == 1.0
  assert float(short.transitions.terminated[-1]) == 0.0


def test_evaluate_returns_one_complete_episode_per_row():
  env = envs.make("pendulum", episode_length=10)
  result = jax.jit(lambda k: acting.evaluate(env, acting.uniform_random(1), k, 3, 25))(
      jax.random.key(3))
  np.testing.assert_array_equal(result.lengths, [10, 10, 10])      # not 25: no auto reset
  assert result.returns.shape == (3,) and np.all(result.returns < 0)
  assert len(set(np.asarray(result.returns).tolist())) == 3


def test_without_auto_reset_an_episode_ends_once():
  env = envs.make("pendulum", episode_length=5)
  policy = counting_policy()
  actor = acting.reset(env, policy, jax.random.key(4))
  _, _, _, ended = acting.collect(env, policy, actor, jax.random.key(5), 12, auto_reset=False)
  assert int(ended.count) == 1 and int(ended.length_sum) == 5


def test_an_auto_reset_env_is_refused():
  from brax.envs.wrappers import training
  env = training.AutoResetWrapper(envs.make("pendulum"))
  with pytest.raises(ValueError, match="AutoResetWrapper"):
    acting.reset(env, acting.uniform_random(1), jax.random.key(0))
