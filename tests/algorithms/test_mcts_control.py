"""MCTS control on true models: Catch caught in (almost) every episode, CartPole-v1 balanced
far longer than random actions, the maze preset along the shortest path; configs refuse
continuous envs and bad sizes before compiling."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax import envs, run
from mbrl_jax.algorithms import mcts_control
from mbrl_jax.envs import acting


def _train(config, seeds):
  keys = jnp.stack([jax.random.key(s) for s in range(seeds)])
  return run.train(mcts_control.make(config), keys)[1]


def test_catch_with_the_true_model_catches_the_ball():
  config = dataclasses.replace(mcts_control.PRESETS["catch"], num_simulations=16, episodes=2)
  history = _train(config, seeds=4)
  returns = history["train/return"]                     # [episodes, seeds]
  assert returns.shape == (2, 4)
  assert float(np.mean(returns == 1.0)) >= 7 / 8        # 8 / 8 measured
  assert (history["train/episode_length"] == 9).all()
  assert np.isfinite(history["search/root_value"]).all()


def test_cartpole_v1_survives_far_longer_than_random():
  config = dataclasses.replace(mcts_control.PRESETS["cartpole_v1"], num_simulations=8,
                               rollout_steps=10, episodes=1, episode_length=100)
  lengths = _train(config, seeds=2)["train/episode_length"]
  env = envs.make("cartpole_v1", episode_length=None)
  random = acting.stateless(lambda key, obs: jax.random.randint(key, (), 0, 2))
  baseline = jax.jit(lambda k: acting.evaluate(env, random, k, 16, 100).lengths)(
      jax.random.key(0))
  assert float(baseline.mean()) < 40                     # about 22
  assert float(lengths.mean()) >= 90                     # 100 / 100 measured (200-step runs: 178-200)


def test_maze_preset_walks_the_shortest_path():
  # 16-step episodes (under the seed vmap every step is computed, so short is cheap): the
  # 14-step path ends them early, with the goal's reward.
  history = _train(dataclasses.replace(mcts_control.PRESETS["maze"], episodes=1,
                                       episode_length=16), seeds=2)
  np.testing.assert_array_equal(history["train/episode_length"], [[14, 14]])
  np.testing.assert_array_equal(history["train/return"], [[1.0, 1.0]])


@pytest.mark.parametrize("kwargs,message", [
    (dict(env="pendulum"), "mcts_control.Config.env 'pendulum' is continuous here; tree "
     "search needs discrete actions and a true model, envs that have them: cartpole_v1, catch"),
    (dict(env="nope"), "'nope' is unknown here"),
    (dict(num_simulations=0), "mcts_control.Config.num_simulations must be a positive int"),
    (dict(value="maze_distance"), "'maze_distance' needs a maze env"),
    (dict(value="rollout", rollout_steps=0), "rollout_steps must be >= 1 with value 'rollout'"),
    (dict(search="alphazero"), "mcts_control.Config.search 'alphazero' is unknown"),
])
def test_bad_configs_fail_when_built(kwargs, message):
  with pytest.raises(ValueError, match="mcts_control.Config") as err:
    mcts_control.Config(**kwargs)
  assert message in str(err.value)
