"""Action-sequence optimizers: optima of known objectives, bounds, vmap, determinism, colored
noise, the carried PlanState (iCEM's elites across calls), objective keys per iteration,
configuration errors, the shift utility and the registry.

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
    CEMConfig,
    GradientConfig,
    ICEMConfig,
    MPPIConfig,
    Optimizer,
    OptimizerInfo,
    PlanState,
    RandomShootingConfig,
    colored_noise,
    icem_population_sizes,
    make_cem,
    make_icem,
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
  """Objective (key, [P, H, A]) -> [P] with its maximum 0 at `target` [H, A]."""
  return lambda key, seqs: -jnp.sum(jnp.square(seqs - target), axis=(1, 2))


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
  opt = make_optimizer(planning.OPTIMIZERS[factory](**kwargs), horizon=H, action_size=A,
                       lower=LOWER, upper=UPPER)

  def single(key, target):
    plan, _, info = opt.optimize(key, quadratic(target), opt.init())
    return plan, info

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
  plan_return = float(quadratic(target)(None, plan[None])[0])
  mean_return = float(quadratic(target)(None, opt.init().mean[None])[0])
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
  assert not np.array_equal(info1.final_std, info3.final_std)


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


def neg_rosenbrock(key, seqs: jax.Array) -> jax.Array:
  """-Rosenbrock of the flattened sequences [P, H, A] -> [P]; maximum 0 at all ones."""
  z = seqs.reshape(seqs.shape[0], -1)
  return -jnp.sum(100.0 * jnp.square(z[:, 1:] - z[:, :-1] ** 2) + jnp.square(1.0 - z[:, :-1]),
                  axis=-1)


@pytest.mark.parametrize("name", list(ROSENBROCK_CONFIGS))
def test_rosenbrock(name):
  (horizon, action_size), kwargs, value_tol, action_tol = ROSENBROCK_CONFIGS[name]
  opt = make_optimizer(planning.OPTIMIZERS[name](**kwargs), horizon=horizon,
                       action_size=action_size, lower=-2.0, upper=2.0)
  plan, _, info = jax.jit(lambda k: opt.optimize(k, neg_rosenbrock, opt.init()))(
      jax.random.key(5))
  value = -float(neg_rosenbrock(None, plan[None])[0])
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

  def objective(key, seqs):
    seen.append(seqs.shape[0])
    return quadratic(target)(key, seqs)

  opt = make_icem(H, A, LOWER, UPPER, population=100, iterations=5, num_elites=10,
                  population_decay=2.0, keep_elite_frac=0.5)
  # Warm start: carried elites that contain the optimum are evaluated and never lost.
  state = opt.init()
  assert state.elites.shape == (5, H, A)                  # int(0.5 * 10) carried elites
  state = state._replace(elites=state.elites.at[0].set(target))
  plan, new_state, info = jax.jit(lambda k, s: opt.optimize(k, objective, s))(
      jax.random.key(0), state)
  # Iteration 0: 100 samples + 5 carried elites; 1, 2: + 5 kept elites; the two iterations of
  # size 20 (3 and 4) are the last, which also adds the mean: traced separately.
  assert seen == [105, 55, 30, 25, 26], seen
  assert info.iteration_returns.shape == (5,)
  assert info.elites.shape == (10, H, A)
  np.testing.assert_allclose(plan, target, atol=1e-6)
  assert float(info.best_return) == pytest.approx(0.0, abs=1e-10)
  # The new state carries the last iteration's best elites (fixed shape).
  np.testing.assert_array_equal(new_state.elites, info.elites[:5])
  with pytest.raises(ValueError, match="state.elites"):
    opt.optimize(jax.random.key(0), objective, state._replace(elites=jnp.zeros((2, H, A))))


def test_icem_middle_iterations_share_a_scan():
  seen = []

  def objective(key, seqs):
    seen.append(seqs.shape[0])
    return quadratic(jnp.zeros((H, A)))(key, seqs)

  opt = make_icem(H, A, LOWER, UPPER, population=40, iterations=8, num_elites=4,
                  population_decay=1.0, keep_elite_frac=0.5)
  _, _, info = jax.eval_shape(lambda k: opt.optimize(k, objective, opt.init()),
                              jax.random.key(0))
  assert seen == [42, 42, 43]  # first, one scan over iterations 1-6, last (+ 2 carried)
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


GEOMETRY = ("horizon", "action_size", "lower", "upper")


@pytest.mark.parametrize("name,bad,param", BAD_CONFIGS)
def test_invalid_config_raises_before_compiling(name, bad, param):
  geometry = dict(horizon=H, action_size=A, lower=-1.0, upper=1.0)
  geometry.update({k: v for k, v in bad.items() if k in GEOMETRY})
  fields = {k: v for k, v in bad.items() if k not in GEOMETRY}
  factory = planning.make_gradient if name == "gradient" else None
  with count_compilations() as compiles, pytest.raises(ValueError, match=param):
    if factory is not None and "optimizer" in fields:
      factory(**geometry, **fields)
    else:
      make_optimizer(planning.OPTIMIZERS[name](**fields), **geometry)
  assert compiles.count == 0


def test_config_errors_are_one_line_and_name_the_field():
  with pytest.raises(ValueError, match=r"^elite_ratio must be in \(0, 1\]; got 1.5$"):
    CEMConfig(elite_ratio=1.5)
  with pytest.raises(ValueError, match="name must be 'icem'"):
    ICEMConfig(name="cem")
  with pytest.raises(ValueError, match="config must be one of"):
    make_optimizer(dict(name="cem"), horizon=H, action_size=A)


def test_registry():
  assert set(planning.OPTIMIZERS) == {"random", "cem", "icem", "mppi", "gradient"}
  classes = (RandomShootingConfig, CEMConfig, ICEMConfig, MPPIConfig, GradientConfig)
  assert tuple(planning.OPTIMIZERS[n] for n in ("random", "cem", "icem", "mppi", "gradient")) \
      == classes
  for name, cls in planning.OPTIMIZERS.items():
    assert cls().name == name
    opt = make_optimizer(cls(), horizon=H, action_size=A, lower=LOWER, upper=UPPER)
    assert isinstance(opt, Optimizer)
    state = opt.init()
    assert isinstance(state, PlanState)
    np.testing.assert_array_equal(state.mean, np.zeros((H, A)))
    carried = ICEMConfig().num_carried if name == "icem" else 0
    assert state.elites.shape == (carried, H, A)
  opt = make_cem(horizon=3, action_size=1, lower=0.0, upper=[[1.0], [2.0], [3.0]])
  np.testing.assert_array_equal(opt.init().mean[:, 0], [0.5, 1.0, 1.5])    # [H, A] bounds
  assert ICEMConfig().num_carried == 12                   # int(0.3 * ceil(0.1 * 400))


def test_bad_objective_or_mean_shape():
  opt = make_cem(H, A, LOWER, UPPER, population=8, iterations=1)
  with pytest.raises(ValueError, match="objective"):
    opt.optimize(jax.random.key(0), lambda k, s: s.sum(-1), opt.init())   # [P, H] not [P]
  with pytest.raises(ValueError, match="state.mean"):
    opt.optimize(jax.random.key(0), quadratic(jnp.zeros((H, A))),
                 opt.init()._replace(mean=jnp.zeros((H + 1, A))))
  with pytest.raises(ValueError, match="PlanState"):
    opt.optimize(jax.random.key(0), quadratic(jnp.zeros((H, A))), jnp.zeros((H, A)))


def test_nan_returns_are_ignored():
  opt = make_random_shooting(H, A, LOWER, UPPER, population=256)
  target = jnp.full((H, A), 0.2)

  def objective(key, seqs):  # NaN wherever the first action is positive
    r = quadratic(target)(key, seqs)
    return jnp.where(seqs[:, 0, 0] > 0, jnp.nan, r)

  plan, _, info = jax.jit(lambda k: opt.optimize(k, objective, opt.init()))(jax.random.key(0))
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
  shifted = jax.jit(shift)(plan, opt.init().mean[-1])
  np.testing.assert_array_equal(shifted[-1], [0.0, 0.0])
  with pytest.raises(ValueError, match="steps"):
    shift(plan, 0.0, steps=4)


# --------------------------------------------------------------------------------------------
# The carried PlanState and the objective's keys.


def test_state_shift_pads_with_the_neutral_action():
  upper = np.array([[1.0], [2.0], [3.0]], np.float32)                 # [H, A] bounds, mid 0.5..1.5
  opt = make_icem(3, 1, 0.0, upper, population=20, num_elites=4, keep_elite_frac=0.5)
  state = PlanState(mean=jnp.array([[0.1], [0.2], [0.3]]),
                    elites=jnp.array([[[1.0], [2.0], [3.0]], [[4.0], [5.0], [6.0]]]))
  one = opt.shift(state, 1)
  np.testing.assert_allclose(one.mean[:, 0], [0.2, 0.3, 1.5], rtol=1e-6)
  np.testing.assert_array_equal(one.elites[:, :, 0], [[2.0, 3.0, 1.5], [5.0, 6.0, 1.5]])
  two = jax.jit(opt.shift, static_argnums=1)(state, 2)
  np.testing.assert_allclose(two.mean[:, 0], [0.3, 1.0, 1.5], rtol=1e-6)
  jax.tree.map(np.testing.assert_array_equal, opt.shift(state, 0), state)
  with pytest.raises(ValueError, match="steps"):
    opt.shift(state, 4)


def test_icem_elites_of_one_call_are_candidates_of_the_next():
  """iCEM's PlanState carries the last iteration's best elites; shifted, they are evaluated in
  the next call's first iteration (recorded eagerly: iteration 0 is outside any scan)."""
  opt = make_icem(H, A, LOWER, UPPER, population=30, iterations=3, num_elites=6,
                  keep_elite_frac=0.5)
  target = smooth_targets(3, 1)[0]
  evaluated = []

  def objective(key, seqs):
    evaluated.append(np.asarray(seqs))
    return quadratic(target)(key, seqs)

  _, state, info = opt.optimize(jax.random.key(0), objective, opt.init())
  assert state.elites.shape == (3, H, A)
  np.testing.assert_array_equal(state.elites, info.elites[:3])
  warm = opt.shift(state, 1)
  evaluated.clear()
  opt.optimize(jax.random.key(1), objective, warm)
  first = evaluated[0]                                             # [30 + 3, H, A]
  assert first.shape == (33, H, A)
  np.testing.assert_allclose(first[-3:], np.clip(warm.elites, LOWER, UPPER))
  np.testing.assert_allclose(first[-3:, :-1], info.elites[:3, 1:])  # shifted by one step
  np.testing.assert_array_equal(first[-3:, -1], np.zeros((3, A)))   # neutral padding


@pytest.mark.parametrize("name", ["random", "cem", "mppi", "gradient"])
def test_other_optimizers_carry_only_the_plan(name):
  opt = make_optimizer(planning.OPTIMIZERS[name](), horizon=H, action_size=A, lower=LOWER,
                       upper=UPPER)
  plan, state, _ = jax.jit(lambda k: opt.optimize(k, quadratic(jnp.zeros((H, A))),
                                                  opt.init()))(jax.random.key(0))
  np.testing.assert_array_equal(state.mean, plan)
  assert state.elites.shape == (0, H, A)


def _iteration_keys(opt) -> list[tuple[int, ...]]:
  """The key data the objective sees in each call of one jitted `optimize`."""
  seen = []

  def objective(key, seqs):
    jax.debug.callback(lambda k: seen.append(tuple(np.asarray(k).ravel())),
                       jax.random.key_data(key))
    return quadratic(jnp.zeros((H, A)))(key, seqs)

  jax.block_until_ready(jax.jit(lambda k: opt.optimize(k, objective, opt.init()))(
      jax.random.key(0)))
  return seen


@pytest.mark.parametrize("name,fields,calls", [
    ("cem", dict(population=20, iterations=4), 4),
    ("icem", dict(population=20, iterations=4, num_elites=2), 4),
    ("mppi", dict(population=20, iterations=4), 4),
    ("gradient", dict(num_starts=2, num_steps=3, common_random_numbers=False), 4),
])
def test_fresh_objective_key_per_iteration_or_common_random_numbers(name, fields, calls):
  cls = planning.OPTIMIZERS[name]
  fresh = make_optimizer(cls(**fields), horizon=H, action_size=A, lower=LOWER, upper=UPPER)
  keys = _iteration_keys(fresh)
  assert len(keys) == calls and len(set(keys)) == calls        # a new noise sample each time
  common = dict(fields, common_random_numbers=True)
  shared = make_optimizer(cls(**common), horizon=H, action_size=A, lower=LOWER, upper=UPPER)
  keys = _iteration_keys(shared)
  assert len(keys) == calls and len(set(keys)) == 1            # one noise table for the call
  assert cls().common_random_numbers == (name == "gradient")   # the defaults
