"""MBPO: model-based policy optimization (Janner et al. 2019, "When to Trust Your Model"), one
compiled call per epoch.

An epoch is `epoch_length` (E) env steps, in blocks of `model_train_every` (F) steps. Each
block starts by refitting the ensemble (7 members, 5 elites, predicting the change in
observation and the reward) on every real transition until its holdout patience runs out
(as jannerm/mbpo and mbrl-lib do; `max_epochs` is only a safety cap), then starts M * F
branched rollouts from real observations: actions from the current SAC policy, a random elite
per row and step (`predict(mode="ts1")`), each rollout stopped by the env's known termination
function and after k steps, k following the schedule [min_epoch, max_epoch, min_len,
max_len]. The rollouts go into a fixed-capacity model buffer. Then F env steps, each followed
by G SAC updates on batches that mix `real_ratio` real transitions with model transitions.
After the E steps the policy is evaluated (deterministic actions, `eval_episodes` episodes).

Shapes never change and nothing is computed past k: k is a traced number, `branched_rollout`
is a `lax.while_loop` of k model steps that appends each step's still-running rows to the
model buffer as it goes, so a growing k never recompiles and costs k steps, not max_len. The
model buffer holds `retain_epochs * (E / F) * M * F * k_max` transitions, k_max the largest k
this run's epochs reach (`Config.max_rollout_length`), and SAC samples only from its newest
`retain_epochs * E * M * k` slots, the amount mbrl-lib's buffer (re-sized each epoch) would
hold. The whole epoch is a `lax.scan` of blocks, with no `lax.cond` on the step count, so
seeds vmap without running the fit every step (the fit's and the rollout's loops run, under
vmap, until the last seed is done).

`make(config)` returns the `Algorithm` that `mbrl_jax.run.train` drives; `make(config,
use_model=False)` is model-free SAC on the same loop (`mbrl_jax.algorithms.sac`).

Example (minutes of CPU, so skipped here):
  >>> from mbrl_jax import run
  >>> keys = jnp.stack([jax.random.key(s) for s in range(3)])
  >>> state, history = run.train(make(PRESETS["inverted_pendulum"]), keys)  # doctest: +SKIP
  >>> history["eval/return"].shape                                          # doctest: +SKIP
  (80, 3)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from brax.envs.base import Env

from mbrl_jax import data as buffer_lib
from mbrl_jax import checks
from mbrl_jax import envs
from mbrl_jax import models
from mbrl_jax import tree
from mbrl_jax.algorithms.base import Algorithm
from mbrl_jax.envs import acting
from mbrl_jax.policies import sac as sac_lib
from mbrl_jax.types import PRNGKey, Transition


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The dynamics ensemble (MBPO: 7 members of 4 x 200 swish, 5 elites, rewards learned).

  Attributes:
    num_members: ensemble members.
    num_elites: members used by the rollouts.
    hidden_sizes: hidden layer widths of each member.
    activation: hidden activation (see `mbrl_jax.models.ACTIVATIONS`).
    learn_logvar_bounds: learn the soft log-variance bounds.
  """

  num_members: int = 7
  num_elites: int = 5
  hidden_sizes: tuple[int, ...] = (200, 200, 200, 200)
  activation: str = "silu"
  learn_logvar_bounds: bool = True

  def __post_init__(self):
    checks.positive_int(self, "num_members")
    if not isinstance(self.num_elites, int) or not 1 <= self.num_elites <= self.num_members:
      checks.fail(self, "num_elites", f"must be in [1, num_members={self.num_members}], got "
                  f"{self.num_elites!r}")
    checks.widths(self, "hidden_sizes")
    checks.one_of(self, "activation", sorted(models.ACTIVATIONS))


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
  """Branched model rollouts.

  Attributes:
    schedule: (min_epoch, max_epoch, min_len, max_len): the rollout length is min_len up to
      epoch min_epoch, rises linearly to max_len at max_epoch, then stays (epochs count from
      1 here, as in mbrl-lib; lengths are truncated to integers).
    rollouts_per_step: M; each refit starts M * model_train_every rollouts.
    retain_epochs: epochs of model rollouts SAC samples from.
  """

  schedule: tuple[int, int, int, int] = (20, 100, 1, 15)
  rollouts_per_step: int = 400
  retain_epochs: int = 1

  def __post_init__(self):
    if len(self.schedule) != 4:
      checks.fail(self, "schedule", f"must be (min_epoch, max_epoch, min_len, max_len), got "
                  f"{self.schedule}")
    min_epoch, max_epoch, min_len, max_len = self.schedule
    if not 1 <= min_len <= max_len:
      checks.fail(self, "schedule", f"lengths must satisfy 1 <= min_len <= max_len, got "
                  f"{self.schedule}")
    if max_epoch < min_epoch:
      checks.fail(self, "schedule", f"max_epoch must be >= min_epoch, got {self.schedule}")
    checks.positive_int(self, "rollouts_per_step", "retain_epochs")


@dataclasses.dataclass(frozen=True)
class SACConfig:
  """The SAC learner (see `mbrl_jax.policies.sac.make_sac`) and its batch size.

  Attributes:
    hidden_sizes: actor and critic widths.
    actor_lr, critic_lr, alpha_lr: Adam step sizes.
    gamma: discount.
    tau: Polyak rate of the target critics.
    init_alpha: initial entropy temperature.
    target_entropy: None for -|A|.
    learn_alpha: tune alpha or keep it fixed.
    actor_update_every: actor and alpha step on every n-th update only (mbrl-lib's
      sac_actor_update_frequency).
    target_update_every: Polyak step on every m-th update only (mbrl-lib's
      sac_critic_target_update_frequency).
    normalize_observations: standardise the SAC networks' inputs with running statistics of
      every real observation (as Brax's SAC does; the paper's SAC does not).
    batch_size: transitions per SAC update.
  """

  hidden_sizes: tuple[int, ...] = (256, 256)
  actor_lr: float = 3e-4
  critic_lr: float = 3e-4
  alpha_lr: float = 3e-4
  gamma: float = 0.99
  tau: float = 0.005
  init_alpha: float = 1.0
  target_entropy: float | None = None
  learn_alpha: bool = True
  actor_update_every: int = 1
  target_update_every: int = 1
  normalize_observations: bool = False
  batch_size: int = 256

  def __post_init__(self):
    checks.positive_int(self, "batch_size")
    try:                                   # make_sac checks the rest and names the argument
      _make_sac(self, obs_size=1, action_size=1)
    except ValueError as e:
      raise ValueError(f"{checks.name(self)}: {str(e).removeprefix('make_sac: ')}") from None


def _make_sac(s: SACConfig, obs_size: int, action_size: int) -> sac_lib.SAC:
  return sac_lib.make_sac(
      obs_size, action_size, hidden_sizes=s.hidden_sizes, actor_lr=s.actor_lr,
      critic_lr=s.critic_lr, alpha_lr=s.alpha_lr, gamma=s.gamma, tau=s.tau,
      init_alpha=s.init_alpha, target_entropy=s.target_entropy, learn_alpha=s.learn_alpha,
      actor_update_every=s.actor_update_every, target_update_every=s.target_update_every,
      normalize_observations=s.normalize_observations)


# The model fit of the paper presets and `Config`'s default: jannerm/mbpo's
# (`mbpo/models/constructor.py`, `BNN.train` as `mbpo/algorithms/mbpo.py::_train_model` calls
# it), run until the holdout patience runs out. See the table beside PRESETS for each value.
MBPO_FIT = models.FitConfig(
    learning_rate=1e-3, weight_decay=(2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4), batch_size=256,
    max_epochs=1000, holdout_ratio=0.2, max_holdout=5000, patience=6, improvement_threshold=0.01,
    weight_decay_mode="l2", normalize_targets=False)


@dataclasses.dataclass(frozen=True)
class Config:
  """An MBPO run.

  Attributes:
    env: environment name; needs a termination function (`mbrl_jax.envs.has_termination_fn`).
    env_steps: env-step budget, initial exploration included; the run does
      (env_steps - init_exploration_steps) // epoch_length epochs.
    epoch_length: E, env steps per epoch (one compiled call, then an evaluation).
    init_exploration_steps: env steps with uniformly random actions before the first epoch.
    model_train_every: F, env steps between model refits (and rollout batches); divides E.
    updates_per_step: G, SAC updates after every env step.
    real_ratio: fraction of each SAC batch drawn from real transitions.
    episode_length: time limit of training and evaluation episodes (None: the env's default).
    eval_episodes: deterministic evaluation episodes after each epoch.
    model: the dynamics ensemble.
    fit: how the ensemble is refitted (on all real data, each time).
    rollout: branched rollouts.
    sac: the SAC learner.
  """

  env: str = "hopper"
  env_steps: int = 30_000
  epoch_length: int = 1000
  init_exploration_steps: int = 5000
  model_train_every: int = 250
  updates_per_step: int = 20
  real_ratio: float = 0.05
  episode_length: int | None = None
  eval_episodes: int = 5
  model: ModelConfig = ModelConfig()
  fit: models.FitConfig = MBPO_FIT
  rollout: RolloutConfig = RolloutConfig()
  sac: SACConfig = SACConfig()

  def __post_init__(self):
    envs.check_continuous_env(self)
    checks.positive_int(self, "env_steps", "epoch_length", "model_train_every",
                        "updates_per_step", "eval_episodes")
    checks.int_at_least(self, "init_exploration_steps", 0)
    if self.epochs < 1:
      checks.fail(self, "env_steps", f"({self.env_steps}) leaves no epoch after "
                  f"init_exploration_steps={self.init_exploration_steps} with epoch_length="
                  f"{self.epoch_length}")
    if self.epoch_length % self.model_train_every:
      checks.fail(self, "model_train_every", f"({self.model_train_every}) must divide "
                  f"epoch_length ({self.epoch_length})")
    if self.episode_length is not None:
      checks.positive_int(self, "episode_length")
    checks.in_range(self, "real_ratio", 0.0, 1.0)
    decay = self.fit.weight_decay
    if isinstance(decay, tuple) and len(decay) != len(self.model.hidden_sizes) + 1:
      checks.fail(self, "fit", f"has {len(decay)} per-layer weight decays; the model has "
                  f"{len(self.model.hidden_sizes) + 1} dense layers (hidden_sizes "
                  f"{self.model.hidden_sizes} and the output layer)")
    if self.model.num_elites > self.rollout_batch:
      checks.fail(self, "rollout", f"gives fewer rollouts ({self.rollout_batch}) than elites "
                  f"({self.model.num_elites})")

  @property
  def epochs(self) -> int:
    return (self.env_steps - self.init_exploration_steps) // self.epoch_length

  @property
  def real_capacity(self) -> int:
    return self.init_exploration_steps + self.epochs * self.epoch_length

  @property
  def rollout_batch(self) -> int:
    """Rollouts started at each refit, M * F."""
    return self.rollout.rollouts_per_step * self.model_train_every

  @property
  def max_rollout_length(self) -> int:
    """The largest k this run's epochs reach: `rollout_length(schedule, epochs - 1)`."""
    return _length_at(self.rollout.schedule, self.epochs - 1)

  @property
  def model_capacity(self) -> int:
    """Model-buffer slots: every rollout step of `retain_epochs` epochs at the largest k the
    run reaches (`max_rollout_length`), what SAC's window can ask for at most."""
    refits = self.epoch_length // self.model_train_every
    return self.rollout_batch * self.max_rollout_length * refits * self.rollout.retain_epochs

  @property
  def real_batch(self) -> int:
    """Real transitions in each SAC batch (the rest come from the model buffer)."""
    return int(round(self.real_ratio * self.sac.batch_size))


# Where each value of the paper presets (inverted_pendulum, hopper, walker2d, halfcheetah; not
# quick) comes from. "MBPO" is jannerm/mbpo at ac694ff: `examples/config/<env>/0.py` (cfg),
# `examples/development/variants.py` (var), `mbpo/models/constructor.py` and `bnn.py`,
# `softlearning/algorithms/sac.py`. "mbrl-lib" is facebookresearch/mbrl-lib at 3f93ccc:
# `mbrl/examples/conf/overrides/mbpo_<env>.yaml` (ovr), `conf/algorithm/mbpo.yaml` (alg),
# `conf/dynamics_model/gaussian_mlp_ensemble.yaml` (dyn). Where they differ, the presets
# follow MBPO (the paper's code) unless said otherwise.
#
# Each field: the preset's value; MBPO's; mbrl-lib's ("same" where it agrees).
#   epoch_length E: 1000 (IP 250). MBPO cfg epoch_length. mbrl-lib ovr epoch_length: same.
#   init_exploration_steps: 5000 (IP 500) uniformly random actions. MBPO var MBPO
#     n_initial_exploration_steps 5000, cfg IP 500, UniformPolicy (examples/development/
#     main.py). mbrl-lib alg initial_exploration_steps 5000 (IP too), acting with SAC.
#   env_steps (exploration included): hopper 125k, walker2d 300k, halfcheetah 400k (mbrl-lib
#     ovr num_steps, which counts after the exploration); IP 20.5k (MBPO cfg n_epochs 80:
#     500 + 80 x 250). MBPO var n_epochs elsewhere runs 1000-3000 epochs (until stopped).
#   model_train_every F: 250, refit at the start of each block. MBPO cfg model_train_freq,
#     same. mbrl-lib ovr freq_train_model 250, refit after the block's last step.
#   updates_per_step G: hopper 20, walker2d 20, halfcheetah 40, IP 10. MBPO cfg
#     n_train_repeat, same. mbrl-lib ovr num_sac_updates_per_step 40, 20, 10, 10.
#   real_ratio: 0.05. MBPO cfg real_ratio, same. mbrl-lib alg real_data_ratio 0.0.
#   eval_episodes: 5, ours (steadier curves; learning is unchanged). MBPO cfg
#     eval_n_episodes 1. mbrl-lib alg num_eval_episodes 1.
#   model.num_members / num_elites: 7 / 5. MBPO cfg num_networks / num_elites, same.
#     mbrl-lib dyn ensemble_size 7, ovr num_elites 5, same.
#   model.hidden_sizes, activation: 4 x 200, silu. MBPO constructor.py: 4 FC(200, swish),
#     same. mbrl-lib dyn num_layers 4, hid_size 200, SiLU, same.
#   model.learn_logvar_bounds: True. MBPO bnn.py trains max/min_logvar (0.01 penalty).
#     mbrl-lib dyn learn_logvar_bounds false.
#   fit.learning_rate: 1e-3. MBPO constructor.py Adam 0.001. mbrl-lib ovr model_lr, same.
#   fit.weight_decay: per layer 2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4 (output layer last).
#     MBPO constructor.py FC(weight_decay=...), same. mbrl-lib ovr model_wd 1e-5, all layers.
#   fit.weight_decay_mode: "l2". MBPO fc.py adds wd * l2_loss(W) = wd / 2 |W|^2 to the loss;
#     mbrl-lib torch Adam(weight_decay) adds wd * W to the gradient: both are this mode.
#   fit.batch_size: 256. MBPO _train_model batch_size=256. mbrl-lib ovr model_batch_size.
#   fit.holdout_ratio: 0.2. MBPO holdout_ratio=0.2. mbrl-lib ovr validation_ratio 0.2.
#   fit.max_holdout: 5000. MBPO BNN.train max_logging=5000. mbrl-lib: no cap.
#   fit.patience: 6. MBPO max_epochs_since_update=5, and BNN._save_best stops when more than
#     5 epochs passed without improvement, i.e. after 6; ours stops after `patience`.
#     mbrl-lib ovr patience 5 (walker 10), stopping after that many.
#   fit.improvement_threshold: 0.01 relative. MBPO _save_best 0.01. mbrl-lib ModelTrainer
#     improvement_threshold 0.01.
#   fit.max_epochs: 1000, a safety cap (fits end on patience). MBPO max_epochs=None.
#     mbrl-lib num_epochs_train_model unset (None).
#   fit.normalize_targets: False (inputs standardised only). MBPO bnn.py scaler.fit(inputs).
#     mbrl-lib alg normalize: the model's input normaliser. Same.
#   fit.bootstrap: True, redrawn every epoch. MBPO draws each member's rows once per fit and
#     reshuffles them each epoch (a difference of method, kept).
#   rollout.schedule: hopper (20, 150, 1, 15), walker2d and halfcheetah (20, 150, 1, 1), IP
#     (1, 15, 1, 1). MBPO cfg rollout_schedule, same (the paper's appendix table gives hopper
#     20 -> 100; both codes use 150). mbrl-lib ovr rollout_schedule, same. k of epoch e is
#     mbrl-lib's truncated_linear(..., e + 1); MBPO's _set_rollout_length uses e itself.
#   rollout.rollouts_per_step M: 400, M F = 100,000 per refit. MBPO cfg rollout_batch_size
#     100e3, same. mbrl-lib ovr effective_model_rollouts_per_step 400, same.
#   rollout.retain_epochs: 1. MBPO cfg model_retain_epochs 1. mbrl-lib ovr
#     num_epochs_to_retain_sac_buffer 1.
#   sac.hidden_sizes: 256, 256. MBPO var M = 256 (policy and Q). mbrl-lib ovr
#     sac_hidden_size 512 (walker 1024, IP 256).
#   sac.actor_lr, critic_lr, alpha_lr: 3e-4. MBPO var lr 3e-4 (sac.py: policy and Q; alpha
#     with the policy's). mbrl-lib ovr sac_lr 3e-4 (walker 1e-4).
#   sac.gamma, tau: 0.99, 0.005. MBPO cfg discount, tau. mbrl-lib ovr sac_gamma, sac_tau.
#   sac.target_update_every: 1. MBPO var target_update_interval 1. mbrl-lib ovr
#     sac_target_update_interval 4 (hopper, walker), else 1.
#   sac.actor_update_every: 1. Both update the actor on every update.
#   sac.init_alpha, learn_alpha: 1.0, learned. MBPO sac.py log_alpha starts at 0, learned.
#     mbrl-lib: fixed 0.2 on hopper and walker, learned on IP and halfcheetah.
#   sac.target_entropy: hopper -1, walker2d -3, halfcheetah -3, IP -0.05. MBPO cfg
#     target_entropy, same. mbrl-lib ovr sac_target_entropy -1 where alpha is learned.
#   sac.batch_size: 256. MBPO var sampler batch_size 256. mbrl-lib ovr sac_batch_size 256.
#   sac.normalize_observations: False. Neither standardises SAC's inputs.
#   episode_length: the env's 1000. MBPO var max_path_length 1000; mbrl-lib gym's limit.
#
# Changed here (before: 25 / 20 fit epochs at most, weight decay 5e-5 on every layer, patience
# 5, no holdout cap, standardised targets; hopper's schedule (20, 100, 1, 15), the paper's
# appendix table, where both codes use (20, 150, 1, 15); inverted_pendulum G = 20, 250
# exploration steps and 10k env steps, where MBPO's config has 10, 500 and 20.5k).
# `SACConfig.normalize_observations` (Brax's SAC standardises its inputs) stays off: it lifted
# our model-free SAC on Brax halfcheetah from -74 at 30k env steps to 589-3616 between 25k and
# 30k, but MBPO with it was not better on one hopper run (to 19k) or one halfcheetah run (797
# against 1482 at 25k). Brax's envs force no change beyond the observation
# (`mbrl_jax.envs.registry`: root x position included, hopper's velocities unclipped) so that
# rewards and terminations are functions of (obs, action, next_obs).
PRESETS: dict[str, Config] = {
    # A minute or two on a 2-core CPU: our pendulum, small networks, short rollouts (not a
    # paper setting; for trying the loop).
    "quick": Config(
        env="pendulum", env_steps=2000, epoch_length=200, init_exploration_steps=200,
        model_train_every=100, updates_per_step=5, real_ratio=0.05, eval_episodes=3,
        model=ModelConfig(num_members=7, num_elites=5, hidden_sizes=(64, 64)),
        fit=models.FitConfig(learning_rate=1e-3, weight_decay=5e-5, batch_size=64,
                             max_epochs=10, holdout_ratio=0.2, patience=5),
        rollout=RolloutConfig(schedule=(1, 5, 1, 3), rollouts_per_step=20, retain_epochs=1),
        sac=SACConfig(hidden_sizes=(64, 64), actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3,
                      batch_size=128)),
    # MBPO's InvertedPendulum: E = 250, 500 random steps, 80 epochs, k = 1, G = 10, target
    # entropy -0.05.
    "inverted_pendulum": Config(
        env="inverted_pendulum", env_steps=20_500, epoch_length=250, init_exploration_steps=500,
        model_train_every=250, updates_per_step=10, real_ratio=0.05, fit=MBPO_FIT,
        rollout=RolloutConfig(schedule=(1, 15, 1, 1), rollouts_per_step=400, retain_epochs=1),
        sac=SACConfig(target_entropy=-0.05)),
    # MBPO's Hopper: k from 1 to 15 over epochs 20..150, G = 20, target entropy -1.
    "hopper": Config(
        env="hopper", env_steps=125_000, epoch_length=1000, init_exploration_steps=5000,
        model_train_every=250, updates_per_step=20, real_ratio=0.05, fit=MBPO_FIT,
        rollout=RolloutConfig(schedule=(20, 150, 1, 15), rollouts_per_step=400, retain_epochs=1),
        sac=SACConfig(target_entropy=-1.0)),
    # MBPO's Walker2d: k = 1, G = 20, target entropy -3.
    "walker2d": Config(
        env="walker2d", env_steps=300_000, epoch_length=1000, init_exploration_steps=5000,
        model_train_every=250, updates_per_step=20, real_ratio=0.05, fit=MBPO_FIT,
        rollout=RolloutConfig(schedule=(20, 150, 1, 1), rollouts_per_step=400, retain_epochs=1),
        sac=SACConfig(target_entropy=-3.0)),
    # MBPO's HalfCheetah: k = 1, G = 40, target entropy -3.
    "halfcheetah": Config(
        env="halfcheetah", env_steps=400_000, epoch_length=1000, init_exploration_steps=5000,
        model_train_every=250, updates_per_step=40, real_ratio=0.05, fit=MBPO_FIT,
        rollout=RolloutConfig(schedule=(20, 150, 1, 1), rollouts_per_step=400, retain_epochs=1),
        sac=SACConfig(target_entropy=-3.0)),
}
"""The MBPO code's settings per env (jannerm/mbpo; see the table above for each value's
source and where mbrl-lib differs).

What Brax forces: its hopper/walker2d/halfcheetah observations here include the root x
position (`mbrl_jax.envs.make` sets exclude_current_positions_from_observation=False so the
reward is a function of the observations) and hopper's velocities are unclipped; episodes are
1000 steps of Brax's generalized pipeline, whose dynamics constants differ from MuJoCo's, so
returns are not comparable number for number with the paper's gym results."""


def check_model_run(config: Config) -> None:
  """What a run with a model needs beyond a valid config (model-free SAC on this loop does
  not): a termination function for the rollouts and real data for the first fit."""
  if not envs.has_termination_fn(config.env):
    checks.fail(config, "env", f"{config.env!r} has no termination function; MBPO needs one of "
                f"{', '.join(envs.task_fn_names())} or a dmc/ task (register one with "
                f"mbrl_jax.envs.task_fns.register)")
  if config.init_exploration_steps < 1:
    checks.fail(config, "init_exploration_steps", "must be >= 1: the first model fit needs "
                "real data")


def _length_at(schedule: tuple[int, int, int, int], epoch: int) -> int:
  """`rollout_length` in Python integers, for static sizes (the same exact arithmetic)."""
  min_epoch, max_epoch, min_len, max_len = schedule
  x = epoch + 1
  if x <= min_epoch:
    return min_len
  if x >= max_epoch:
    return max_len
  return min_len + (x - min_epoch) * (max_len - min_len) // (max_epoch - min_epoch)


def rollout_length(schedule: tuple[int, int, int, int], epoch: jax.Array | int) -> jax.Array:
  """k for the 0-based `epoch`: mbrl-lib's int(truncated_linear(*schedule, epoch + 1)).

  min_len up to x = epoch + 1 = min_epoch, then min_len + (x - min_epoch) * (max_len -
  min_len) / (max_epoch - min_epoch) truncated, max_len from max_epoch on; in integer
  arithmetic, so a length that is an exact integer is never truncated one below it by
  rounding. (jannerm/mbpo's `_set_rollout_length` uses the 0-based epoch itself: its k rises
  one epoch later.)

  Returns:
    int32 [] (traced when `epoch` is).
  """
  min_epoch, max_epoch, min_len, max_len = schedule
  x = jnp.asarray(epoch, jnp.int32) + 1
  rising = min_len + (x - min_epoch) * (max_len - min_len) // max(max_epoch - min_epoch, 1)
  k = jnp.where(x <= min_epoch, min_len, jnp.where(x >= max_epoch, max_len, rising))
  return k.astype(jnp.int32)


@jax.custom_batching.custom_vmap
def _largest_over_seeds(x: jax.Array) -> jax.Array:
  """`x` itself; under `jax.vmap`, its largest value over the mapped axis, left unbatched.

  A `lax.while_loop` whose predicate is batched (differs per seed, or merely could) runs a
  `select` over its whole carry at every iteration under vmap, the model buffer included; an
  unbatched bound keeps the loop's body vmapped as written. Each seed still masks its own
  steps, so the extra iterations a shorter seed sees write nothing.
  """
  return x


@_largest_over_seeds.def_vmap
def _largest_over_seeds_vmap(axis_size, in_batched, x):
  del axis_size
  return (jnp.max(x, axis=0) if in_batched[0] else x), False


class RolloutStats(NamedTuple):
  """What one `branched_rollout` wrote.

  Attributes:
    transitions: valid model transitions written to the buffer.     # [] int32
    reward_sum: the sum of their rewards.                           # [] float32
  """

  transitions: jax.Array
  reward_sum: jax.Array


def branched_rollout(
    predict: Callable[[PRNGKey, jax.Array, jax.Array], models.ModelStep],
    policy: Callable[[PRNGKey, jax.Array], jax.Array],
    termination_fn: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
    key: PRNGKey,
    start_obs: jax.Array,
    length: jax.Array | int,
    buffer: buffer_lib.BufferState,
    halt_fn: Callable[[jax.Array, jax.Array, jax.Array], jax.Array] | None = None,
) -> tuple[buffer_lib.BufferState, RolloutStats]:
  """Model rollouts of `length` (k) steps from the rows of `start_obs`, written into `buffer`.

  The loop runs k steps (a `lax.while_loop` with k traced: a new k never recompiles), and
  stops early once every row has terminated. Step t acts with `policy`, predicts with
  `predict` (keys `fold_in(key, t)` split in two, for the policy and the model), and appends
  that step's rows that are still running to `buffer` (`add_masked`: step-major, rows in
  order, as MBPO adds each step's batch to its model pool). A row's rollout ends after the
  step on which `termination_fn` fires (that transition is kept, terminated = 1) or after k
  steps. Under `jax.vmap` over seeds, the loop runs to the largest k and last termination of
  any seed, each seed writing only its own steps, so every seed's result equals its
  unbatched one. Costs k model steps of N rows, not a static maximum.

  Args:
    predict: `predict(key, obs [N, O], action [N, A]) -> ModelStep` with a reward.
    policy: `policy(key, obs [N, O]) -> action [N, A]`.
    termination_fn: `(obs, action, next_obs) -> [N]` float 1.0 / 0.0.
    key: PRNG key.
    start_obs: [N, O] real observations to branch from.
    length: k, steps per rollout (traced is fine).
    buffer: a `Transition` buffer (`mbrl_jax.data`); rows past its capacity overwrite the
      oldest (ring).
    halt_fn: optional `(obs, action, next_obs) -> [N] bool`: where True the step is not
      written and the row's rollout ends there (not a terminal state; MOREC's filter).

  Returns:
    (buffer with the valid transitions appended, RolloutStats).
  """
  n = start_obs.shape[0]
  length = jnp.asarray(length, jnp.int32)
  bound = _largest_over_seeds(length)

  def cond(carry):
    t, _, alive, _, _ = carry
    return (t < bound) & _largest_over_seeds(jnp.any(alive))

  def body(carry):
    t, obs, alive, buf, stats = carry
    k_act, k_model = jax.random.split(jax.random.fold_in(key, t))
    action = policy(k_act, obs)
    out = predict(k_model, obs, action)
    done = termination_fn(obs, action, out.next_obs).astype(jnp.float32)
    valid = alive & (t < length)
    if halt_fn is not None:
      valid = valid & ~halt_fn(obs, action, out.next_obs).astype(bool)
    reward = out.reward.astype(jnp.float32)
    tr = Transition(obs=obs, action=action, reward=reward, next_obs=out.next_obs,
                    terminated=done, truncated=jnp.zeros((n,)))
    buf = buffer_lib.add_masked(buf, tr, valid)
    stats = RolloutStats(transitions=stats.transitions + valid.sum(dtype=jnp.int32),
                         reward_sum=stats.reward_sum + jnp.sum(jnp.where(valid, reward, 0.0)))
    return t + 1, out.next_obs, valid & (done < 0.5), buf, stats

  init = (jnp.asarray(0, jnp.int32), start_obs.astype(jnp.float32), jnp.ones((n,), bool),
          buffer, RolloutStats(jnp.asarray(0, jnp.int32), jnp.asarray(0.0, jnp.float32)))
  _, _, _, buffer, stats = jax.lax.while_loop(cond, body, init)
  return buffer, stats


class State(NamedTuple):
  """What an MBPO run carries from epoch to epoch (one seed; vmapped runs add a seed axis).

  Attributes:
    actor: the training env mid-episode, with its running return (`envs.acting.Actor`).
    real: every real transition.
    model_buffer: model rollouts (None without a model).
    fit_state: ensemble parameters and optimizer state (None without a model).
    sac: the SAC learner.
    key: the run's random key.
    epoch: epochs completed.                                     # [] int32
    env_steps: env steps taken, exploration included.             # [] int32
  """

  actor: acting.Actor
  real: buffer_lib.BufferState
  model_buffer: buffer_lib.BufferState | None
  fit_state: models.FitState | None
  sac: sac_lib.SACState
  key: PRNGKey
  epoch: jax.Array
  env_steps: jax.Array


class Parts(NamedTuple):
  """The pieces a run is built from (the model ones are None without a model)."""

  env: Env
  sac: sac_lib.SAC
  ensemble: models.Ensemble | None
  trainer: models.Trainer | None
  termination_fn: Callable | None


def make_parts(config: Config, *, use_model: bool = True) -> Parts:
  if use_model:
    check_model_run(config)
  env = envs.make(config.env, **({} if config.episode_length is None
                                  else dict(episode_length=config.episode_length)))
  sac = _make_sac(config.sac, env.observation_size, env.action_size)
  if not use_model:
    return Parts(env=env, sac=sac, ensemble=None, trainer=None, termination_fn=None)
  m = config.model
  ens = models.make_ensemble(
      env.observation_size, env.action_size, num_members=m.num_members,
      num_elites=m.num_elites, hidden_sizes=m.hidden_sizes, activation=m.activation,
      probabilistic=True, predict_reward=True, learn_logvar_bounds=m.learn_logvar_bounds)
  return Parts(env=env, sac=sac, ensemble=ens, trainer=models.make_trainer(ens, config.fit),
               termination_fn=envs.get_termination_fn(config.env))


def _init(parts: Parts, config: Config, key: PRNGKey) -> State:
  env = parts.env
  key, reset_key, explore_key, sac_key, model_key = jax.random.split(key, 5)
  example = Transition.zeros((env.observation_size,), env.action_size)
  real = buffer_lib.init(config.real_capacity, example)
  explore = acting.uniform_random(env.action_size)
  actor = acting.reset(env, explore, reset_key)
  n = config.init_exploration_steps
  if n:
    actor, tr, _, _ = acting.collect(env, explore, actor, explore_key, n)
    real = buffer_lib.add(real, tr)
  sac_state = parts.sac.init(sac_key)
  if n:
    sac_state = parts.sac.observe(sac_state, tr.obs)
  model_buffer = fit_state = None
  if parts.ensemble is not None:
    model_buffer = buffer_lib.init(config.model_capacity, example)
    fit_state = parts.trainer.init(parts.ensemble.init(model_key))
  return State(actor=actor, real=real, model_buffer=model_buffer, fit_state=fit_state,
               sac=sac_state, key=key, epoch=jnp.zeros((), jnp.int32),
               env_steps=jnp.asarray(n, jnp.int32))


def init(key: PRNGKey, config: Config, *, use_model: bool = True) -> State:
  """Fresh learner, model and buffers, after `init_exploration_steps` random env steps."""
  return _init(make_parts(config, use_model=use_model), config, key)


def evaluate(parts: Parts, config: Config, sac_params: sac_lib.SACParams,
             key: PRNGKey) -> jax.Array:
  """Returns of `eval_episodes` complete episodes with the deterministic policy,
  [eval_episodes]."""
  length = config.episode_length or envs.default_episode_length(config.env)
  policy = acting.stateless(lambda k, obs: parts.sac.act(sac_params, obs, k, deterministic=True))
  return acting.evaluate(parts.env, policy, key, config.eval_episodes, length).returns


def sac_batch(real: buffer_lib.BufferState, model_buffer: buffer_lib.BufferState | None,
              key: PRNGKey, n_real: int, n_model: int, window: jax.Array) -> Transition:
  """One SAC batch: `n_real` uniform real transitions, then `n_model` from the newest `window`
  slots of the model buffer (none when `n_model` is 0), [n_real + n_model, ...]."""
  k_real, k_model = jax.random.split(key)
  batch = buffer_lib.sample(real, k_real, n_real)
  if n_model == 0:
    return batch
  fake = buffer_lib.sample_newest(model_buffer, k_model, n_model, window)
  return jax.tree.map(lambda a, b: jnp.concatenate([a, b.astype(a.dtype)]), batch, fake)


def make_step(config: Config, parts: Parts | None = None, *,
              use_model: bool = True) -> Callable[[State], tuple[State, dict]]:
  """Returns `step(state) -> (state, metrics)`: one epoch (E env steps with their refits,
  rollouts and SAC updates, then an evaluation). Pure and unjitted; jit it (donating the
  state) or vmap it over seeds. Without a model (`use_model=False`) it is plain SAC on the
  same loop: every batch comes from the real buffer."""
  parts = parts or make_parts(config, use_model=use_model)
  use_model = parts.ensemble is not None
  env, sac = parts.env, parts.sac
  B = config.sac.batch_size
  n_real = B if not use_model else config.real_batch
  n_model = B - n_real
  refits = config.epoch_length // config.model_train_every

  def env_step(carry, _):
    state, window, episodes = carry
    key, k_act, k_upd = jax.random.split(state.key, 3)
    policy = acting.stateless(lambda k, obs: sac.act(state.sac.params, obs, k))
    actor, tr, _, ended = acting.step(env, policy, state.actor, k_act)
    episodes = jax.tree.map(jnp.add, episodes, ended)
    state = state._replace(actor=actor, real=buffer_lib.add(state.real, tr), key=key,
                           sac=sac.observe(state.sac, tr.obs[None]),
                           env_steps=state.env_steps + 1)

    def update(sac_state, k):
      k_batch, k_sac = jax.random.split(k)
      batch = sac_batch(state.real, state.model_buffer, k_batch, n_real, n_model, window)
      return sac.update(sac_state, batch, k_sac)

    sac_state, aux = jax.lax.scan(update, state.sac,
                                  jax.random.split(k_upd, config.updates_per_step))
    return (state._replace(sac=sac_state), window, episodes), jax.tree.map(jnp.mean, aux)

  def block(carry, _):
    """Refit and roll out (with a model), then F env steps."""
    state, episodes = carry
    k = rollout_length(config.rollout.schedule, state.epoch) if use_model else 0
    window = jnp.asarray(0, jnp.int32)
    model_metrics = {}
    if use_model:
      key, fit_key, start_key, roll_key = jax.random.split(state.key, 4)
      fit_state, fit_metrics = parts.trainer.fit(
          fit_key, state.fit_state, state.real.data, buffer_lib.valid_mask(state.real))
      params = fit_state.params
      start = buffer_lib.sample(state.real, start_key, config.rollout_batch).obs
      predict = lambda kk, obs, a: parts.ensemble.predict(params, kk, obs, a, mode="ts1")
      policy = lambda kk, obs: sac.act(state.sac.params, obs, kk)
      model_buffer, stats = branched_rollout(predict, policy, parts.termination_fn, roll_key,
                                             start, k, state.model_buffer)
      window = (config.rollout.retain_epochs * refits * config.rollout_batch * k).astype(
          jnp.int32)
      state = state._replace(fit_state=fit_state, model_buffer=model_buffer, key=key)
      last = jnp.maximum(fit_metrics.epochs, 1) - 1
      model_metrics = {
          "model/holdout_mse": jnp.mean(fit_metrics.best_holdout_mse),
          "model/train_loss": jnp.nanmean(fit_metrics.train_loss[last]),
          "model/epochs": fit_metrics.epochs,
          "nonfinite/model_fit": fit_metrics.nonfinite_data | fit_metrics.nonfinite_loss,
          "rollout/transitions": stats.transitions,
          "rollout/mean_length": stats.transitions / config.rollout_batch,
          "rollout/reward": stats.reward_sum / jnp.maximum(stats.transitions, 1)}
    (state, _, episodes), sac_metrics = jax.lax.scan(
        env_step, (state, window, episodes), None, length=config.model_train_every)
    sac_metrics = {f"sac/{k}": jnp.mean(v) for k, v in sac_metrics.items()}
    return (state, episodes), {**model_metrics, **sac_metrics}

  def step(state: State) -> tuple[State, dict]:
    (state, episodes), metrics = jax.lax.scan(block, (state, acting.Episodes.none()), None,
                                              length=refits)
    key, eval_key = jax.random.split(state.key)
    returns = evaluate(parts, config, state.sac.params, eval_key)
    out = {name: (jnp.any(v) if name.startswith("nonfinite/") else jnp.mean(v))
           for name, v in metrics.items()}
    if use_model:
      out["rollout/length"] = rollout_length(config.rollout.schedule, state.epoch)
      out["rollout/buffer_size"] = state.model_buffer.size
      out["nonfinite/model_params"] = tree.nonfinite(state.fit_state.params)
    out.update({
        "eval/return": returns.mean(), "eval/return_min": returns.min(),
        "eval/return_max": returns.max(), "env_steps": state.env_steps,
        "train/return": episodes.mean_return(),
        "train/episode_length": episodes.mean_length(),
        "train/episodes": episodes.count,
        "nonfinite/sac": tree.nonfinite(state.sac.params) | ~jnp.isfinite(
            out["sac/critic_loss"] + out["sac/actor_loss"])})
    return state._replace(key=key, epoch=state.epoch + 1), out

  return step


def nonfinite_flags(use_model: bool) -> dict[str, str]:
  """The step's `nonfinite/...` metrics and the component each covers."""
  flags = {"nonfinite/sac": "the SAC parameters or losses"}
  if use_model:
    flags = {"nonfinite/model_fit": "a model fit's data or loss",
             "nonfinite/model_params": "the model parameters", **flags}
  return flags


@functools.lru_cache(maxsize=16)
def make(config: Config, *, use_model: bool = True) -> Algorithm:
  """MBPO (or, with `use_model=False`, model-free SAC on the same loop; the model, rollout
  and real_ratio settings are then ignored) as an `Algorithm` for `mbrl_jax.run.train`:
  random exploration in init, then `config.epochs` epochs, each one compiled call.

  The history holds, per epoch [epochs, (S)]: "eval/return" (mean deterministic evaluation
  return; "eval/return_min", "eval/return_max"), "train/return", "env_steps", and the
  model/rollout/SAC metrics. Validated before anything compiles.
  """
  parts = make_parts(config, use_model=use_model)
  return Algorithm(
      name="mbpo" if use_model else "sac", unit="epoch", config=config,
      init=lambda k: (_init(parts, config, k), {}),
      step=make_step(config, parts, use_model=use_model), num_chunks=config.epochs,
      nonfinite=nonfinite_flags(use_model))
