"""PETS end to end on cart-pole with a small configuration."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from mbrl_jax import planning
from mbrl_jax.algorithms import pets
from mbrl_jax.run import config as config_lib
from tests.conftest import count_compilations

SMALL = pets.Config(
    env="cartpole_continuous", trials=3,
    model=pets.ModelConfig(hidden_sizes=(64, 64)),
    fit=dataclasses.replace(pets.Config().fit, max_epochs=20),
    planner=pets.PlannerConfig(optimizer=planning.CEMConfig(
        population=100, iterations=5, elite_ratio=0.1, alpha=0.1, return_mean_elites=True),
        num_particles=5, horizon=15))


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
      SMALL.planner, optimizer=dataclasses.replace(SMALL.planner.optimizer, population=20),
      horizon=5))
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
    (dict(planner=pets.PlannerConfig(propagation="ts3")), "planner.propagation"),
    (dict(planner=pets.PlannerConfig(optimizer="adam")), "planner.optimizer must be one of"),
    (dict(planner=pets.PlannerConfig(member_assignment="rr")), "planner.member_assignment"),
    (dict(model=pets.ModelConfig(num_members=2, num_elites=3)), "model.num_elites"),
])
def test_bad_config_is_refused_before_compiling(change, message):
  config = dataclasses.replace(SMALL, **change)
  with count_compilations() as c:
    with pytest.raises(ValueError, match=message):
      pets.train(jax.random.key(0), config)
  assert c.count == 0


def test_bad_optimizer_field_is_refused_when_built_and_named_by_validate():
  with count_compilations() as c:
    with pytest.raises(ValueError, match=r"^elite_ratio must be in \(0, 1\]; got 2$"):
      pets.PlannerConfig(optimizer=planning.CEMConfig(population=10, elite_ratio=2.0))
    with pytest.raises(ValueError, match="noise_beta"):
      planning.ICEMConfig(noise_beta=-1.0)
    # A config changed behind __post_init__'s back is still caught, with its dotted path.
    bad = planning.CEMConfig()
    object.__setattr__(bad, "elite_ratio", 2.0)
    config = dataclasses.replace(SMALL, planner=dataclasses.replace(SMALL.planner, optimizer=bad))
    with pytest.raises(ValueError, match=r"planner\.optimizer\.elite_ratio must be in \(0, 1\]"):
      pets.validate(config)
  assert c.count == 0


@pytest.mark.parametrize("optimizer", [
    planning.CEMConfig(population=50, sampling="clip", common_random_numbers=True),
    planning.ICEMConfig(population=60, noise_beta=3.0, keep_elite_frac=0.2),
    planning.MPPIConfig(noise_std=(0.2,), temperature=0.5),
    planning.RandomShootingConfig(population=64),
    planning.GradientConfig(num_steps=7),
])
def test_config_json_round_trip_picks_the_optimizer_by_name(optimizer):
  config = dataclasses.replace(SMALL, planner=dataclasses.replace(SMALL.planner,
                                                                  optimizer=optimizer))
  saved = json.loads(json.dumps(dataclasses.asdict(config)))
  assert saved["planner"]["optimizer"]["name"] == optimizer.name
  back = config_lib.from_dict(pets.Config, saved)
  assert back == config and type(back.planner.optimizer) is type(optimizer)
  pets.validate(back)
  saved["planner"]["optimizer"]["name"] = "adam"
  with pytest.raises(ValueError, match=r"planner\.optimizer: name 'adam' picks none"):
    config_lib.from_dict(pets.Config, saved)


def test_default_planner_is_mbrl_libs_cem():
  p = pets.PlannerConfig()
  assert p.optimizer == planning.CEMConfig(population=350, iterations=5, elite_ratio=0.1,
                                           alpha=0.1, return_mean_elites=True)
  assert (p.horizon, p.num_particles, p.propagation, p.member_assignment) == (
      15, 20, "tsinf", "random")
  assert not p.optimizer.common_random_numbers       # a fresh particle sample per iteration
  icem = dataclasses.replace(pets.Config(), planner=pets.PlannerConfig(
      optimizer=planning.ICEMConfig(population=100)))
  assert pets.planner_rows_per_member(icem) == 100 * 20 // 5


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
