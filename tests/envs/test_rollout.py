"""rollout / batch_rollout: shapes, keys, termination vs truncation, resets."""

from __future__ import annotations

from brax.envs.wrappers import training
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax import envs
from mbrl_jax.envs.cartpole import CARTPOLE_THETA_THRESHOLD


def test_rollout_shapes_and_continuity():
  env = envs.make('cartpole_swingup')
  policy = envs.random_policy(1)
  tr, final = jax.jit(lambda k: envs.rollout(env, policy, k, 30))(jax.random.PRNGKey(0))
  assert tr.obs.shape == (30, 5) and tr.next_obs.shape == (30, 5)
  assert tr.action.shape == (30, 1)
  for x in (tr.reward, tr.terminated, tr.truncated):
    assert x.shape == (30,) and x.dtype == jnp.float32
  assert np.all(np.abs(tr.action) <= 1.0)
  np.testing.assert_array_equal(tr.obs[1:], tr.next_obs[:-1])  # no resets
  np.testing.assert_array_equal(final.obs, tr.next_obs[-1])
  assert float(final.info['steps']) == 30


def test_batch_rollout_keys_give_different_trajectories():
  env = envs.make('pendulum')
  tr, final = jax.jit(
      lambda k: envs.batch_rollout(env, envs.random_policy(1), k, 4, 12)
  )(jax.random.PRNGKey(1))
  assert tr.obs.shape == (4, 12, 3) and tr.reward.shape == (4, 12)
  assert final.obs.shape == (4, 3)
  obs = np.asarray(tr.obs)
  for i in range(4):
    for j in range(i):
      assert not np.allclose(obs[i], obs[j])
      assert not np.allclose(tr.action[i], tr.action[j])


def test_truncation_and_reset_with_episode_wrapper():
  env = envs.make('pendulum', episode_length=5)
  tr, _ = jax.jit(
      lambda k: envs.rollout(env, envs.random_policy(1), k, 12)
  )(jax.random.PRNGKey(2))
  expected = np.zeros(12)
  expected[[4, 9]] = 1.0
  np.testing.assert_array_equal(tr.truncated, expected)
  np.testing.assert_array_equal(tr.terminated, np.zeros(12))
  # After a time limit the next episode starts from a fresh reset.
  assert not np.allclose(tr.obs[5], tr.next_obs[4])
  np.testing.assert_array_equal(tr.obs[6:10], tr.next_obs[5:9])


def test_termination_then_reset():
  env = envs.make('cartpole_continuous')
  push_right = lambda key, obs: jnp.ones((1,))
  tr, _ = jax.jit(lambda k: envs.rollout(env, push_right, k, 200))(jax.random.PRNGKey(3))
  term = np.asarray(tr.terminated)
  assert term.sum() >= 2 and tr.truncated.sum() == 0
  first = int(np.argmax(term))
  # The recorded next_obs is the true terminal state, not the reset one.
  x, theta = tr.next_obs[first, 0], tr.next_obs[first, 2]
  assert abs(x) > 2.4 or abs(theta) > CARTPOLE_THETA_THRESHOLD
  assert np.all(np.abs(tr.next_obs[:first, 2]) <= CARTPOLE_THETA_THRESHOLD)
  assert np.all(np.abs(tr.obs[first + 1]) <= 0.05)  # reset state
  assert float(tr.reward[first]) == 1.0


def test_without_auto_reset_the_episode_continues():
  env = envs.make('pendulum', episode_length=5)
  tr, final = jax.jit(
      lambda k: envs.rollout(env, envs.random_policy(1), k, 8, auto_reset=False)
  )(jax.random.PRNGKey(4))
  np.testing.assert_array_equal(tr.obs[1:], tr.next_obs[:-1])
  assert float(final.info['steps']) == 8


def test_init_state_and_no_time_limit():
  env = envs.make('cartpole_swingup', episode_length=None)
  state = env.reset(jax.random.PRNGKey(5))
  tr, _ = envs.rollout(env, envs.random_policy(1), jax.random.PRNGKey(6), 3,
                       init_state=state)
  np.testing.assert_array_equal(tr.obs[0], state.obs)
  np.testing.assert_array_equal(tr.truncated, np.zeros(3))


def test_rejects_auto_reset_wrapper():
  env = training.AutoResetWrapper(envs.make('pendulum'))
  with pytest.raises(ValueError, match='AutoResetWrapper'):
    envs.rollout(env, envs.random_policy(1), jax.random.PRNGKey(0), 3)


@pytest.mark.parametrize('name', ['cartpole_continuous', 'cartpole_swingup', 'pendulum'])
def test_brax_training_wrappers_apply_to_our_envs(name):
  env = training.wrap(envs.make(name, episode_length=None), episode_length=3)
  state = jax.jit(env.reset)(jax.random.split(jax.random.PRNGKey(0), 4))
  step = jax.jit(env.step)
  first_obs = state.obs
  for _ in range(3):
    state = step(state, jnp.zeros((4, 1)))
  np.testing.assert_array_equal(state.done, np.ones(4))  # time limit hit ...
  np.testing.assert_array_equal(state.obs, first_obs)  # ... and auto-reset
