"""PETS: probabilistic ensembles with trajectory sampling (Chua et al. 2018), one compiled call
per trial.

A trial is: fit the ensemble on every transition collected so far (one compiled fit, see
`mbrl_jax.models.training`), then run the environment for `trial_length` steps with MPC on the
fitted model, inserting each transition into the replay buffer. The whole trial (fit, plan,
env step and buffer insert for every step) is a single `jax.jit`-compiled function whose
shapes never change, so the second trial reuses the first one's program, and N seeds are
`jax.vmap` of the same function.

`make(config)` returns the `Algorithm` that `mbrl_jax.run.train` drives (checkpoints,
resume, NaN stop, progress); `make_parts`, `init`, `make_step` and `make_policy` are the
pieces, for notebooks.

Example (a run of the `quick` preset takes minutes on a 2-core CPU, so it is skipped here):
  >>> from mbrl_jax import run
  >>> algorithm = make(PRESETS["quick"])
  >>> state, history = run.train(algorithm, jax.random.key(0))         # doctest: +SKIP
  >>> keys = jnp.stack([jax.random.key(s) for s in range(4)])
  >>> state, history = run.train(algorithm, keys)                      # doctest: +SKIP
  >>> history["train/return"].shape                                    # doctest: +SKIP
  (6, 4)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from brax.envs.base import Env

from mbrl_jax import checks
from mbrl_jax import data as buffer_lib
from mbrl_jax import envs
from mbrl_jax import models
from mbrl_jax import tree
from mbrl_jax.algorithms.base import Algorithm
from mbrl_jax.envs import acting
from mbrl_jax.planning import dynamics as dyn_lib
from mbrl_jax.planning import ilqr as ilqr_lib
from mbrl_jax.planning import optimizers as opt_lib
from mbrl_jax.planning.mpc import make_mpc
from mbrl_jax.planning.trajectory import MEMBER_ASSIGNMENTS, make_trajectory_evaluator
from mbrl_jax.types import PRNGKey, Transition


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The dynamics ensemble.

  Attributes:
    num_members: ensemble members.
    num_elites: members used for planning (None: all).
    hidden_sizes: hidden layer widths of each member.
    activation: hidden activation (see `mbrl_jax.models.ACTIVATIONS`).
    probabilistic: Gaussian members (NLL) or deterministic ones (MSE).
    learn_logvar_bounds: learn the soft log-variance bounds.
  """

  num_members: int = 5
  num_elites: int | None = None
  hidden_sizes: tuple[int, ...] = (200, 200, 200)
  activation: str = "silu"
  probabilistic: bool = True
  learn_logvar_bounds: bool = True

  def __post_init__(self):
    checks.positive_int(self, "num_members")
    if self.num_elites is not None and not (
        isinstance(self.num_elites, int) and 1 <= self.num_elites <= self.num_members):
      checks.fail(self, "num_elites", f"must be None or in [1, num_members="
                  f"{self.num_members}], got {self.num_elites!r}")
    checks.widths(self, "hidden_sizes")
    checks.one_of(self, "activation", sorted(models.ACTIVATIONS))


@dataclasses.dataclass(frozen=True)
class PlannerConfig:
  """The action-sequence optimizer, the trajectory evaluation and the MPC loop.

  Attributes:
    optimizer: the optimizer and its own settings, one of `mbrl_jax.planning`'s configs
      (CEMConfig, ICEMConfig, MPPIConfig, RandomShootingConfig, GradientConfig, ILQRConfig).
      The default is mbrl-lib's PETS CEM: population 350, 5 iterations, 10% elites, momentum
      0.1, returning the elite mean. ILQRConfig plans with iLQR on the ensemble's MEAN
      prediction (`planning.ensemble_mean_dynamics`: no particles, no sampling) with the
      known reward as negative cost, applying its feedback gains between replans; it ignores
      num_particles, propagation, member_assignment and risk_coef, needs discount 1 and an
      env of `planning.dynamics.ILQR_ENVS` (no termination, a reward with a gradient).
    horizon: planning horizon H.
    num_particles: particles per sequence.
    propagation: how particles use the ensemble: "ts1", "tsinf" or "expectation" (see
      `mbrl_jax.models.PROPAGATION_MODES`).
    member_assignment: "random" (mbrl-lib): particles get random ensemble members, drawn once
      per trajectory evaluation; "fixed": particle row r uses member r % E.
    discount: per-step discount of predicted rewards.
    risk_coef: objective = mean - risk_coef * std over particles.
    replan_every: re-optimise every k env steps.
  """

  optimizer: opt_lib.OptimizerConfig | ilqr_lib.ILQRConfig = opt_lib.CEMConfig(
      population=350, iterations=5, elite_ratio=0.1, alpha=0.1, return_mean_elites=True)
  horizon: int = 15
  num_particles: int = 20
  propagation: str = "tsinf"
  member_assignment: str = "random"
  discount: float = 1.0
  risk_coef: float = 0.0
  replan_every: int = 1

  def __post_init__(self):
    planners = (*opt_lib.OPTIMIZERS.values(), ilqr_lib.ILQRConfig)
    if not isinstance(self.optimizer, planners):
      checks.fail(self, "optimizer", f"must be one of {[c.__name__ for c in planners]}, got "
                  f"{self.optimizer!r}")
    checks.positive_int(self, "horizon", "num_particles")
    checks.one_of(self, "propagation", ("ts1", "tsinf", "expectation"))
    checks.one_of(self, "member_assignment", MEMBER_ASSIGNMENTS)
    if not isinstance(self.replan_every, int) or not 1 <= self.replan_every <= self.horizon:
      checks.fail(self, "replan_every", f"must be in [1, horizon={self.horizon}], got "
                  f"{self.replan_every!r}")
    if self.is_ilqr and self.discount != 1.0:
      checks.fail(self, "discount", f"must be 1 with ILQRConfig (iLQR plans undiscounted), "
                  f"got {self.discount!r}")
    # The factories check the rest (the optimizer against the horizon, discount, risk).
    try:
      if not self.is_ilqr:
        opt_lib.make_optimizer(self.optimizer, horizon=self.horizon, action_size=1)
      make_trajectory_evaluator(lambda *a: None, num_particles=self.num_particles,
                                discount=self.discount, risk_coef=self.risk_coef)
    except ValueError as e:
      raise ValueError(f"{checks.name(self)}: {e}") from None

  @property
  def is_ilqr(self) -> bool:
    return isinstance(self.optimizer, ilqr_lib.ILQRConfig)


@dataclasses.dataclass(frozen=True)
class Config:
  """A PETS run.

  Attributes:
    env: environment name (see `mbrl_jax.envs.registered_names`); needs task functions
      (`mbrl_jax.envs.task_fn_names`) since PETS plans with the known reward and termination.
    trials: trials planned with the model (after the random ones).
    random_trials: initial trials with uniformly random actions.
    trial_length: env steps per trial (an episode ends earlier when the env terminates).
    model: the dynamics ensemble.
    fit: how the ensemble is fitted before each trial.
    planner: the optimizer and MPC settings.
  """

  env: str = "cartpole_continuous"
  trials: int = 5
  random_trials: int = 1
  trial_length: int = 200
  model: ModelConfig = ModelConfig()
  fit: models.FitConfig = models.FitConfig(
      learning_rate=1e-3, weight_decay=5e-5, batch_size=32, max_epochs=50, holdout_ratio=0.05,
      patience=None)
  planner: PlannerConfig = PlannerConfig()

  def __post_init__(self):
    envs.check_continuous_env(self)
    if self.env not in envs.task_fn_names():
      checks.fail(self, "env", f"{self.env!r} has no reward/termination functions; PETS needs "
                  f"one of {', '.join(envs.task_fn_names())}")
    if self.planner.is_ilqr and self.env not in dyn_lib.ILQR_ENVS:
      checks.fail(self, "env", f"{self.env!r} cannot be planned with iLQR (it needs an env that "
                  f"never terminates and a reward with a gradient): one of "
                  f"{', '.join(dyn_lib.ILQR_ENVS)}")
    checks.positive_int(self, "trials", "trial_length")
    checks.int_at_least(self, "random_trials", 1, " (the first fit needs data)")

  @property
  def buffer_capacity(self) -> int:
    return (self.trials + self.random_trials) * self.trial_length


PRESETS: dict[str, Config] = {
    # A few minutes on a 2-core CPU: the PETS model, a smaller planner.
    "quick": Config(
        env="cartpole_continuous", trials=5, random_trials=1, trial_length=200,
        planner=PlannerConfig(
            optimizer=opt_lib.CEMConfig(population=100, iterations=5, elite_ratio=0.1,
                                        alpha=0.1, return_mean_elites=True),
            horizon=15, num_particles=10)),
    # mbrl-lib's PETS example notebook (cartpole_continuous).
    "mbrl-lib-notebook": Config(
        env="cartpole_continuous", trials=5, random_trials=1, trial_length=200,
        model=ModelConfig(num_members=5, hidden_sizes=(200, 200, 200), activation="silu"),
        fit=models.FitConfig(learning_rate=1e-3, weight_decay=5e-5, batch_size=32,
                             max_epochs=50, holdout_ratio=0.05, patience=None),
        planner=PlannerConfig(
            optimizer=opt_lib.CEMConfig(population=350, iterations=5, elite_ratio=0.1,
                                        alpha=0.1, return_mean_elites=True),
            horizon=15, num_particles=20, propagation="tsinf")),
    # iLQR (5 iterations, horizon 20) on the mean prediction of PETS' ensemble, cart-pole
    # swing-up (PETS' task): ~10 s per trial on a 2-core CPU.
    "ilqr-swingup": Config(
        env="cartpole_swingup", trials=8, random_trials=1, trial_length=200,
        model=ModelConfig(num_members=5, hidden_sizes=(200, 200, 200), activation="silu"),
        planner=PlannerConfig(optimizer=ilqr_lib.ILQRConfig(iterations=5), horizon=20)),
}
"""Named starting points (`experiments/pets.py --preset NAME`)."""


def _make_optimizer(config: Config, action_size: int) -> opt_lib.Optimizer | None:
  p = config.planner
  if p.is_ilqr:
    return None                     # iLQR is built in `_make_mpc`, around the ensemble
  return opt_lib.make_optimizer(p.optimizer, horizon=p.horizon, action_size=action_size,
                                lower=-1.0, upper=1.0)


class State(NamedTuple):
  """What a PETS run carries from trial to trial (one seed; vmapped runs add a seed axis).

  Attributes:
    buffer: every transition collected so far.
    fit_state: ensemble parameters (normalisers and elites included) and optimizer state.
    key: the run's random key.
    trial: trials completed, random ones included.              # [] int32
    env_steps: env steps taken so far.                          # [] int32
  """

  buffer: buffer_lib.BufferState
  fit_state: models.FitState
  key: PRNGKey
  trial: jax.Array
  env_steps: jax.Array


class Parts(NamedTuple):
  """The pieces a PETS run is built from (handy in notebooks)."""

  env: Env
  ensemble: models.Ensemble
  trainer: models.Trainer
  optimizer: opt_lib.Optimizer | None          # None with ILQRConfig
  reward_fn: Callable
  termination_fn: Callable


def make_parts(config: Config) -> Parts:
  env = envs.make(config.env, episode_length=None)
  task = envs.get_task_fns(config.env)
  ens = models.make_ensemble(
      env.observation_size, env.action_size, num_members=config.model.num_members,
      num_elites=config.model.num_elites, hidden_sizes=config.model.hidden_sizes,
      activation=config.model.activation, probabilistic=config.model.probabilistic,
      learn_logvar_bounds=config.model.learn_logvar_bounds)
  return Parts(env=env, ensemble=ens, trainer=models.make_trainer(ens, config.fit),
               optimizer=_make_optimizer(config, env.action_size), reward_fn=task.reward_fn,
               termination_fn=task.termination_fn)


def init(key: PRNGKey, config: Config) -> State:
  """Empty buffer, fresh ensemble, then `random_trials` trials of uniformly random actions."""
  parts = make_parts(config)
  return _init(parts, config, key)[0]


def _init(parts: Parts, config: Config, key: PRNGKey):
  env = parts.env
  example = Transition.zeros((env.observation_size,), env.action_size)
  buffer = buffer_lib.init(config.buffer_capacity, example)
  key, model_key = jax.random.split(key)
  fit_state = parts.trainer.init(parts.ensemble.init(model_key))
  returns, lengths = [], []
  for _ in range(config.random_trials):
    key, ep_key = jax.random.split(key)
    ep = acting.episode(env, acting.uniform_random(env.action_size), ep_key,
                        config.trial_length)
    buffer = buffer_lib.add_masked(buffer, ep.transitions, ep.valid)
    returns.append(ep.ret)
    lengths.append(ep.length)
  state = State(buffer=buffer, fit_state=fit_state, key=key,
                trial=jnp.asarray(config.random_trials, jnp.int32),
                env_steps=jnp.sum(jnp.stack(lengths)).astype(jnp.int32))
  return state, dict(returns=jnp.stack(returns), lengths=jnp.stack(lengths))


def _mpc_policy(mpc, params) -> acting.Policy:
  """MPC on the model `params` as an `envs.acting.Policy` (the controller carries its own
  key in its state; the step key is not needed)."""
  return acting.Policy(init=mpc.init,
                       act=lambda mpc_state, key, obs: mpc.act(mpc_state, params, obs))


def _make_mpc(config: Config, parts: Parts):
  """MPC on the ensemble: the configured optimizer over particle rollouts with the env's
  known reward and termination, or iLQR on the ensemble's mean prediction."""
  p = config.planner
  if p.is_ilqr:
    ilqr = ilqr_lib.make_ilqr(
        dyn_lib.ensemble_mean_dynamics(parts.ensemble), dyn_lib.true_cost(config.env),
        horizon=p.horizon, action_size=parts.env.action_size, lower=-1.0, upper=1.0,
        config=p.optimizer)
    return ilqr_lib.make_ilqr_mpc(ilqr, parts.env.observation_size,
                                  replan_every=p.replan_every)
  evaluate = make_trajectory_evaluator(
      functools.partial(parts.ensemble.predict, mode=p.propagation),
      noise_size=parts.ensemble.noise_size, member_assignment=p.member_assignment,
      reward_fn=parts.reward_fn, termination_fn=parts.termination_fn,
      num_particles=p.num_particles, discount=p.discount, risk_coef=p.risk_coef)
  return make_mpc(parts.optimizer, evaluate, replan_every=p.replan_every)


def make_step(config: Config, parts: Parts | None = None) -> Callable[[State], tuple[State, dict]]:
  """Returns `step(state) -> (state, metrics)`: one PETS trial (fit, then an MPC episode).

  The function is pure and unjitted; jit it (donating the state) or vmap it over seeds.
  """
  parts = parts or make_parts(config)
  mpc = _make_mpc(config, parts)

  def step(state: State) -> tuple[State, dict]:
    key, fit_key, ep_key = jax.random.split(state.key, 3)
    fit_state, fit_metrics = parts.trainer.fit(
        fit_key, state.fit_state, state.buffer.data, buffer_lib.valid_mask(state.buffer))
    ep = acting.episode(parts.env, _mpc_policy(mpc, fit_state.params), ep_key,
                        config.trial_length)
    buffer = buffer_lib.add_masked(state.buffer, ep.transitions, ep.valid)
    ret, length, info, active = ep.ret, ep.length, ep.info, ep.valid
    w = active.astype(jnp.float32)
    count = jnp.maximum(w.sum(), 1.0)
    mean_over_steps = lambda x: jnp.nansum(jnp.where(active, x, jnp.nan)) / count
    epochs = jnp.maximum(fit_metrics.epochs, 1)
    last = lambda x: jnp.nanmean(x[epochs - 1])
    if config.planner.is_ilqr:
      planner_metrics = {
          "planner/predicted_return": mean_over_steps(-info.cost),
          "planner/iterations": mean_over_steps(info.iterations.astype(jnp.float32))}
    else:
      planner_metrics = {
          "planner/predicted_return": mean_over_steps(info.best_return),
          "planner/final_std": mean_over_steps(info.final_std.mean(axis=(-2, -1)))}
    metrics = {
        "train/return": ret,
        "train/episode_length": length,
        "env_steps": state.env_steps + length,
        "model/train_loss": last(fit_metrics.train_loss),
        "model/holdout_mse": jnp.mean(fit_metrics.best_holdout_mse),
        "model/epochs": fit_metrics.epochs,
        "nonfinite/model_fit": fit_metrics.nonfinite_data | fit_metrics.nonfinite_loss,
        "nonfinite/model_params": tree.nonfinite(fit_state.params),
        **planner_metrics,
    }
    new_state = State(buffer=buffer, fit_state=fit_state, key=key, trial=state.trial + 1,
                      env_steps=state.env_steps + length)
    return new_state, metrics

  return step


def make_policy(state: State, config: Config, parts: Parts | None = None) -> acting.Policy:
  """MPC on the state's fitted model as an `envs.acting.Policy`, e.g. for evaluation:
  `acting.evaluate(parts.env, make_policy(state, config), key, episodes, max_steps)`."""
  parts = parts or make_parts(config)
  return _mpc_policy(_make_mpc(config, parts), state.fit_state.params)


def planner_rows_per_member(config: Config) -> int | None:
  """Rows each ensemble member's products see in one planning step (picks compile options);
  None (the defaults) for iLQR, whose products are one row and its tangents."""
  p, m = config.planner, config.model
  if p.is_ilqr:
    return None
  sequences = (p.optimizer.num_starts if isinstance(p.optimizer, opt_lib.GradientConfig)
               else p.optimizer.population)
  return sequences * p.num_particles // (m.num_elites or m.num_members)


NONFINITE = {"nonfinite/model_fit": "the model fit's data or loss",
             "nonfinite/model_params": "the model parameters"}


@functools.lru_cache(maxsize=16)
def make(config: Config) -> Algorithm:
  """PETS as an `Algorithm` for `mbrl_jax.run.train`: the random trial(s), then
  `config.trials` trials, each one compiled call (validated before anything compiles).

  The history holds, per trial [random_trials + trials, (S)]: "train/return",
  "train/episode_length", "env_steps", and the model/planner metrics (NaN for the random
  trials). A NaN or Inf in the fitted model's data, loss or parameters stops the run.
  """
  parts = make_parts(config)

  def init_fn(key):
    state, info = _init(parts, config, key)
    return state, {"train/return": info["returns"], "train/episode_length": info["lengths"],
                   "env_steps": jnp.cumsum(info["lengths"])}

  return Algorithm(name="pets", unit="trial", config=config, init=init_fn,
                   step=make_step(config, parts),
                   num_chunks=config.random_trials + config.trials,
                   nonfinite=NONFINITE, dot_rows=planner_rows_per_member(config))
