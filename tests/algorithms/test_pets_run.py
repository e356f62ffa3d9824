"""PETS run infrastructure: checkpoint and resume equal an uninterrupted run, a mismatched
checkpoint is refused, NaN stops the run and keeps the last good checkpoint, and seeds sharded
over 4 (forced CPU) devices equal one device."""

import collections
import dataclasses
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax import run as run_lib
from mbrl_jax import planning
from mbrl_jax.algorithms import pets

ROOT = pathlib.Path(__file__).resolve().parents[2]

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
  state, history = pets.train(KEYS, TINY, checkpoint_dir=str(directory))
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
    pets.train(KEYS, TINY, checkpoint_dir=directory, progress_fn=die_at_trial_2)
  ckpt = run_lib.Checkpointer(directory, meta=pets.checkpoint_meta(KEYS, TINY))
  assert ckpt.latest_step() == 2

  seen = []
  state, history = pets.train(KEYS, TINY, checkpoint_dir=directory, resume=True,
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
    pets.train(KEYS, other, checkpoint_dir=str(directory), resume=True)
  with pytest.raises(run_lib.CheckpointError, match=r"keys"):
    pets.train(KEYS[::-1], TINY, checkpoint_dir=str(directory), resume=True)


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
    pets.train(jax.random.key(0), config, checkpoint_dir=str(directory))
  message = str(info.value)
  print(message)
  assert "PETS trial 3: NaN/Inf in the model parameters" in message
  assert f"last good checkpoint is {directory / '3'}" in message
  ckpt = run_lib.Checkpointer(directory, meta=pets.checkpoint_meta(jax.random.key(0), config))
  assert ckpt.latest_step() == 3
  template = jax.eval_shape(lambda k: pets.init(k, config), jax.random.key(0))
  state, _ = ckpt.restore(template)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.fit_state.params))


FORCED_DEVICES = textwrap.dedent("""
    import dataclasses, sys
    import jax, jax.numpy as jnp, numpy as np
    sys.path.insert(0, {root!r})
    from mbrl_jax import run as run_lib
    from tests.algorithms.test_pets_run import TINY
    from mbrl_jax.algorithms import pets
    assert jax.device_count() == 4, jax.devices()
    config = dataclasses.replace(TINY, trials=1)
    keys = jnp.stack([jax.random.key(s) for s in range(4)])
    sharded = run_lib.shard_seeds(keys, run_lib.seed_mesh(4))
    state4, hist4 = pets.train(sharded, config)
    placed = state4.fit_state.params.net
    print("devices holding the params:", len(jax.tree.leaves(placed)[0].sharding.device_set))
    assert len(jax.tree.leaves(placed)[0].sharding.device_set) == 4
    state1, hist1 = pets.train(jax.device_put(keys, jax.devices()[0]), config)
    assert len(jax.tree.leaves(state1.fit_state.params.net)[0].sharding.device_set) == 1
    np.testing.assert_array_equal(hist4["return"], hist1["return"])
    np.testing.assert_array_equal(hist4["env_steps"], hist1["env_steps"])
    np.testing.assert_allclose(hist4["model_holdout_mse"], hist1["model_holdout_mse"],
                               rtol=1e-4)
    for a, b in zip(jax.tree.leaves(state4.fit_state.params), jax.tree.leaves(state1.fit_state.params)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    print("returns", hist4["return"].tolist())
    print("OK")
""")


def test_four_forced_cpu_devices_equal_one_device():
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
         "PYTHONPATH": str(ROOT)}
  result = subprocess.run([sys.executable, "-c", FORCED_DEVICES.format(root=str(ROOT))],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
  print(result.stdout[-2000:], result.stderr[-3000:])
  assert result.returncode == 0 and "OK" in result.stdout
