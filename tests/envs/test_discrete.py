"""Discrete envs: CartPole-v1 on the continuous env's physics, gym's termination, Catch's
rewards by hand, the true models for search agreeing with the envs, the registry entries."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax import envs
from mbrl_jax.envs import acting, discrete


def test_cartpole_v1_is_the_continuous_physics_at_plus_minus_ten_newtons():
  v1 = envs.make("cartpole_v1", episode_length=None)
  cont = envs.make("cartpole_continuous", episode_length=None)
  state = v1.reset(jax.random.key(0))
  for action, cont_action in ((0, -1.0), (1, 1.0)):
    a = v1.step(state, jnp.int32(action))
    b = cont.step(state, jnp.array([cont_action]))
    np.testing.assert_allclose(a.obs, b.obs, rtol=1e-6, atol=1e-7)
    assert float(a.reward) == 1.0 and float(a.done) == 0.0


def test_cartpole_v1_euler_step_by_hand():
  # From rest, upright, force +10: theta_acc = -cos * temp / (l (4/3 - m cos^2 / (M + m))),
  # temp = 10 / 1.1; then x_dot = tau x_acc, theta_dot = tau theta_acc, positions unchanged.
  env = envs.CartpoleV1()
  q = jnp.zeros(4)
  temp = 10.0 / 1.1
  th_acc = -temp / (0.5 * (4.0 / 3.0 - 0.1 / 1.1))
  x_acc = temp - 0.05 * th_acc / 1.1
  state = env.reset(jax.random.key(0)).replace(pipeline_state=q, obs=q)
  nxt = env.step(state, jnp.int32(1))
  np.testing.assert_allclose(nxt.obs, [0.0, 0.02 * x_acc, 0.0, 0.02 * th_acc], rtol=1e-5)


_DEG = math.radians(1.0)


@pytest.mark.parametrize("q,done", [
    # From inside the bounds, a velocity moves the next state's position by tau * velocity
    # (Euler with the old velocities): 2.39 + 0.02 * 0.5 = 2.40, + 0.02 * 1.0 = 2.41, ...
    ([2.39, 0.25, 0.0, 0.0], 0.0), ([2.39, 1.0, 0.0, 0.0], 1.0), ([-2.39, -1.0, 0.0, 0.0], 1.0),
    ([0.0, 0.0, 11.8 * _DEG, 5 * _DEG], 0.0), ([0.0, 0.0, 11.8 * _DEG, 20 * _DEG], 1.0),
    ([0.0, 0.0, -11.8 * _DEG, -20 * _DEG], 1.0),
])
def test_cartpole_v1_terminates_at_gyms_thresholds(q, done):
  env = envs.CartpoleV1()
  q = jnp.array(q, jnp.float32)
  state = env.reset(jax.random.key(0)).replace(pipeline_state=q, obs=q)
  nxt = env.step(state, jnp.int32(0))
  assert float(nxt.done) == done
  task = envs.get_task_fns("cartpole_v1")
  assert float(task.termination_fn(q, jnp.int32(0), nxt.obs)) == done
  reward, discount, next_q = env.model_step(q, jnp.int32(0))
  np.testing.assert_allclose(next_q, nxt.obs)
  assert (float(reward), float(discount)) == (1.0, 1.0 - done)
  # Past the end: nothing more (reward 0, discount 0).
  if done:
    assert [float(v) for v in env.model_step(next_q, jnp.int32(1))[:2]] == [0.0, 0.0]


def test_cartpole_v1_registry_and_time_limit():
  env = envs.make("cartpole_v1")
  assert env.episode_length == 500 and envs.num_actions("cartpole_v1") == 2
  assert envs.make("catch").episode_length == 9 and envs.num_actions("catch") == 3
  assert set(envs.DISCRETE_ENVS) <= set(envs.registered_names())
  with pytest.raises(ValueError, match="not a discrete-action env; discrete envs: cartpole_v1"):
    envs.num_actions("pendulum")


def _catch_episode(ball_col: int, actions: list[int]):
  env = envs.make("catch")
  state = acting.reset_env(env, jax.random.key(0))
  q = jnp.array([0, ball_col, 2], jnp.int32)
  state = state.replace(pipeline_state=q, obs=discrete.catch_board(*q, 10, 5))
  obs, rewards, dones = [state.obs], [], []
  for a in actions:
    state = env.step(state, jnp.int32(a))
    obs.append(state.obs)
    rewards.append(float(state.reward))
    dones.append(float(state.done))
  return obs, rewards, dones


@pytest.mark.parametrize("ball_col,actions,final", [
    (2, [1] * 9, 1.0),                         # straight down onto the paddle
    (0, [0, 0, 1, 1, 1, 1, 1, 1, 1], 1.0),     # two steps left
    (4, [2, 2, 2, 2, 1, 1, 1, 1, 1], 1.0),     # clipped at the right wall
    (0, [1] * 9, -1.0),                        # missed
    (2, [2] * 9, -1.0),
])
def test_catch_rewards_by_hand(ball_col, actions, final):
  obs, rewards, dones = _catch_episode(ball_col, actions)
  assert rewards == [0.0] * 8 + [final]
  assert dones == [0.0] * 8 + [1.0]
  board = np.asarray(obs[-1]).reshape(10, 5)
  assert board[:-1].sum() == 0 and board[-1].sum() == (1 if final > 0 else 2)
  task = envs.get_task_fns("catch")
  stacked = jnp.stack(obs)
  np.testing.assert_array_equal(
      task.reward_fn(stacked[:-1], jnp.asarray(actions), stacked[1:]), rewards)
  np.testing.assert_array_equal(
      task.termination_fn(stacked[:-1], jnp.asarray(actions), stacked[1:]), dones)


def test_catch_model_step_matches_the_env_and_stops_after_landing():
  env = envs.Catch()
  step = jax.jit(env.model_step)
  for col in range(5):
    obs, rewards, dones = _catch_episode(col, [0, 1, 2, 2, 1, 0, 0, 2, 1])
    actions = [0, 1, 2, 2, 1, 0, 0, 2, 1]
    emb = obs[0]
    for t, a in enumerate(actions):
      reward, discount, emb = step(emb, jnp.int32(a))
      np.testing.assert_array_equal(emb, obs[t + 1])
      assert float(reward) == rewards[t] and float(discount) == 1.0 - dones[t]
    reward, discount, after = step(emb, jnp.int32(2))
    assert (float(reward), float(discount)) == (0.0, 0.0)
    np.testing.assert_array_equal(after, emb)


def test_catch_reset_ball_in_top_row_paddle_in_the_middle():
  env = envs.Catch()
  boards = jax.vmap(lambda k: env.reset(k).obs)(jax.random.split(jax.random.key(0), 64))
  boards = np.asarray(boards).reshape(64, 10, 5)
  assert (boards[:, 0].sum(-1) == 1).all() and (boards[:, 9, 2] == 1).all()
  assert boards[:, 1:9].sum() == 0
  assert len(set(boards[:, 0].argmax(-1).tolist())) == 5   # every column is a start


def test_discrete_episode_runs_with_int_actions():
  env = envs.make("catch")
  policy = acting.stateless(lambda key, obs: jax.random.randint(key, (), 0, 3))
  result = jax.jit(lambda k: acting.episode(env, policy, k, 12))(jax.random.key(0))
  assert int(result.length) == 9 and float(result.ret) in (-1.0, 1.0)
  assert result.transitions.action.dtype == jnp.int32
