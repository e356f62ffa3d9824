"""DM Control tasks through MuJoCo Playground (`envs.dmc`): names and their one-line errors,
the missing-extra error, and (where playground is installed) cartpole_swingup with
impl="jax" stepped under jit + vmap: the suite's 1000-env-step episodes over the action
repeat, rewards summed over the repeat and on the 0-1000 scale, the reward fn exact."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax import envs
from mbrl_jax.algorithms import pets
from mbrl_jax.envs import dmc

CARTPOLE = "dmc/cartpole_swingup"


def test_names_parse_with_their_options():
  assert dmc.parse(CARTPOLE) == dmc.Spec("cartpole_swingup", 1, None)
  assert dmc.parse(CARTPOLE + "?action_repeat=2&impl=warp") == dmc.Spec(
      "cartpole_swingup", 2, "warp")
  assert envs.default_episode_length(CARTPOLE) == 1000
  assert envs.default_episode_length("dmc/walker_walk?action_repeat=2") == 500
  assert envs.default_episode_length("dmc/cheetah_run?action_repeat=8") == 125
  for task in ("cartpole_swingup", "pendulum_swingup", "cheetah_run", "walker_walk",
               "reacher_easy"):
    assert task in dmc.TASKS


@pytest.mark.parametrize("name, message", [
    ("dmc/cartpole_swingupp", "Unknown DM Control task 'cartpole_swingupp'"),
    ("dmc/cartpole_swingup?repeat=2", "unknown option 'repeat=2'"),
    ("dmc/cartpole_swingup?action_repeat=0", "action_repeat must be an integer"),
    ("dmc/cartpole_swingup?action_repeat=two", "action_repeat must be an integer"),
    ("dmc/cartpole_swingup?impl=cuda", "impl must be one of jax, warp"),
])
def test_bad_names_fail_in_one_line(name, message):
  with pytest.raises(ValueError, match=message) as e:
    envs.make(name)
  assert "\n" not in str(e.value)
  with pytest.raises(ValueError, match=message):
    envs.default_episode_length(name)


def test_a_config_naming_an_unknown_task_fails_on_its_field():
  with pytest.raises(ValueError, match=r"pets\.Config\.env .*Unknown DM Control task"):
    pets.Config(env="dmc/cartpole_swingupp")


def test_every_task_has_a_termination_fn_and_mbpo_accepts_it():
  from mbrl_jax.algorithms import mbpo
  # Cheetah's reward reads the torso's velocity, which the observation lacks: no reward fn,
  # but its episodes never terminate, which is all MBPO's rollouts need.
  name = "dmc/cheetah_run?action_repeat=2"
  assert name not in envs.task_fn_names() and envs.has_termination_fn(name)
  obs = jnp.zeros((3, 17))
  np.testing.assert_array_equal(envs.get_termination_fn(name)(obs, jnp.zeros((3, 6)), obs),
                                np.zeros(3))
  mbpo.check_model_run(mbpo.Config(env=name))
  with pytest.raises(ValueError, match="'ant' has no termination function"):
    mbpo.check_model_run(mbpo.Config(env="ant"))


def test_missing_playground_names_the_extra(monkeypatch):
  monkeypatch.setitem(sys.modules, "mujoco_playground", None)   # import raises ImportError
  with pytest.raises(ImportError, match=r'pip install "mbrl_jax\[dmc\]"') as e:
    envs.make(CARTPOLE)
  assert "\n" not in str(e.value)


def test_device_picks_the_backend():
  assert dmc.default_impl("walker_walk", backend="gpu") == "warp"
  assert dmc.default_impl("cartpole_swingup", backend="cpu") == "jax"


# --- with playground ------------------------------------------------------------------


@pytest.fixture(scope="module")
def compiled():
  """cartpole_swingup (impl jax): one jitted episode of the repeat-2 env (time-limited)
  vmapped over 2 keys with given actions, and the repeat-1 env's reset and 2 steps, jitted."""
  pytest.importorskip("mujoco_playground")
  env2 = envs.make(CARTPOLE + "?action_repeat=2&impl=jax")        # time limit 500 steps
  bare1 = envs.make(CARTPOLE + "?impl=jax", episode_length=None)
  steps = envs.default_episode_length(CARTPOLE + "?action_repeat=2")

  @jax.jit
  @jax.vmap
  def episode(key, actions):
    def body(state, action):
      nxt = env2.step(state, action)
      return nxt, (nxt.obs, nxt.reward, nxt.done, nxt.info["truncation"], nxt.info["steps"])
    return jax.lax.scan(body, env2.reset(key), actions)[1]

  keys = jax.random.split(jax.random.key(0), 2)
  actions = jax.random.uniform(jax.random.key(1), (2, steps, 1), minval=-1.5, maxval=1.5)
  @jax.jit
  def singles(key, action):                # reset, then 2 steps of the repeat-1 env
    def body(state, _):
      nxt = bare1.step(state, action)
      return nxt, (nxt.obs, nxt.reward)
    start = bare1.reset(key)
    obs, reward = jax.lax.scan(body, start, None, length=2)[1]
    return jnp.concatenate([start.obs[None], obs]), reward

  return dict(env2=env2, steps=steps, keys=keys, actions=actions,
              rollout=episode(keys, actions), singles=singles)


def test_an_episode_under_jit_and_vmap_is_the_suites(compiled):
  assert compiled["steps"] == 500
  _, reward, done, truncation, agent_steps = compiled["rollout"]
  assert reward.shape == done.shape == (2, 500)
  # Ends at 500 agent steps (1000 env steps), as a truncation (no termination).
  np.testing.assert_array_equal(np.asarray(done[:, :-1]), 0.0)
  np.testing.assert_array_equal(np.asarray(done[:, -1]), 1.0)
  np.testing.assert_array_equal(np.asarray(truncation[:, -1]), 1.0)
  np.testing.assert_array_equal(np.asarray(agent_steps[:, -1]), 500)
  # A step's reward is a sum of 2 per-env-step rewards in [0, 1]; returns on 0-1000.
  assert float(reward.min()) >= 0.0 and float(reward.max()) <= 2.0
  returns = np.asarray(reward.sum(axis=1))
  assert np.all((returns >= 0) & (returns <= 1000)) and np.all(returns > 0)
  assert compiled["env2"].observation_size == 5 and compiled["env2"].action_size == 1


def _two_single_steps(compiled, row):
  """The repeat-1 env from the same reset key, stepped twice with the episode's first
  action: (action, obs [3, D] at reset and after each step, rewards [2])."""
  action = compiled["actions"][row, 0]
  return (action,) + compiled["singles"](compiled["keys"][row], action)


def test_action_repeat_is_two_env_steps_with_summed_rewards(compiled):
  obs, reward, _, _, _ = compiled["rollout"]
  for row in range(2):
    _, single_obs, single_reward = _two_single_steps(compiled, row)
    np.testing.assert_allclose(obs[row, 0], single_obs[2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(reward[row, 0], single_reward.sum(), rtol=1e-5)
    assert not np.allclose(single_obs[1], single_obs[2])         # time did pass
    assert np.all((single_reward > 0) & (single_reward <= 1))


def test_reward_fn_reproduces_the_env(compiled):
  fns = envs.get_task_fns(CARTPOLE, impl="jax")
  for row in range(2):                      # actions drawn in [-1.5, 1.5]: clipping seen
    action, obs, reward = _two_single_steps(compiled, row)
    actions = jnp.stack([action, action])
    np.testing.assert_allclose(fns.reward_fn(obs[:-1], actions, obs[1:]), reward,
                               rtol=1e-5, atol=1e-6)               # batched [2]
    np.testing.assert_allclose(fns.reward_fn(obs[0], action, obs[1]), reward[0], rtol=1e-5)
    np.testing.assert_array_equal(fns.termination_fn(obs[:-1], actions, obs[1:]), 0.0)
  assert "dmc/cheetah_run" not in envs.task_fn_names()               # reward not in its obs


def test_the_state_has_no_zero_size_leaves_for_orbax(compiled):
  state = jax.eval_shape(compiled["env2"].reset, jax.random.key(0))
  sizes = [int(np.prod(x.shape)) for x in jax.tree.leaves(state)]
  assert sizes and min(sizes) > 0
  inner = jax.tree.leaves(state.pipeline_state.state.data.qpos)     # the Data is all there
  assert inner[0].shape == (2,)
