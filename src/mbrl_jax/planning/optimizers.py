"""Action-sequence optimizers for model-predictive control, as pure functions.

Every optimizer is built by a factory that checks its configuration (raising `ValueError` that
names the offending parameter, before anything is traced or compiled) and closes over it. The
factory returns an `Optimizer`, a pair of pure functions:

  mean = opt.init()                                  # [H, A] midpoint of the action bounds
  plan, info = opt.optimize(key, objective, mean)    # [H, A], OptimizerInfo

`objective` maps a population of action sequences [P, H, A] to their returns [P] (higher is
better). It may close over traced values (a start state, model parameters), so `optimize` can be
jitted and vmapped over a batch of start states:

  jax.vmap(lambda k, s: opt.optimize(k, make_objective(s), mean))(keys, states)

Each row of the population must be scored independently of the others (the gradient optimizer
differentiates the sum of the returns). NaN returns are treated as -inf.

Every returned plan lies within [lower, upper]. The optimizers:

  random    random shooting: uniform samples in the box (plus the initial mean), best one.
  cem       cross-entropy method as in PETS / mbrl-lib (truncated-normal or clipped sampling).
  icem      improved CEM (Pinneri et al. 2020): colored noise, decaying population, elites kept
            across iterations, the mean as a candidate in the last iteration, warm-start elites.
  mppi      model-predictive path integral (Williams et al.): softmax(return / temperature)
            weighted average of noisy sequences around the mean.
  gradient  projected Adam ascent on the sequence from several starts, best start returned.

`shift(plan, fill)` drops the first action and appends `fill`: the warm start of receding-
horizon control. `make_optimizer(name, **kwargs)` builds one by name.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mbrl_jax.types import PRNGKey

# Maps action sequences [P, H, A] to returns [P]; higher is better.
Objective = Callable[[jax.Array], jax.Array]


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
      cem / icem: the K = num_elites elites (shift them and pass them to iCEM's
      `prev_elites` to warm start); random / mppi: the best sample (K = 1); gradient: the
      final iterate of every start (K = num_starts), sorted by final return.
  """

  best_return: jax.Array
  iteration_returns: jax.Array
  final_std: jax.Array
  elites: jax.Array


class Optimizer(NamedTuple):
  """An action-sequence optimizer: pure functions closing over their configuration.

  Attributes:
    init: `() -> mean [H, A]`, the midpoint of the bounds: a neutral initial plan.
    optimize: `(key, objective, init_mean) -> (plan [H, A], OptimizerInfo)`. iCEM's also
      takes an optional `prev_elites` [K', H, A] (already shifted) to warm start.
  """

  init: Callable[[], jax.Array]
  optimize: Callable[..., tuple[jax.Array, OptimizerInfo]]


# ---------------------------------------------------------------------------------------------
# Configuration checks (Python values only: they run in the factory, before any tracing).


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


# ---------------------------------------------------------------------------------------------
# Shared pieces of the traced code.


def _prepare_mean(init_mean: jax.Array, lo: np.ndarray, hi: np.ndarray) -> jax.Array:
  """The initial mean as float32 [H, A], clipped into the box (shape checked statically)."""
  init_mean = jnp.asarray(init_mean, jnp.float32)
  if init_mean.shape != lo.shape:
    raise ValueError(f"init_mean must have shape [H, A] = {lo.shape}; got {init_mean.shape}")
  return jnp.clip(init_mean, lo, hi)


def _evaluate(objective: Objective, seqs: jax.Array) -> jax.Array:
  """Returns of `seqs` [P, H, A] as [P], with NaN replaced by -inf."""
  returns = jnp.asarray(objective(seqs))
  if returns.shape != seqs.shape[:1]:
    raise ValueError(f"objective must map action sequences [P, H, A] = {seqs.shape} to "
                     f"returns [P]; got shape {returns.shape}")
  returns = returns.astype(jnp.float32)
  return jnp.where(jnp.isnan(returns), -jnp.inf, returns)


def _update_best(best_return: jax.Array, best_seq: jax.Array, returns: jax.Array,
                 seqs: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Keeps the best (return [], sequence [H, A]) seen, given a new population's results."""
  i = jnp.argmax(returns)
  better = returns[i] > best_return
  return (jnp.where(better, returns[i], best_return),
          jnp.where(better, seqs[i], best_seq))


def _init_fn(lo: np.ndarray, hi: np.ndarray) -> Callable[[], jax.Array]:
  mid = (lo + hi) / 2

  def init() -> jax.Array:
    return jnp.asarray(mid)  # [H, A]

  return init


def shift(plan: jax.Array, fill: jax.Array | float, steps: int = 1) -> jax.Array:
  """Drops the first `steps` actions of `plan` and appends `fill` at the end.

  Args:
    plan: action sequence(s).                                    # [..., H, A]
    fill: the action appended, broadcastable to [..., A] (a scalar, an action [A], or one per
      leading index), e.g. the bounds' midpoint `opt.init()[-1]`.
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


# ---------------------------------------------------------------------------------------------
# Random shooting.


def make_random_shooting(horizon: int, action_size: int, lower: Any = -1.0, upper: Any = 1.0,
                         population: int = 1000, include_mean: bool = True) -> Optimizer:
  """Random shooting: `population` sequences uniform in the box; the best one is returned.

  Args:
    horizon: H, actions per sequence.
    action_size: A.
    lower, upper: action bounds: scalars, [A] or [H, A].
    population: number of sequences evaluated.
    include_mean: replace the first sample by the (clipped) initial mean, so a warm-started
      plan is never lost.
  """
  horizon, action_size, lo, hi = _check_bounds(horizon, action_size, lower, upper)
  population = _check_int("population", population, 1)
  include_mean = bool(include_mean)
  shape = (population, horizon, action_size)

  def optimize(key: PRNGKey, objective: Objective, init_mean: jax.Array
               ) -> tuple[jax.Array, OptimizerInfo]:
    mean = _prepare_mean(init_mean, lo, hi)                             # [H, A]
    seqs = jax.random.uniform(key, shape, jnp.float32, lo, hi)         # [P, H, A]
    if include_mean:
      seqs = seqs.at[0].set(mean)
    returns = _evaluate(objective, seqs)                                # [P]
    best = jnp.argmax(returns)
    plan = seqs[best]
    finite_mean = jnp.mean(jnp.where(jnp.isfinite(returns), returns, jnp.nan))
    info = OptimizerInfo(best_return=returns[best], iteration_returns=finite_mean[None],
                         final_std=jnp.std(seqs, axis=0), elites=plan[None])
    return plan, info

  return Optimizer(init=_init_fn(lo, hi), optimize=optimize)


# ---------------------------------------------------------------------------------------------
# Cross-entropy method.

SAMPLING_MODES = ("truncated", "clip")


class CEMState(NamedTuple):
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


def make_cem(horizon: int, action_size: int, lower: Any = -1.0, upper: Any = 1.0,
             population: int = 400, iterations: int = 5, elite_ratio: float = 0.1,
             num_elites: int | None = None, alpha: float = 0.1, init_std_scale: float = 0.25,
             sampling: str = "truncated", return_mean_elites: bool = False) -> Optimizer:
  """The cross-entropy method over action sequences (PETS, mbrl-lib's `CEMOptimizer`).

  Each iteration samples `population` sequences from a diagonal Gaussian, keeps the
  `num_elites` best, and moves the Gaussian towards their mean and variance with momentum:
  mean <- alpha * mean + (1 - alpha) * elite_mean (and the same for the variance). The
  variance restarts at (init_std_scale * (upper - lower))^2 on every call; 0.25 gives
  mbrl-lib's (upper - lower)^2 / 16. Iterations are a `lax.scan`.

  Args:
    horizon, action_size, lower, upper: as in `make_random_shooting`.
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
  """
  horizon, action_size, lo, hi = _check_bounds(horizon, action_size, lower, upper)
  population = _check_int("population", population, 1)
  iterations = _check_int("iterations", iterations, 1)
  num_elites = _check_elites(population, num_elites, elite_ratio)
  alpha = _check_float("alpha", alpha, 0.0, 1.0, high_open=True)
  init_std_scale = _check_float("init_std_scale", init_std_scale, 0.0, low_open=True)
  if sampling not in SAMPLING_MODES:
    raise ValueError(f"sampling must be one of {SAMPLING_MODES}; got {sampling!r}")
  return_mean_elites = bool(return_mean_elites)
  init_var = np.square(init_std_scale * (hi - lo))                       # [H, A]
  shape = (population, horizon, action_size)

  def iteration(state: CEMState, key: PRNGKey, objective: Objective
                ) -> tuple[CEMState, tuple[jax.Array, jax.Array]]:
    if sampling == "truncated":
      cap = jnp.minimum(jnp.square((state.mean - lo) / 2), jnp.square((hi - state.mean) / 2))
      std = jnp.sqrt(jnp.minimum(state.var, cap))                        # [H, A]
      noise = jax.random.truncated_normal(key, -2.0, 2.0, shape, jnp.float32)
    else:
      std = jnp.sqrt(state.var)
      noise = jax.random.normal(key, shape, jnp.float32)
    seqs = jnp.clip(state.mean + std * noise, lo, hi)                    # [P, H, A]
    returns = _evaluate(objective, seqs)                                 # [P]
    elite_returns, idx = jax.lax.top_k(returns, num_elites)              # [K], [K]
    elites = seqs[idx]                                                   # [K, H, A]
    mean = alpha * state.mean + (1 - alpha) * elites.mean(0)
    var = alpha * state.var + (1 - alpha) * elites.var(0)
    best_return, best_seq = _update_best(state.best_return, state.best_seq, returns, seqs)
    return CEMState(mean, var, best_return, best_seq), (elite_returns.mean(), elites)

  def optimize(key: PRNGKey, objective: Objective, init_mean: jax.Array
               ) -> tuple[jax.Array, OptimizerInfo]:
    mean = _prepare_mean(init_mean, lo, hi)
    state = CEMState(mean=mean, var=jnp.asarray(init_var), best_return=jnp.float32(-jnp.inf),
                     best_seq=mean)
    keys = jax.random.split(key, iterations)
    state, (elite_means, elites) = jax.lax.scan(
        lambda s, k: iteration(s, k, objective), state, keys)
    plan = jnp.clip(state.mean, lo, hi) if return_mean_elites else state.best_seq
    info = OptimizerInfo(best_return=state.best_return, iteration_returns=elite_means,
                         final_std=jnp.sqrt(state.var), elites=elites[-1])
    return plan, info

  return Optimizer(init=_init_fn(lo, hi), optimize=optimize)


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


class ICEMState(NamedTuple):
  """Carry of the iCEM iterations.

  Attributes:
    mean: sampling mean.                                  # [H, A]
    std: sampling std.                                    # [H, A]
    kept: elites carried into the next iteration.         # [k, H, A], k <= num_keep
    best_return: best return seen so far.                 # []
    best_seq: sequence that achieved it.                  # [H, A]
  """

  mean: jax.Array
  std: jax.Array
  kept: jax.Array
  best_return: jax.Array
  best_seq: jax.Array


def make_icem(horizon: int, action_size: int, lower: Any = -1.0, upper: Any = 1.0,
              population: int = 400, iterations: int = 4, elite_ratio: float = 0.1,
              num_elites: int | None = None, alpha: float = 0.1, init_std_scale: float = 0.25,
              noise_beta: float = 2.0, population_decay: float = 1.25,
              keep_elite_frac: float = 0.3, return_mean_elites: bool = False) -> Optimizer:
  """Improved CEM (Pinneri et al., 2020, "Sample-efficient cross-entropy method for real-time
  planning").

  Iteration i samples N_i = max(int(population * population_decay^-i), 2 * num_elites)
  sequences mean + std * colored_noise(noise_beta) (noise along the horizon), clipped to the
  box. To them are added the best int(keep_elite_frac * num_elites) elites of the previous
  iteration (in iteration 0, those of `prev_elites` if given) and, in the last iteration, the
  current mean; carried elites are re-evaluated with the rest. The mean and the std (as in the
  paper; not the variance) move towards the elites' with momentum alpha. The std restarts at
  init_std_scale * (upper - lower) on every call.

  Static shapes: the N_i are computed in Python (`icem_population_sizes`) and every iteration
  runs at its own size, so no compute is spent on masked samples. The first and the last
  iteration are unrolled (their candidate sets differ); runs of middle iterations of equal size
  (all of them once the 2 * num_elites floor is reached, or with population_decay = 1) share
  one `lax.scan`: the objective is traced for the first iteration, once per run, and for the
  last, not once per iteration. All iterations' noise is drawn at once.

  `optimize(key, objective, init_mean, prev_elites=None)`: to warm start in MPC, pass the
  previous step's `shift(plan, fill)` as `init_mean` and `shift(info.elites, fill)` as
  `prev_elites` ([K', H, A], any K' >= 1; the first ones are used).

  Args:
    horizon, action_size, lower, upper: as in `make_random_shooting`.
    population: sequences sampled in the first iteration.
    iterations: number of iterations.
    elite_ratio, num_elites: as in `make_cem` (of the first iteration's population).
    alpha: momentum in [0, 1).
    init_std_scale: initial std as a fraction of the bound range.
    noise_beta: colored-noise exponent >= 0 (0 white, 2 Brownian-like; the paper uses 2-4).
    population_decay: gamma >= 1, the population shrinks by this factor per iteration.
    keep_elite_frac: fraction in [0, 1] of the elites carried into the next iteration.
    return_mean_elites: return the final mean; otherwise the best sequence evaluated.
  """
  horizon, action_size, lo, hi = _check_bounds(horizon, action_size, lower, upper)
  population = _check_int("population", population, 1)
  iterations = _check_int("iterations", iterations, 1)
  num_elites = _check_elites(population, num_elites, elite_ratio)
  alpha = _check_float("alpha", alpha, 0.0, 1.0, high_open=True)
  init_std_scale = _check_float("init_std_scale", init_std_scale, 0.0, low_open=True)
  noise_beta = _check_float("noise_beta", noise_beta, 0.0)
  population_decay = _check_float("population_decay", population_decay, 1.0)
  keep_elite_frac = _check_float("keep_elite_frac", keep_elite_frac, 0.0, 1.0)
  return_mean_elites = bool(return_mean_elites)
  num_keep = int(keep_elite_frac * num_elites)
  sizes = icem_population_sizes(population, iterations, population_decay, num_elites)
  # Runs (first, length, size) of equal-size middle iterations 1 .. iterations - 2.
  runs: list[tuple[int, int, int]] = []
  for i in range(1, iterations - 1):
    if runs and runs[-1][2] == sizes[i]:
      runs[-1] = (runs[-1][0], runs[-1][1] + 1, sizes[i])
    else:
      runs.append((i, 1, sizes[i]))
  offsets = np.cumsum((0,) + sizes)             # noise rows of iteration i: offsets[i]:offsets[i+1]
  init_std = init_std_scale * (hi - lo)                                   # [H, A]

  def iteration(state: ICEMState, noise: jax.Array, objective: Objective, last: bool
                ) -> tuple[ICEMState, tuple[jax.Array, jax.Array]]:
    parts = [jnp.clip(state.mean + state.std * noise, lo, hi), state.kept]
    if last:
      parts.append(state.mean[None])
    seqs = jnp.concatenate(parts)                                         # [N_i + k (+1), H, A]
    returns = _evaluate(objective, seqs)
    elite_returns, idx = jax.lax.top_k(returns, num_elites)
    elites = seqs[idx]                                                    # [K, H, A]
    mean = alpha * state.mean + (1 - alpha) * elites.mean(0)
    std = alpha * state.std + (1 - alpha) * elites.std(0)
    best_return, best_seq = _update_best(state.best_return, state.best_seq, returns, seqs)
    new = ICEMState(mean, std, elites[:num_keep], best_return, best_seq)
    return new, (elite_returns.mean(), elites)

  def optimize(key: PRNGKey, objective: Objective, init_mean: jax.Array,
               prev_elites: jax.Array | None = None) -> tuple[jax.Array, OptimizerInfo]:
    mean = _prepare_mean(init_mean, lo, hi)                               # [H, A]
    kept = jnp.zeros((0, horizon, action_size), jnp.float32)
    if prev_elites is not None:
      prev_elites = jnp.asarray(prev_elites, jnp.float32)
      if prev_elites.ndim != 3 or prev_elites.shape[1:] != lo.shape or not prev_elites.shape[0]:
        raise ValueError(f"prev_elites must have shape [K, H, A] with H, A = {lo.shape}; got "
                         f"{prev_elites.shape}")
      kept = jnp.clip(prev_elites[:num_keep], lo, hi)
    state = ICEMState(mean=mean, std=jnp.asarray(init_std), kept=kept,
                      best_return=jnp.float32(-jnp.inf), best_seq=mean)
    # All iterations' noise in one draw (one RNG and FFT in the compiled program, not one per
    # population size), sliced per iteration; it does not depend on the state.
    total = int(offsets[-1])
    noise = colored_noise(key, noise_beta, total, horizon, action_size)  # [sum_i N_i, H, A]
    chunk = lambda i, n=1: noise[offsets[i]:offsets[i + n]]
    state, (first_return, elites) = iteration(state, chunk(0), objective, iterations == 1)
    elite_means = [first_return[None]]
    for first, length, size in runs:
      if length == 1:
        state, (ret, _) = iteration(state, chunk(first), objective, False)
        elite_means.append(ret[None])
      else:
        xs = chunk(first, length).reshape(length, size, horizon, action_size)
        state, (ret, _) = jax.lax.scan(
            lambda s, x: iteration(s, x, objective, False), state, xs)
        elite_means.append(ret)
    if iterations > 1:
      state, (last_return, elites) = iteration(state, chunk(iterations - 1), objective, True)
      elite_means.append(last_return[None])
    plan = jnp.clip(state.mean, lo, hi) if return_mean_elites else state.best_seq
    info = OptimizerInfo(best_return=state.best_return,
                         iteration_returns=jnp.concatenate(elite_means),
                         final_std=state.std, elites=elites)
    return plan, info

  return Optimizer(init=_init_fn(lo, hi), optimize=optimize)


# ---------------------------------------------------------------------------------------------
# MPPI.


class MPPIState(NamedTuple):
  """Carry of the MPPI iterations.

  Attributes:
    mean: current plan.                        # [H, A]
    best_return: best return seen so far.      # []
  """

  mean: jax.Array
  best_return: jax.Array


def make_mppi(horizon: int, action_size: int, lower: Any = -1.0, upper: Any = 1.0,
              population: int = 400, iterations: int = 5, temperature: float = 1.0,
              noise_std: Any = 0.3) -> Optimizer:
  """Model-predictive path integral control (Williams et al.), as an optimizer.

  Each iteration samples `population` sequences mean + noise_std * N(0, 1), clipped to the
  box, and sets the mean to their average weighted by softmax(returns / temperature). The
  returned plan is the final mean (a convex combination of in-box sequences, so in the box).
  The temperature is in units of the return: small values approach "take the best sample".
  Iterations are a `lax.scan`.

  Args:
    horizon, action_size, lower, upper: as in `make_random_shooting`.
    population: sequences per iteration.
    iterations: number of refinement iterations.
    temperature: lambda > 0.
    noise_std: sampling std (absolute): a scalar, [A] or [H, A], > 0.
  """
  horizon, action_size, lo, hi = _check_bounds(horizon, action_size, lower, upper)
  population = _check_int("population", population, 1)
  iterations = _check_int("iterations", iterations, 1)
  temperature = _check_float("temperature", temperature, 0.0, low_open=True)
  sigma = _broadcast_to_plan("noise_std", noise_std, horizon, action_size)
  if np.any(sigma <= 0):
    raise ValueError(f"noise_std must be > 0 everywhere; got {noise_std!r}")
  shape = (population, horizon, action_size)

  def iteration(state: MPPIState, key: PRNGKey, objective: Objective
                ) -> tuple[MPPIState, tuple[jax.Array, jax.Array, jax.Array]]:
    seqs = jnp.clip(state.mean + sigma * jax.random.normal(key, shape, jnp.float32), lo, hi)
    returns = _evaluate(objective, seqs)                                  # [P]
    top = jnp.max(returns)
    logits = (returns - jnp.where(jnp.isfinite(top), top, 0.0)) / temperature
    w = jnp.exp(logits)                                                   # 0 where -inf
    total = w.sum()
    w = jnp.where(total > 0, w / jnp.where(total > 0, total, 1.0), 1.0 / population)  # [P]
    mean = jnp.einsum("p,pha->ha", w, seqs)
    spread = jnp.sqrt(jnp.einsum("p,pha->ha", w, jnp.square(seqs - mean)))
    weighted_return = jnp.sum(jnp.where(w > 0, w * returns, 0.0))
    best = seqs[jnp.argmax(returns)]
    new = MPPIState(mean=mean, best_return=jnp.maximum(state.best_return, top))
    return new, (weighted_return, spread, best)

  def optimize(key: PRNGKey, objective: Objective, init_mean: jax.Array
               ) -> tuple[jax.Array, OptimizerInfo]:
    mean = _prepare_mean(init_mean, lo, hi)
    state = MPPIState(mean=mean, best_return=jnp.float32(-jnp.inf))
    keys = jax.random.split(key, iterations)
    state, (weighted, spread, best) = jax.lax.scan(
        lambda s, k: iteration(s, k, objective), state, keys)
    plan = jnp.clip(state.mean, lo, hi)
    info = OptimizerInfo(best_return=state.best_return, iteration_returns=weighted,
                         final_std=spread[-1], elites=best[-1][None])
    return plan, info

  return Optimizer(init=_init_fn(lo, hi), optimize=optimize)


# ---------------------------------------------------------------------------------------------
# Gradient-based.


class GradientState(NamedTuple):
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


def make_gradient(horizon: int, action_size: int, lower: Any = -1.0, upper: Any = 1.0,
                  num_starts: int = 8, num_steps: int = 100, learning_rate: float = 0.05,
                  optimizer: optax.GradientTransformation | None = None) -> Optimizer:
  """Gradient ascent on the action sequence through a differentiable objective.

  Starts: the (clipped) initial mean and num_starts - 1 sequences uniform in the box. All
  starts take `num_steps` Adam steps (one batched objective call per step, on the sum of the
  returns) and are projected back into the box (clipped) after every step, so a boundary
  optimum is reached exactly. Non-finite gradient entries are zeroed. The plan is the best
  sequence seen over all starts and steps (each step's evaluation is reused; the final
  iterates are evaluated once more). Steps are a `lax.scan`.

  Args:
    horizon, action_size, lower, upper: as in `make_random_shooting`.
    num_starts: number of starts (the first is the initial mean).
    num_steps: ascent steps per start.
    learning_rate: Adam step size (ignored when `optimizer` is given).
    optimizer: an optax transformation to use instead of Adam(learning_rate); it minimises
      the negated returns.
  """
  horizon, action_size, lo, hi = _check_bounds(horizon, action_size, lower, upper)
  num_starts = _check_int("num_starts", num_starts, 1)
  num_steps = _check_int("num_steps", num_steps, 1)
  if optimizer is None:
    learning_rate = _check_float("learning_rate", learning_rate, 0.0, low_open=True)
    optimizer = optax.adam(learning_rate)
  elif not isinstance(optimizer, optax.GradientTransformation):
    raise ValueError(f"optimizer must be an optax.GradientTransformation; got {optimizer!r}")
  tx = optimizer

  def optimize(key: PRNGKey, objective: Objective, init_mean: jax.Array
               ) -> tuple[jax.Array, OptimizerInfo]:
    mean = _prepare_mean(init_mean, lo, hi)
    others = jax.random.uniform(key, (num_starts - 1, horizon, action_size), jnp.float32, lo, hi)
    seqs = jnp.concatenate([mean[None], others])                          # [S, H, A]

    def loss(x: jax.Array) -> tuple[jax.Array, jax.Array]:
      returns = _evaluate(objective, x)
      return -jnp.sum(jnp.where(jnp.isfinite(returns), returns, 0.0)), returns

    def step(state: GradientState, _: None) -> tuple[GradientState, jax.Array]:
      (_, returns), grad = jax.value_and_grad(loss, has_aux=True)(state.seqs)
      grad = jnp.where(jnp.isfinite(grad), grad, 0.0)
      best_return, best_seq = _update_best(state.best_return, state.best_seq, returns,
                                           state.seqs)
      updates, opt_state = tx.update(grad, state.opt_state, state.seqs)
      new_seqs = jnp.clip(optax.apply_updates(state.seqs, updates), lo, hi)
      return GradientState(new_seqs, opt_state, best_return, best_seq), returns.max()

    state = GradientState(seqs=seqs, opt_state=tx.init(seqs),
                          best_return=jnp.float32(-jnp.inf), best_seq=mean)
    state, step_best = jax.lax.scan(step, state, None, length=num_steps)
    final_returns = _evaluate(objective, state.seqs)                      # [S]
    best_return, plan = _update_best(state.best_return, state.best_seq, final_returns,
                                     state.seqs)
    order = jnp.argsort(-final_returns)
    info = OptimizerInfo(best_return=best_return, iteration_returns=step_best,
                         final_std=jnp.std(state.seqs, axis=0), elites=state.seqs[order])
    return plan, info

  return Optimizer(init=_init_fn(lo, hi), optimize=optimize)


# ---------------------------------------------------------------------------------------------
# Registry.

OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {
    "random": make_random_shooting,
    "cem": make_cem,
    "icem": make_icem,
    "mppi": make_mppi,
    "gradient": make_gradient,
}


def make_optimizer(name: str, **kwargs: Any) -> Optimizer:
  """Builds the optimizer registered as `name` ("random", "cem", "icem", "mppi", "gradient")
  with the factory's keyword arguments."""
  if name not in OPTIMIZERS:
    raise ValueError(f"unknown optimizer {name!r}; valid names: {sorted(OPTIMIZERS)}")
  return OPTIMIZERS[name](**kwargs)
