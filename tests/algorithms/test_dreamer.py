"""Dreamer: chunks compile once, seeds vmap, the buffer fills, pixels run; config errors name
the field (tiny sizes throughout)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax import run as run_lib
from mbrl_jax.algorithms import dreamer
from mbrl_jax.models import rssm
from mbrl_jax.policies import imagination as im
from tests.conftest import count_compilations

TINY = dreamer.Config(
    env="pendulum", env_steps=40 + 3 * 20, prefill=40, chunk_steps=20, train_every=10,
    batch_size=2, seq_len=8, imag_starts=12, eval_episodes=2,
    world_model=rssm.WorldModelConfig(deter=16, stoch=4, classes=4, hidden=16, mlp_layers=1,
                                      cnn_depth=4),
    actor_critic=im.ActorCriticConfig(hidden=16, layers=1, horizon=4))


def test_seeds_vmap_and_second_chunk_does_not_recompile():
  keys = jnp.stack([jax.random.key(0), jax.random.key(1)])
  compiles = []
  with count_compilations() as counter:
    state, history = run_lib.train(dreamer.make(TINY), keys,
                                   progress_fn=lambda c, m: compiles.append(counter.count))
  assert len(compiles) == 3
  assert compiles[0] >= 1 and compiles[2] == compiles[1] == compiles[0], compiles
  assert history["eval/return"].shape == (3, 2)
  np.testing.assert_array_equal(history["env_steps"][:, 0], [60, 80, 100])
  np.testing.assert_array_equal(history["updates"][:, 1], [2, 4, 6])
  assert np.all(history["model/valid_batch"] == 1.0)
  assert np.all(np.isfinite(history["model/loss"]))
  assert np.all(np.isfinite(history["actor_critic/actor_loss"]))
  # A 200-step pendulum episode has a finite return in [-16.3 * 200, 0].
  assert np.all(history["eval/return"] <= 0) and np.all(history["eval/return"] > -3300)
  assert np.all(history["eval/return_min"] <= history["eval/return"])
  # The buffer holds every env step, per seed, and the seeds differ.
  np.testing.assert_array_equal(state.buffer.size, [100, 100])
  assert not np.allclose(state.buffer.data.obs[0], state.buffer.data.obs[1])
  # The first episode of the buffer starts at reset and runs on without a cut before 200.
  assert float(state.buffer.data.truncated.sum()) == 0.0


@pytest.mark.slow
def test_pixels_chunk_runs():
  config = dataclasses.replace(TINY, pixels=True, image_size=16, env_steps=60)
  state, history = run_lib.train(dreamer.make(config), jax.random.key(3))
  assert state.buffer.data.obs.shape == (60, 16, 16, 3)   # capacity = env_steps
  assert state.buffer.data.obs.dtype == jnp.uint8
  assert int(state.buffer.data.obs.max()) > 0
  assert history["model/recon"].shape == (1,) and np.isfinite(history["model/recon"][0])


def test_config_errors_name_the_field():
  with pytest.raises(ValueError, match="chunk_steps"):
    dataclasses.replace(TINY, chunk_steps=25)
  with pytest.raises(ValueError, match="prefill"):
    dataclasses.replace(TINY, prefill=4)
  with pytest.raises(ValueError, match="env"):
    dataclasses.replace(TINY, env="nope")
  with pytest.raises(ValueError, match=r"dreamer.Config.world_model: deter"):
    dataclasses.replace(TINY, world_model=rssm.WorldModelConfig(deter=0))
  with pytest.raises(ValueError, match="image_size"):
    dataclasses.replace(TINY, pixels=True, image_size=20)
  with pytest.raises(ValueError, match="imag_starts"):
    dataclasses.replace(TINY, imag_starts=0)
  with pytest.raises(ValueError, match="typed PRNG key"):
    run_lib.train(dreamer.make(TINY), jax.random.PRNGKey(0))


def test_resume_after_an_interruption_equals_an_uninterrupted_run(tmp_path):
  key = jax.random.key(5)
  full_state, full = run_lib.train(dreamer.make(TINY), key, checkpoint_dir=str(tmp_path / "full"))

  class Interrupt(Exception):
    pass

  def die(chunk, metrics):
    if chunk == 1:                   # before chunk 1's checkpoint: the latest is after chunk 0
      raise Interrupt

  directory = str(tmp_path / "cut")
  with pytest.raises(Interrupt):
    run_lib.train(dreamer.make(TINY), key, checkpoint_dir=directory, progress_fn=die)
  assert run_lib.Checkpointer(directory, meta=run_lib.run_meta("dreamer", key, TINY)) \
      .latest_step() == 1
  state, history = run_lib.train(dreamer.make(TINY), key, checkpoint_dir=directory, resume=True)
  for name in full:
    np.testing.assert_array_equal(history[name], full[name], err_msg=name)
  for a, b in zip(jax.tree.leaves(state.model_params), jax.tree.leaves(full_state.model_params)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(state.buffer.data.obs, full_state.buffer.data.obs)
