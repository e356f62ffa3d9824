"""Offline model-based RL on a fixed dataset: MOPO, MOBILE, MOReL, COMBO, RAMBO and behaviour
cloning, one compiled call per epoch, seeds vmapped.

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
- COMBO (Yu et al. 2021, "COMBO: Conservative Offline Model-Based Policy Optimization"): no
  reward penalty; the critics' loss gains beta * (T * mean_s logsumexp_a (Q(s, a) / T) - mean
  Q(s, a) on the data) per critic (`cql_penalty`), the soft-max over R actions from pi(.|s),
  R from pi(.|s') and R uniform ones at each of the batch's states (real and model rows,
  `cql_states="mix"`, OfflineRL-Kit's default; "model": the model rows only), each Q less the
  log density of its proposal (CQL's importance-sampled estimate); the data term over the
  batch's real rows. Passed to SAC as its `extra_loss`, the actor held constant.
- RAMBO (Rigter et al. 2022, "RAMBO-RL: Robust Adversarial Model-Based Offline Reinforcement
  Learning"): the policy is behaviour-cloned first (`bc_pretrain_epochs`); before each epoch's
  rollouts the model takes `rambo_adv_steps` Adam steps on `rambo_model_loss`: the data NLL
  plus lambda * mean(log p(s', r | s, a) * A(s, a, s', r)), (s', r) sampled from a random
  elite along short model rollouts of the current policy, log p under the elites' equal
  mixture (`rambo_log_prob`), A = r + gamma Q(s', pi(s')) - Q(s, a) standardised
  (`rambo_advantage`, the current critics, the deterministic policy at s', no entropy term):
  a policy-gradient step that makes transitions good for the policy less likely. lambda = 0
  is plain model training on the data.
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

COMBO (`run_combo.py`, `policy/model_based/combo.py`): beta 5.0 by default, per-dataset
values and h in `COMBO_SETTINGS`; T 1, R 10, real_ratio 0.5, no Lagrange tuning of beta,
3 x 256 actor and critics, 1000 epochs. Differences: our backup keeps the entropy term (theirs
is deterministic), no cosine decay of the actor's step size, and the soft-max runs over all
3R actions of a state: their code concatenates [B R, 1] tensors along axis 1 (its reshape is
not in place), so each soft-max there is over 3 values, one of each kind.
RAMBO (`run_rambo.py`, `policy/model_based/rambo.py`): lambda 3e-4 (0 on some datasets, see
`RAMBO_SETTINGS`), 1000 adversarial steps of 256 rows every 1000 SAC updates along rollouts
of 5, Adam 3e-4 with the fit's weight decay, real_ratio 0.5, 50 BC epochs, 2000 epochs.
Differences: our rollouts for SAC are made once per epoch (theirs every 250 updates), the
adversarial steps come before the epoch's rollouts (theirs after the epoch's updates, i.e.
before the next rollouts), the BC loss is on tanh(mean) (theirs on a sampled action), the
supervised loss's log-variance bound penalty is our ensemble's (0.01, only with learnable
bounds; theirs 0.001), and our policy's inputs are not standardised unless
`sac.normalize_observations`.

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
from mbrl_jax.models import training as model_training
from mbrl_jax.policies import sac as sac_lib
from mbrl_jax.types import PRNGKey, Transition

ALGOS = ("mopo", "mobile", "morel", "combo", "rambo", "bc")
CQL_STATES = ("mix", "model")
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
    algo: "mopo", "mobile", "morel", "combo", "rambo" or "bc".
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
    penalty_coef: MOPO's lambda, MOBILE's beta, COMBO's CQL weight beta or RAMBO's
      adversarial weight lambda (0: plain model training).
    uncertainty: MOPO's u(s, a): "aleatoric" (max member std norm) or "disagreement".
    mobile_samples: next-state samples per elite in MOBILE's penalty.
    morel_threshold_scale: MOReL's threshold is this times the largest disagreement on the
      dataset (rows of `morel_threshold_rows` sampled).
    morel_threshold_rows: dataset rows the threshold is measured on.
    morel_kappa: MOReL's halt penalty below the dataset's smallest reward, per step.
    cql_temperature: COMBO's soft-max temperature T of the CQL term.
    cql_actions: COMBO's actions per state and kind (policy at s, policy at s', uniform) in
      the CQL soft-max.
    cql_states: the states the CQL term pushes Q down on: "mix" (the whole batch, real and
      model rows, OfflineRL-Kit's default) or "model" (the model rows only).
    rambo_adv_steps: RAMBO's adversarial model steps before each epoch's rollouts (0: the
      model stays as fitted).
    rambo_adv_batch: rows of each adversarial step (rollout rows and supervised rows alike).
    rambo_adv_rollout_length: the adversarial steps follow model rollouts of this length from
      dataset states (restarting after it).
    rambo_adv_lr: Adam step size of the adversarial model updates.
    bc_pretrain_epochs: RAMBO's policy is first behaviour-cloned for this many passes over
      the dataset (0: none).
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
  cql_temperature: float = 1.0
  cql_actions: int = 10
  cql_states: str = "mix"
  rambo_adv_steps: int = 1000
  rambo_adv_batch: int = 256
  rambo_adv_rollout_length: int = 5
  rambo_adv_lr: float = 3e-4
  bc_pretrain_epochs: int = 50
  model: mbpo.ModelConfig = mbpo.ModelConfig()
  fit: models.FitConfig = OFFLINE_FIT
  sac: mbpo.SACConfig = mbpo.SACConfig(actor_lr=1e-4, critic_lr=3e-4, alpha_lr=1e-4)
  morec: dr_lib.MorecConfig = dr_lib.MorecConfig()

  def __post_init__(self):
    checks.one_of(self, "algo", ALGOS)
    checks.one_of(self, "uncertainty", UNCERTAINTIES)
    checks.one_of(self, "cql_states", CQL_STATES)
    checks.positive_int(self, "dataset_size", "epochs", "epoch_length", "eval_episodes",
                        "rollout_length", "rollout_batch", "retain_epochs", "mobile_samples",
                        "morel_threshold_rows", "cql_actions", "rambo_adv_batch",
                        "rambo_adv_rollout_length")
    checks.int_at_least(self, "rambo_adv_steps", 0)
    checks.int_at_least(self, "bc_pretrain_epochs", 0)
    checks.in_range(self, "cql_temperature", 0.0, low_open=True)
    checks.in_range(self, "rambo_adv_lr", 0.0, low_open=True)
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
    if self.algo == "combo" and self.cql_states == "model" and self.real_batch >= \
        self.sac.batch_size:
      checks.fail(self, "cql_states", f"'model' needs model rows in each batch: real_ratio "
                  f"{self.real_ratio} leaves none of {self.sac.batch_size}")
    if self.algo == "combo" and self.real_batch < 1:
      checks.fail(self, "real_ratio", f"COMBO's CQL term needs dataset rows in each batch: "
                  f"{self.real_ratio} of {self.sac.batch_size} rounds to none")
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


def cql_penalty(q_sampled: jax.Array, q_data: jax.Array, temperature: float = 1.0
                ) -> jax.Array:
  """COMBO's (CQL's) conservative term per critic, [C], before the weight beta.

  Args:
    q_sampled: Q of each critic on the sampled actions at each pushed-down state, already
      importance-corrected (Q - log density of the action's proposal), [C, N, M].
    q_data: Q of each critic on the dataset's own state-actions, [C, Nd].
    temperature: T of the soft-max.

  Returns:
    T * mean_N logsumexp_M(q_sampled / T) - mean_Nd q_data: the soft maximum of Q at the
    model's (or mixed) states minus the mean Q on the data.
  """
  soft_max = temperature * jax.nn.logsumexp(q_sampled / temperature, axis=-1)     # [C, N]
  return soft_max.mean(-1) - q_data.mean(-1)


def rambo_log_prob(out: models.MemberOutput, elites: jax.Array, y: jax.Array) -> jax.Array:
  """log p(y | s, a) under the elite mixture, [N]: log mean_k N(y; mu_k, var_k), the density
  of each row's sampled targets y ([N, D], next-state change and reward) under every elite
  member's Gaussian (`out`, [E, N, D]) averaged with equal weights (as RAMBO's code does)."""
  mu, var = out.mean[elites], out.var[elites]                                    # [K, N, D]
  logp = -0.5 * (jnp.square(y - mu) / var + jnp.log(2 * jnp.pi * var)).sum(-1)   # [K, N]
  return jax.nn.logsumexp(logp, axis=0) - jnp.log(elites.shape[0])


def rambo_advantage(reward: jax.Array, terminated: jax.Array, q_next: jax.Array,
                    q_now: jax.Array, gamma: float) -> jax.Array:
  """RAMBO's standardised advantage of a sampled model transition, [N]:
  A = r + gamma (1 - terminated) Q(s', pi(s')) - Q(s, a), then (A - mean) / (std + 1e-6)."""
  a = reward + gamma * (1.0 - terminated) * q_next - q_now
  return (a - a.mean()) / (jnp.std(a, ddof=1) + 1e-6)


def rambo_model_loss(ens: models.Ensemble, params: models.EnsembleParams, adv_weight: float,
                     obs: jax.Array, action: jax.Array, y: jax.Array, advantage: jax.Array,
                     data: Transition) -> tuple[jax.Array, dict]:
  """RAMBO's model loss: the data NLL (`ens.loss` summed over members, on `data` [B]) plus
  `adv_weight` times mean(log p(y | s, a) * A) on the sampled model transitions (obs, action,
  y, advantage all [N, ...], y and A held constant). Lowering it lowers the likelihood of
  the samples with a high advantage for the policy and raises that of the low ones: a
  policy-gradient step of the model against the policy's value. Weight decay is the
  optimizer's."""
  lp = rambo_log_prob(ens.apply(params, obs, action), params.elites, jax.lax.stop_gradient(y))
  adv_loss = jnp.mean(lp * jax.lax.stop_gradient(advantage))
  sl_loss = model_training.data_nll(ens, params, data).sum()
  return adv_weight * adv_loss + sl_loss, {"adv_loss": adv_loss, "sl_loss": sl_loss,
                                           "log_prob": lp.mean()}


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
    model_opt: RAMBO's optimizer state of the model's adversarial updates (() otherwise).
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
  model_opt: Any = ()


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


def _bc_update(sac: sac_lib.SAC, opt: optax.GradientTransformation, batch_size: int,
               real: buffer_lib.BufferState, sac_state: sac_lib.SACState, k: PRNGKey):
  """One behaviour-cloning step of the SAC actor's mean action (MSE to the data's actions)."""
  batch = buffer_lib.sample(real, k, batch_size)

  def loss(actor):
    mean, _ = sac.actor_dist(actor, sac.normalize(sac_state.params, batch.obs))
    return jnp.mean(jnp.square(jnp.tanh(mean) - batch.action))

  l, g = jax.value_and_grad(loss)(sac_state.params.actor)
  upd, opt_state = opt.update(g, sac_state.actor_opt, sac_state.params.actor)
  actor = optax.apply_updates(sac_state.params.actor, upd)
  new = sac_state._replace(params=sac_state.params._replace(actor=actor), actor_opt=opt_state,
                           steps=sac_state.steps + 1)
  return new, {"bc_loss": l}


def _rambo_optimizer(config: Config) -> optax.GradientTransformation:
  """RAMBO's model optimizer: Adam at rambo_adv_lr with the fit's weight decay (OfflineRL-Kit
  adds the same per-layer decay to the adversarial loss)."""
  return model_training.make_optimizer(dataclasses.replace(
      config.fit, learning_rate=config.rambo_adv_lr))


def _init(parts: Parts, config: Config, key: PRNGKey) -> State:
  env, ds = parts.env, parts.dataset
  a = ds.arrays
  real = buffer_lib.from_numpy(a["observations"], a["actions"], a["rewards"],
                               a["next_observations"], a["terminals"], a["timeouts"])
  key, sac_key, model_key, fit_key, thr_key, bc_key = jax.random.split(key, 6)
  sac_state = parts.sac.init(sac_key)
  sac_state = parts.sac.observe(sac_state, real.data.obs)
  if config.algo == "rambo" and config.bc_pretrain_epochs > 0:
    # RAMBO starts from a behaviour-cloned policy; SAC's actor optimizer then starts afresh.
    opt = optax.adam(config.sac.actor_lr)
    n = max(1, config.bc_pretrain_epochs * ds.size // config.sac.batch_size)
    bc = functools.partial(_bc_update, parts.sac, opt, config.sac.batch_size, real)
    sac_state, _ = jax.lax.scan(bc, sac_state, jax.random.split(bc_key, n))
    sac_state = sac_state._replace(actor_opt=opt.init(sac_state.params.actor),
                                   steps=jnp.zeros((), jnp.int32))
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
  model_opt = ()
  if config.algo == "rambo":
    model_opt = _rambo_optimizer(config).init(model_training.trainable(params))
  return State(real=real, model_buffer=buffer_lib.init(config.model_capacity, example),
               model=params, sac=sac_state, key=key, epoch=jnp.zeros((), jnp.int32),
               model_holdout_mse=jnp.mean(fit_metrics.best_holdout_mse),
               morel_threshold=threshold, dynamics_reward=dyn_reward,
               model_opt=model_opt)


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
  bc_update = functools.partial(_bc_update, sac, optax.adam(config.sac.actor_lr), B)
  morec = parts.dynamics_reward

  def morec_step(drp, params, key, obs, action) -> models.ModelStep:
    """MOREC's filter: of N ensemble samples per row, the one the dynamics reward prefers."""
    cand = dr_lib.draw_candidates(ens, params, key, obs, action, config.morec.num_candidates)
    scores = morec.score(drp, obs[None], action[None], cand.next_obs)         # [C, N]
    next_obs, _, _, reward = dr_lib.select(scores, cand.next_obs, cand.reward)
    return models.ModelStep(next_obs=next_obs, reward=reward)

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

  A = env.action_size
  R = config.cql_actions

  def combo_loss(batch: Transition) -> Callable:
    """COMBO's critic regulariser on `batch` (real rows first) as SAC's `extra_loss`:
    beta * sum over the two critics of `cql_penalty`. The Q values pushed down are at the
    batch's states (all rows, or the model rows with cql_states="model"), on R actions each
    from pi(.|s), from pi(.|s') and uniform on [-1, 1]^A, each less its log density (CQL's
    importance-sampled soft-max); the ones pushed up are the real rows' own. Only the
    critics move (the actor is held constant)."""
    down = batch if config.cql_states == "mix" else jax.tree.map(lambda x: x[n_real:], batch)
    real_rows = jax.tree.map(lambda x: x[:n_real], batch)

    def loss(p: sac_lib.SACParams, key: PRNGKey):
      sg = jax.lax.stop_gradient
      k_now, k_next, k_unif = jax.random.split(key, 3)
      obs, nxt = sac.normalize(p, down.obs), sac.normalize(p, down.next_obs)
      n = obs.shape[0]

      def policy_actions(o, k):
        mean, log_std = sac.actor_dist(sg(p.actor), o)
        return sac_lib.tanh_gaussian_sample(mean[None], log_std[None],
                                            jax.random.normal(k, (R, n, A)))
      a_now, lp_now = policy_actions(obs, k_now)
      a_next, lp_next = policy_actions(nxt, k_next)
      a_unif = jax.random.uniform(k_unif, (R, n, A), minval=-1.0, maxval=1.0)
      actions = jnp.concatenate([a_now, a_next, a_unif])                 # [3R, n, A]
      log_dens = jnp.concatenate([lp_now, lp_next,
                                  jnp.full((R, n), A * np.log(0.5), jnp.float32)])
      q = sac.critic_apply(p.critic, jnp.broadcast_to(obs, (3 * R, *obs.shape)), actions)
      q_sampled = jnp.moveaxis(q - sg(log_dens), 1, -1)                 # [2, n, 3R]
      q_data = sac.critic_apply(p.critic, sac.normalize(p, real_rows.obs), real_rows.action)
      pen = cql_penalty(q_sampled, q_data, config.cql_temperature)      # [2]
      return config.penalty_coef * pen.sum(), {"cql_penalty": pen.mean(),
                                               "q_data": q_data.mean()}
    return loss

  def rambo_model_update(state: State, key: PRNGKey) -> tuple[State, dict]:
    """`rambo_adv_steps` adversarial model steps (RAMBO's `update_dynamics`): each on
    `rambo_adv_batch` rows of a model rollout from dataset states under the current policy
    (restarted every `rambo_adv_rollout_length` steps) and as many dataset rows."""
    opt = _rambo_optimizer(config)
    sp = state.sac.params
    Na, L = config.rambo_adv_batch, config.rambo_adv_rollout_length

    def min_q(o, a):
      return sac.critic_apply(sp.critic, sac.normalize(sp, o), a).min(0)

    def adv_step(carry, xs):
      params, opt_state, obs = carry
      t, k = xs
      k_start, k_act, k_member, k_noise, k_sl = jax.random.split(k, 5)
      obs = jnp.where(t % L == 0, buffer_lib.sample(state.real, k_start, Na).obs, obs)
      action = sac.act(sp, obs, k_act)
      out = ens.apply(params, obs, action)                               # [E, Na, D]
      y = jax.lax.stop_gradient(models.ensemble.sample_member(out, params.elites, k_member,
                                                              k_noise))
      next_obs, reward = obs + y[:, :O], y[:, O]
      term = parts.termination_fn(obs, action, next_obs).astype(jnp.float32)
      q_next = min_q(next_obs, sac.act(sp, next_obs, k_act, deterministic=True))
      adv = rambo_advantage(reward, term, q_next, min_q(obs, action), gamma)
      data = buffer_lib.sample(state.real, k_sl, Na)

      params, opt_state, aux = model_training.optimizer_step(
          opt, opt_state, params,
          lambda p: rambo_model_loss(ens, p, config.penalty_coef, obs, action, y, adv, data))
      return (params, opt_state, next_obs), aux

    n = config.rambo_adv_steps
    obs0 = jnp.zeros((Na, O), jnp.float32)
    (params, opt_state, _), aux = jax.lax.scan(
        adv_step, (state.model, state.model_opt, obs0),
        (jnp.arange(n), jax.random.split(key, n)))
    m = {f"model/rambo_{k}": v.mean() for k, v in aux.items()}
    return state._replace(model=params, model_opt=opt_state), m

  def sac_update(state: State):
    def body(sac_state, k):
      k_batch, k_pen, k_sac = jax.random.split(k, 3)
      batch = mbpo.sac_batch(state.real, state.model_buffer, k_batch, n_real, n_model,
                             jnp.asarray(config.model_capacity, jnp.int32))
      extra = {}
      if algo == "mobile":
        batch, pen = mobile_batch(state, sac_state, batch, k_pen)
        extra = {"mobile_penalty": pen.mean()}
      if algo == "combo":
        sac_state, aux = sac.update(sac_state, batch, k_sac, extra_loss=combo_loss(batch))
      else:
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
      adv_metrics = {}
      if algo == "rambo" and config.rambo_adv_steps > 0:
        k_roll, k_adv = jax.random.split(k_roll)
        state, adv_metrics = rambo_model_update(state, k_adv)
      state, metrics = rollout(state, k_roll)
      metrics.update(adv_metrics)
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

# (h, CQL weight beta) for COMBO (`run_combo.py`'s list; its default is (5, 5.0)) and (h,
# adversarial weight lambda) for RAMBO (`run_rambo.py`'s list; default (5, 3e-4)).
COMBO_SETTINGS = {
    "halfcheetah-medium": (5, 0.5), "hopper-medium": (5, 5.0), "walker2d-medium": (1, 5.0),
    "halfcheetah-medium-replay": (5, 0.5), "hopper-medium-replay": (5, 0.5),
    "walker2d-medium-replay": (1, 0.5), "halfcheetah-medium-expert": (5, 5.0),
    "hopper-medium-expert": (5, 5.0), "walker2d-medium-expert": (1, 5.0)}
RAMBO_SETTINGS = {
    "halfcheetah-medium": (5, 3e-4), "hopper-medium": (5, 3e-4), "walker2d-medium": (5, 0.0),
    "halfcheetah-medium-replay": (5, 3e-4), "hopper-medium-replay": (5, 3e-4),
    "walker2d-medium-replay": (5, 0.0), "halfcheetah-medium-expert": (5, 0.0),
    "hopper-medium-expert": (5, 0.0), "walker2d-medium-expert": (2, 3e-4)}
_DEFAULT_SETTING = {"mopo": (5, 2.5), "mobile": (5, 1.5), "combo": (5, 5.0),
                    "rambo": (5, 3e-4)}


def preset_for(algo: str, dataset: str, **overrides: Any) -> Config:
  """The paper setting of `algo` on a named dataset (OfflineRL-Kit's per-dataset values;
  COMBO and RAMBO also take its real_ratio 0.5 and epoch counts, 1000 and 2000, and COMBO its
  3 x 256 actor and critics)."""
  if algo not in ALGOS:
    raise ValueError(f"preset_for: algo {algo!r} is unknown; valid: {', '.join(ALGOS)}")
  table = {"mopo": MOPO_SETTINGS, "mobile": MOBILE_SETTINGS, "combo": COMBO_SETTINGS,
           "rambo": RAMBO_SETTINGS}.get(algo, {})
  h, coef = table.get(dataset, _DEFAULT_SETTING.get(algo, (5, 1.5)))
  fit = OFFLINE_FIT if algo != "mobile" else dataclasses.replace(OFFLINE_FIT, max_epochs=30)
  kw: dict[str, Any] = dict(algo=algo, dataset=dataset, rollout_length=h, penalty_coef=coef,
                            fit=fit)
  if algo == "combo":
    kw.update(real_ratio=0.5, epochs=1000, sac=mbpo.SACConfig(
        hidden_sizes=(256, 256, 256), actor_lr=1e-4, critic_lr=3e-4, alpha_lr=1e-4))
  if algo == "rambo":
    kw.update(real_ratio=0.5, epochs=2000)
  kw.update(overrides)
  return Config(**kw)


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
QUICK_CQL_WEIGHT = 0.5
QUICK_ADV_WEIGHT = 3e-4

PRESETS: dict[str, Config] = {
    # Minutes on a 2-core CPU: our pendulum, small networks (not a paper setting).
    "quick": Config(algo="mopo", penalty_coef=1.0, **_QUICK),
    "quick_mobile": Config(algo="mobile", penalty_coef=0.5, mobile_samples=4, **_QUICK),
    "quick_morel": Config(algo="morel", **_QUICK),
    "quick_combo": Config(algo="combo", penalty_coef=QUICK_CQL_WEIGHT, **_QUICK),
    "quick_rambo": Config(algo="rambo", penalty_coef=QUICK_ADV_WEIGHT, rambo_adv_steps=500,
                          rambo_adv_batch=128, **_QUICK),
    "quick_bc": Config(algo="bc", **_QUICK),
    "quick_morec": Config(algo="mopo", penalty_coef=1.0, morec=_QUICK_MOREC, **_QUICK),
    "quick_morec_mobile": Config(algo="mobile", penalty_coef=0.5, mobile_samples=4,
                                 morec=_QUICK_MOREC, **_QUICK),
    # OfflineRL-Kit's settings on the Brax datasets (hours to days on a CPU).
    **{f"{algo}_{name}": preset_for(algo, name)
       for algo in ("mopo", "mobile", "combo", "rambo")
       for name in ("hopper-medium", "hopper-medium-replay", "halfcheetah-medium",
                    "walker2d-medium-replay")},
    **{f"morec_{algo}_{name}": preset_for(algo, name, morec=dr_lib.MorecConfig(enabled=True))
       for algo in ("mopo", "mobile") for name in ("hopper-medium", "hopper-medium-replay",
                                                   "halfcheetah-medium",
                                                   "halfcheetah-medium-replay")},
    "morel_hopper-medium": preset_for("morel", "hopper-medium"),
    "bc_hopper-medium": preset_for("bc", "hopper-medium"),
}
