"""Action-sequence optimizers for model-predictive control, as pure functions.

Every optimizer has a frozen config dataclass (`CEMConfig`, `ICEMConfig`, `MPPIConfig`,
`RandomShootingConfig`, `GradientConfig`), checked once in `__post_init__` (a `ValueError` that
names the field, before anything is traced or compiled). `make_optimizer(config, horizon=H,
action_size=A, lower=..., upper=...)` closes over it and returns an `Optimizer`, three pure
functions over a `PlanState` (see `mbrl_jax.planning.base`):

  state = opt.init()                                       # mean [H, A] = midpoint, elites
  plan, state, info = opt.optimize(key, objective, state)  # [H, A], PlanState, OptimizerInfo
  state = opt.shift(state, 1)                              # one action executed

`objective(key, actions [P, H, A]) -> returns [P]` (higher is better). It may close over traced
values (a start state, model parameters), so `optimize` can be jitted and vmapped over a batch
of start states:

  jax.vmap(lambda k, s: opt.optimize(k, make_objective(s), opt.init()))(keys, states)

Each row of the population must be scored independently of the others (the gradient optimizer
differentiates the sum of the returns). NaN returns are treated as -inf. Each iteration calls
the objective with its own key (a fresh particle / noise sample per iteration, as mbrl-lib);
`common_random_numbers=True` gives every iteration the same key (one noise table per call).

Every returned plan lies within [lower, upper]. The optimizers:

  random    random shooting: uniform samples in the box (plus the initial mean), best one.
  cem       cross-entropy method as in PETS / mbrl-lib (truncated-normal or clipped sampling).
  icem      improved CEM (Pinneri et al. 2020): colored noise, decaying population, elites kept
            across iterations and, through the PlanState, across calls (shifted), the mean as a
            candidate in the last iteration.
  mppi      model-predictive path integral (Williams et al.): softmax(return / temperature)
            weighted average of noisy sequences around the mean.
  gradient  projected Adam ascent on the sequence from several starts, best start returned.

`shift(plan, fill)` drops the first action and appends `fill`: the warm start of receding-
horizon control (`Optimizer.shift` applies it to a whole PlanState).
`make_cem(horizon, action_size, lower, upper, **fields)` and its siblings are
`make_optimizer(CEMConfig(**fields), ...)`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mbrl_jax.planning.base import Objective, Optimizer, OptimizerInfo, PlanState
from mbrl_jax.types import PRNGKey

SAMPLING_MODES = ("truncated", "clip")


# ---------------------------------------------------------------------------------------------
# Configuration checks (Python values only: they run in `__post_init__` and the factory,
# before any tracing).


def _check_int(name: str, value: Any, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
  if value < minimum:
    raise ValueError(f"{name} must be >= {minimum}; got {value}")
  return int(value)


def _check_float(name: str, value: Any, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> float:
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
    raise ValueError(f"{name} must be a finite number; got {value!r}")
  value = float(value)
  bad_low = low is not None and (value <= low if low_open else value < low)
  bad_high = high is not None and (value >= high if high_open else value > high)
  if bad_low or bad_high:
    left = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
    right = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
    interval = f"{left}, {right}"
    raise ValueError(f"{name} must be in {interval}; got {value:g}")
  return value


def _broadcast_to_plan(name: str, value: Any, horizon: int, action_size: int) -> np.ndarray:
  """A scalar, [A] or [H, A] array as a float32 numpy array [H, A]."""
  shape = (horizon, action_size)
  try:
    arr = np.asarray(value, dtype=np.float32)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{name} must be a concrete number or array; got {value!r}") from e
  try:
    ok = arr.ndim <= 2 and np.broadcast_shapes(arr.shape, shape) == shape
  except ValueError:
    ok = False
  if not ok:
    raise ValueError(f"{name} must be a scalar or have shape [A] = ({action_size},) or "
                     f"[H, A] = {shape}; got shape {arr.shape}")
  arr = np.array(np.broadcast_to(arr, shape))
  if not np.all(np.isfinite(arr)):
    raise ValueError(f"{name} must be finite everywhere; got {value!r}")
  return arr


def _check_bounds(horizon: Any, action_size: Any, lower: Any, upper: Any
                  ) -> tuple[int, int, np.ndarray, np.ndarray]:
  horizon = _check_int("horizon", horizon, 1)
  action_size = _check_int("action_size", action_size, 1)
  lo = _broadcast_to_plan("lower", lower, horizon, action_size)
  hi = _broadcast_to_plan("upper", upper, horizon, action_size)
  bad = np.argwhere(lo > hi)
  if bad.size:
    t, a = bad[0]
    raise ValueError(f"lower must be <= upper everywhere; lower > upper at {len(bad)} entries, "
                     f"e.g. step {t}, action {a}: lower={lo[t, a]:g} > upper={hi[t, a]:g}")
  return horizon, action_size, lo, hi


def _check_elites(population: int, num_elites: int | None, elite_ratio: float) -> int:
  """Number of elites from num_elites (takes precedence) or elite_ratio * population."""
  if num_elites is None:
    elite_ratio = _check_float("elite_ratio", elite_ratio, 0.0, 1.0, low_open=True)
    num_elites = int(math.ceil(elite_ratio * population - 1e-9))
    if num_elites < 1:  # unreachable for a ratio in (0, 1], kept for clarity
      raise ValueError(f"elite_ratio={elite_ratio:g} gives 0 elites of population={population}")
    return num_elites
  num_elites = _check_int("num_elites", num_elites, 1)
  if num_elites > population:
    raise ValueError(f"num_elites must be <= population; got num_elites={num_elites} > "
                     f"population={population}")
  return num_elites




def _check_name(config: Any, name: str) -> None:
  if config.name != name:
    raise ValueError(f"name must be {name!r} for {type(config).__name__}; got {config.name!r}")


def _check_bool(name: str, value: Any) -> None:
  if not isinstance(value, (bool, np.bool_)):
    raise ValueError(f"{name} must be a bool; got {value!r}")


# ---------------------------------------------------------------------------------------------
# Configs: one frozen dataclass per optimizer. `name` tags the config in saved JSON (see
# `mbrl_jax.run.config.from_dict`); the other fields are the optimizer's own knobs.


@dataclasses.dataclass(frozen=True)
class RandomShootingConfig:
  """Random shooting: `population` sequences uniform in the box; the best one is returned.

  Attributes:
    name: the config's tag ("random").
    population: number of sequences evaluated.
    include_mean: replace the first sample by the (clipped) warm-start mean, so a
      warm-started plan is never lost.
  """

  name: Literal["random"] = "random"
  population: int = 1000
  include_mean: bool = True

  def __post_init__(self):
    _check_name(self, "random")
    _check_int("population", self.population, 1)
    _check_bool("include_mean", self.include_mean)


@dataclasses.dataclass(frozen=True)
class CEMConfig:
  """The cross-entropy method (PETS, mbrl-lib's `CEMOptimizer`).

  Each iteration samples `population` sequences from a diagonal Gaussian, keeps the
  `num_elites` best, and moves the Gaussian towards their mean and variance with momentum:
  mean <- alpha * mean + (1 - alpha) * elite_mean (and the same for the variance). The
  variance restarts at (init_std_scale * (upper - lower))^2 on every call; 0.25 gives
  mbrl-lib's (upper - lower)^2 / 16. Iterations are a `lax.scan`.

  Attributes:
    name: the config's tag ("cem").
    population: sequences per iteration.
    iterations: number of refinement iterations.
    elite_ratio: fraction of the population kept as elites (ceil; used if num_elites is None).
    num_elites: number of elites; overrides elite_ratio.
    alpha: momentum in [0, 1) (weight of the old mean and variance).
    init_std_scale: initial std as a fraction of the bound range (upper - lower).
    sampling: "truncated": as mbrl-lib, the variance is capped so that mean +- 2 std stays in
      the box and samples are drawn from a normal truncated at +-2 std; "clip": plain
      Gaussian samples clipped to the box. With "truncated" the std shrinks with the distance
      to a bound, so an optimum on the bound is approached slowly and the variance may
      collapse short of it (by ~0.2 of a [-1, 1] range in tests); "clip" reaches it.
    return_mean_elites: return the final mean; otherwise the best sequence ever sampled.
    common_random_numbers: score every iteration with the same objective key (one noise
      table for the whole call); False (mbrl-lib): a fresh key per iteration.
  """

  name: Literal["cem"] = "cem"
  population: int = 400
  iterations: int = 5
  elite_ratio: float = 0.1
  num_elites: int | None = None
  alpha: float = 0.1
  init_std_scale: float = 0.25
  sampling: Literal["truncated", "clip"] = "truncated"
  return_mean_elites: bool = False
  common_random_numbers: bool = False

  def __post_init__(self):
    _check_name(self, "cem")
    _check_int("population", self.population, 1)
    _check_int("iterations", self.iterations, 1)
    _check_elites(self.population, self.num_elites, self.elite_ratio)
    _check_float("alpha", self.alpha, 0.0, 1.0, high_open=True)
    _check_float("init_std_scale", self.init_std_scale, 0.0, low_open=True)
    if self.sampling not in SAMPLING_MODES:
      raise ValueError(f"sampling must be one of {SAMPLING_MODES}; got {self.sampling!r}")
    _check_bool("return_mean_elites", self.return_mean_elites)
    _check_bool("common_random_numbers", self.common_random_numbers)


@dataclasses.dataclass(frozen=True)
class ICEMConfig:
  """Improved CEM (Pinneri et al., 2020, "Sample-efficient cross-entropy method for real-time
  planning").

  Iteration i samples N_i = max(int(population * population_decay^-i), 2 * num_elites)
  sequences mean + std * colored_noise(noise_beta) (noise along the horizon), clipped to the
  box. To them are added the best int(keep_elite_frac * num_elites) elites of the previous
  iteration (in iteration 0, the PlanState's elites: those of the previous call, shifted) and,
  in the last iteration, the current mean; carried elites are re-evaluated with the rest. The
  mean and the std (as in the paper; not the variance) move towards the elites' with momentum
  alpha. The std restarts at init_std_scale * (upper - lower) on every call.

  Attributes:
    name: the config's tag ("icem").
    population: sequences sampled in the first iteration.
    iterations: number of iterations.
    elite_ratio: fraction of the first iteration's population kept as elites (ceil).
    num_elites: number of elites; overrides elite_ratio.
    alpha: momentum in [0, 1).
    init_std_scale: initial std as a fraction of the bound range.
    noise_beta: colored-noise exponent >= 0 (0 white, 2 Brownian-like; the paper uses 2-4).
    population_decay: gamma >= 1, the population shrinks by this factor per iteration.
    keep_elite_frac: fraction in [0, 1] of the elites carried into the next iteration and,
      shifted, into the next call.
    return_mean_elites: return the final mean; otherwise the best sequence evaluated.
    common_random_numbers: score every iteration with the same objective key; False: a fresh
      key per iteration.
  """

  name: Literal["icem"] = "icem"
  population: int = 400
  iterations: int = 4
  elite_ratio: float = 0.1
  num_elites: int | None = None
  alpha: float = 0.1
  init_std_scale: float = 0.25
  noise_beta: float = 2.0
  population_decay: float = 1.25
  keep_elite_frac: float = 0.3
  return_mean_elites: bool = False
  common_random_numbers: bool = False

  def __post_init__(self):
    _check_name(self, "icem")
    _check_int("population", self.population, 1)
    _check_int("iterations", self.iterations, 1)
    _check_elites(self.population, self.num_elites, self.elite_ratio)
    _check_float("alpha", self.alpha, 0.0, 1.0, high_open=True)
    _check_float("init_std_scale", self.init_std_scale, 0.0, low_open=True)
    _check_float("noise_beta", self.noise_beta, 0.0)
    _check_float("population_decay", self.population_decay, 1.0)
    _check_float("keep_elite_frac", self.keep_elite_frac, 0.0, 1.0)
    _check_bool("return_mean_elites", self.return_mean_elites)
    _check_bool("common_random_numbers", self.common_random_numbers)

  @property
  def num_carried(self) -> int:
    """Elites carried from one iteration (and call) to the next."""
    return int(self.keep_elite_frac * _check_elites(self.population, self.num_elites,
                                                      self.elite_ratio))


@dataclasses.dataclass(frozen=True)
class MPPIConfig:
  """Model-predictive path integral control (Williams et al.), as an optimizer.

  Each iteration samples `population` sequences mean + noise_std * N(0, 1), clipped to the
  box, and sets the mean to their average weighted by softmax(returns / temperature). The
  returned plan is the final mean (a convex combination of in-box sequences, so in the box).
  The temperature is in units of the return: small values approach "take the best sample".
  Iterations are a `lax.scan`.

  Attributes:
    name: the config's tag ("mppi").
    population: sequences per iteration.
    iterations: number of refinement iterations.
    temperature: lambda > 0.
    noise_std: sampling std (absolute), > 0: a number, or one per action dimension.
    common_random_numbers: score every iteration with the same objective key; False: a fresh
      key per iteration.
  """

  name: Literal["mppi"] = "mppi"
  population: int = 400
  iterations: int = 5
  temperature: float = 1.0
  noise_std: float | tuple[float, ...] = 0.3
  common_random_numbers: bool = False

  def __post_init__(self):
    _check_name(self, "mppi")
    _check_int("population", self.population, 1)
    _check_int("iterations", self.iterations, 1)
    _check_float("temperature", self.temperature, 0.0, low_open=True)
    try:
      sigma = np.asarray(self.noise_std, np.float64)
    except (TypeError, ValueError):
      sigma = np.asarray(np.nan)
    if sigma.dtype == object or not np.all(np.isfinite(sigma)) or np.any(sigma <= 0):
      raise ValueError(f"noise_std must be finite and > 0 everywhere; got {self.noise_std!r}")
    _check_bool("common_random_numbers", self.common_random_numbers)


@dataclasses.dataclass(frozen=True)
class GradientConfig:
  """Gradient ascent on the action sequence through a differentiable objective.

  Starts: the (clipped) warm-start mean and num_starts - 1 sequences uniform in the box. All
  starts take `num_steps` Adam steps (one batched objective call per step, on the sum of the
  returns) and are projected back into the box (clipped) after every step, so a boundary
  optimum is reached exactly. Non-finite gradient entries are zeroed. The plan is the best
  sequence seen over all starts and steps (each step's evaluation is reused; the final
  iterates are evaluated once more). Steps are a `lax.scan`.

  Attributes:
    name: the config's tag ("gradient").
    num_starts: number of starts (the first is the warm-start mean).
    num_steps: ascent steps per start.
    learning_rate: Adam step size.
    common_random_numbers: every step ascends the objective under the same key (one
      deterministic objective per call, the default); False: a fresh key per step
      (stochastic gradients).
  """

  name: Literal["gradient"] = "gradient"
  num_starts: int = 8
  num_steps: int = 100
  learning_rate: float = 0.05
  common_random_numbers: bool = True

  def __post_init__(self):
    _check_name(self, "gradient")
    _check_int("num_starts", self.num_starts, 1)
    _check_int("num_steps", self.num_steps, 1)
    _check_float("learning_rate", self.learning_rate, 0.0, low_open=True)
    _check_bool("common_random_numbers", self.common_random_numbers)


OptimizerConfig = RandomShootingConfig | CEMConfig | ICEMConfig | MPPIConfig | GradientConfig

# name -> config class; `make_optimizer(OPTIMIZERS[name](**fields), ...)`.
OPTIMIZERS: dict[str, type] = {
    "random": RandomShootingConfig,
    "cem": CEMConfig,
    "icem": ICEMConfig,
    "mppi": MPPIConfig,
    "gradient": GradientConfig,
}


# ---------------------------------------------------------------------------------------------
# Shared pieces of the traced code.


def _prepare_mean(state: PlanState, lo: np.ndarray, hi: np.ndarray, num_carried: int
                  ) -> tuple[jax.Array, jax.Array]:
  """The state's mean as float32 [H, A] clipped into the box, and its elites [K, H, A]
  clipped (shapes checked statically)."""
  if not isinstance(state, PlanState):
    raise ValueError(f"state must be a PlanState (from the optimizer's init); got "
                     f"{type(state).__name__}")
  mean = jnp.asarray(state.mean, jnp.float32)
  if mean.shape != lo.shape:
    raise ValueError(f"state.mean must have shape [H, A] = {lo.shape}; got {mean.shape}")
  elites = jnp.asarray(state.elites, jnp.float32)
  if elites.shape != (num_carried, *lo.shape):
    raise ValueError(f"state.elites must have shape [K, H, A] = {(num_carried, *lo.shape)}; "
                     f"got {elites.shape}")
  return jnp.clip(mean, lo, hi), jnp.clip(elites, lo, hi)


def _evaluate(objective: Objective, key: PRNGKey, seqs: jax.Array) -> jax.Array:
  """Returns of `seqs` [P, H, A] as [P], with NaN replaced by -inf."""
  returns = jnp.asarray(objective(key, seqs))
  if returns.shape != seqs.shape[:1]:
    raise ValueError(f"objective must map action sequences [P, H, A] = {seqs.shape} to "
                     f"returns [P]; got shape {returns.shape}")
  returns = returns.astype(jnp.float32)
  return jnp.where(jnp.isnan(returns), -jnp.inf, returns)


def _iteration_key(key: PRNGKey, i: jax.Array | int, common: bool) -> PRNGKey:
  """The objective's key in iteration i: `key` itself with common random numbers."""
  return key if common else jax.random.fold_in(key, i)


def _update_best(best_return: jax.Array, best_seq: jax.Array, returns: jax.Array,
                 seqs: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Keeps the best (return [], sequence [H, A]) seen, given a new population's results."""
  i = jnp.argmax(returns)
  better = returns[i] > best_return
  return (jnp.where(better, returns[i], best_return),
          jnp.where(better, seqs[i], best_seq))


def shift(plan: jax.Array, fill: jax.Array | float, steps: int = 1) -> jax.Array:
  """Drops the first `steps` actions of `plan` and appends `fill` at the end.

  Args:
    plan: action sequence(s).                                    # [..., H, A]
    fill: the action appended, broadcastable to [..., A] (a scalar, an action [A], or one per
      leading index), e.g. the bounds' midpoint `opt.init().mean[-1]`.
    steps: how many actions to drop (static); 0 <= steps <= H.

  Returns:
    The shifted sequence(s), same shape and dtype as `plan`.     # [..., H, A]
  """
  plan = jnp.asarray(plan)
  horizon = plan.shape[-2]
  steps = _check_int("steps", steps, 0)
  if steps > horizon:
    raise ValueError(f"steps must be <= horizon={horizon}; got {steps}")
  fill = jnp.asarray(fill, plan.dtype)
  if fill.ndim:
    fill = fill[..., None, :]                                    # [..., 1, A]
  fill = jnp.broadcast_to(fill, plan.shape[:-2] + (steps, plan.shape[-1]))
  return jnp.concatenate([plan[..., steps:, :], fill], axis=-2)


def _state_fns(lo: np.ndarray, hi: np.ndarray, num_carried: int
               ) -> tuple[Callable[[], PlanState], Callable[[PlanState, int], PlanState]]:
  """`init` (mean = midpoint, elites = num_carried copies of it) and `shift` (padding each
  step's freed slot with that step's midpoint, the neutral action)."""
  mid = ((lo + hi) / 2).astype(np.float32)                                # [H, A]
  horizon = mid.shape[0]

  def init() -> PlanState:
    return PlanState(mean=jnp.asarray(mid),
                     elites=jnp.broadcast_to(jnp.asarray(mid), (num_carried, *mid.shape)))

  def shift_state(state: PlanState, steps: int) -> PlanState:
    steps = _check_int("steps", steps, 0)
    if steps > horizon:
      raise ValueError(f"steps must be <= horizon={horizon}; got {steps}")
    pad = mid[horizon - steps:]                                           # [steps, A]

    def one(x):
      x = jnp.asarray(x)
      fill = jnp.broadcast_to(jnp.asarray(pad, x.dtype), x.shape[:-2] + pad.shape)
      return jnp.concatenate([x[..., steps:, :], fill], axis=-2)

    return PlanState(mean=one(state.mean), elites=one(state.elites))

  return init, shift_state


# ---------------------------------------------------------------------------------------------
# Random shooting.


def _random_shooting(c: RandomShootingConfig, lo: np.ndarray, hi: np.ndarray) -> Optimizer:
  shape = (c.population, *lo.shape)
  init, shift_state = _state_fns(lo, hi, 0)

  def optimize(key: PRNGKey, objective: Objective, state: PlanState
               ) -> tuple[jax.Array, PlanState, OptimizerInfo]:
    mean, _ = _prepare_mean(state, lo, hi, 0)                             # [H, A]
    sample_key, eval_key = jax.random.split(key)
    seqs = jax.random.uniform(sample_key, shape, jnp.float32, lo, hi)    # [P, H, A]
    if c.include_mean:
      seqs = seqs.at[0].set(mean)
    returns = _evaluate(objective, eval_key, seqs)                        # [P]
    best = jnp.argmax(returns)
    plan = seqs[best]
    finite_mean = jnp.mean(jnp.where(jnp.isfinite(returns), returns, jnp.nan))
    info = OptimizerInfo(best_return=returns[best], iteration_returns=finite_mean[None],
                         final_std=jnp.std(seqs, axis=0), elites=plan[None])
    return plan, state._replace(mean=plan), info

  return Optimizer(init=init, optimize=optimize, shift=shift_state)


# ---------------------------------------------------------------------------------------------
# Cross-entropy method.


class _CEMCarry(NamedTuple):
  """Carry of the CEM iterations.

  Attributes:
    mean: sampling mean.                        # [H, A]
    var: sampling variance.                     # [H, A]
    best_return: best return seen so far.       # []
    best_seq: sequence that achieved it.        # [H, A]
  """

  mean: jax.Array
  var: jax.Array
  best_return: jax.Array
  best_seq: jax.Array


def _cem(c: CEMConfig, lo: np.ndarray, hi: np.ndarray) -> Optimizer:
  num_elites = _check_elites(c.population, c.num_elites, c.elite_ratio)
  init_var = np.square(c.init_std_scale * (hi - lo))                     # [H, A]
  shape = (c.population, *lo.shape)
  init, shift_state = _state_fns(lo, hi, 0)

  def iteration(carry: _CEMCarry, inputs, objective: Objective, eval_key: PRNGKey
                ) -> tuple[_CEMCarry, tuple[jax.Array, jax.Array]]:
    i, key = inputs
    if c.sampling == "truncated":
      cap = jnp.minimum(jnp.square((carry.mean - lo) / 2), jnp.square((hi - carry.mean) / 2))
      std = jnp.sqrt(jnp.minimum(carry.var, cap))                        # [H, A]
      noise = jax.random.truncated_normal(key, -2.0, 2.0, shape, jnp.float32)
    else:
      std = jnp.sqrt(carry.var)
      noise = jax.random.normal(key, shape, jnp.float32)
    seqs = jnp.clip(carry.mean + std * noise, lo, hi)                    # [P, H, A]
    returns = _evaluate(objective, _iteration_key(eval_key, i, c.common_random_numbers), seqs)
    elite_returns, idx = jax.lax.top_k(returns, num_elites)              # [K], [K]
    elites = seqs[idx]                                                   # [K, H, A]
    mean = c.alpha * carry.mean + (1 - c.alpha) * elites.mean(0)
    var = c.alpha * carry.var + (1 - c.alpha) * elites.var(0)
    best_return, best_seq = _update_best(carry.best_return, carry.best_seq, returns, seqs)
    return _CEMCarry(mean, var, best_return, best_seq), (elite_returns.mean(), elites)

  def optimize(key: PRNGKey, objective: Objective, state: PlanState
               ) -> tuple[jax.Array, PlanState, OptimizerInfo]:
    mean, _ = _prepare_mean(state, lo, hi, 0)
    carry = _CEMCarry(mean=mean, var=jnp.asarray(init_var), best_return=jnp.float32(-jnp.inf),
                      best_seq=mean)
    sample_key, eval_key = jax.random.split(key)
    xs = (jnp.arange(c.iterations), jax.random.split(sample_key, c.iterations))
    carry, (elite_means, elites) = jax.lax.scan(
        lambda s, x: iteration(s, x, objective, eval_key), carry, xs)
    plan = jnp.clip(carry.mean, lo, hi) if c.return_mean_elites else carry.best_seq
    info = OptimizerInfo(best_return=carry.best_return, iteration_returns=elite_means,
                         final_std=jnp.sqrt(carry.var), elites=elites[-1])
    return plan, state._replace(mean=plan), info

  return Optimizer(init=init, optimize=optimize, shift=shift_state)


# ---------------------------------------------------------------------------------------------
# iCEM.


def colored_noise(key: PRNGKey, beta: float, num_samples: int, horizon: int, action_size: int
                  ) -> jax.Array:
  """Gaussian noise with power spectrum ~ 1/f^beta along the horizon axis.

  White Gaussian spectra are scaled by f^(-beta/2) (the zero frequency gets the lowest nonzero
  frequency's scale, 1/H) and transformed back with an inverse real FFT. The result is divided
  by its exact standard deviation, so every entry is marginally N(0, 1); beta = 0 gives i.i.d.
  white noise, beta = 2 (Brownian-like) puts most power at low frequencies (smooth sequences).

  Args:
    key: PRNG key.
    beta: spectral exponent >= 0 (static).
    num_samples, horizon, action_size: the output shape (static).

  Returns:
    Noise, independent across samples and action dimensions.     # [N, H, A]
  """
  n_freq = horizon // 2 + 1
  freqs = np.fft.rfftfreq(horizon)
  freqs[0] = 1.0 / horizon
  scale = freqs ** (-beta / 2.0)                                          # [F]
  # DC (and Nyquist for even H) are real: a sqrt(2) larger real part keeps their power in line.
  edge = np.zeros(n_freq, bool)
  edge[0] = True
  if horizon % 2 == 0:
    edge[-1] = True
  re_scale = scale * np.where(edge, math.sqrt(2.0), 1.0)
  im_scale = scale * np.where(edge, 0.0, 1.0)
  # Var(y_t) = (1 / H^2) * sum_k mult_k * (re_k^2 + im_k^2), mult 1 on real bins, 2 on others.
  var = np.sum(np.where(edge, 1.0, 2.0) * (re_scale ** 2 + im_scale ** 2)) / horizon ** 2
  k_re, k_im = jax.random.split(key)
  spec_shape = (num_samples, action_size, n_freq)
  spectrum = (jax.random.normal(k_re, spec_shape) * re_scale.astype(np.float32)
              + 1j * jax.random.normal(k_im, spec_shape) * im_scale.astype(np.float32))
  noise = jnp.fft.irfft(spectrum, n=horizon, axis=-1) / np.float32(math.sqrt(var))  # [N, A, H]
  return jnp.swapaxes(noise, -1, -2).astype(jnp.float32)                 # [N, H, A]


def icem_population_sizes(population: int, iterations: int, decay: float, num_elites: int
                          ) -> tuple[int, ...]:
  """Sampled sequences per iteration: max(int(population * decay^-i), 2 * num_elites)."""
  return tuple(max(int(population * decay ** -i), 2 * num_elites) for i in range(iterations))


class _ICEMCarry(NamedTuple):
  """Carry of the iCEM iterations.

  Attributes:
    mean: sampling mean.                                  # [H, A]
    std: sampling std.                                    # [H, A]
    kept: elites carried into the next iteration.         # [k, H, A], k = num_carried
    best_return: best return seen so far.                 # []
    best_seq: sequence that achieved it.                  # [H, A]
  """

  mean: jax.Array
  std: jax.Array
  kept: jax.Array
  best_return: jax.Array
  best_seq: jax.Array


def _icem(c: ICEMConfig, lo: np.ndarray, hi: np.ndarray) -> Optimizer:
  """Static shapes: the N_i are computed in Python (`icem_population_sizes`) and every
  iteration runs at its own size, so no compute is spent on masked samples. The first and the
  last iteration are unrolled (their candidate sets differ); runs of middle iterations of equal
  size (all of them once the 2 * num_elites floor is reached, or with population_decay = 1)
  share one `lax.scan`: the objective is traced for the first iteration, once per run, and for
  the last, not once per iteration. All iterations' noise is drawn at once."""
  horizon, action_size = lo.shape
  iterations = c.iterations
  num_elites = _check_elites(c.population, c.num_elites, c.elite_ratio)
  num_keep = c.num_carried
  sizes = icem_population_sizes(c.population, iterations, c.population_decay, num_elites)
  # Runs (first, length, size) of equal-size middle iterations 1 .. iterations - 2.
  runs: list[tuple[int, int, int]] = []
  for i in range(1, iterations - 1):
    if runs and runs[-1][2] == sizes[i]:
      runs[-1] = (runs[-1][0], runs[-1][1] + 1, sizes[i])
    else:
      runs.append((i, 1, sizes[i]))
  offsets = np.cumsum((0,) + sizes)             # noise rows of iteration i: offsets[i]:offsets[i+1]
  init_std = c.init_std_scale * (hi - lo)                                 # [H, A]
  init, shift_state = _state_fns(lo, hi, num_keep)

  def iteration(carry: _ICEMCarry, inputs, objective: Objective, eval_key: PRNGKey, last: bool
                ) -> tuple[_ICEMCarry, tuple[jax.Array, jax.Array]]:
    i, noise = inputs
    parts = [jnp.clip(carry.mean + carry.std * noise, lo, hi), carry.kept]
    if last:
      parts.append(carry.mean[None])
    seqs = jnp.concatenate(parts)                                         # [N_i + k (+1), H, A]
    returns = _evaluate(objective, _iteration_key(eval_key, i, c.common_random_numbers), seqs)
    elite_returns, idx = jax.lax.top_k(returns, num_elites)
    elites = seqs[idx]                                                    # [K, H, A]
    mean = c.alpha * carry.mean + (1 - c.alpha) * elites.mean(0)
    std = c.alpha * carry.std + (1 - c.alpha) * elites.std(0)
    best_return, best_seq = _update_best(carry.best_return, carry.best_seq, returns, seqs)
    new = _ICEMCarry(mean, std, elites[:num_keep], best_return, best_seq)
    return new, (elite_returns.mean(), elites)

  def optimize(key: PRNGKey, objective: Objective, state: PlanState
               ) -> tuple[jax.Array, PlanState, OptimizerInfo]:
    mean, kept = _prepare_mean(state, lo, hi, num_keep)                   # [H, A], [k, H, A]
    carry = _ICEMCarry(mean=mean, std=jnp.asarray(init_std), kept=kept,
                       best_return=jnp.float32(-jnp.inf), best_seq=mean)
    noise_key, eval_key = jax.random.split(key)
    # All iterations' noise in one draw (one RNG and FFT in the compiled program, not one per
    # population size), sliced per iteration; it does not depend on the carry.
    total = int(offsets[-1])
    noise = colored_noise(noise_key, c.noise_beta, total, horizon, action_size)  # [sum N_i, H, A]
    chunk = lambda i, n=1: noise[offsets[i]:offsets[i + n]]
    step = lambda s, x, last: iteration(s, x, objective, eval_key, last)
    carry, (first_return, elites) = step(carry, (0, chunk(0)), iterations == 1)
    elite_means = [first_return[None]]
    for first, length, size in runs:
      if length == 1:
        carry, (ret, _) = step(carry, (first, chunk(first)), False)
        elite_means.append(ret[None])
      else:
        xs = (jnp.arange(first, first + length),
              chunk(first, length).reshape(length, size, horizon, action_size))
        carry, (ret, _) = jax.lax.scan(lambda s, x: step(s, x, False), carry, xs)
        elite_means.append(ret)
    if iterations > 1:
      carry, (last_return, elites) = step(carry, (iterations - 1, chunk(iterations - 1)), True)
      elite_means.append(last_return[None])
    final_mean = jnp.clip(carry.mean, lo, hi)
    plan = final_mean if c.return_mean_elites else carry.best_seq
    info = OptimizerInfo(best_return=carry.best_return,
                         iteration_returns=jnp.concatenate(elite_means),
                         final_std=carry.std, elites=elites)
    return plan, PlanState(mean=final_mean, elites=carry.kept), info

  return Optimizer(init=init, optimize=optimize, shift=shift_state)


# ---------------------------------------------------------------------------------------------
# MPPI.


def _mppi(c: MPPIConfig, lo: np.ndarray, hi: np.ndarray) -> Optimizer:
  sigma = _broadcast_to_plan("noise_std", c.noise_std, *lo.shape)
  shape = (c.population, *lo.shape)
  init, shift_state = _state_fns(lo, hi, 0)

  def iteration(carry: tuple[jax.Array, jax.Array], inputs, objective: Objective,
                eval_key: PRNGKey):
    mean, best_return = carry                                             # [H, A], []
    i, key = inputs
    seqs = jnp.clip(mean + sigma * jax.random.normal(key, shape, jnp.float32), lo, hi)
    returns = _evaluate(objective, _iteration_key(eval_key, i, c.common_random_numbers), seqs)
    top = jnp.max(returns)
    logits = (returns - jnp.where(jnp.isfinite(top), top, 0.0)) / c.temperature
    w = jnp.exp(logits)                                                   # 0 where -inf
    total = w.sum()
    w = jnp.where(total > 0, w / jnp.where(total > 0, total, 1.0), 1.0 / c.population)  # [P]
    new_mean = jnp.einsum("p,pha->ha", w, seqs)
    spread = jnp.sqrt(jnp.einsum("p,pha->ha", w, jnp.square(seqs - new_mean)))
    weighted_return = jnp.sum(jnp.where(w > 0, w * returns, 0.0))
    best = seqs[jnp.argmax(returns)]
    return (new_mean, jnp.maximum(best_return, top)), (weighted_return, spread, best)

  def optimize(key: PRNGKey, objective: Objective, state: PlanState
               ) -> tuple[jax.Array, PlanState, OptimizerInfo]:
    mean, _ = _prepare_mean(state, lo, hi, 0)
    sample_key, eval_key = jax.random.split(key)
    xs = (jnp.arange(c.iterations), jax.random.split(sample_key, c.iterations))
    (mean, best_return), (weighted, spread, best) = jax.lax.scan(
        lambda s, x: iteration(s, x, objective, eval_key), (mean, jnp.float32(-jnp.inf)), xs)
    plan = jnp.clip(mean, lo, hi)
    info = OptimizerInfo(best_return=best_return, iteration_returns=weighted,
                         final_std=spread[-1], elites=best[-1][None])
    return plan, state._replace(mean=plan), info

  return Optimizer(init=init, optimize=optimize, shift=shift_state)


# ---------------------------------------------------------------------------------------------
# Gradient-based.


class _GradientCarry(NamedTuple):
  """Carry of the gradient steps.

  Attributes:
    seqs: current iterate of every start.       # [S, H, A]
    opt_state: optax state for `seqs`.
    best_return: best return seen so far.       # []
    best_seq: sequence that achieved it.        # [H, A]
  """

  seqs: jax.Array
  opt_state: optax.OptState
  best_return: jax.Array
  best_seq: jax.Array


def _gradient(c: GradientConfig, lo: np.ndarray, hi: np.ndarray,
              tx: optax.GradientTransformation | None = None) -> Optimizer:
  if tx is None:
    tx = optax.adam(c.learning_rate)
  elif not isinstance(tx, optax.GradientTransformation):
    raise ValueError(f"optimizer must be an optax.GradientTransformation; got {tx!r}")
  init, shift_state = _state_fns(lo, hi, 0)

  def optimize(key: PRNGKey, objective: Objective, state: PlanState
               ) -> tuple[jax.Array, PlanState, OptimizerInfo]:
    mean, _ = _prepare_mean(state, lo, hi, 0)
    start_key, eval_key = jax.random.split(key)
    others = jax.random.uniform(start_key, (c.num_starts - 1, *lo.shape), jnp.float32, lo, hi)
    seqs = jnp.concatenate([mean[None], others])                          # [S, H, A]

    def loss(x: jax.Array, k: PRNGKey) -> tuple[jax.Array, jax.Array]:
      returns = _evaluate(objective, k, x)
      return -jnp.sum(jnp.where(jnp.isfinite(returns), returns, 0.0)), returns

    def step(carry: _GradientCarry, i: jax.Array) -> tuple[_GradientCarry, jax.Array]:
      k = _iteration_key(eval_key, i, c.common_random_numbers)
      (_, returns), grad = jax.value_and_grad(loss, has_aux=True)(carry.seqs, k)
      grad = jnp.where(jnp.isfinite(grad), grad, 0.0)
      best_return, best_seq = _update_best(carry.best_return, carry.best_seq, returns,
                                           carry.seqs)
      updates, opt_state = tx.update(grad, carry.opt_state, carry.seqs)
      new_seqs = jnp.clip(optax.apply_updates(carry.seqs, updates), lo, hi)
      return _GradientCarry(new_seqs, opt_state, best_return, best_seq), returns.max()

    carry = _GradientCarry(seqs=seqs, opt_state=tx.init(seqs),
                           best_return=jnp.float32(-jnp.inf), best_seq=mean)
    carry, step_best = jax.lax.scan(step, carry, jnp.arange(c.num_steps))
    final_key = _iteration_key(eval_key, c.num_steps, c.common_random_numbers)
    final_returns = _evaluate(objective, final_key, carry.seqs)           # [S]
    best_return, plan = _update_best(carry.best_return, carry.best_seq, final_returns,
                                     carry.seqs)
    order = jnp.argsort(-final_returns)
    info = OptimizerInfo(best_return=best_return, iteration_returns=step_best,
                         final_std=jnp.std(carry.seqs, axis=0), elites=carry.seqs[order])
    return plan, state._replace(mean=plan), info

  return Optimizer(init=init, optimize=optimize, shift=shift_state)


# ---------------------------------------------------------------------------------------------
# Building by config.

_BUILDERS: dict[type, Callable[..., Optimizer]] = {
    RandomShootingConfig: _random_shooting,
    CEMConfig: _cem,
    ICEMConfig: _icem,
    MPPIConfig: _mppi,
    GradientConfig: _gradient,
}


def make_optimizer(config: OptimizerConfig, *, horizon: int, action_size: int,
                   lower: Any = -1.0, upper: Any = 1.0) -> Optimizer:
  """Builds the optimizer `config` describes, over sequences [H, A] in [lower, upper].

  Args:
    config: a `CEMConfig`, `ICEMConfig`, `MPPIConfig`, `RandomShootingConfig` or
      `GradientConfig` (already checked by its `__post_init__`).
    horizon: H, actions per sequence.
    action_size: A.
    lower, upper: action bounds: scalars, [A] or [H, A].

  Example:
    >>> import jax, jax.numpy as jnp
    >>> opt = make_optimizer(ICEMConfig(population=50), horizon=10, action_size=1)
    >>> objective = lambda key, a: -jnp.sum(jnp.square(a - 0.5), axis=(1, 2))
    >>> plan, state, info = opt.optimize(jax.random.key(0), objective, opt.init())
    >>> plan.shape, state.elites.shape           # iCEM carries int(0.3 * 5) = 1 elite
    ((10, 1), (1, 10, 1))
    >>> state = opt.shift(state, 1)              # one action executed: the next warm start
  """
  builder = _BUILDERS.get(type(config))
  if builder is None:
    raise ValueError(f"config must be one of {[c.__name__ for c in _BUILDERS]}; got "
                     f"{type(config).__name__}")
  _, _, lo, hi = _check_bounds(horizon, action_size, lower, upper)
  return builder(config, lo, hi)


def make_random_shooting(horizon: int, action_size: int, lower: Any = -1.0, upper: Any = 1.0,
                         **fields: Any) -> Optimizer:
  """`make_optimizer(RandomShootingConfig(**fields), ...)`."""
  return make_optimizer(RandomShootingConfig(**fields), horizon=horizon,
                        action_size=action_size, lower=lower, upper=upper)


def make_cem(horizon: int, action_size: int, lower: Any = -1.0, upper: Any = 1.0,
             **fields: Any) -> Optimizer:
  """`make_optimizer(CEMConfig(**fields), ...)`."""
  return make_optimizer(CEMConfig(**fields), horizon=horizon, action_size=action_size,
                        lower=lower, upper=upper)


def make_icem(horizon: int, action_size: int, lower: Any = -1.0, upper: Any = 1.0,
              **fields: Any) -> Optimizer:
  """`make_optimizer(ICEMConfig(**fields), ...)`."""
  return make_optimizer(ICEMConfig(**fields), horizon=horizon, action_size=action_size,
                        lower=lower, upper=upper)


def make_mppi(horizon: int, action_size: int, lower: Any = -1.0, upper: Any = 1.0,
              **fields: Any) -> Optimizer:
  """`make_optimizer(MPPIConfig(**fields), ...)`."""
  return make_optimizer(MPPIConfig(**fields), horizon=horizon, action_size=action_size,
                        lower=lower, upper=upper)


def make_gradient(horizon: int, action_size: int, lower: Any = -1.0, upper: Any = 1.0, *,
                  optimizer: optax.GradientTransformation | None = None,
                  **fields: Any) -> Optimizer:
  """`make_optimizer(GradientConfig(**fields), ...)`; `optimizer`: an optax transformation
  to use instead of Adam(learning_rate) (it minimises the negated returns)."""
  _, _, lo, hi = _check_bounds(horizon, action_size, lower, upper)
  return _gradient(GradientConfig(**fields), lo, hi, optimizer)
