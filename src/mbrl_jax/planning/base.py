"""The planning package's types, written once: the function signatures (Protocols) and the
pytrees they pass.

  state = opt.init()                                     # PlanState: warm start, fixed shapes
  plan, state, info = opt.optimize(key, objective, state)
  state = opt.shift(state, steps)                        # receding horizon: k actions executed

`objective(key, actions [P, H, A]) -> returns [P]` (higher is better). The optimizer hands it a
key per iteration (or one key for all iterations, with common random numbers), so a stochastic
objective (particles through a probabilistic model) is re-sampled as configured.

A trajectory evaluator (`make_trajectory_evaluator`) is an `Evaluator`; the MPC controller turns
it into an objective for each observation.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import jax

from mbrl_jax.types import Params, PRNGKey


class PlanState(NamedTuple):
  """What an optimizer carries from one `optimize` call to the next; fixed shapes.

  Attributes:
    mean: the warm-start mean of the next call: cem, mppi, random and      # [H, A]
      gradient keep the last plan, icem its last sampling mean.
    elites: sequences added to the next call's first iteration, iCEM's     # [K, H, A]
      elite memory: K = int(keep_elite_frac * num_elites) for icem, 0 for the others.
  """

  mean: jax.Array
  elites: jax.Array


class OptimizerInfo(NamedTuple):
  """Diagnostics of one `optimize` call; the same structure for every optimizer.

  Attributes:
    best_return: highest return among all sequences evaluated (-inf if none was finite). # []
    iteration_returns: one number per iteration:                                         # [I]
      cem / icem: mean return of the elites; mppi: softmax-weighted mean return of the
      samples; gradient: best return of the starts before each step (I = num_steps);
      random: mean return of the population (I = 1).
    final_std: spread of the final search distribution:                                  # [H, A]
      cem / icem: the sampling std after the last update; mppi: weighted std of the last
      samples around the new mean; gradient: std of the final iterates across starts;
      random: std of the population.
    elites: the best sequences of the last iteration, best first:                        # [K, H, A]
      cem / icem: the K = num_elites elites; random / mppi: the best sample (K = 1);
      gradient: the final iterate of every start (K = num_starts), sorted by final return.
  """

  best_return: jax.Array
  iteration_returns: jax.Array
  final_std: jax.Array
  elites: jax.Array


class TrajectoryStats(NamedTuple):
  """Per-sequence statistics of one trajectory evaluation.

  Attributes:
    returns: risk-adjusted, penalised objective per sequence.   # [P]
    mean: mean particle return.                                 # [P]
    std: standard deviation of the particle returns.            # [P]
  """

  returns: jax.Array
  mean: jax.Array
  std: jax.Array


class Objective(Protocol):
  """`objective(key, actions [P, H, A]) -> returns [P]`; rows scored independently."""

  def __call__(self, key: PRNGKey, actions: jax.Array) -> jax.Array:
    ...


class InitFn(Protocol):
  """`init() -> PlanState`: the neutral warm start (midpoint of the bounds, no elites yet)."""

  def __call__(self) -> PlanState:
    ...


class OptimizeFn(Protocol):
  """`optimize(key, objective, state) -> (plan [H, A], state, info)`."""

  def __call__(self, key: PRNGKey, objective: Objective, state: PlanState
               ) -> tuple[jax.Array, PlanState, OptimizerInfo]:
    ...


class ShiftFn(Protocol):
  """`shift(state, steps) -> state`: drops `steps` executed actions from the mean and the
  carried elites, padding with the neutral action (static `steps`, 0 <= steps <= H)."""

  def __call__(self, state: PlanState, steps: int) -> PlanState:
    ...


class Optimizer(NamedTuple):
  """An action-sequence optimizer: pure functions closing over their configuration.

  Attributes:
    init: see `InitFn`.
    optimize: see `OptimizeFn`.
    shift: see `ShiftFn`.
  """

  init: InitFn
  optimize: OptimizeFn
  shift: ShiftFn


class ModelStep(Protocol):
  """What a model step returns: `next_obs` [N, O] and `reward` ([N] or None)."""

  @property
  def next_obs(self) -> jax.Array:
    ...

  @property
  def reward(self) -> jax.Array | None:
    ...


class ModelFn(Protocol):
  """One model step for rows obs [N, O], action [N, A], e.g. `partial(ens.predict,
  mode="tsinf")`. A model that draws standard-normal noise [N, D] per step takes it as
  `noise=` (the evaluator is told D); a model without aleatoric noise ignores it."""

  def __call__(self, params: Params, key: PRNGKey, obs: jax.Array, action: jax.Array, *,
               noise: jax.Array | None = None) -> ModelStep:
    ...


class TaskFn(Protocol):
  """A known reward or termination of one transition, unbatched: (obs [O], action [A],
  next_obs [O]) -> []."""

  def __call__(self, obs: jax.Array, action: jax.Array, next_obs: jax.Array) -> jax.Array:
    ...


class Evaluator(Protocol):
  """`evaluate(params, key, obs [O], actions [P, H, A], value_params=None) -> TrajectoryStats`."""

  def __call__(self, params: Params, key: PRNGKey, obs: jax.Array, actions: jax.Array,
               value_params: Params = None) -> TrajectoryStats:
    ...
