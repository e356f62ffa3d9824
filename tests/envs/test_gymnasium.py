"""The gymnasium adapter: host envs stepped from jit + scan (and vmap over seeds) give what
gymnasium gives when stepped directly with the same seeds and actions; one-line errors for the
spaces it cannot carry; the registry, task-fn and config hooks; episodes of another process
(a resumed run) end truncated; an episode whose env was recycled raises."""

import sys

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax import envs
from mbrl_jax.algorithms import pets
from mbrl_jax.envs import acting, gym_adapter

T = 12


def _scan_steps(env, key, actions):
  """reset(key), then one step per action inside one jitted lax.scan: obs [T+1, D],
  reward [T], done [T]."""
  def run(key, actions):
    state = env.reset(key)

    def body(state, a):
      nxt = env.step(state, a)
      return nxt, (nxt.obs, nxt.reward, nxt.done)

    _, (obs, reward, done) = jax.lax.scan(body, state, actions)
    return jnp.concatenate([state.obs[None], obs]), reward, done
  return jax.jit(run)(key, actions)


def _direct(env_id, seed, env_actions):
  """gymnasium stepped directly (its time limit removed, as the adapter does)."""
  env = gym.make(env_id).env
  obs = [env.reset(seed=int(seed))[0]]
  rewards, dones = [], []
  for a in env_actions:
    if dones and dones[-1]:
      break
    o, r, te, tr, _ = env.step(a)
    obs.append(o)
    rewards.append(r)
    dones.append(te or tr)
  return np.array(obs), np.array(rewards), np.array(dones, np.float32)


def test_pendulum_in_jit_scan_matches_gymnasium_stepped_directly():
  env = gym_adapter.from_gymnasium("Pendulum-v1")
  key = jax.random.key(3)
  actions = jnp.linspace(-1.0, 1.0, T)[:, None]           # ours, in [-1, 1]
  obs, reward, done = _scan_steps(env, key, actions)
  seed = gym_adapter.seed_of(key)
  ref_obs, ref_reward, _ = _direct("Pendulum-v1", seed, np.asarray(2.0 * actions, np.float32))
  np.testing.assert_allclose(obs, ref_obs, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(reward, ref_reward, rtol=1e-5, atol=1e-5)
  assert not np.any(done)
  # The known reward for planning reproduces the host env's.
  reward_fn = envs.get_reward_fn("gymnasium:Pendulum-v1")
  np.testing.assert_allclose(reward_fn(obs[:-1], actions, obs[1:]), reward, atol=1e-4)


def test_cartpole_discrete_in_jit_scan_matches_gymnasium_until_it_terminates():
  env = gym_adapter.from_gymnasium("CartPole-v1")
  assert env.num_actions == 2 and env.action_size == 1
  key = jax.random.key(0)
  actions = jnp.ones((40,), jnp.int32)                    # always push right: falls over
  obs, reward, done = _scan_steps(env, key, actions)
  ref_obs, ref_reward, ref_done = _direct("CartPole-v1", gym_adapter.seed_of(key),
                                          np.ones(40, np.int64))
  n = len(ref_reward)
  assert ref_done[-1] and n < 40
  np.testing.assert_allclose(obs[:n + 1], ref_obs, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(reward[:n], ref_reward)
  np.testing.assert_array_equal(done[:n], ref_done)
  # After the end: done stays 1, reward 0, the last obs repeated (the env is not stepped).
  assert np.all(done[n:] == 1) and np.all(reward[n:] == 0)
  np.testing.assert_array_equal(obs[n + 1:], np.broadcast_to(obs[n], obs[n + 1:].shape))


def test_vmap_over_two_seeds_steps_two_host_envs_in_one_call():
  env = gym_adapter.from_gymnasium("Pendulum-v1")
  keys = jax.random.split(jax.random.key(7), 2)
  actions = jnp.stack([jnp.full((T, 1), 0.5), jnp.full((T, 1), -0.5)])
  obs, reward, _ = jax.vmap(lambda k, a: _scan_steps(env, k, a))(keys, actions)
  for i in range(2):
    ref_obs, ref_reward, _ = _direct("Pendulum-v1", gym_adapter.seed_of(keys[i]),
                                     np.asarray(2.0 * actions[i], np.float32))
    np.testing.assert_allclose(obs[i], ref_obs, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(reward[i], ref_reward, rtol=1e-5, atol=1e-5)
  assert not np.allclose(obs[0], obs[1])


def test_make_adds_the_spec_time_limit_and_acting_resets_after_it():
  assert envs.default_episode_length("gymnasium:Pendulum-v1") == 200     # gymnasium's spec
  assert envs.make("gymnasium:Pendulum-v1").episode_length == 200
  env = envs.make("gymnasium:Pendulum-v1", episode_length=20)
  policy = acting.uniform_random(1)
  actor = acting.reset(env, policy, jax.random.key(0))
  collect = jax.jit(lambda a, k: acting.collect(env, policy, a, k, 25))
  actor, tr, _, ended = collect(actor, jax.random.key(1))
  assert int(ended.count) == 1 and int(ended.length_sum) == 20
  assert float(tr.truncated[19]) == 1.0 and float(tr.terminated.sum()) == 0.0
  assert int(actor.episode_length) == 5
  # The discarded resets of acting.step's select hold no host env.
  assert env.unwrapped.pool._made <= 4


class _Spaces(gym.Env):
  def __init__(self, observation_space, action_space):
    self.observation_space, self.action_space = observation_space, action_space

  def reset(self, seed=None, options=None):
    super().reset(seed=seed)
    return self.observation_space.sample(), {}

  def step(self, action):
    return self.observation_space.sample(), 0.0, False, False, {}


_BOX = gym.spaces.Box(-1.0, 1.0, (3,))


@pytest.mark.parametrize("obs_space, action_space, message", [
    (gym.spaces.Dict({"a": _BOX}), _BOX, "observation space Dict.* is not supported"),
    (gym.spaces.Box(0, 255, (8, 8, 3)), _BOX, r"Box\(8, 8, 3\) is not a flat vector"),
    (_BOX, gym.spaces.MultiDiscrete([2, 3]), "MultiDiscrete.* is not supported"),
    (_BOX, gym.spaces.Box(-np.inf, np.inf, (2,)), "infinite bounds"),
])
def test_unsupported_spaces_are_one_line_errors(obs_space, action_space, message):
  with pytest.raises(ValueError, match=message) as e:
    gym_adapter.from_gymnasium(_Spaces(obs_space, action_space))
  assert "\n" not in str(e.value)


def test_config_errors_name_the_field():
  with pytest.raises(ValueError, match=r"pets.Config.env 'gymnasium:CartPole-v1' has discrete"):
    pets.Config(env="gymnasium:CartPole-v1")
  with pytest.raises(ValueError, match=r"pets.Config.env 'gymnasium:NoSuchEnv-v0': gymnasium "
                                       r"cannot make"):
    pets.Config(env="gymnasium:NoSuchEnv-v0")
  with pytest.raises(ValueError, match=r"pets.Config.env .*MountainCarContinuous-v0.* has no "
                                       r"reward/termination functions"):
    pets.Config(env="gymnasium:MountainCarContinuous-v0")
  assert pets.Config(env="gymnasium:Pendulum-v1").env == "gymnasium:Pendulum-v1"


def test_missing_gymnasium_is_a_one_line_error(monkeypatch):
  monkeypatch.setitem(sys.modules, "gymnasium", None)
  with pytest.raises(ImportError, match="gymnasium is not installed: `pip install gymnasium`"):
    gym_adapter.from_gymnasium("Pendulum-v1")


def test_an_episode_of_another_process_ends_truncated_and_a_recycled_one_raises():
  pool = gym_adapter.from_gymnasium("Pendulum-v1", max_envs=1).pool
  handles, obs = pool.reset(np.array([1, 2], np.uint32))
  actions = np.zeros((2, 1), np.float32)
  foreign = handles.copy()
  foreign[:, 0] = pool.pool_id + 1                       # a resumed run's old handles
  _, next_obs, reward, terminated, truncated = pool.step(foreign, obs, actions)
  np.testing.assert_array_equal(next_obs, obs)
  assert truncated.tolist() == [1.0, 1.0] and reward.tolist() == [0.0, 0.0]
  assert terminated.tolist() == [0.0, 0.0]
  pool.step(handles[:1], obs[:1], actions[:1])
  pool.step(handles[1:], obs[1:], actions[1:])          # takes episode 1's only env
  with pytest.raises(RuntimeError, match="lost its host env .*raise max_envs"):
    pool.step(handles[:1], obs[:1], actions[:1])


def test_your_own_env_module_registers_its_env_and_reward_when_gymnasium_imports_it(
    tmp_path, monkeypatch):
  (tmp_path / "my_heavy_env.py").write_text(
      "import gymnasium\n"
      "from gymnasium.envs.classic_control.pendulum import PendulumEnv\n"
      "from mbrl_jax.envs import pendulum, task_fns\n"
      "gymnasium.register(id='HeavyPendulum-v0', entry_point=lambda: PendulumEnv(g=12.0),\n"
      "                   max_episode_steps=150)\n"
      "task_fns.register('gymnasium:my_heavy_env:HeavyPendulum-v0', pendulum.pendulum_reward)\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  name = "gymnasium:my_heavy_env:HeavyPendulum-v0"
  config = pets.Config(env=name)                # gymnasium imports the module: both register
  assert envs.default_episode_length(config.env) == 150
  assert envs.get_task_fns(name).reward_fn is envs.pendulum.pendulum_reward
