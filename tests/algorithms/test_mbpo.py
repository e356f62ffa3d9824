"""MBPO: rollout schedule, branched rollouts that stop at termination, masked buffer inserts,
a tiny end-to-end run (seeds vmapped) and no recompilation across epochs."""

import contextlib
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax import models
from mbrl_jax import run as run_lib
from mbrl_jax.algorithms import mbpo
from tests.conftest import count_compilations

TINY = mbpo.Config(
    env="pendulum", env_steps=40 + 3 * 20, epoch_length=20, init_exploration_steps=40,
    model_train_every=10, updates_per_step=2, real_ratio=0.25, episode_length=30,
    eval_episodes=2,
    model=mbpo.ModelConfig(num_members=3, num_elites=2, hidden_sizes=(16, 16)),
    fit=models.FitConfig(batch_size=16, max_epochs=2, holdout_ratio=0.2, patience=None),
    rollout=mbpo.RolloutConfig(schedule=(1, 3, 1, 3), rollouts_per_step=2, retain_epochs=1),
    sac=mbpo.SACConfig(hidden_sizes=(16, 16), batch_size=16))


def test_rollout_length_follows_schedule():
  hopper = [int(mbpo.rollout_length((20, 100, 1, 15), e)) for e in (0, 18, 19, 20, 59, 99, 500)]
  # x = epoch + 1; k = 1 up to x = 20, then 1 + 14 (x - 20) / 80, truncated.
  assert hopper == [1, 1, 1, 1, 8, 15, 15]
  assert [int(mbpo.rollout_length((1, 3, 1, 3), e)) for e in range(5)] == [1, 2, 3, 3, 3]
  assert [int(mbpo.rollout_length((1, 15, 1, 1), e)) for e in range(20)] == [1] * 20
  jitted = jax.jit(lambda e: mbpo.rollout_length((20, 100, 1, 15), e))
  assert [int(jitted(e)) for e in (0, 59, 99)] == [1, 8, 15]


def counting_model(key, obs, action):
  """next = obs + 1, reward = obs[0] (deterministic)."""
  del key, action
  return models.ModelStep(next_obs=obs + 1.0, reward=obs[:, 0])


def test_branched_rollouts_stop_at_termination_and_length():
  start = jnp.array([[0.0], [1.0], [2.0], [5.0], [-10.0]])
  terminate = lambda o, a, n: (n[..., 0] >= 3.0).astype(jnp.float32)
  policy = lambda k, obs: jnp.zeros((obs.shape[0], 1))
  run = jax.jit(lambda k, n: mbpo.branched_rollout(counting_model, policy, terminate, k, start,
                                                   n, 6))
  tr, valid = run(jax.random.key(0), 4)
  assert tr.obs.shape == (6, 5, 1) and valid.shape == (6, 5)
  # Rows reach 3 after 3, 2, 1, 1 steps and then stop; the last row runs the full length 4.
  np.testing.assert_array_equal(valid.sum(0), [3, 2, 1, 1, 4])
  for row, n in enumerate([3, 2, 1, 1, 4]):
    assert valid[:n, row].all() and not valid[n:, row].any()       # nothing after the end
    expected_done = [0.0] * (n - 1) + [1.0 if row < 4 else 0.0]
    np.testing.assert_array_equal(tr.terminated[:n, row], expected_done)
    np.testing.assert_allclose(tr.reward[:n, row], start[row, 0] + np.arange(n))
  with count_compilations() as c:
    _, valid2 = run(jax.random.key(1), 2)
  assert c.count == 0
  np.testing.assert_array_equal(valid2.sum(0), [2, 2, 1, 1, 2])


@pytest.fixture(scope="module")
def tiny_run():
  """Two seeds vmapped; counts the compilations after the first epoch's progress call."""
  epochs = []
  with contextlib.ExitStack() as stack:
    counter = []

    def progress(epoch, metrics):
      epochs.append(epoch)
      if epoch == 0:
        counter.append(stack.enter_context(count_compilations()))

    keys = jnp.stack([jax.random.key(0), jax.random.key(1)])
    state, history = run_lib.train(mbpo.make(TINY), keys, progress_fn=progress)
    compiles_after_first_epoch = counter[0].count
  return state, history, epochs, compiles_after_first_epoch


def test_tiny_run_follows_schedule_and_counts(tiny_run):
  state, history, epochs, _ = tiny_run
  assert TINY.epochs == 3 and epochs == [0, 1, 2]
  assert history["eval/return"].shape == (3, 2)
  np.testing.assert_array_equal(history["rollout/length"], [[1, 1], [2, 2], [3, 3]])
  # Pendulum never terminates, so every rollout runs exactly k steps.
  k = np.broadcast_to(np.array([1, 2, 3])[:, None], (3, 2))
  np.testing.assert_array_equal(history["rollout/transitions"], TINY.rollout_batch * k)
  np.testing.assert_allclose(history["rollout/mean_length"], k)
  np.testing.assert_array_equal(history["env_steps"], [[60, 60], [80, 80], [100, 100]])
  refits = TINY.epoch_length // TINY.model_train_every
  assert (np.asarray(state.model_buffer.total_added)
          == TINY.rollout_batch * refits * (1 + 2 + 3)).all()
  assert (np.asarray(state.real.size) == 100).all()
  assert (np.asarray(state.sac.steps) == 3 * TINY.epoch_length * TINY.updates_per_step).all()
  # Evaluation: pendulum returns are negative and at most 30 steps of cost 16.3.
  assert np.all(history["eval/return"] < 0) and np.all(history["eval/return"] > -30 * 16.3)
  assert np.all(np.isfinite(history["model/holdout_mse"]))
  assert np.all(np.isfinite(history["sac/critic_loss"]))
  # Seeds differ.
  assert history["eval/return"][0, 0] != history["eval/return"][0, 1]


def test_later_epochs_do_not_recompile(tiny_run):
  """Epochs 1 and 2 (rollout lengths 2 and 3) reuse epoch 0's program."""
  assert tiny_run[3] == 0


def test_resume_after_an_interruption_equals_an_uninterrupted_run(tiny_run, tmp_path):
  full_state, full, _, _ = tiny_run
  keys = jnp.stack([jax.random.key(0), jax.random.key(1)])

  class Interrupt(Exception):
    pass

  def die(epoch, metrics):
    if epoch == 2:                   # before epoch 2's checkpoint: the latest is after epoch 1
      raise Interrupt

  with pytest.raises(Interrupt):
    run_lib.train(mbpo.make(TINY), keys, checkpoint_dir=str(tmp_path), progress_fn=die)
  seen = []
  state, history = run_lib.train(mbpo.make(TINY), keys, checkpoint_dir=str(tmp_path), resume=True,
                              progress_fn=lambda e, m: seen.append(e))
  assert seen == [2]
  for name in full:
    np.testing.assert_array_equal(history[name], full[name], err_msg=name)
  for a, b in zip(jax.tree.leaves(state.sac.params), jax.tree.leaves(full_state.sac.params)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(state.model_buffer.data.obs, full_state.model_buffer.data.obs)


@pytest.mark.parametrize("change,message", [
    (lambda: dict(env="pendulum_wobbly"), r"mbpo.Config.env 'pendulum_wobbly' is unknown"),
    (lambda: dict(env="ant"), "no termination function"),
    (lambda: dict(model_train_every=7), r"mbpo.Config.model_train_every \(7\) must divide"),
    (lambda: dict(env_steps=10), r"mbpo.Config.env_steps \(10\) leaves no epoch"),
    (lambda: dict(init_exploration_steps=0), "init_exploration_steps must be >= 1"),
    (lambda: dict(real_ratio=1.5), r"mbpo.Config.real_ratio must be in \[0, 1\]"),
    (lambda: dict(rollout=mbpo.RolloutConfig(schedule=(1, 3, 4, 2))),
     r"mbpo.RolloutConfig.schedule lengths must satisfy"),
    (lambda: dict(model=mbpo.ModelConfig(num_members=2, num_elites=3)),
     r"mbpo.ModelConfig.num_elites must be in \[1, num_members=2\]"),
    (lambda: dict(sac=mbpo.SACConfig(tau=0.0)), "mbpo.SACConfig: tau"),
    (lambda: dict(sac=mbpo.SACConfig(target_update_every=0)),
     "mbpo.SACConfig: target_update_every must be a positive int"),
])
def test_bad_config_is_refused_before_compiling(change, message):
  # A config validates itself when built; what only a model run needs, when made.
  with count_compilations() as c:
    with pytest.raises(ValueError, match=message):
      mbpo.make(dataclasses.replace(TINY, **change()))
  assert c.count == 0


def test_model_free_sac_runs_on_the_same_loop():
  from mbrl_jax.algorithms import sac as sac_algo
  config = sac_algo.Config(env="pendulum", env_steps=60, epoch_length=20,
                           init_exploration_steps=20, updates_per_step=2, episode_length=25,
                           eval_episodes=1, sac=mbpo.SACConfig(hidden_sizes=(8,), batch_size=8,
                                                               normalize_observations=True))
  state, history = run_lib.train(sac_algo.make(config), jax.random.key(0))
  # The observation statistics cover exactly the real observations (exploration included).
  real_obs = np.asarray(state.real.data.obs)
  assert float(state.sac.params.obs_stats.count) == 60
  np.testing.assert_allclose(state.sac.params.obs_stats.mean, real_obs.mean(0), atol=1e-5)
  np.testing.assert_allclose(state.sac.params.obs_stats.var, real_obs.var(0), rtol=1e-4)
  assert state.model_buffer is None and state.fit_state is None
  assert "model/holdout_mse" not in history and "rollout/length" not in history
  np.testing.assert_array_equal(history["env_steps"], [40, 60])
  assert int(state.sac.steps) == 2 * 20 * 2 and int(state.real.size) == 60
  assert np.all(np.isfinite(history["sac/critic_loss"])) and np.all(history["eval/return"] < 0)
  with pytest.raises(ValueError, match="sac.Config.env_steps"):
    dataclasses.replace(config, env_steps=5)
