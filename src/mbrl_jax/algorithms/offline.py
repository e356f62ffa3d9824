"""Offline model-based RL on a fixed dataset: MOPO, MOBILE, MOReL, and behaviour cloning,
one compiled call per epoch, seeds vmapped.

Shared by the three model-based ones (MBPO's pieces, not copies: `mbpo.ModelConfig`'s
ensemble, `models.make_trainer`'s fit, `mbpo.branched_rollout`, `mbpo.sac_batch` and the SAC
learner): `init` fits the ensemble once on the whole dataset (7 members, 5 elites, until the
holdout patience runs out). An epoch then starts `rollout_batch` branched model rollouts of
`rollout_length` (h) steps from dataset observations with the current SAC policy (a random
elite per row and step), writes them into a model buffer that keeps the last
`retain_epochs` epochs' rollouts, and runs `epoch_length` SAC updates on batches of which
`real_ratio` come from the dataset and the rest from the model buffer. No env step is taken;
after each epoch the deterministic policy is evaluated on the real env, and the return is
also reported as D4RL's normalised score against the dataset's reference returns.

The algorithms differ only in where the pessimism enters:

- MOPO (Yu et al. 2020, "MOPO: Model-based Offline Policy Optimization"): each model
  transition's reward becomes r - lambda * u(s, a), u the largest norm over the ensemble's
  members of the predicted standard deviation (`mopo_penalty`, "aleatoric", the paper's
  choice), or the largest distance of a member's mean from the members' mean ("disagreement").
- MOBILE (Sun et al. 2023, "Model-Bellman Inconsistency for Model-based Offline RL"): at each
  SAC update, each model row's reward is lowered by beta times the standard deviation over
  elite members of the Bellman target min_j Q'_j(s', a') (s' sampled from each member
  `mobile_samples` times and averaged, a' ~ pi(s')); zero on the dataset's rows
  (`mobile_penalty`).
- MOReL (Kidambi et al. 2020, "MOReL: Model-Based Offline Reinforcement Learning"): an
  unknown-state detector, the largest pairwise distance between members' predicted next
  states above a threshold (`morel_threshold_scale` times the largest such disagreement on
  the dataset); rollouts halt there into an absorbing state whose per-step reward is
  r_min - kappa forever, given in one step as (r_min - kappa) / (1 - gamma) with terminated =
  1 (`morel_halt`); that replaces the unknown step's own reward r(s, a), which the paper's
  pessimistic MDP keeps before the HALT (ours is slightly more pessimistic). The policy
  learner is the same SAC (the paper used NPG).
- BC: the SAC actor's mean action trained by MSE on the dataset's actions.
- MOREC (Luo et al. 2024, "Reward-Consistent Dynamics Models are Strongly Generalizable for
  Offline Reinforcement Learning"), `Config.morec` enabled on MOPO or MOBILE (MOREC-MOPO,
  MOREC-MOBILE): init also trains a dynamics reward d(s, a, s') by adversarial IRL after the
  ensemble fit (`mbrl_jax.models.dynamics_reward`, where the choices it makes are listed);
  each rollout step draws `morec.num_candidates` next states from the ensemble per row and
  keeps the one d scores highest (its predicted reward with it), and a row's rollout stops
  where that best d is below the threshold. The MOPO or MOBILE penalty is unchanged.

Defaults follow OfflineRL-Kit (yihaosun1124/OfflineRL-Kit at e3ce697, `run_example/
run_mopo.py`, `run_mobile.py`, `offlinerlkit/dynamics/ensemble_dynamics.py`): actor lr 1e-4,
critic lr 3e-4, alpha lr 1e-4 (learned, target entropy -|A|), 256 x 256 networks, batch 256,
real_ratio 0.05, rollout_batch 50,000 every 1000 updates, retain 5 epochs, the ensemble of
MBPO (7 x 4 x 200 swish, 5 elites, per-layer weight decay) fitted with a holdout of
min(20 %, 1000) rows and a patience of 5; MOPO h = 5 and lambda = 2.5 (their default
lambda is 2.5 and h = 1, per-dataset values in `PRESETS`); MOBILE 10 samples, beta 1.5.
Differences kept: our SAC's backup includes the entropy term (MOBILE's config uses a
deterministic backup) and does not clamp targets at 0; OfflineRL-Kit's MOPO aleatoric
penalty takes all 7 members, so does ours.

Datasets are read, never made, here: a generated "<env>-<kind>" set must be in the cache
first (`generate` in run/datasets.py, or experiments/make_dataset.py; experiments/offline.py
makes it before the run).

Example (a minute of CPU, so skipped here; `train` is the driver's, in run/loop.py, and the
quick preset's dataset must be cached):
  >>> cfg = PRESETS["quick"]
  >>> state, history = train(make(cfg), jax.random.key(0))         # doctest: +SKIP
  >>> history["eval/normalized_score"].shape                       # doctest: +SKIP
  (10,)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mbrl_jax import checks
from mbrl_jax import data as buffer_lib
from mbrl_jax import envs
from mbrl_jax import models
from mbrl_jax import tree
from mbrl_jax.algorithms import mbpo
from mbrl_jax.algorithms.base import Algorithm
from mbrl_jax.data import offline as offline_data
from mbrl_jax.models import dynamics_reward as dr_lib
from mbrl_jax.policies import sac as sac_lib
from mbrl_jax.types import PRNGKey, Transition

ALGOS = ("mopo", "mobile", "morel", "bc")
UNCERTAINTIES = ("aleatoric", "disagreement")

# OfflineRL-Kit's dynamics fit (`EnsembleDynamics.train`): Adam 1e-3, MBPO's per-layer decay,
# batch 256, holdout min(0.2 N, 1000), stop after 5 epochs without a 1 % improvement, inputs
# standardised only; max_epochs is a safety cap.
OFFLINE_FIT = models.FitConfig(
    learning_rate=1e-3, weight_decay=(2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4), batch_size=256,
    max_epochs=1000, holdout_ratio=0.2, max_holdout=1000, patience=5,
    improvement_threshold=0.01, weight_decay_mode="l2", normalize_targets=False)


@dataclasses.dataclass(frozen=True)
class Config:
  """An offline run.

  Attributes:
    algo: "mopo", "mobile", "morel" or "bc".
    dataset: "<env>-<kind>" (a generated set, read from the cache: see
      `mbrl_jax.data.offline.load`), a D4RL HDF5 file or a Minari dataset folder.
    env: the env to evaluate on (None: the dataset's own; a file without one needs it).
    dataset_size: transitions of a generated dataset (random, medium, expert; see
      `mbrl_jax.data.offline`).
    dataset_seed: seed of a generated dataset.
    sac_steps: the generator's SAC budget (None: its default for the env).
    epochs: compiled calls; each is `epoch_length` updates and one evaluation.
    epoch_length: SAC (or BC) updates per epoch (OfflineRL-Kit's step_per_epoch, rollout_freq).
    eval_episodes: deterministic evaluation episodes after each epoch.
    real_ratio: fraction of each SAC batch from the dataset.
    rollout_length: h, model steps per rollout.
    rollout_batch: rollouts started each epoch.
    retain_epochs: epochs of model rollouts SAC samples from.
    penalty_coef: MOPO's lambda or MOBILE's beta.
    uncertainty: MOPO's u(s, a): "aleatoric" (max member std norm) or "disagreement".
    mobile_samples: next-state samples per elite in MOBILE's penalty.
    morel_threshold_scale: MOReL's threshold is this times the largest disagreement on the
      dataset (rows of `morel_threshold_rows` sampled).
    morel_threshold_rows: dataset rows the threshold is measured on.
    morel_kappa: MOReL's halt penalty below the dataset's smallest reward, per step.
    model: the dynamics ensemble (MBPO's).
    fit: its fit, done once in init.
    sac: the SAC learner (BC uses its actor network, actor_lr and batch_size).
    morec: MOREC's dynamics reward and rollout filter (MOPO and MOBILE; off by default).
  """

  algo: str = "mopo"
  dataset: str = "pendulum-medium-replay"
  env: str | None = None
  dataset_size: int = 100_000
  dataset_seed: int = 0
  sac_steps: int | None = None
  epochs: int = 3000
  epoch_length: int = 1000
  eval_episodes: int = 10
  real_ratio: float = 0.05
  rollout_length: int = 5
  rollout_batch: int = 50_000
  retain_epochs: int = 5
  penalty_coef: float = 2.5
  uncertainty: str = "aleatoric"
  mobile_samples: int = 10
  morel_threshold_scale: float = 1.0
  morel_threshold_rows: int = 10_000
  morel_kappa: float = 10.0
  model: mbpo.ModelConfig = mbpo.ModelConfig()
  fit: models.FitConfig = OFFLINE_FIT
  sac: mbpo.SACConfig = mbpo.SACConfig(actor_lr=1e-4, critic_lr=3e-4, alpha_lr=1e-4)
  morec: dr_lib.MorecConfig = dr_lib.MorecConfig()

  def __post_init__(self):
    checks.one_of(self, "algo", ALGOS)
    checks.one_of(self, "uncertainty", UNCERTAINTIES)
    checks.positive_int(self, "dataset_size", "epochs", "epoch_length", "eval_episodes",
                        "rollout_length", "rollout_batch", "retain_epochs", "mobile_samples",
                        "morel_threshold_rows")
    if not isinstance(self.dataset_seed, int) or self.dataset_seed < 0:
      checks.fail(self, "dataset_seed", f"must be a non-negative int, got {self.dataset_seed!r}")
    checks.in_range(self, "real_ratio", 0.0, 1.0)
    checks.in_range(self, "penalty_coef", 0.0)
    checks.in_range(self, "morel_threshold_scale", 0.0)
    checks.in_range(self, "morel_kappa", 0.0)
    if self.env is not None:
      envs.check_continuous_env(self, "env")
    if self.algo == "mobile" and self.model.num_elites < 2:
      checks.fail(self, "model", f"MOBILE's penalty is a standard deviation across elites: "
                  f"needs num_elites >= 2, got {self.model.num_elites}")
    if self.morec.enabled and self.algo not in ("mopo", "mobile"):
      checks.fail(self, "morec", f"filters MOPO's or MOBILE's rollouts, not {self.algo!r}'s")
    if self.morec.enabled and self.morec.holdout_rows >= self.dataset_size:
      checks.fail(self, "morec", f"holdout_rows ({self.morec.holdout_rows}) must be below "
                  f"dataset_size ({self.dataset_size})")
    if self.algo != "bc" and self.rollout_batch < self.model.num_elites:
      checks.fail(self, "rollout_batch", f"must be >= model.num_elites "
                  f"({self.model.num_elites}), got {self.rollout_batch}")

  @property
  def real_batch(self) -> int:
    """Dataset rows in each SAC batch (the rest come from the model buffer)."""
    return int(round(self.real_ratio * self.sac.batch_size))

  @property
  def model_capacity(self) -> int:
    """Model-buffer slots: every rollout step of `retain_epochs` epochs."""
    return self.retain_epochs * self.rollout_batch * self.rollout_length


# --------------------------------------------------------------------------------------------
# The penalties, as pure functions of the ensemble's outputs (tested by hand).

def mopo_penalty(out: models.MemberOutput, obs_size: int, mode: str = "aleatoric"
                 ) -> jax.Array:
  """MOPO's uncertainty u(s, a) per row, [N], from every member's Gaussian `out` ([E, N, D]).

  "aleatoric": max_i ||sigma_i(s, a)||_2 over the members i, sigma_i the predicted standard
  deviation of all D targets (next-state change and reward), the paper's choice.
  "disagreement": max_i ||mu_i - mean_j mu_j||_2 over the next-state part of the means.
  """
  if mode == "aleatoric":
    return jnp.max(jnp.linalg.norm(jnp.sqrt(out.var), axis=-1), axis=0)
  if mode == "disagreement":
    mu = out.mean[..., :obs_size]
    return jnp.max(jnp.linalg.norm(mu - mu.mean(0), axis=-1), axis=0)
  raise ValueError(f"mopo_penalty: mode must be one of {UNCERTAINTIES}, got {mode!r}")


def morel_disagreement(out: models.MemberOutput, obs_size: int) -> jax.Array:
  """MOReL's discrepancy per row, [N]: max_{i,j} ||mu_i - mu_j||_2 over pairs of members'
  predicted next-state means (the state-change part of `out.mean`, [E, N, D])."""
  mu = out.mean[..., :obs_size]
  diff = mu[:, None] - mu[None, :]                                     # [E, E, N, O]
  return jnp.max(jnp.linalg.norm(diff, axis=-1), axis=(0, 1))


def morel_halt(reward: jax.Array, terminated: jax.Array, unknown: jax.Array,
               halt_reward: float) -> tuple[jax.Array, jax.Array]:
  """MOReL's pessimistic MDP on one model step: where `unknown`, the reward is `halt_reward`
  (the absorbing state's whole discounted value) and the transition terminates."""
  unknown = unknown.astype(bool)
  return (jnp.where(unknown, halt_reward, reward),
          jnp.where(unknown, 1.0, terminated.astype(jnp.float32)))


def mobile_penalty(next_obs_samples: jax.Array, q_fn: Callable[[jax.Array], jax.Array]
                   ) -> jax.Array:
  """MOBILE's Bellman-inconsistency penalty per row, [N].

  Args:
    next_obs_samples: next states [S, K, N, O]: S samples from each of K elite members.
    q_fn: `q_fn(next_obs [..., O]) -> [...]`, the Bellman target's value part
      min_j Q'_j(s', a') with a' ~ pi(s').

  Returns:
    the standard deviation over the K members of the mean over the S samples of q_fn,
    unbiased (divided by K - 1), as MOBILE's code (torch's `std`) computes it.
  """
  q = q_fn(next_obs_samples)                                           # [S, K, N]
  return jnp.std(q.mean(0), axis=0, ddof=1)


# --------------------------------------------------------------------------------------------

class State(NamedTuple):
  """What an offline run carries from epoch to epoch (one seed).

  Attributes:
    real: the dataset, as a full replay buffer.
    model_buffer: model rollouts (a 1-slot dummy for BC).
    model: the fitted ensemble's parameters (fitted in init; None for BC).
    sac: the SAC learner (BC trains its actor only, its actor optimizer state included).
    key: the run's random key.
    epoch: epochs completed.                                        # [] int32
    model_holdout_mse: holdout MSE of the fit, mean over members.    # []
    morel_threshold: MOReL's unknown-state threshold (0 otherwise).  # []
    dynamics_reward: MOREC's trained dynamics reward (None without MOREC).
  """

  real: buffer_lib.BufferState
  model_buffer: buffer_lib.BufferState
  model: models.EnsembleParams | None
  sac: sac_lib.SACState
  key: PRNGKey
  epoch: jax.Array
  model_holdout_mse: jax.Array
  morel_threshold: jax.Array
  dynamics_reward: dr_lib.DynamicsRewardParams | None = None


class Parts(NamedTuple):
  env: Any
  env_name: str
  dataset: offline_data.Dataset
  sac: sac_lib.SAC
  ensemble: models.Ensemble | None
  trainer: models.Trainer | None
  termination_fn: Callable
  dynamics_reward: dr_lib.DynamicsReward | None = None


def load_dataset(config: Config) -> offline_data.Dataset:
  """The config's dataset, read (a "<env>-<kind>" name from the cache; one not made yet is a
  one-line ValueError giving the command that makes it)."""
  return offline_data.load(config.dataset, env=config.env, size=config.dataset_size,
                           seed=config.dataset_seed, sac_steps=config.sac_steps)


def make_parts(config: Config, dataset: offline_data.Dataset | None = None) -> Parts:
  ds = dataset if dataset is not None else load_dataset(config)
  env_name = config.env or ds.metadata.get("env")
  if env_name is None:
    checks.fail(config, "env", f"must be given: dataset {config.dataset!r} names no env")
  env = envs.make(env_name)
  sac = mbpo._make_sac(config.sac, env.observation_size, env.action_size)
  if config.algo == "bc":
    return Parts(env, env_name, ds, sac, None, None, envs.get_termination_fn(env_name)
                 if env_name in envs.task_fn_names() else None)
  if env_name not in envs.task_fn_names():
    checks.fail(config, "env", f"{env_name!r} has no termination function; model rollouts "
                f"need one of {', '.join(envs.task_fn_names())}")
  m = config.model
  ens = models.make_ensemble(
      env.observation_size, env.action_size, num_members=m.num_members,
      num_elites=m.num_elites, hidden_sizes=m.hidden_sizes, activation=m.activation,
      probabilistic=True, predict_reward=True, learn_logvar_bounds=m.learn_logvar_bounds)
  return Parts(env, env_name, ds, sac, ens, models.make_trainer(ens, config.fit),
               envs.get_task_fns(env_name).termination_fn,
               dr_lib.make(config.morec, ens) if config.morec.enabled else None)


def _init(parts: Parts, config: Config, key: PRNGKey) -> State:
  env, ds = parts.env, parts.dataset
  a = ds.arrays
  real = buffer_lib.from_numpy(a["observations"], a["actions"], a["rewards"],
                               a["next_observations"], a["terminals"], a["timeouts"])
  key, sac_key, model_key, fit_key, thr_key = jax.random.split(key, 5)
  sac_state = parts.sac.init(sac_key)
  sac_state = parts.sac.observe(sac_state, real.data.obs)
  example = Transition.zeros((env.observation_size,), env.action_size)
  zero = jnp.zeros((), jnp.float32)
  if parts.ensemble is None:
    return State(real=real, model_buffer=buffer_lib.init(1, example), model=None,
                 sac=sac_state, key=key, epoch=jnp.zeros((), jnp.int32),
                 model_holdout_mse=zero, morel_threshold=zero)
  fit_state = parts.trainer.init(parts.ensemble.init(model_key))
  fit_state, fit_metrics = parts.trainer.fit(fit_key, fit_state, real.data,
                                             buffer_lib.valid_mask(real))
  params = fit_state.params
  threshold = zero
  if config.algo == "morel":
    rows = buffer_lib.sample(real, thr_key, min(config.morel_threshold_rows, ds.size))
    out = parts.ensemble.apply(params, rows.obs, rows.action)
    threshold = config.morel_threshold_scale * jnp.max(
        morel_disagreement(out, env.observation_size))
  dyn_reward = None
  if parts.dynamics_reward is not None:
    dyn_reward = parts.dynamics_reward.train(jax.random.fold_in(thr_key, 1), params, real.data,
                                             config.morec.holdout_rows)
  return State(real=real, model_buffer=buffer_lib.init(config.model_capacity, example),
               model=params, sac=sac_state, key=key, epoch=jnp.zeros((), jnp.int32),
               model_holdout_mse=jnp.mean(fit_metrics.best_holdout_mse),
               morel_threshold=threshold, dynamics_reward=dyn_reward)


def _evaluate(parts: Parts, config: Config, params: sac_lib.SACParams, key: PRNGKey):
  length = envs.default_episode_length(parts.env_name)
  policy = envs.acting.stateless(
      lambda k, obs: parts.sac.act(params, obs, k, deterministic=True))
  return envs.acting.evaluate(parts.env, policy, key, config.eval_episodes, length).returns


def make_step(config: Config, parts: Parts) -> Callable[[State], tuple[State, dict]]:
  """Returns `step(state) -> (state, metrics)`: one epoch (rollouts, `epoch_length` updates,
  an evaluation). Pure and unjitted."""
  env, sac, ens = parts.env, parts.sac, parts.ensemble
  O = env.observation_size
  meta = parts.dataset.metadata
  lo, hi = meta.get("ref_min_score"), meta.get("ref_max_score")
  B = config.sac.batch_size
  algo = config.algo
  n_real = B if algo == "bc" else config.real_batch
  n_model = B - n_real
  gamma = config.sac.gamma
  halt_reward = float((np.min(parts.dataset.arrays["rewards"]) - config.morel_kappa)
                      / (1.0 - gamma))
  bc_opt = optax.adam(config.sac.actor_lr)
  morec = parts.dynamics_reward

  def morec_step(drp, params, key, obs, action) -> models.ModelStep:
    """MOREC's filter: of N ensemble samples per row, the one the dynamics reward prefers."""
    cand = dr_lib.draw_candidates(ens, params, key, obs, action, config.morec.num_candidates)
    scores = morec.score(drp, obs[None], action[None], cand.next_obs)         # [C, N]
    next_obs, _, _, reward = dr_lib.select(scores, cand.next_obs, cand.reward)
    return models.ModelStep(next_obs=next_obs, reward=reward)

  def bc_update(real: buffer_lib.BufferState, sac_state: sac_lib.SACState, k: PRNGKey):
    batch = buffer_lib.sample(real, k, B)

    def loss(actor):
      mean, _ = sac.actor_dist(actor, sac.normalize(sac_state.params, batch.obs))
      return jnp.mean(jnp.square(jnp.tanh(mean) - batch.action))

    l, g = jax.value_and_grad(loss)(sac_state.params.actor)
    upd, opt = bc_opt.update(g, sac_state.actor_opt, sac_state.params.actor)
    actor = optax.apply_updates(sac_state.params.actor, upd)
    new = sac_state._replace(params=sac_state.params._replace(actor=actor), actor_opt=opt,
                             steps=sac_state.steps + 1)
    return new, {"bc_loss": l}

  def rollout(state: State, key: PRNGKey):
    params = state.model
    k_start, k_roll, k_rows = jax.random.split(key, 3)
    start = buffer_lib.sample(state.real, k_start, config.rollout_batch).obs

    def predict(kk, obs, action):
      if morec is not None:
        out = morec_step(state.dynamics_reward, params, kk, obs, action)
      else:
        out = ens.predict(params, kk, obs, action, mode="ts1")
      if algo == "mopo":
        u = mopo_penalty(ens.apply(params, obs, action), O, config.uncertainty)
        return out._replace(reward=out.reward - config.penalty_coef * u)
      if algo == "morel":
        unknown = morel_disagreement(ens.apply(params, obs, action), O) > state.morel_threshold
        return out._replace(reward=jnp.where(unknown, halt_reward, out.reward))
      return out

    term = parts.termination_fn
    if algo == "morel":
      def term(obs, action, next_obs):
        unknown = morel_disagreement(ens.apply(params, obs, action), O) > state.morel_threshold
        return morel_halt(jnp.zeros(obs.shape[0]), parts.termination_fn(obs, action, next_obs),
                          unknown, halt_reward)[1]
    policy = lambda kk, obs: sac.act(state.sac.params, obs, kk)
    halt = None
    if morec is not None and config.morec.threshold_quantile > 0:
      halt = lambda obs, action, next_obs: morec.score(
          state.dynamics_reward, obs, action, next_obs) < state.dynamics_reward.threshold
    buf, stats = mbpo.branched_rollout(predict, policy, term, k_roll, start,
                                       config.rollout_length, state.model_buffer, halt)
    m = {"rollout/transitions": stats.transitions,
         "rollout/mean_length": stats.transitions / config.rollout_batch,
         "rollout/reward": stats.reward_sum / jnp.maximum(stats.transitions, 1)}
    if algo in ("mopo", "morel"):
      rows = buffer_lib.sample(state.real, k_rows, min(4096, parts.dataset.size))
      out = ens.apply(params, rows.obs, rows.action)
      if algo == "mopo":
        m["rollout/penalty_on_data"] = jnp.mean(mopo_penalty(out, O, config.uncertainty))
      else:
        m["rollout/unknown_on_data"] = jnp.mean(morel_disagreement(out, O) >
                                                state.morel_threshold)
    return state._replace(model_buffer=buf), m

  def mobile_batch(state: State, sac_state: sac_lib.SACState, batch: Transition,
                   key: PRNGKey) -> tuple[Transition, jax.Array]:
    """Lowers the model rows' rewards by beta times MOBILE's penalty."""
    k_model, k_act = jax.random.split(key)
    fake = jax.tree.map(lambda x: x[n_real:], batch)
    p = state.model
    out = ens.apply(p, fake.obs, fake.action)                              # [E, N, D]
    mean = out.mean[p.elites][..., :O] + fake.obs
    std = jnp.sqrt(out.var[p.elites][..., :O])
    noise = jax.random.normal(k_model, (config.mobile_samples, *mean.shape))
    samples = mean + std * noise                                           # [S, K, N, O]
    sp = sac_state.params

    def q_fn(s):
      flat = s.reshape(-1, O)
      a = sac.act(sp, flat, k_act)
      q = sac.critic_apply(sp.target_critic, sac.normalize(sp, flat), a).min(0)
      return q.reshape(s.shape[:-1])

    pen = jax.lax.stop_gradient(mobile_penalty(samples, q_fn))
    reward = batch.reward.at[n_real:].add(-config.penalty_coef * pen)
    return batch._replace(reward=reward), pen

  def sac_update(state: State):
    def body(sac_state, k):
      k_batch, k_pen, k_sac = jax.random.split(k, 3)
      batch = mbpo.sac_batch(state.real, state.model_buffer, k_batch, n_real, n_model,
                             jnp.asarray(config.model_capacity, jnp.int32))
      extra = {}
      if algo == "mobile":
        batch, pen = mobile_batch(state, sac_state, batch, k_pen)
        extra = {"mobile_penalty": pen.mean()}
      sac_state, aux = sac.update(sac_state, batch, k_sac)
      return sac_state, {**aux, **extra}
    return body

  def step(state: State) -> tuple[State, dict]:
    key, k_roll, k_upd, k_eval = jax.random.split(state.key, 4)
    metrics = {}
    if algo == "bc":
      sac_state, aux = jax.lax.scan(functools.partial(bc_update, state.real), state.sac,
                                    jax.random.split(k_upd, config.epoch_length))
    else:
      state, metrics = rollout(state, k_roll)
      sac_state, aux = jax.lax.scan(sac_update(state), state.sac,
                                    jax.random.split(k_upd, config.epoch_length))
      metrics["model/holdout_mse"] = state.model_holdout_mse
      if morec is not None:
        d = state.dynamics_reward
        metrics.update({"morec/real_score": d.real_score, "morec/model_score": d.model_score,
                        "morec/perturbed_score": d.perturbed_score,
                        "morec/accuracy": d.accuracy, "morec/threshold": d.threshold})
      metrics["rollout/buffer_size"] = state.model_buffer.size
    returns = _evaluate(parts, config, sac_state.params, k_eval)
    prefix = "bc" if algo == "bc" else "sac"
    metrics.update({f"{prefix}/{k}": jnp.mean(v) for k, v in aux.items()})
    r = returns.mean()
    score = (100.0 * (r - lo) / (hi - lo)) if (lo is not None and hi not in (None, lo)) \
        else jnp.nan
    metrics.update({
        "eval/return": r, "eval/return_min": returns.min(), "eval/return_max": returns.max(),
        "eval/normalized_score": jnp.asarray(score, jnp.float32),
        "updates": sac_state.steps, "env_steps": jnp.zeros((), jnp.int32),
        "nonfinite/sac": tree.nonfinite(sac_state.params)})
    return state._replace(sac=sac_state, key=key, epoch=state.epoch + 1), metrics

  return step


@functools.lru_cache(maxsize=16)
def make(config: Config) -> Algorithm:
  """The offline algorithm `config.algo` as an `Algorithm` for the driver (`train`): init
  loads the dataset into a buffer and (model-based ones) fits the ensemble; then
  `config.epochs` epochs. The history holds, per epoch: "eval/return" (min / max beside it),
  "eval/normalized_score", "updates", the sac/ (or bc/), rollout/ and model/ metrics."""
  parts = make_parts(config)
  name = f"offline_{'morec_' if config.morec.enabled else ''}{config.algo}"
  return Algorithm(name=name, unit="epoch", config=config,
                   init=lambda k: (_init(parts, config, k), {}),
                   step=make_step(config, parts), num_chunks=config.epochs,
                   nonfinite={"nonfinite/sac": "the SAC (or BC) parameters"})


def behaviour_return(config: Config) -> dict[str, float | None]:
  """The dataset's own behaviour return (mean of its complete episodes) and its normalised
  score: the baseline beside BC."""
  ds = load_dataset(config)
  r = ds.metadata.get("policy_return")
  score = None
  if r is not None and ds.metadata.get("ref_max_score") is not None:
    score = float(offline_data.normalized_score(r, ds.metadata))
  return {"return": r, "normalized_score": score}


# Per-dataset settings. OfflineRL-Kit's suggested (h, lambda) for MOPO and (h, beta) for MOBILE
# on the D4RL Gym tasks, listed in `run_mopo.py` / `run_mobile.py`; our Brax envs use the same
# names (their reward scales differ from Gym's, so these are starting points, not tuned).
MOPO_SETTINGS = {
    "halfcheetah-medium": (5, 0.5), "hopper-medium": (5, 5.0), "walker2d-medium": (5, 0.5),
    "halfcheetah-medium-replay": (5, 0.5), "hopper-medium-replay": (5, 2.5),
    "walker2d-medium-replay": (1, 2.5), "halfcheetah-medium-expert": (5, 2.5),
    "hopper-medium-expert": (5, 5.0), "walker2d-medium-expert": (1, 2.5)}
MOBILE_SETTINGS = {
    "halfcheetah-random": (5, 0.5), "hopper-random": (5, 5.0), "walker2d-random": (5, 2.0),
    "halfcheetah-medium": (5, 0.5), "hopper-medium": (5, 1.5), "walker2d-medium": (5, 0.5),
    "halfcheetah-medium-replay": (5, 0.1), "hopper-medium-replay": (5, 0.1),
    "walker2d-medium-replay": (1, 0.5), "halfcheetah-medium-expert": (5, 2.0),
    "hopper-medium-expert": (5, 1.5), "walker2d-medium-expert": (1, 1.5)}


def preset_for(algo: str, dataset: str, **overrides: Any) -> Config:
  """The paper setting of `algo` on a named dataset (OfflineRL-Kit's per-dataset values)."""
  h, coef = {"mopo": MOPO_SETTINGS, "mobile": MOBILE_SETTINGS}.get(algo, {}).get(
      dataset, (5, 2.5 if algo == "mopo" else 1.5))
  fit = OFFLINE_FIT if algo != "mobile" else dataclasses.replace(OFFLINE_FIT, max_epochs=30)
  return Config(algo=algo, dataset=dataset, rollout_length=h, penalty_coef=coef, fit=fit,
                **overrides)


_QUICK_MODEL = mbpo.ModelConfig(num_members=5, num_elites=3, hidden_sizes=(64, 64))
_QUICK_FIT = models.FitConfig(learning_rate=1e-3, weight_decay=5e-5, batch_size=128,
                              max_epochs=30, holdout_ratio=0.2, max_holdout=1000, patience=5,
                              normalize_targets=False)
_QUICK_SAC = mbpo.SACConfig(hidden_sizes=(64, 64), actor_lr=1e-3, critic_lr=1e-3,
                            alpha_lr=1e-3, batch_size=128)
_QUICK = dict(dataset="pendulum-medium-replay", epochs=10, epoch_length=500, eval_episodes=3,
              rollout_batch=1000, rollout_length=5, retain_epochs=5, real_ratio=0.5,
              model=_QUICK_MODEL, fit=_QUICK_FIT, sac=_QUICK_SAC, dataset_size=10_000)

# MOREC at the quick presets' scale: a smaller discriminator, fewer updates (not a paper
# setting; the paper's values for the dynamics reward's fit are not given in its text).
_QUICK_MOREC = dr_lib.MorecConfig(enabled=True, hidden_sizes=(64, 64), iterations=1000,
                                  batch_size=128, holdout_rows=250)

PRESETS: dict[str, Config] = {
    # Minutes on a 2-core CPU: our pendulum, small networks (not a paper setting).
    "quick": Config(algo="mopo", penalty_coef=1.0, **_QUICK),
    "quick_mobile": Config(algo="mobile", penalty_coef=0.5, mobile_samples=4, **_QUICK),
    "quick_morel": Config(algo="morel", **_QUICK),
    "quick_bc": Config(algo="bc", **_QUICK),
    "quick_morec": Config(algo="mopo", penalty_coef=1.0, morec=_QUICK_MOREC, **_QUICK),
    "quick_morec_mobile": Config(algo="mobile", penalty_coef=0.5, mobile_samples=4,
                                 morec=_QUICK_MOREC, **_QUICK),
    # OfflineRL-Kit's settings on the Brax datasets (hours to days on a CPU).
    **{f"{algo}_{name}": preset_for(algo, name)
       for algo in ("mopo", "mobile") for name in ("hopper-medium", "hopper-medium-replay",
                                                   "halfcheetah-medium",
                                                   "walker2d-medium-replay")},
    **{f"morec_{algo}_{name}": preset_for(algo, name, morec=dr_lib.MorecConfig(enabled=True))
       for algo in ("mopo", "mobile") for name in ("hopper-medium", "hopper-medium-replay",
                                                   "halfcheetah-medium",
                                                   "halfcheetah-medium-replay")},
    "morel_hopper-medium": preset_for("morel", "hopper-medium"),
    "bc_hopper-medium": preset_for("bc", "hopper-medium"),
}
