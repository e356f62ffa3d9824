"""PETS run infrastructure: checkpoint and resume equal an uninterrupted run, a mismatched
checkpoint is refused, and NaN stops the run and keeps the last good checkpoint. (What device
layouts change: tests/run/test_devices_across_processes.py.)"""

import collections
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax import run as run_lib
from mbrl_jax import planning
from mbrl_jax.algorithms import pets

TINY = pets.Config(
    env="cartpole_continuous", trials=3, trial_length=30,
    model=pets.ModelConfig(hidden_sizes=(16, 16)),
    fit=dataclasses.replace(pets.Config().fit, max_epochs=2),
    planner=pets.PlannerConfig(
        optimizer=planning.CEMConfig(population=20, iterations=2, return_mean_elites=True),
        num_particles=5, horizon=5))
KEYS = jnp.stack([jax.random.key(3), jax.random.key(4)])


def _leaves(state):
  return [np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype,
                                                                      jax.dtypes.prng_key) else x)
          for x in jax.tree.leaves(state)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  directory = tmp_path_factory.mktemp("full") / "ckpt"
  state, history = run_lib.train(pets.make(TINY), KEYS, checkpoint_dir=str(directory))
  return state, history, directory


class Interrupt(Exception):
  pass


def test_resume_equals_uninterrupted_run(uninterrupted, tmp_path):
  full_state, full_history, _ = uninterrupted
  directory = str(tmp_path / "ckpt")

  def die_at_trial_2(trial, metrics):
    if trial == 2:                  # before trial 2's checkpoint: the latest is after trial 1
      raise Interrupt

  with pytest.raises(Interrupt):
    run_lib.train(pets.make(TINY), KEYS, checkpoint_dir=directory, progress_fn=die_at_trial_2)
  ckpt = run_lib.Checkpointer(directory, meta=run_lib.run_meta("pets", KEYS, TINY))
  assert ckpt.latest_step() == 2

  seen = []
  state, history = run_lib.train(pets.make(TINY), KEYS, checkpoint_dir=directory, resume=True,
                              progress_fn=lambda t, m: seen.append(t))
  assert seen == [2, 3]                                   # only the trials still to do
  assert set(history) == set(full_history)
  for name in full_history:
    np.testing.assert_array_equal(history[name], full_history[name], err_msg=name)
  for a, b in zip(_leaves(state), _leaves(full_state)):
    np.testing.assert_array_equal(a, b)                   # bitwise, buffer and params included


def test_checkpoint_of_another_run_is_refused(uninterrupted):
  _, _, directory = uninterrupted
  other = dataclasses.replace(TINY, planner=dataclasses.replace(TINY.planner, horizon=6))
  with pytest.raises(run_lib.CheckpointError, match=r"planner\.horizon: checkpoint has 5"):
    run_lib.train(pets.make(other), KEYS, checkpoint_dir=str(directory), resume=True)
  with pytest.raises(run_lib.CheckpointError, match=r"keys"):
    run_lib.train(pets.make(TINY), KEYS[::-1], checkpoint_dir=str(directory), resume=True)


def test_nan_in_the_model_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
  make_parts = pets.make_parts

  def poisoned_parts(config):
    parts = make_parts(config)
    fit = parts.trainer.fit

    def bad_fit(key, state, data, mask):
      # From the third fit on (more than two episodes of data), the parameters go NaN.
      fit_state, metrics = fit(key, state, data, mask)
      poison = mask.sum() > 2 * config.trial_length
      params = jax.tree.map(
          lambda p: jnp.where(poison, jnp.nan, p) if p.dtype == jnp.float32 else p,
          fit_state.params)
      return fit_state._replace(params=params), metrics

    return parts._replace(trainer=parts.trainer._replace(fit=bad_fit))

  monkeypatch.setattr(pets, "make_parts", poisoned_parts)
  # Compiled functions are cached by config: keep the poisoned ones out of other tests' way.
  monkeypatch.setattr(run_lib.loop, "_COMPILED", collections.OrderedDict())
  config = dataclasses.replace(TINY, random_trials=2, trials=3)
  directory = tmp_path / "ckpt"
  with pytest.raises(FloatingPointError) as info:
    run_lib.train(pets.make(config), jax.random.key(0), checkpoint_dir=str(directory))
  message = str(info.value)
  print(message)
  assert "pets trial 3: NaN/Inf in the model parameters" in message
  assert f"last good checkpoint is {directory / '3'}" in message
  ckpt = run_lib.Checkpointer(directory, meta=run_lib.run_meta("pets", jax.random.key(0), config))
  assert ckpt.latest_step() == 3
  template = jax.eval_shape(lambda k: pets.init(k, config), jax.random.key(0))
  state, _ = ckpt.restore(template)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.fit_state.params))
