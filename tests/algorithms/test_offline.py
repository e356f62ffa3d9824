"""Offline algorithms: the penalties against hand-computed values, MOReL's halting, a tiny
MOReL epoch on the driver, and behaviour cloning and MOPO learning on pendulum datasets
(conftest.py's)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax import models
from mbrl_jax import run
from mbrl_jax.algorithms import mbpo
from mbrl_jax.algorithms import offline
from tests.algorithms.conftest import last_returns, learn_config, learning_bar


def test_mopo_penalty_by_hand():
  # 2 members, 1 row, D = 3 (2 state dims + reward).
  mean = jnp.array([[[1.0, 0.0, 5.0]], [[3.0, 2.0, -5.0]]])
  var = jnp.array([[[1.0, 4.0, 4.0]], [[9.0, 0.0, 0.0]]])
  out = models.MemberOutput(mean=mean, var=var)
  # aleatoric: max(||(1, 2, 2)||, ||(3, 0, 0)||) = max(3, 3) = 3; make member 0 larger:
  out = out._replace(var=var.at[0, 0, 2].set(16.0))      # ||(1, 2, 4)|| = sqrt(21)
  np.testing.assert_allclose(offline.mopo_penalty(out, 2, "aleatoric"), [np.sqrt(21.0)],
                             rtol=1e-6)
  # disagreement over the state part: mean (2, 1); deviations (-1, -1), (1, 1): sqrt(2).
  np.testing.assert_allclose(offline.mopo_penalty(out, 2, "disagreement"), [np.sqrt(2.0)],
                             rtol=1e-6)


def test_mobile_penalty_by_hand():
  # S = 2 samples, K = 3 members, N = 1 row, O = 1; q_fn doubles the state.
  s = jnp.array([[[[1.0]], [[4.0]], [[0.0]]], [[[3.0]], [[6.0]], [[0.0]]]])
  pen = offline.mobile_penalty(s, lambda x: 2.0 * x[..., 0])
  # member means of q: 2 * (2, 5, 0) = (4, 10, 0); unbiased std = sqrt(((-10/3)^2 +
  # (14/3)^2 + (-14/3)^2... computed directly:
  q = np.array([4.0, 10.0, 0.0])
  np.testing.assert_allclose(pen, [np.std(q, ddof=1)], rtol=1e-6)
  assert pen.shape == (1,)


def test_morel_disagreement_and_halting_by_hand():
  mean = jnp.array([[[0.0, 0.0, 9.0], [1.0, 1.0, 0.0]],
                    [[3.0, 4.0, -9.0], [1.0, 1.0, 0.0]],
                    [[0.0, 1.0, 0.0], [1.0, 1.0, 0.0]]])        # [E=3, N=2, D=3], O = 2
  out = models.MemberOutput(mean=mean, var=jnp.ones_like(mean))
  d = offline.morel_disagreement(out, 2)
  np.testing.assert_allclose(d, [5.0, 0.0], rtol=1e-6)         # ||(3, 4)||; all agree
  reward, term = offline.morel_halt(jnp.array([1.0, 2.0]), jnp.array([0.0, 0.0]),
                                    d > 1.0, -50.0)
  np.testing.assert_allclose(reward, [-50.0, 2.0])
  np.testing.assert_allclose(term, [1.0, 0.0])


def test_config_errors_name_the_field():
  with pytest.raises(ValueError, match="algo"):
    offline.Config(algo="cql")
  with pytest.raises(ValueError, match="uncertainty"):
    offline.Config(uncertainty="epistemic")
  with pytest.raises(ValueError, match="rollout_batch"):
    offline.Config(rollout_batch=2)
  with pytest.raises(ValueError, match="needs num_elites >= 2, got 1"):
    offline.Config(algo="mobile", model=dataclasses.replace(offline.Config().model,
                                                             num_elites=1))


TINY_SAC = mbpo.SACConfig(hidden_sizes=(32, 32), actor_lr=3e-3, critic_lr=1e-3, alpha_lr=1e-3,
                          batch_size=64)


def test_bc_learns_the_controller(pendulum_sets):
  path, random_ret, behaviour = (pendulum_sets.controller, pendulum_sets.random_return,
                                 pendulum_sets.controller_return)
  assert behaviour > -400 and random_ret < -900
  cfg = offline.Config(algo="bc", dataset=str(path), epochs=2, epoch_length=BC_UPDATES,
                       eval_episodes=5, sac=TINY_SAC)
  _, h = run.train(offline.make(cfg), jax.random.key(0))
  ret = h["eval/return"]
  assert h["bc/bc_loss"][-1] < h["bc/bc_loss"][0]
  # Fails if BC does not learn: an untrained actor (tanh(mean) near 0) scores about random.
  assert ret[-1] > random_ret + 0.5 * (behaviour - random_ret), (ret, random_ret, behaviour)
  np.testing.assert_allclose(h["eval/normalized_score"],
                             100 * (ret - random_ret) / (behaviour - random_ret), rtol=1e-4)


BC_UPDATES = 1000
TINY_MODEL = mbpo.ModelConfig(num_members=3, num_elites=2, hidden_sizes=(16,))
TINY_FIT = models.FitConfig(batch_size=64, max_epochs=2, max_holdout=300, patience=None,
                            normalize_targets=False)
MOREL_SAC = mbpo.SACConfig(hidden_sizes=(16,), batch_size=32)


@pytest.fixture(scope="module")
def morel_run(pendulum_sets):
  """Two MOReL epochs (one compiled step) on the controller data, the threshold at half the
  data's largest disagreement so that some rollouts halt."""
  path = pendulum_sets.controller
  cfg = offline.Config(algo="morel", dataset=str(path), epochs=2, epoch_length=10,
                       eval_episodes=1, rollout_batch=32, rollout_length=3, retain_epochs=2,
                       morel_threshold_rows=500, model=TINY_MODEL, fit=TINY_FIT, sac=MOREL_SAC,
                       morel_threshold_scale=0.5)
  state, h = run.train(offline.make(cfg), jax.random.key(0))
  return cfg, state, h


def test_morel_epoch_runs(morel_run):
  # MOBILE and MOPO run the same loop (experiments/offline.py quick presets).
  cfg, state, h = morel_run
  assert np.all(np.isfinite(h["eval/return"])) and np.all(np.isfinite(h["sac/critic_loss"]))
  assert h["updates"][-1] == 20 and h["env_steps"][-1] == 0
  assert state.model_buffer.size == min(2 * 32 * 3, int(h["rollout/transitions"].sum()))
  assert int(state.epoch) == 2


def test_morel_rollouts_halt_into_the_absorbing_reward(morel_run):
  cfg, state, h = morel_run
  # Half the data's largest disagreement as threshold: some data rows are unknown, so some
  # rollouts halt before 3 steps, into the absorbing state's reward.
  assert 0 < h["rollout/unknown_on_data"][0] < 1
  assert h["rollout/mean_length"][0] < 3
  halt = (np.min(np.asarray(state.real.data.reward)) - cfg.morel_kappa) / (1 - cfg.sac.gamma)
  fake = np.asarray(state.model_buffer.data.reward)[: int(state.model_buffer.size)]
  assert np.any(np.isclose(fake, halt, rtol=1e-5))
  assert np.all(fake >= halt - 1e-3)    # nothing below the absorbing state's value


def test_mopo_learns_on_the_mixed_set(pendulum_sets):
  # Fails if MOPO does not learn: the same run with learning rates of 1e-9 (conftest.broken)
  # stays near the random return (-1200 here), far below the bar (about -1000).
  cfg = learn_config(pendulum_sets, "mopo")
  _, h = run.train(offline.make(cfg), jax.random.key(0))
  assert last_returns(h) > learning_bar(pendulum_sets), (h["eval/return"], pendulum_sets)
  assert np.all(h["rollout/penalty_on_data"] > 0) and h["updates"][-1] == 10 * 500
