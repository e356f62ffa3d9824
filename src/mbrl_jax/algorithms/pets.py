"""PETS: probabilistic ensembles with trajectory sampling (Chua et al. 2018), one compiled call
per trial.

A trial is: fit the ensemble on every transition collected so far (one compiled fit, see
`mbrl_jax.models.training`), then run the environment for `trial_length` steps with MPC on the
fitted model, inserting each transition into the replay buffer. The whole trial (fit, plan,
env step and buffer insert for every step) is a single `jax.jit`-compiled function whose
shapes never change, so the second trial reuses the first one's program, and N seeds are
`jax.vmap` of the same function.

Example:
  >>> config = Config(env="cartpole_continuous", trials=5)
  >>> state, history = train(jax.random.key(0), config)          # one seed
  >>> keys = jnp.stack([jax.random.key(s) for s in range(4)])
  >>> state, history = train(keys, config)                        # four seeds, vmapped
  >>> history["return"]                                           # [random + trials, 4]
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from brax.envs.base import Env

from mbrl_jax import compile as compile_lib
from mbrl_jax import data as buffer_lib
from mbrl_jax import envs
from mbrl_jax import models
from mbrl_jax import run as run_lib
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


@dataclasses.dataclass(frozen=True)
class PlannerConfig:
  """The action-sequence optimizer, the trajectory evaluation and the MPC loop.

  Attributes:
    optimizer: the optimizer and its own settings, one of `mbrl_jax.planning`'s configs
      (CEMConfig, ICEMConfig, MPPIConfig, RandomShootingConfig, GradientConfig). The default
      is mbrl-lib's PETS CEM: population 350, 5 iterations, 10% elites, momentum 0.1,
      returning the elite mean.
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

  optimizer: opt_lib.OptimizerConfig = opt_lib.CEMConfig(
      population=350, iterations=5, elite_ratio=0.1, alpha=0.1, return_mean_elites=True)
  horizon: int = 15
  num_particles: int = 20
  propagation: str = "tsinf"
  member_assignment: str = "random"
  discount: float = 1.0
  risk_coef: float = 0.0
  replan_every: int = 1


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

  @property
  def buffer_capacity(self) -> int:
    return (self.trials + self.random_trials) * self.trial_length


def validate(config: Config) -> None:
  """Raises ValueError naming the first invalid field; runs before anything compiles."""
  def bad(field, why):
    raise ValueError(f"PETS config: {field} {why}")

  if config.env not in envs.registered_names():
    bad("env", f"{config.env!r} is unknown; valid names: {', '.join(envs.registered_names())}")
  if config.env not in envs.task_fn_names():
    bad("env", f"{config.env!r} has no reward/termination functions; PETS needs one of "
        f"{', '.join(envs.task_fn_names())}")
  for name in ("trials", "trial_length"):
    if not isinstance(getattr(config, name), int) or getattr(config, name) < 1:
      bad(name, f"must be a positive int, got {getattr(config, name)!r}")
  if not isinstance(config.random_trials, int) or config.random_trials < 1:
    bad("random_trials", f"must be >= 1 (the first fit needs data), got {config.random_trials!r}")
  m, p = config.model, config.planner
  if m.num_members < 1:
    bad("model.num_members", f"must be >= 1, got {m.num_members}")
  if m.num_elites is not None and not 1 <= m.num_elites <= m.num_members:
    bad("model.num_elites", f"must be in [1, num_members={m.num_members}], got {m.num_elites}")
  if not m.hidden_sizes or any(h < 1 for h in m.hidden_sizes):
    bad("model.hidden_sizes", f"must be positive widths, got {m.hidden_sizes}")
  if m.activation not in models.ACTIVATIONS:
    bad("model.activation", f"{m.activation!r} is unknown; valid: {sorted(models.ACTIVATIONS)}")
  if not isinstance(p.optimizer, tuple(opt_lib.OPTIMIZERS.values())):
    bad("planner.optimizer", f"must be one of {[c.__name__ for c in opt_lib.OPTIMIZERS.values()]}"
        f", got {p.optimizer!r}")
  try:
    dataclasses.replace(p.optimizer)                 # its own checks, once more (__post_init__)
  except ValueError as e:
    raise ValueError(f"PETS config: planner.optimizer.{e}") from None
  if p.horizon < 1:
    bad("planner.horizon", f"must be >= 1, got {p.horizon}")
  if p.num_particles < 1:
    bad("planner.num_particles", f"must be >= 1, got {p.num_particles}")
  if p.propagation not in ("ts1", "tsinf", "expectation"):
    bad("planner.propagation", f"{p.propagation!r} is not a planning propagation mode; valid: "
        "'ts1', 'tsinf', 'expectation'")
  if p.member_assignment not in MEMBER_ASSIGNMENTS:
    bad("planner.member_assignment", f"must be one of {MEMBER_ASSIGNMENTS}, got "
        f"{p.member_assignment!r}")
  if not 1 <= p.replan_every <= p.horizon:
    bad("planner.replan_every", f"must be in [1, horizon={p.horizon}], got {p.replan_every}")
  # The optimizer and evaluator factories check the rest of their arguments (discount, ...)
  # and name them.
  _make_optimizer(config, action_size=1)
  try:
    make_trajectory_evaluator(lambda *a: None, num_particles=p.num_particles,
                              discount=p.discount, risk_coef=p.risk_coef)
  except ValueError as e:
    raise ValueError(f"PETS config: planner.{e}") from None


def _make_optimizer(config: Config, action_size: int) -> opt_lib.Optimizer:
  p = config.planner
  try:
    return opt_lib.make_optimizer(p.optimizer, horizon=p.horizon, action_size=action_size,
                                  lower=-1.0, upper=1.0)
  except ValueError as e:
    raise ValueError(f"PETS config: planner.{e}") from None


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
  optimizer: opt_lib.Optimizer
  reward_fn: Callable
  termination_fn: Callable


def make_parts(config: Config) -> Parts:
  validate(config)
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


def _run_episode(env: Env, policy, policy_state, key: PRNGKey, buffer, length: int):
  """Runs one episode of at most `length` steps with `policy(policy_state, obs, t)`,
  adding each transition until the env terminates. Returns the buffer, episode return and
  length, and the per-step policy info."""
  env_state = env.reset(key)

  info_shape = jax.eval_shape(policy, policy_state, env_state.obs, 0)[2]

  def idle(pstate, obs, t):
    """After the episode ended: no planning (skipped outright unless vmapped)."""
    del obs, t
    nan_info = jax.tree.map(lambda x: jnp.full(x.shape, jnp.nan, x.dtype), info_shape)
    return jnp.zeros((env.action_size,)), pstate, nan_info

  def step(carry, t):
    env_state, pstate, buffer, active, ret = carry
    action, pstate, info = jax.lax.cond(active, policy, idle, pstate, env_state.obs, t)
    next_state = env.step(env_state, action)
    terminated = next_state.done.astype(jnp.float32)
    truncated = jnp.where(t == length - 1, 1.0 - terminated, 0.0)
    tr = Transition(obs=env_state.obs, action=action, reward=next_state.reward,
                    next_obs=next_state.obs, terminated=terminated, truncated=truncated)
    buffer = jax.lax.cond(active, buffer_lib.add, lambda b, _: b, buffer, tr)
    ret = ret + jnp.where(active, next_state.reward, 0.0)
    still = active & (terminated == 0)
    return (next_state, pstate, buffer, still, ret), (info, active)

  init = (env_state, policy_state, buffer, jnp.asarray(True), jnp.zeros(()))
  (_, _, buffer, _, ret), (info, active) = jax.lax.scan(step, init, jnp.arange(length))
  return buffer, ret, active.sum().astype(jnp.int32), info, active


def init(key: PRNGKey, config: Config) -> State:
  """Empty buffer, fresh ensemble, then `random_trials` trials of uniformly random actions."""
  parts = make_parts(config)
  return _init(parts, config, key)[0]


def _init(parts: Parts, config: Config, key: PRNGKey):
  env = parts.env
  example = Transition(
      obs=jnp.zeros((env.observation_size,)), action=jnp.zeros((env.action_size,)),
      reward=jnp.zeros(()), next_obs=jnp.zeros((env.observation_size,)),
      terminated=jnp.zeros(()), truncated=jnp.zeros(()))
  buffer = buffer_lib.init(config.buffer_capacity, example)
  key, model_key = jax.random.split(key)
  fit_state = parts.trainer.init(parts.ensemble.init(model_key))

  def random_policy(pkey, obs, t):
    del obs
    k = jax.random.fold_in(pkey, t)
    return jax.random.uniform(k, (env.action_size,), minval=-1.0, maxval=1.0), pkey, ()

  returns, lengths = [], []
  for _ in range(config.random_trials):
    key, ep_key, policy_key = jax.random.split(key, 3)
    buffer, ret, length, _, _ = _run_episode(env, random_policy, policy_key, ep_key, buffer,
                                              config.trial_length)
    returns.append(ret)
    lengths.append(length)
  state = State(buffer=buffer, fit_state=fit_state, key=key,
                trial=jnp.asarray(config.random_trials, jnp.int32),
                env_steps=jnp.sum(jnp.stack(lengths)).astype(jnp.int32))
  return state, dict(returns=jnp.stack(returns), lengths=jnp.stack(lengths))


def _make_mpc(config: Config, parts: Parts):
  """MPC on the ensemble: the configured optimizer over particle rollouts with the env's
  known reward and termination."""
  p = config.planner
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
    key, fit_key, mpc_key, ep_key = jax.random.split(state.key, 4)
    fit_state, fit_metrics = parts.trainer.fit(
        fit_key, state.fit_state, state.buffer.data, buffer_lib.valid_mask(state.buffer))
    params = fit_state.params

    def policy(mpc_state, obs, t):
      del t
      action, mpc_state, info = mpc.act(mpc_state, params, obs)
      return action, mpc_state, info

    buffer, ret, length, info, active = _run_episode(
        parts.env, policy, mpc.init(mpc_key), ep_key, state.buffer, config.trial_length)
    w = active.astype(jnp.float32)
    count = jnp.maximum(w.sum(), 1.0)
    mean_over_steps = lambda x: jnp.nansum(jnp.where(active, x, jnp.nan)) / count
    epochs = jnp.maximum(fit_metrics.epochs, 1)
    last = lambda x: jnp.nanmean(x[epochs - 1])
    metrics = {
        "return": ret,
        "episode_length": length,
        "env_steps": state.env_steps + length,
        "model_train_loss": last(fit_metrics.train_loss),
        "model_holdout_mse": jnp.mean(fit_metrics.best_holdout_mse),
        "model_epochs": fit_metrics.epochs,
        "model_nonfinite": fit_metrics.nonfinite_data | fit_metrics.nonfinite_loss,
        "params_nonfinite": run_lib.nonfinite_leaves(fit_state.params),
        "planner_predicted_return": mean_over_steps(info.best_return),
        "planner_final_std": mean_over_steps(info.final_std.mean(axis=(-2, -1))),
    }
    new_state = State(buffer=buffer, fit_state=fit_state, key=key, trial=state.trial + 1,
                      env_steps=state.env_steps + length)
    return new_state, metrics

  return step


def make_policy(state: State, config: Config, parts: Parts | None = None):
  """An MPC policy on the state's fitted model: `(mpc_state, obs) -> (action, mpc_state)`,
  with `init(key) -> mpc_state`, for evaluation rollouts."""
  mpc = _make_mpc(config, parts or make_parts(config))
  params = state.fit_state.params

  def act(mpc_state, obs):
    action, mpc_state, _ = mpc.act(mpc_state, params, obs)
    return action, mpc_state

  return mpc.init, act


def planner_rows_per_member(config: Config) -> int:
  """Rows each ensemble member's products see in one planning step (picks compile options)."""
  p, m = config.planner, config.model
  sequences = (p.optimizer.num_starts if isinstance(p.optimizer, opt_lib.GradientConfig)
               else p.optimizer.population)
  return sequences * p.num_particles // (m.num_elites or m.num_members)


def checkpoint_meta(key: PRNGKey, config: Config) -> dict:
  """What a checkpoint must share with a run to be resumed by it: the config and the keys."""
  return run_lib.run_meta("pets", key, config)


def train(key: PRNGKey, config: Config, *,
          progress_fn: Callable[[int, dict], Any] | None = None,
          checkpoint_dir: str | None = None,
          checkpoint_every: int = 1,
          resume: bool = False,
          ) -> tuple[State, dict[str, np.ndarray]]:
  """Runs PETS: random trial(s), then `config.trials` trials, each one compiled call.

  Args:
    key: one key for one run, or a batch of keys [S] for S seeds vmapped through the same
      compiled calls (e.g. `jnp.stack([jax.random.key(s) for s in seeds])`). A batch placed
      with a sharding (`mbrl_jax.run.devices.shard_seeds`) splits the seeds over devices.
    config: the run's configuration (validated before anything compiles).
    progress_fn: called after every trial, random ones included, as
      `progress_fn(trial, metrics)`, with metrics as NumPy arrays (a seed axis first when `key`
      is a batch).
    checkpoint_dir: where to checkpoint the whole state (buffer, ensemble and optimizer,
      keys, counters) and the history: after the random trials and every `checkpoint_every`
      trials after that (`mbrl_jax.run.Checkpointer`, orbax).
    checkpoint_every: trials between checkpoints (the last trial is always checkpointed).
    resume: continue from the latest checkpoint in `checkpoint_dir` (which must have been
      written with the same config and keys); the result equals an uninterrupted run's.
      Without a checkpoint there, the run starts from scratch.

  Returns:
    The final state and a history dict of NumPy arrays [random_trials + trials, (S)]:
    "return", "episode_length", "env_steps", and the model/planner metrics (NaN for the
    random trials).

  Raises:
    FloatingPointError: NaN or Inf in the fitted model's data, loss or parameters; the message
      names the trial, the seed and the component, and the last good checkpoint is kept.
    mbrl_jax.run.CheckpointError: `resume` with a checkpoint of another run or a corrupt one.
  """
  run_lib.check_key(key)
  parts = make_parts(config)

  def init_fn(key):
    state, info = _init(parts, config, key)
    return state, {"return": info["returns"], "episode_length": info["lengths"],
                   "env_steps": jnp.cumsum(info["lengths"])}

  def check(metrics):
    return run_lib.describe_nonfinite(metrics, {
        "model_nonfinite": "the model fit's data or loss",
        "params_nonfinite": "the model parameters"})

  return run_lib.train_chunks(
      key, init_fn=init_fn, step_fn=make_step(config, parts),
      num_chunks=config.random_trials + config.trials, name="PETS", unit="trial",
      meta=checkpoint_meta(key, config), check_fn=check, progress_fn=progress_fn,
      checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, resume=resume,
      jit=functools.partial(compile_lib.jit, dot_rows=planner_rows_per_member(config)),
      cache_key=("pets", config))
