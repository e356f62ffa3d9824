"""Shared by the offline algorithms' tests (test_offline.py, test_offline2.py, test_morec.py):
two small pendulum datasets made by one compiled collection, and the run shape of their
learning tests (one shape, so their ensemble fits and SAC updates compile alike and the
suite's XLA cache can answer the programs they share)."""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax import envs
from mbrl_jax import models
from mbrl_jax.algorithms import mbpo
from mbrl_jax.algorithms import offline
from mbrl_jax.data import offline as offline_data
from mbrl_jax.run import datasets

ROWS = 3000


def swing_up(key, obs, p_random):
  """An energy-pumping swing-up with a PD catch near the top (about -150 per episode), with a
  little action noise; with probability `p_random` a step's action is uniform instead (the
  "mixed" set: wider action coverage, as a replay buffer has)."""
  k_coin, k_unif = jax.random.split(jax.random.fold_in(key, 1))   # `key` itself: the noise
  th, thd = jnp.arctan2(obs[1], obs[0]), obs[2]
  energy = 0.5 * thd ** 2 + 15.0 * (obs[0] - 1.0)
  pd = jnp.clip(-(10.0 * th + 2.0 * thd) / 2.0, -1.0, 1.0)
  pump = jnp.where(thd >= 0, 1.0, -1.0) * jnp.where(energy < 0, 1.0, -0.3)
  a = jnp.clip(jnp.where(obs[0] > 0.9, pd, pump) + 0.1 * jax.random.normal(key, ()),
               -1.0, 1.0)[None]
  return jnp.where(jax.random.uniform(k_coin) < p_random,
                   jax.random.uniform(k_unif, (1,), minval=-1.0, maxval=1.0), a)


class PendulumSets(NamedTuple):
  """D4RL files of `ROWS` pendulum transitions each: `controller` (the swing-up, BC's data)
  and `mixed` (30 % uniform actions, the model-based learning tests' data); the random
  policy's return (the generator's reference) and each set's behaviour return."""

  controller: str
  mixed: str
  random_return: float
  controller_return: float
  mixed_return: float


@pytest.fixture(scope="session")
def pendulum_sets(tmp_path_factory) -> PendulumSets:
  env = envs.make("pendulum")

  @jax.jit
  def collect(key, p_random):
    policy = envs.acting.stateless(lambda k, obs: swing_up(k, obs, p_random))
    k1, k2 = jax.random.split(key)
    actor = envs.acting.reset(env, policy, k1)
    return envs.acting.collect(env, policy, actor, k2, ROWS)[1]

  # The generator's own random reference (compiled once per env, shared with its tests).
  random_ret = float(datasets._random_returns("pendulum", jax.random.key(1)).mean())
  root = tmp_path_factory.mktemp("pendulum_sets")
  out = []
  for name, p in (("controller", 0.0), ("mixed", 0.3)):
    arrays = offline_data.from_transitions(collect(jax.random.key(0), jnp.float32(p)))
    ret = float(offline_data.episode_returns(arrays["rewards"], arrays["terminals"],
                                             arrays["timeouts"]).mean())
    meta = {"env": "pendulum", "kind": name, "ref_min_score": random_ret,
            "ref_max_score": ret}
    path = root / f"pendulum-{name}.hdf5"
    offline_data.write_d4rl(path, offline_data.Dataset(arrays, meta))
    out.append((str(path), ret))
  return PendulumSets(out[0][0], out[1][0], random_ret, out[0][1], out[1][1])


# The learning tests' run: 10 epochs of 500 updates on the mixed set (seconds of compute; the
# compiles are most of a test's time). Sizes picked so that MOPO and COMBO pass their bars
# with a margin (measured, last-5 means: MOPO -851, COMBO -812, RAMBO -862, MOREC-MOPO -783,
# against a bar of about -1000), while the same runs with learning rates of 1e-9 stay below
# the random return (-1471).
LEARN_MODEL = mbpo.ModelConfig(num_members=3, num_elites=2, hidden_sizes=(64,))
LEARN_FIT = models.FitConfig(learning_rate=3e-3, batch_size=64, max_epochs=20,
                             max_holdout=300, patience=None, normalize_targets=False)
LEARN_SAC = mbpo.SACConfig(hidden_sizes=(64, 64), actor_lr=1e-3, critic_lr=1e-3,
                           alpha_lr=1e-3, batch_size=128)
LEARN_RUN = dict(epochs=10, epoch_length=500, eval_episodes=10, rollout_batch=256,
                 rollout_length=3, retain_epochs=2, real_ratio=0.5, penalty_coef=1.0,
                 cql_actions=3, rambo_adv_steps=8, rambo_adv_batch=32,
                 rambo_adv_rollout_length=2, bc_pretrain_epochs=0, model=LEARN_MODEL,
                 fit=LEARN_FIT, sac=LEARN_SAC)


def learn_config(sets: PendulumSets, algo: str, **overrides) -> offline.Config:
  """The learning tests' config of `algo` on the mixed set."""
  return offline.Config(algo=algo, dataset=sets.mixed, **{**LEARN_RUN, **overrides})


def broken(config: offline.Config) -> offline.Config:
  """The same run with the actor's, critics' and temperature's learning rates at 1e-9 (SAC
  needs them > 0): what a learning test must fail on."""
  return dataclasses.replace(config, sac=dataclasses.replace(
      config.sac, actor_lr=1e-9, critic_lr=1e-9, alpha_lr=1e-9))


def learning_bar(sets: PendulumSets, fraction: float = 0.2) -> float:
  """The return a learning run's last five evaluations must average above: `fraction` of
  the way from the random policy's return to the mixed set's behaviour return (an
  untrained SAC policy, tanh(mean) near 0, scores about the random return or below)."""
  return sets.random_return + fraction * (sets.mixed_return - sets.random_return)


def last_returns(history) -> float:
  """The mean evaluation return of the run's last five epochs (single evaluations swing by
  hundreds on pendulum, from one epoch to the next)."""
  return float(np.mean(history["eval/return"][-5:]))
