"""Model-predictive control on the TRUE model of a pure-JAX env: no learning, one MPC episode
per chunk, with iLQR (`planning.ILQRConfig`) or any sampling optimizer (CEM, iCEM, MPPI,
random shooting, gradient) over rollouts of the env's own dynamics.

The planner works on the observation (see `mbrl_jax.planning.dynamics`): iLQR with the
negated known reward as its cost and, between replans, its feedback gains; the sampling
optimizers through `make_trajectory_evaluator` on the true dynamics (one particle: the model
is deterministic) with the known reward and termination. `make(config)` is the `Algorithm`
that `mbrl_jax.run.train` drives (seeds vmapped, checkpoints, NaN stop, progress);
`experiments/ilqr.py` is its script.

Example (compiling an episode takes a few seconds, so it is skipped here):
  >>> from mbrl_jax import run
  >>> state, history = run.train(make(PRESETS["ilqr-swingup"]), jax.random.key(0))  # doctest: +SKIP
  >>> history["train/return"].shape                                                # doctest: +SKIP
  (3,)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from brax.envs.base import Env

from mbrl_jax import checks
from mbrl_jax import envs
from mbrl_jax.algorithms.base import Algorithm
from mbrl_jax.envs import acting
from mbrl_jax.planning import dynamics as dyn_lib
from mbrl_jax.planning import ilqr as ilqr_lib
from mbrl_jax.planning import optimizers as opt_lib
from mbrl_jax.planning.mpc import MPC, make_mpc
from mbrl_jax.planning.trajectory import make_trajectory_evaluator
from mbrl_jax.types import PRNGKey

PlannerConfig = (ilqr_lib.ILQRConfig | opt_lib.CEMConfig | opt_lib.ICEMConfig
                 | opt_lib.MPPIConfig | opt_lib.RandomShootingConfig | opt_lib.GradientConfig)
_PLANNERS = (ilqr_lib.ILQRConfig, *opt_lib.OPTIMIZERS.values())


@dataclasses.dataclass(frozen=True)
class Config:
  """True-model MPC episodes.

  Attributes:
    env: one of the envs with differentiable pure-JAX dynamics
      (`planning.TRUE_DYNAMICS_ENVS`); iLQR needs one of `planning.dynamics.ILQR_ENVS`.
    planner: ILQRConfig or a sampling optimizer's config (CEMConfig, ICEMConfig, ...).
    horizon: planning horizon H.
    replan_every: re-optimise every k env steps.
    feedback: iLQR applies its gains K_t (obs - x_t) between replans.
    episodes: chunks of the run, one MPC episode each.
    episode_length: env steps per episode.
  """

  env: str = "cartpole_swingup"
  planner: PlannerConfig = ilqr_lib.ILQRConfig(iterations=5)
  horizon: int = 20
  replan_every: int = 1
  feedback: bool = True
  episodes: int = 3
  episode_length: int = 200

  def __post_init__(self):
    envs.check_continuous_env(self)
    if not isinstance(self.planner, _PLANNERS):
      checks.fail(self, "planner", f"must be one of {[c.__name__ for c in _PLANNERS]}, got "
                  f"{self.planner!r}")
    if isinstance(self.planner, ilqr_lib.ILQRConfig) and self.env not in dyn_lib.ILQR_ENVS:
      checks.fail(self, "env", f"{self.env!r}: iLQR needs differentiable true dynamics and a "
                  f"reward with a gradient; envs that have them: {', '.join(dyn_lib.ILQR_ENVS)}")
    if self.env not in dyn_lib.TRUE_DYNAMICS_ENVS:
      checks.fail(self, "env", f"{self.env!r} has no differentiable pure-JAX true model here; "
                  f"envs that have one: {', '.join(dyn_lib.TRUE_DYNAMICS_ENVS)}")
    checks.positive_int(self, "horizon", "episodes", "episode_length")
    if (isinstance(self.replan_every, bool) or not isinstance(self.replan_every, int)
        or not 1 <= self.replan_every <= self.horizon):
      checks.fail(self, "replan_every", f"must be in [1, horizon={self.horizon}], got "
                  f"{self.replan_every!r}")
    if not isinstance(self.feedback, bool):
      checks.fail(self, "feedback", f"must be a bool, got {self.feedback!r}")
    if not isinstance(self.planner, ilqr_lib.ILQRConfig):
      try:
        opt_lib.make_optimizer(self.planner, horizon=self.horizon, action_size=1)
      except ValueError as e:
        raise ValueError(f"{checks.name(self)}.planner: {e}") from None


PRESETS: dict[str, Config] = {
    # iLQR: horizon 20 (0.8 s), 5 iterations per plan, replanned every step.
    "ilqr-swingup": Config(env="cartpole_swingup", planner=ilqr_lib.ILQRConfig(iterations=5),
                           horizon=20),
    "ilqr-pendulum": Config(env="pendulum", planner=ilqr_lib.ILQRConfig(iterations=5),
                            horizon=20),
    # CEM on the same true model (population x iterations as PETS' small planner).
    "cem-swingup": Config(env="cartpole_swingup", horizon=20, planner=opt_lib.CEMConfig(
        population=100, iterations=5, return_mean_elites=True)),
    "cem-pendulum": Config(env="pendulum", horizon=20, planner=opt_lib.CEMConfig(
        population=100, iterations=5, return_mean_elites=True)),
}
"""Named starting points (`experiments/ilqr.py --preset NAME`)."""


class State(NamedTuple):
  """What a run carries from episode to episode (one seed).

  Attributes:
    key: the run's random key.
    episode: episodes completed.                # [] int32
    env_steps: env steps taken so far.          # [] int32
  """

  key: PRNGKey
  episode: jax.Array
  env_steps: jax.Array


class Parts(NamedTuple):
  """The env and the controller (`act(state, params, obs)`; params are None here)."""

  env: Env
  mpc: ilqr_lib.ILQRMPC | MPC
  is_ilqr: bool


def make_parts(config: Config) -> Parts:
  env = envs.make(config.env, episode_length=None)
  task = envs.get_task_fns(config.env)
  A, S = env.action_size, env.observation_size
  if isinstance(config.planner, ilqr_lib.ILQRConfig):
    ilqr = ilqr_lib.make_ilqr(dyn_lib.true_dynamics(config.env), dyn_lib.true_cost(config.env),
                              horizon=config.horizon, action_size=A, lower=-1.0, upper=1.0,
                              config=config.planner)
    mpc = ilqr_lib.make_ilqr_mpc(ilqr, S, replan_every=config.replan_every,
                                 feedback=config.feedback)
    return Parts(env=env, mpc=mpc, is_ilqr=True)
  evaluate = make_trajectory_evaluator(
      dyn_lib.true_model_fn(config.env), reward_fn=task.reward_fn,
      termination_fn=task.termination_fn, num_particles=1, member_assignment="fixed")
  opt = opt_lib.make_optimizer(config.planner, horizon=config.horizon, action_size=A,
                               lower=-1.0, upper=1.0)
  return Parts(env=env, mpc=make_mpc(opt, evaluate, replan_every=config.replan_every),
               is_ilqr=False)


def make_policy(parts: Parts) -> acting.Policy:
  """The controller as an `envs.acting.Policy` (true model: no parameters)."""
  return acting.Policy(init=parts.mpc.init,
                       act=lambda state, key, obs: parts.mpc.act(state, None, obs))


def init(key: PRNGKey) -> State:
  return State(key=key, episode=jnp.zeros((), jnp.int32), env_steps=jnp.zeros((), jnp.int32))


NONFINITE = {"nonfinite/return": "the episode return"}


@functools.lru_cache(maxsize=16)
def make(config: Config) -> Algorithm:
  """True-model MPC as an `Algorithm`: each chunk one episode of `episode_length` steps.

  The history holds, per episode [episodes, (S)]: "train/return", "train/episode_length",
  "env_steps", "planner/predicted_return" (the plan's own predicted return, mean over the
  steps that replanned), for iLQR "planner/iterations" (mean per plan) and
  "planner/converged" (fraction of plans).
  """
  parts = make_parts(config)
  policy = make_policy(parts)

  def step(state: State):
    key, ep_key = jax.random.split(state.key)
    ep = acting.episode(parts.env, policy, ep_key, config.episode_length)
    info = ep.info
    planned = ep.valid & (~jnp.isnan(info.cost) if parts.is_ilqr
                          else ~jnp.isnan(info.best_return))
    mean = lambda x: jnp.sum(jnp.where(planned, x, 0.0)) / jnp.maximum(planned.sum(), 1)
    metrics = {"train/return": ep.ret, "train/episode_length": ep.length,
               "env_steps": state.env_steps + ep.length,
               "nonfinite/return": ~jnp.isfinite(ep.ret)}
    if parts.is_ilqr:
      metrics["planner/predicted_return"] = mean(-info.cost)
      metrics["planner/iterations"] = mean(info.iterations.astype(jnp.float32))
      metrics["planner/converged"] = mean(info.converged.astype(jnp.float32))
    else:
      metrics["planner/predicted_return"] = mean(info.best_return)
    return State(key=key, episode=state.episode + 1,
                 env_steps=state.env_steps + ep.length), metrics

  return Algorithm(name="mpc_control", unit="chunk", config=config,
                   init=lambda key: (init(key), {}), step=step, num_chunks=config.episodes,
                   nonfinite=NONFINITE)
