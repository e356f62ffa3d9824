"""PETS end to end on cart-pole with a small configuration."""

import dataclasses

import jax
import numpy as np
import pytest

from mbrl_jax.algorithms import pets
from tests.conftest import count_compilations

SMALL = pets.Config(
    env="cartpole_continuous", trials=3,
    model=pets.ModelConfig(hidden_sizes=(64, 64)),
    fit=dataclasses.replace(pets.Config().fit, max_epochs=20),
    planner=pets.PlannerConfig(population=100, num_particles=5, horizon=15))


@pytest.fixture(scope="module")
def small_run():
  trials = []
  state, history = pets.train(jax.random.key(0), SMALL,
                              progress_fn=lambda t, m: trials.append(t))
  return state, history, trials


def test_pets_learns_to_balance(small_run):
  _, history, trials = small_run
  returns = history["return"]
  print("PETS small returns per trial:", returns.tolist())
  assert returns.shape == (SMALL.random_trials + SMALL.trials,)
  assert trials == [0, 1, 2, 3]      # progress after every trial, the random one too
  assert returns[-1] >= 150 and returns[-1] > 3 * returns[0]
  np.testing.assert_array_equal(history["episode_length"], returns)   # +1 per step
  np.testing.assert_array_equal(history["env_steps"], np.cumsum(returns))
  assert np.isnan(history["model_holdout_mse"][0])                     # random trial: no model
  assert (history["model_holdout_mse"][1:] < 1.0).all()


def test_buffer_holds_every_step(small_run):
  state, history, _ = small_run
  assert int(state.buffer.size) == int(history["env_steps"][-1])
  assert int(state.trial) == 4


def test_second_trial_does_not_recompile():
  parts = pets.make_parts(SMALL)
  step = jax.jit(pets.make_step(SMALL, parts))
  state, _ = jax.jit(lambda k: pets._init(parts, SMALL, k))(jax.random.key(1))
  state, _ = step(state)
  jax.block_until_ready(state)
  with count_compilations() as c:
    state, metrics = step(state)
    jax.block_until_ready(metrics)
  assert c.count == 0


def test_seeds_vmap_through_one_call():
  config = dataclasses.replace(SMALL, trials=1, planner=dataclasses.replace(
      SMALL.planner, population=20, horizon=5))
  keys = jax.numpy.stack([jax.random.key(3), jax.random.key(4)])
  _, history = pets.train(keys, config)
  assert history["return"].shape == (2, 2)
  _, single = pets.train(jax.random.key(4), config)
  # The random trial does not involve the model, so it matches the unbatched run exactly.
  assert history["return"][0, 1] == single["return"][0]


@pytest.mark.parametrize("change,message", [
    (dict(env="cartpole_wobbly"), "env 'cartpole_wobbly' is unknown"),
    (dict(env="ant"), "no reward/termination functions"),
    (dict(trials=0), "trials"),
    (dict(planner=pets.PlannerConfig(horizon=0)), "planner.horizon"),
    (dict(planner=pets.PlannerConfig(population=10, elite_ratio=2.0)), "elite"),
    (dict(planner=pets.PlannerConfig(propagation="ts3")), "planner.propagation"),
    (dict(planner=pets.PlannerConfig(optimizer="adam")), "planner.optimizer"),
    (dict(model=pets.ModelConfig(num_members=2, num_elites=3)), "model.num_elites"),
])
def test_bad_config_is_refused_before_compiling(change, message):
  config = dataclasses.replace(SMALL, **change)
  with count_compilations() as c:
    with pytest.raises(ValueError, match=message):
      pets.train(jax.random.key(0), config)
  assert c.count == 0


def test_make_policy_acts_with_the_fitted_model(small_run):
  state, _, _ = small_run
  parts = pets.make_parts(SMALL)
  init, act = pets.make_policy(state, SMALL, parts)

  def episode(key):
    env_state = parts.env.reset(key)
    def step(carry, _):
      env_state, mpc_state, alive = carry
      action, mpc_state = act(mpc_state, env_state.obs)
      env_state = parts.env.step(env_state, action)
      alive = alive & (env_state.done == 0)
      return (env_state, mpc_state, alive), alive
    _, alive = jax.lax.scan(step, (env_state, init(key), jax.numpy.asarray(True)), None, 200)
    return alive.sum()

  assert int(jax.jit(episode)(jax.random.key(11))) >= 150
