"""Action-sequence optimizers: optima of known objectives, bounds, vmap, determinism, colored
noise, configuration errors, the shift utility and the registry.

Tolerances (see each config below):
  * Quadratic -sum((a - target)^2) over [H, A] = [5, 2] (10 dimensions): CEM, iCEM, MPPI within
    0.05 of the target, gradient within 0.01. Random shooting cannot get close in 10 dimensions
    with any affordable population; it is only held to 0.5 and to beating the initial mean.
  * Boundary optimum (target outside the box): MPPI and gradient within 0.05 (gradient exact),
    CEM with clipped sampling and iCEM within 0.1 (the std collapses as the elites pile up on
    the bound), CEM with mbrl-lib's truncated sampling only within 0.35: its std is capped at
    half the distance to the nearest bound, so the variance collapses while the mean is still
    0.2-0.3 short of the bound. Random shooting: mean absolute error < 0.45.
  * Rosenbrock: diagonal-Gaussian samplers stall in the curved valley of the 4-D (and higher)
    Rosenbrock function (CEM stops near (0.45, 0.2, 0.04, 0.002), f ~ 1.8, whatever the
    population, iterations or momentum within test budgets), so the sampling methods solve the
    2-D one (H=2, A=1) to f <= 0.01 and actions within 0.15 of 1 (the valley is flat: f = 0.01
    allows ~0.1 along it), with slow momentum (alpha = 0.9) for CEM/iCEM. The gradient method
    solves the 6-D one (H=3, A=2) to 1e-3.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax import planning
from mbrl_jax.planning import (
    Optimizer,
    OptimizerInfo,
    colored_noise,
    icem_population_sizes,
    make_cem,
    make_gradient,
    make_icem,
    make_mppi,
    make_optimizer,
    make_random_shooting,
    shift,
)
from tests.conftest import count_compilations

H, A = 5, 2
LOWER = np.array([-1.0, -0.5], np.float32)  # [A] bounds, broadcast over the horizon
UPPER = np.array([1.0, 0.5], np.float32)

# name -> (factory name, kwargs, in-box tolerance, boundary tolerance); random shooting's
# boundary check is on the mean absolute error (0.45), its maximum error can be ~1.
QUAD_CONFIGS = {
    "random": ("random", dict(population=2000), 0.5, None),
    "cem": ("cem", dict(population=200, iterations=15), 0.05, 0.35),
    "cem_clip": ("cem", dict(population=200, iterations=15, sampling="clip"), 0.05, 0.1),
    "icem": ("icem", dict(population=400, iterations=12, num_elites=40, population_decay=1.1),
             0.05, 0.1),
    "mppi": ("mppi", dict(population=400, iterations=20, temperature=0.01, noise_std=0.1),
             0.05, 0.05),
    "gradient": ("gradient", dict(num_starts=4, num_steps=100, learning_rate=0.05), 0.01, 1e-6),
}
NAMES = list(QUAD_CONFIGS)


def quadratic(target: jax.Array):
  """Objective [P, H, A] -> [P] with its maximum 0 at `target` [H, A]."""
  return lambda seqs: -jnp.sum(jnp.square(seqs - target), axis=(1, 2))


def smooth_targets(seed: int, n: int) -> np.ndarray:
  """Targets inside the box that vary linearly over the horizon: [n, H, A]."""
  rng = np.random.default_rng(seed)
  level = rng.uniform(-0.5, 0.5, (n, 1, A))
  slope = rng.uniform(-0.3, 0.3, (n, 1, A))
  ramp = np.linspace(-0.5, 0.5, H)[None, :, None]
  return ((level + slope * ramp) * UPPER).astype(np.float32)


# Optimum outside the box: action 0 above its upper bound, action 1 below its lower bound.
TARGET_OUT = np.tile(np.array([1.5, -0.8], np.float32), (H, 1))  # [H, A]


@functools.cache
def quad_fns(name: str):
  """(optimizer, jitted single call (key, target), jitted vmapped call), built once per test
  module run and shared by the tests below."""
  factory, kwargs, _, _ = QUAD_CONFIGS[name]
  opt = make_optimizer(factory, horizon=H, action_size=A, lower=LOWER, upper=UPPER, **kwargs)

  def single(key, target):
    return opt.optimize(key, quadratic(target), opt.init())

  return opt, jax.jit(single), jax.jit(jax.vmap(single))


def in_box(x, lower=LOWER, upper=UPPER) -> bool:
  return bool(np.all(np.asarray(x) >= lower) and np.all(np.asarray(x) <= upper))


@pytest.mark.parametrize("name", NAMES)
def test_quadratic_optimum_inside_box(name):
  opt, single, _ = quad_fns(name)
  tol = QUAD_CONFIGS[name][2]
  target = smooth_targets(0, 1)[0]
  plan, info = single(jax.random.key(0), target)
  assert plan.shape == (H, A) and plan.dtype == jnp.float32
  assert in_box(plan)
  np.testing.assert_allclose(plan, target, atol=tol)
  # Diagnostics: shapes and consistency.
  assert isinstance(info, OptimizerInfo)
  assert info.best_return.shape == () and info.final_std.shape == (H, A)
  assert info.iteration_returns.ndim == 1 and info.elites.shape[1:] == (H, A)
  assert in_box(info.elites)
  plan_return = float(quadratic(target)(plan[None])[0])
  mean_return = float(quadratic(target)(opt.init()[None])[0])
  assert plan_return >= mean_return  # random shooting keeps the mean when nothing beats it
  assert float(info.best_return) >= plan_return - 1e-3 or name == "mppi"
  assert np.all(np.isfinite(info.iteration_returns))


def test_sampling_optimizers_make_progress_over_iterations():
  for name in ("cem", "icem", "mppi"):
    _, single, _ = quad_fns(name)
    _, info = single(jax.random.key(0), TARGET_OUT)
    its = np.asarray(info.iteration_returns)
    assert its[-1] > its[0] + 1.0, (name, its)
  _, single, _ = quad_fns("gradient")
  _, info = single(jax.random.key(0), smooth_targets(0, 1)[0])
  assert info.iteration_returns.shape == (100,)
  assert info.iteration_returns[-1] > info.iteration_returns[0]


@pytest.mark.parametrize("name", NAMES)
def test_boundary_optimum_is_clipped(name):
  _, single, _ = quad_fns(name)
  tol = QUAD_CONFIGS[name][3]
  plan, info = single(jax.random.key(1), TARGET_OUT)
  assert in_box(plan), plan
  assert in_box(info.elites)
  expected = np.clip(TARGET_OUT, LOWER, UPPER)
  if tol is None:  # random shooting
    assert np.abs(plan - expected).mean() < 0.45
  else:
    np.testing.assert_allclose(plan, expected, atol=tol)


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_start_states(name):
  """The objective closes over a traced per-element state (here its target)."""
  _, single, batched = quad_fns(name)
  tol = QUAD_CONFIGS[name][2]
  targets = smooth_targets(1, 3)
  targets[2] = TARGET_OUT  # one element with its optimum on the boundary
  keys = jax.random.split(jax.random.key(2), 3)
  plans, infos = batched(keys, targets)
  assert plans.shape == (3, H, A) and infos.best_return.shape == (3,)
  assert in_box(plans)
  for i in range(2):
    np.testing.assert_allclose(plans[i], targets[i], atol=tol)
  for i in range(3):
    plan_i, info_i = single(keys[i], targets[i])
    np.testing.assert_allclose(plans[i], plan_i, atol=1e-5)
    np.testing.assert_allclose(infos.best_return[i], info_i.best_return, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_same_key_same_plan_other_key_other_samples(name):
  _, single, _ = quad_fns(name)
  target = smooth_targets(0, 1)[0]
  plan1, info1 = single(jax.random.key(3), target)
  plan2, info2 = single(jax.random.key(3), target)
  np.testing.assert_array_equal(plan1, plan2)
  jax.tree.map(np.testing.assert_array_equal, info1, info2)
  _, info3 = single(jax.random.key(4), target)
  assert not np.array_equal(info1.elites, info3.elites)


# --------------------------------------------------------------------------------------------
# Rosenbrock.

ROSENBROCK_CONFIGS = {
    "random": ((2, 1), dict(population=100_000), 0.01, 0.15),
    "cem": ((2, 1), dict(population=2000, iterations=60, elite_ratio=0.3, alpha=0.9), 0.01, 0.15),
    "icem": ((2, 1), dict(population=2000, iterations=20, elite_ratio=0.2, alpha=0.9,
                          population_decay=1.0), 0.01, 0.15),
    "mppi": ((2, 1), dict(population=500, iterations=50, temperature=0.01, noise_std=0.1),
             0.01, 0.15),
    "gradient": ((3, 2), dict(num_starts=8, num_steps=1000, learning_rate=0.02), 1e-6, 1e-3),
}


def neg_rosenbrock(seqs: jax.Array) -> jax.Array:
  """-Rosenbrock of the flattened sequences [P, H, A] -> [P]; maximum 0 at all ones."""
  z = seqs.reshape(seqs.shape[0], -1)
  return -jnp.sum(100.0 * jnp.square(z[:, 1:] - z[:, :-1] ** 2) + jnp.square(1.0 - z[:, :-1]),
                  axis=-1)


@pytest.mark.parametrize("name", list(ROSENBROCK_CONFIGS))
def test_rosenbrock(name):
  (horizon, action_size), kwargs, value_tol, action_tol = ROSENBROCK_CONFIGS[name]
  opt = make_optimizer(name, horizon=horizon, action_size=action_size, lower=-2.0, upper=2.0,
                       **kwargs)
  plan, info = jax.jit(lambda k: opt.optimize(k, neg_rosenbrock, opt.init()))(jax.random.key(5))
  value = -float(neg_rosenbrock(plan[None])[0])
  assert value <= value_tol, (value, plan)
  np.testing.assert_allclose(plan, 1.0, atol=action_tol)
  assert in_box(plan, -2.0, 2.0)
  assert float(info.best_return) >= -value_tol


# --------------------------------------------------------------------------------------------
# iCEM specifics.


def _power_spectrum(noise: jax.Array) -> np.ndarray:
  """Mean power per frequency along the horizon of noise [N, H, A] -> [H // 2 + 1]."""
  spec = np.abs(np.fft.rfft(np.asarray(noise), axis=1)) ** 2
  return spec.mean(axis=(0, 2))


def test_colored_noise_white_and_pink_spectra():
  horizon, n = 32, 4000
  white = colored_noise(jax.random.key(0), 0.0, n, horizon, 2)
  brown = colored_noise(jax.random.key(1), 2.0, n, horizon, 2)
  assert white.shape == brown.shape == (n, horizon, 2)
  for noise in (white, brown):
    x = np.asarray(noise)
    assert abs(x.mean()) < 0.03
    np.testing.assert_allclose(x.var(), 1.0, atol=0.04)               # unit variance overall
    np.testing.assert_allclose(x.var(axis=(0, 2)), 1.0, atol=0.1)     # ... at every step
  p_white = _power_spectrum(white)
  assert p_white.max() / p_white.min() < 1.2                          # flat
  lag1 = lambda x: np.mean(np.asarray(x)[:, 1:] * np.asarray(x)[:, :-1])
  assert abs(lag1(white)) < 0.03
  p_brown = _power_spectrum(brown)
  low, high = p_brown[1:4].mean(), p_brown[-5:].mean()
  assert low / high > 20.0, (low, high)                               # ~1/f^2
  assert lag1(brown) > 0.5
  # Independent across action dimensions.
  corr = np.corrcoef(np.asarray(brown)[:, :, 0].ravel(), np.asarray(brown)[:, :, 1].ravel())[0, 1]
  assert abs(corr) < 0.05


def test_colored_noise_short_horizons():
  for horizon in (1, 2, 3):
    x = np.asarray(colored_noise(jax.random.key(0), 2.5, 20000, horizon, 1))
    assert x.shape == (20000, horizon, 1)
    np.testing.assert_allclose(x.var(axis=(0, 2)), 1.0, atol=0.05)


def test_icem_population_schedule_and_warm_start():
  sizes = icem_population_sizes(100, 5, 2.0, 10)
  assert sizes == (100, 50, 25, 20, 20)          # floored at 2 * num_elites
  assert icem_population_sizes(64, 3, 1.0, 4) == (64, 64, 64)

  seen = []  # population sizes the objective is traced with

  target = smooth_targets(2, 1)[0]

  def objective(seqs):
    seen.append(seqs.shape[0])
    return quadratic(target)(seqs)

  opt = make_icem(H, A, LOWER, UPPER, population=100, iterations=5, num_elites=10,
                  population_decay=2.0, keep_elite_frac=0.5)
  # Warm start: shifted elites that contain the optimum are carried in and never lost.
  prev = jnp.stack([target, jnp.zeros((H, A))])
  plan, info = jax.jit(lambda k, p: opt.optimize(k, objective, opt.init(), prev_elites=p))(
      jax.random.key(0), prev)
  # Iteration 0: 100 samples + 2 previous elites; 1, 2: + 5 kept elites; the two iterations of
  # size 20 (3 and 4) are the last, which also adds the mean: traced separately.
  assert seen == [102, 55, 30, 25, 26], seen
  assert info.iteration_returns.shape == (5,)
  assert info.elites.shape == (10, H, A)
  np.testing.assert_allclose(plan, target, atol=1e-6)
  assert float(info.best_return) == pytest.approx(0.0, abs=1e-10)
  with pytest.raises(ValueError, match="prev_elites"):
    opt.optimize(jax.random.key(0), objective, opt.init(), prev_elites=jnp.zeros((H, A)))


def test_icem_middle_iterations_share_a_scan():
  seen = []

  def objective(seqs):
    seen.append(seqs.shape[0])
    return quadratic(jnp.zeros((H, A)))(seqs)

  opt = make_icem(H, A, LOWER, UPPER, population=40, iterations=8, num_elites=4,
                  population_decay=1.0, keep_elite_frac=0.5)
  _, info = jax.eval_shape(lambda k: opt.optimize(k, objective, opt.init()), jax.random.key(0))
  assert seen == [40, 42, 43]  # first, one scan over iterations 1-6, last
  assert info.iteration_returns.shape == (8,)


# --------------------------------------------------------------------------------------------
# Configuration and input errors.

BAD_CONFIGS = [
    ("cem", dict(population=10, num_elites=11), "num_elites"),
    ("cem", dict(num_elites=0), "num_elites"),
    ("cem", dict(elite_ratio=0.0), "elite_ratio"),
    ("cem", dict(elite_ratio=1.5), "elite_ratio"),
    ("cem", dict(horizon=0), "horizon"),
    ("cem", dict(horizon=2.5), "horizon"),
    ("cem", dict(action_size=0), "action_size"),
    ("cem", dict(population=0), "population"),
    ("cem", dict(iterations=0), "iterations"),
    ("cem", dict(lower=[1.0, 0.0], upper=[0.0, 1.0]), "lower"),
    ("cem", dict(lower=[-1.0, -1.0, -1.0]), "lower"),
    ("cem", dict(upper=np.inf), "upper"),
    ("cem", dict(alpha=1.0), "alpha"),
    ("cem", dict(alpha=-0.1), "alpha"),
    ("cem", dict(init_std_scale=0.0), "init_std_scale"),
    ("cem", dict(sampling="uniform"), "sampling"),
    ("icem", dict(population=10, num_elites=20), "num_elites"),
    ("icem", dict(noise_beta=-1.0), "noise_beta"),
    ("icem", dict(population_decay=0.5), "population_decay"),
    ("icem", dict(keep_elite_frac=1.5), "keep_elite_frac"),
    ("icem", dict(alpha=1.0), "alpha"),
    ("mppi", dict(temperature=0.0), "temperature"),
    ("mppi", dict(temperature=-1.0), "temperature"),
    ("mppi", dict(noise_std=[0.1, 0.0]), "noise_std"),
    ("mppi", dict(iterations=0), "iterations"),
    ("random", dict(population=0), "population"),
    ("random", dict(horizon=0), "horizon"),
    ("gradient", dict(num_starts=0), "num_starts"),
    ("gradient", dict(num_steps=0), "num_steps"),
    ("gradient", dict(learning_rate=0.0), "learning_rate"),
    ("gradient", dict(optimizer="adam"), "optimizer"),
]


@pytest.mark.parametrize("name,bad,param", BAD_CONFIGS)
def test_invalid_config_raises_before_compiling(name, bad, param):
  kwargs = dict(horizon=H, action_size=A, lower=-1.0, upper=1.0)
  kwargs.update(bad)
  with count_compilations() as compiles, pytest.raises(ValueError, match=param):
    make_optimizer(name, **kwargs)
  assert compiles.count == 0


def test_registry():
  assert set(planning.OPTIMIZERS) == {"random", "cem", "icem", "mppi", "gradient"}
  for name in planning.OPTIMIZERS:
    opt = make_optimizer(name, horizon=H, action_size=A, lower=LOWER, upper=UPPER)
    assert isinstance(opt, Optimizer)
    np.testing.assert_array_equal(opt.init(), np.zeros((H, A)))
  opt = make_optimizer("cem", horizon=3, action_size=1, lower=0.0, upper=[[1.0], [2.0], [3.0]])
  np.testing.assert_array_equal(opt.init()[:, 0], [0.5, 1.0, 1.5])    # [H, A] bounds
  with pytest.raises(ValueError, match=r"unknown optimizer 'sac'.*'cem'.*'gradient'"):
    make_optimizer("sac", horizon=H, action_size=A)
  factories = (make_random_shooting, make_cem, make_icem, make_mppi, make_gradient)
  assert tuple(planning.OPTIMIZERS[n] for n in ("random", "cem", "icem", "mppi", "gradient")) \
      == factories


def test_bad_objective_or_mean_shape():
  opt = make_cem(H, A, LOWER, UPPER, population=8, iterations=1)
  with pytest.raises(ValueError, match="objective"):
    opt.optimize(jax.random.key(0), lambda s: s.sum(-1), opt.init())   # [P, H] not [P]
  with pytest.raises(ValueError, match="init_mean"):
    opt.optimize(jax.random.key(0), quadratic(jnp.zeros((H, A))), jnp.zeros((H + 1, A)))


def test_nan_returns_are_ignored():
  opt = make_random_shooting(H, A, LOWER, UPPER, population=256)
  target = jnp.full((H, A), 0.2)

  def objective(seqs):  # NaN wherever the first action is positive
    r = quadratic(target)(seqs)
    return jnp.where(seqs[:, 0, 0] > 0, jnp.nan, r)

  plan, info = jax.jit(lambda k: opt.optimize(k, objective, opt.init()))(jax.random.key(0))
  assert plan[0, 0] <= 0 and np.isfinite(info.best_return)


# --------------------------------------------------------------------------------------------
# shift.


def test_shift():
  plan = jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
  np.testing.assert_array_equal(shift(plan, jnp.array([0.0, -1.0])),
                                [[3.0, 4.0], [5.0, 6.0], [0.0, -1.0]])
  np.testing.assert_array_equal(shift(plan, 9.0), [[3.0, 4.0], [5.0, 6.0], [9.0, 9.0]])
  np.testing.assert_array_equal(shift(plan, 0.0, steps=2), [[5.0, 6.0], [0.0, 0.0], [0.0, 0.0]])
  np.testing.assert_array_equal(shift(plan, 7.0, steps=0), plan)
  # A batch of sequences (elites) [K, H, A] with one fill action [A] or one per sequence [K, A].
  elites = jnp.stack([plan, plan + 10.0])
  np.testing.assert_array_equal(shift(elites, jnp.array([0.0, 1.0]))[:, -1], [[0, 1], [0, 1]])
  np.testing.assert_array_equal(shift(elites, jnp.array([[0.0, 1.0], [2.0, 3.0]]))[:, -1],
                                [[0, 1], [2, 3]])
  np.testing.assert_array_equal(shift(elites, 0.0)[1, 0], [13.0, 14.0])
  # Jittable, and the fill of the midpoint from the optimizer's init.
  opt = make_cem(3, 2, LOWER, UPPER)
  shifted = jax.jit(shift)(plan, opt.init()[-1])
  np.testing.assert_array_equal(shifted[-1], [0.0, 0.0])
  with pytest.raises(ValueError, match="steps"):
    shift(plan, 0.0, steps=4)
