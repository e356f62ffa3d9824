"""PILCO: probabilistic inference for learning control (Deisenroth & Rasmussen 2011), one
compiled call per trial.

A trial is: fit the hyperparameters of a Gaussian-process dynamics model (one SE-ARD GP per
state dimension, predicting state differences; `mbrl_jax.models.gp`) on every transition so
far, then improve the policy by gradient descent on the predicted cost of a horizon-long
rollout in which the state distribution is propagated analytically (moment matching), then
run one episode on the real env with the new policy and add its transitions. Everything is a
fixed-shape `jax.jit` program: the data live in a buffer of capacity
`(random_trials + trials) * episode_length` with a mask, so no trial recompiles.

One step of the predicted rollout (PILCO's propagated.m), for the physical state
x ~ N(m, s) [D]:

  1. augment: [x, sin x_a, cos x_a] for the angle indices a (`moments.trig_augment`);
  2. policy: u = u_max sin(pi(x_pol)) with pi an RBF network (the mean of a GP with learnt
     pseudo-inputs and -targets, moment-matched without model variance) or a linear map,
     x_pol the policy's inputs (the augmented state without the raw angles);
  3. joint Gaussian of [augmented x, u]; its dynamics-input part z = [x_dyn, u];
  4. the GP's moment matching gives delta ~ N(mu, S); next state m' = m + mu,
     s' = s + S + cov(x, delta) + cov(x, delta)^T.

Cross-covariances cov(x, f(z)) are taken by Stein's lemma, cov(x, z) E[grad f(z)], with
E[grad f] the Jacobian of the moment-matched mean in the input mean
(`moments.through_input`); PILCO's code multiplies by s^-1 instead, which the nearly
singular covariance of [sin theta, cos theta] makes fragile in float32. The cost is PILCO's
saturating cost 1 - exp(-|tip - goal|^2 / (2 width^2)) on the pole tip, in expectation in
closed form (`moments.saturating_cost`), summed over the horizon; its gradient with respect to
the policy parameters is exact autodiff through the whole rollout.

The planning state is the env's physical state (`pipeline_state`, e.g. cart-pole's
[x, x_dot, theta, theta_dot] with theta = 0 upright), which the env wrapper made here
exposes as the observation; only envs with a state layout in `LAYOUTS` are supported.

Example (a `cartpole_swingup` run takes tens of minutes on a 2-core CPU, so it is skipped;
its preset computes in float64, which needs JAX's x64 mode, process-global):
  >>> from mbrl_jax import run
  >>> PRESETS["cartpole_swingup"].float64
  True
  >>> jax.config.update("jax_enable_x64", True)                       # doctest: +SKIP
  >>> algorithm = make(PRESETS["cartpole_swingup"])                    # doctest: +SKIP
  >>> state, history = run.train(algorithm, jax.random.key(0))         # doctest: +SKIP
  >>> history["train/success"].shape                                   # doctest: +SKIP
  (11,)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from brax.envs.base import Env, Wrapper
from brax.envs.wrappers import training as brax_training

from mbrl_jax import checks
from mbrl_jax import data as buffer_lib
from mbrl_jax import envs
from mbrl_jax import tree
from mbrl_jax.algorithms.base import Algorithm
from mbrl_jax.envs import acting
from mbrl_jax.models import gp
from mbrl_jax.models import moments
from mbrl_jax.types import PRNGKey, Transition


# ------------------------------------------------------------------------------------------
# The state layouts PILCO plans in.


class Layout(NamedTuple):
  """How PILCO sees one env's physical state (static Python values).

  The augmented state is [x (D), sin x_a1, cos x_a1, ...] (D + 2A). Indices below are into it.

  Attributes:
    state_size: D, the length of the env's `pipeline_state`.
    angles: the angle indices a (augmented with sin and cos).
    inputs: the augmented-state entries the policy and the GP see (raw angles left out).
    cost_dims: the augmented-state entries the cost depends on.
    tip: maps those entries to the pole tip's offset in metres from the goal, together with
      `target`: offset = tip @ (z[cost_dims] - target).         # [K, len(cost_dims)]
    target: the cost dims' value at the goal.                   # [len(cost_dims)]
    init_mean: the mean of the env's reset distribution.        # [D]
    init_var: its variance (independent dims).                  # [D]
  """

  state_size: int
  angles: tuple[int, ...]
  inputs: tuple[int, ...]
  cost_dims: tuple[int, ...]
  tip: tuple[tuple[float, ...], ...]
  target: tuple[float, ...]
  init_mean: tuple[float, ...]
  init_var: tuple[float, ...]


def _cartpole_layout(pole_length: float) -> Layout:
  # [x, x_dot, theta, theta_dot, sin theta, cos theta]; tip - goal = (x + l sin, l cos - l).
  return Layout(state_size=4, angles=(2,), inputs=(0, 1, 3, 4, 5), cost_dims=(0, 4, 5),
                tip=((1.0, pole_length, 0.0), (0.0, 0.0, pole_length)), target=(0.0, 0.0, 1.0),
                init_mean=(0.0, 0.0, 3.141592653589793, 0.0), init_var=(0.01,) * 4)


def _pendulum_layout(length: float) -> Layout:
  # [theta, theta_dot, sin theta, cos theta]; tip - goal = (l sin, l cos - l); reset uniform
  # theta in [-pi, pi], theta_dot in [-1, 1].
  return Layout(state_size=2, angles=(0,), inputs=(1, 2, 3), cost_dims=(2, 3),
                tip=((length, 0.0), (0.0, length)), target=(0.0, 1.0),
                init_mean=(0.0, 0.0), init_var=(3.141592653589793**2 / 3.0, 1.0 / 3.0))


LAYOUTS: dict[str, Callable[[Env], Layout]] = {
    "cartpole_swingup": lambda env: _cartpole_layout(env.pole_length),
    "pendulum": lambda env: _pendulum_layout(env.l),
}
"""The envs PILCO has a state layout for, each a function of the bare env."""


class PhysicalState(Wrapper):
  """Makes the observation the env's physical state (`pipeline_state`), which PILCO plans
  in; dynamics and rewards are the wrapped env's."""

  def __init__(self, env: Env, state_size: int):
    super().__init__(env)
    self._state_size = state_size

  @property
  def observation_size(self) -> int:
    return self._state_size

  def reset(self, rng):
    s = self.env.reset(rng)
    return s.replace(obs=s.pipeline_state)

  def step(self, state, action):
    s = self.env.step(state, action)
    return s.replace(obs=s.pipeline_state)


# ------------------------------------------------------------------------------------------
# Configuration.


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
  """The controller u = u_max squash(pi(x_pol)) (PILCO's squashing of an RBF or linear map).

  Attributes:
    kind: "rbf" (a radial-basis-function network with `num_basis` learnt centres, weights and
      lengthscales: PILCO's GP-mean policy, see `_rbf_gp`) or "linear".
    num_basis: RBF centres (PILCO's cart-pole: 50).
    u_max: the squashing bound in the env's action units (cart-pole: 1.0 = 10 N).
    init_target_std: scale of the initial policy's output (PILCO: pseudo-targets N(0, 0.1^2)).
    squash: "sin" (sin y, the paper's) or "sat" ((9 sin y + sin 3y) / 8, pilco-matlab's gSat,
      flatter near the bound).
    init_lengthscales: the RBF's initial lengthscales, one per policy input (the layout's
      `inputs`; cart-pole's [x, x_dot, theta_dot, sin theta, cos theta], pilco-matlab:
      (1, 1, 1, 0.7, 0.7)); None: all 1.
    parametrisation: how the RBF's outputs are parameters. "weights": the network's weights
      themselves (init N(0, init_target_std^2 / num_basis)). "targets": pilco-matlab's
      pseudo-targets y, the policy being the mean of a GP (signal std 1, noise std 0.01)
      through (centres, y), so weights = (K + 0.01^2 I)^-1 y (init y ~ N(0,
      init_target_std^2)); the same function class, another landscape for the optimiser:
      with the centres drawn close together the initial policy interpolates random targets
      and varies fast near the start. Needs float64 (those weights cancel to many digits).
  """

  kind: str = "rbf"
  num_basis: int = 50
  u_max: float = 1.0
  init_target_std: float = 0.1
  squash: str = "sin"
  init_lengthscales: tuple[float, ...] | None = None
  parametrisation: str = "weights"

  def __post_init__(self):
    checks.one_of(self, "kind", ("rbf", "linear"))
    checks.one_of(self, "squash", ("sin", "sat"))
    checks.one_of(self, "parametrisation", ("weights", "targets"))
    checks.positive_int(self, "num_basis")
    checks.in_range(self, "u_max", 0.0, 1.0, low_open=True)
    checks.in_range(self, "init_target_std", 0.0, low_open=True)
    if self.init_lengthscales is not None:
      if not self.init_lengthscales or min(self.init_lengthscales) <= 0.0:
        checks.fail(self, "init_lengthscales", f"must be positive numbers, got "
                    f"{self.init_lengthscales}")


@dataclasses.dataclass(frozen=True)
class OptimiserConfig:
  """Policy improvement: a fixed number of optimiser steps inside `lax.scan` on the exact
  gradient of the predicted cost (PILCO used ~150 line searches of CG or BFGS).

  Attributes:
    kind: "lbfgs" (optax.lbfgs with its zoom line search) or "adam".
    steps: optimiser steps per trial (0: the policy is never improved).
    learning_rate: Adam's step size (for lbfgs: the line search's; None there = 1).
    max_linesearch_steps: lbfgs: evaluations per line search at most.
    patience: 0: always `steps` steps. Otherwise stop early once `patience` steps in a row
      have not lowered the best objective by more than `tolerance` below the best of the
      last step that did (a stall: a `while_loop` then, and under vmap every seed runs
      until the last one stops); the metric "policy/optimiser_steps" counts the steps taken.
    tolerance: see `patience`, in the objective's units (PILCO: summed cost per episode).
  """

  kind: str = "lbfgs"
  steps: int = 100
  learning_rate: float = 1.0
  max_linesearch_steps: int = 10
  patience: int = 0
  tolerance: float = 1e-3

  def __post_init__(self):
    checks.one_of(self, "kind", ("lbfgs", "adam"))
    checks.int_at_least(self, "steps", 0)
    checks.in_range(self, "learning_rate", 0.0)
    checks.positive_int(self, "max_linesearch_steps")
    checks.int_at_least(self, "patience", 0)
    checks.in_range(self, "tolerance", 0.0)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The GP dynamics model.

  Attributes:
    fit: the marginal-likelihood fit of the hyperparameters (warm-started every trial). The
      default caps the signal-to-noise ratio at 30 (pilco-matlab: 500-1000, in float64): in
      float32 a higher one makes the moment-matched covariances lose their positive
      definiteness (beta^T Q beta - mu^2 cancels) and the rollout turns NaN.
    sparse_inducing: None for the exact GP on all data; M for a sparse GP with M inducing
      points (`gp.sparse_posterior`, points from `gp.select_inducing`) once the data exceed M
      rows (until then the exact GP on those rows).
  """

  fit: gp.GPFitConfig = gp.GPFitConfig(steps=60, snr_limit=30.0)
  sparse_inducing: int | None = None

  def __post_init__(self):
    if self.sparse_inducing is not None:
      checks.positive_int(self, "sparse_inducing")


@dataclasses.dataclass(frozen=True)
class Config:
  """A PILCO run.

  Attributes:
    env: one of the envs in `LAYOUTS` (cartpole_swingup, pendulum).
    trials: trials with the learnt policy (after the random ones).
    random_trials: initial trials with uniformly random actions.
    episode_length: env steps per trial, also the prediction horizon.
    dt: the env's control period in seconds (cart-pole: 0.1 s = 5 RK4 substeps of 0.02 s, as
      PILCO's; pendulum: its integration step).
    cost_width: the saturating cost's width in metres of tip distance (PILCO: 0.25).
    success_distance: a trial succeeds when the pole tip is within this many metres of the
      goal on every one of the last `success_steps` steps of the episode.
    success_steps: see `success_distance` (cart-pole default: the last 1 s).
    measurement_noise_std: Gaussian noise on every observed state dimension (pilco-matlab's
      cart-pole: 0.01): the policy acts on the noisy observations and the GP learns from them
      (consecutive transitions share each observation); the episode metrics use the true
      states. 0: exact observations.
    friction: cart-pole only: viscous friction on the cart in N per m/s (pilco-matlab: 0.1;
      the library's env is frictionless, 0).
    policy: the controller.
    optimiser: policy improvement.
    model: the GP dynamics model.
    float64: compute the GP, the policy and the predicted rollout in float64 (pilco-matlab
      does; in float32 the moment-matched covariances lose positive definiteness at the fitted
      signal-to-noise ratios). Needs `jax.config.update("jax_enable_x64", True)` before `make`
      (process-global; `experiments/pilco.py` sets it when asked); the env stays float32, its
      observations and actions are cast at the boundary. False: float32 in either mode.
    specialise_rows: compile each trial's program for the rows there can be by then
      (`rows_before`) instead of one program on the whole run's capacity: the predicted
      rollout's cost is quadratic in the GP's rows, so a long run is 2-3x faster for one
      compilation per trial (worth it when a trial takes longer than it compiles).
  """

  env: str = "cartpole_swingup"
  trials: int = 10
  random_trials: int = 1
  episode_length: int = 40
  dt: float = 0.1
  cost_width: float = 0.25
  success_distance: float = 0.15
  success_steps: int = 10
  measurement_noise_std: float = 0.0
  friction: float = 0.0
  policy: PolicyConfig = PolicyConfig()
  optimiser: OptimiserConfig = OptimiserConfig()
  model: ModelConfig = ModelConfig()
  float64: bool = False
  specialise_rows: bool = False

  def __post_init__(self):
    checks.one_of(self, "env", sorted(LAYOUTS))
    checks.positive_int(self, "trials", "random_trials", "episode_length", "success_steps")
    checks.in_range(self, "dt", 0.0, low_open=True)
    checks.in_range(self, "cost_width", 0.0, low_open=True)
    checks.in_range(self, "success_distance", 0.0, low_open=True)
    checks.in_range(self, "measurement_noise_std", 0.0)
    checks.in_range(self, "friction", 0.0)
    if self.friction and self.env != "cartpole_swingup":
      checks.fail(self, "friction", f"is a cart-pole setting; {self.env} has none (use 0)")
    ls = self.policy.init_lengthscales
    if ls is not None and self.policy.kind == "linear":
      checks.fail(self, "policy", "init_lengthscales is for the RBF policy, not the linear one")
    if self.policy.parametrisation == "targets":
      if self.policy.kind == "linear":
        checks.fail(self, "policy", "parametrisation 'targets' is for the RBF policy, not the "
                    "linear one")
      if not self.float64:
        checks.fail(self, "policy", "parametrisation 'targets' needs float64=True (its "
                    "weights (K + 0.01^2 I)^-1 y cancel to more digits than float32 holds)")
    if self.success_steps > self.episode_length:
      checks.fail(self, "success_steps", f"must be <= episode_length={self.episode_length}, "
                  f"got {self.success_steps}")
    m = self.model.sparse_inducing
    if m is not None and m >= self.buffer_capacity:
      checks.fail(self, "model", f"sparse_inducing={m} must be < the data capacity "
                  f"(random_trials + trials) * episode_length = {self.buffer_capacity}")

  @property
  def buffer_capacity(self) -> int:
    return (self.trials + self.random_trials) * self.episode_length

  @property
  def dtype(self) -> Any:
    """The float type PILCO computes in (the env is float32 regardless)."""
    return jnp.float64 if self.float64 else jnp.float32


def check_precision(config: Config) -> None:
  """Raises if `config.float64` asks for float64 but JAX's x64 mode is off (where float64
  arrays silently become float32)."""
  if config.float64 and not jax.config.read("jax_enable_x64"):
    raise ValueError('pilco.Config.float64 is True but JAX x64 is off: call '
                     'jax.config.update("jax_enable_x64", True) first (or set float64=False)')


PRESETS: dict[str, Config] = {
    # PILCO's cart-pole swing-up as pilco-matlab sets it up: 4 s episodes at 0.1 s, 50 RBF
    # centres as the mean of a GP through pseudo-targets (pilco-matlab's parametrisation:
    # with weights as the parameters instead, the predicted cost stalled near 36 of 40 on
    # seeds 1 and 2), gSat squashing, initial policy lengthscales (1, 1, 1, 0.7, 0.7),
    # measurement noise 0.01 and cart friction 0.1. In float64 with pilco-matlab's
    # signal-to-noise cap (500), the exact GP on every row (pilco-matlab turns sparse only
    # past 300 rows) with each trial's program specialised to its rows, 300 Adam steps of
    # GP fitting, up to 150 L-BFGS steps of policy improvement per trial (pilco-matlab: 150
    # line searches) with up to 20 evaluations per line search, stopped early after 20
    # steps without a gain of 1e-3. Cost width 0.3 m of tip distance: pilco-matlab's 0.25 is
    # for its 0.5 m pole, ours is 0.6 m (the same width / length ratio).
    "cartpole_swingup": Config(
        env="cartpole_swingup", trials=10, episode_length=40, dt=0.1, cost_width=0.3,
        float64=True, specialise_rows=True, measurement_noise_std=0.01, friction=0.1,
        policy=PolicyConfig(squash="sat", init_lengthscales=(1.0, 1.0, 1.0, 0.7, 0.7),
                            parametrisation="targets"),
        optimiser=OptimiserConfig(kind="lbfgs", steps=150, learning_rate=1.0,
                                  max_linesearch_steps=20, patience=20, tolerance=1e-3),
        model=ModelConfig(fit=gp.GPFitConfig(steps=300, snr_limit=500.0))),
    # Seconds per trial: for smoke tests and notebooks.
    "quick": Config(env="cartpole_swingup", trials=2, episode_length=20, dt=0.1,
                    cost_width=1.0, policy=PolicyConfig(num_basis=10),
                    optimiser=OptimiserConfig(kind="adam", steps=20, learning_rate=0.05),
                    model=ModelConfig(fit=gp.GPFitConfig(steps=30, snr_limit=30.0))),
}
"""Named starting points (`experiments/pilco.py --preset NAME`)."""


# ------------------------------------------------------------------------------------------
# Parts.


class Parts(NamedTuple):
  """The pieces a PILCO run is built from (static)."""

  env: Env                # physical-state observations, time limit episode_length
  layout: Layout


class Float32Info(Wrapper):
  """Brax's EpisodeWrapper with its step counters in float32 (under x64 it makes them float64
  at reset and float32 ones come back from a step, which a scan carry refuses)."""

  def reset(self, rng):
    return _float32_info(self.env.reset(rng))

  def step(self, state, action):
    return _float32_info(self.env.step(state, action))


def _float32_info(state):
  f32 = lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x
  return state.replace(info=jax.tree.map(f32, state.info))


def make_env(config: Config) -> Env:
  """The env PILCO acts in: `envs.make(config.env)` with the config's control period and
  episode length, observing the physical state."""
  if config.env == "cartpole_swingup":
    kwargs = dict(dt=config.dt, num_substeps=max(1, round(config.dt / 0.02)),
                  friction=config.friction)
  else:
    kwargs = dict(dt=config.dt)
  bare = envs.make(config.env, episode_length=None, **kwargs)
  layout = LAYOUTS[config.env](bare)
  return Float32Info(brax_training.EpisodeWrapper(PhysicalState(bare, layout.state_size),
                                                  config.episode_length, 1))


def make_parts(config: Config) -> Parts:
  check_precision(config)
  env = make_env(config)
  layout = LAYOUTS[config.env](env.unwrapped)
  ls = config.policy.init_lengthscales
  if ls is not None and len(ls) != len(layout.inputs):
    raise ValueError(f"pilco.PolicyConfig.init_lengthscales: {config.env}'s policy has "
                     f"{len(layout.inputs)} inputs, got {len(ls)} lengthscales")
  return Parts(env=env, layout=layout)


# ------------------------------------------------------------------------------------------
# The policy.


class PolicyParams(NamedTuple):
  """RBF: `inputs` [B, P] centres, `weights` [B, U], `log_lengthscales` [U, P]: pi(x) =
  sum_b weights_b exp(-|x - inputs_b|^2_Lambda / 2) (with `PolicyConfig.parametrisation`
  "targets", `weights` holds the pseudo-targets y and the sum runs over (K + 0.01^2 I)^-1 y).
  Linear: `inputs` [U, P] the matrix, `weights` [U] the offset, `log_lengthscales` [U, P]
  unused (zeros)."""

  inputs: jax.Array
  weights: jax.Array
  log_lengthscales: jax.Array


def _augment_point(layout: Layout, x: jax.Array) -> jax.Array:
  """[x, sin x_a, cos x_a], [D + 2A], for a known state x [D]."""
  a = x[jnp.asarray(layout.angles)]
  return jnp.concatenate([x, jnp.stack([jnp.sin(a), jnp.cos(a)], -1).reshape(-1)])


def _augment(layout: Layout, m: jax.Array, s: jax.Array) -> tuple[jax.Array, jax.Array]:
  mt, st, ct = moments.trig_augment(m, s, layout.angles)
  return moments.joint(m, s, mt, st, ct)


def _rbf_gp(config: Config, params: PolicyParams) -> gp.Posterior:
  """The RBF network as a GP posterior whose mean it is (signal std 1; no variance terms).

  PILCO parameterises it by pseudo-targets y, weights = (K + 0.01^2 I)^-1 y
  (`PolicyConfig.parametrisation` "targets"); with the pseudo-inputs drawn close together
  (from the start distribution) those weights cancel to many digits, which float32 cannot
  carry, so by default ("weights") the weights are the parameters (the same function
  class)."""
  b, u = params.weights.shape
  hyp = gp.GPParams(log_lengthscales=params.log_lengthscales,
                    log_signal_std=jnp.zeros((u,), params.inputs.dtype),
                    log_noise_std=jnp.full((u,), jnp.log(0.01), params.inputs.dtype))
  if config.policy.parametrisation == "targets":
    return gp.posterior(hyp, params.inputs, params.weights)
  return gp.Posterior(params=hyp, centres=params.inputs, beta=params.weights.T,
                      inv_k=jnp.zeros((u, b, b), params.inputs.dtype),
                      mask=jnp.ones((b,), bool))


def init_policy(config: Config, layout: Layout, key: PRNGKey, action_size: int
                ) -> PolicyParams:
  """PILCO's initial policy: centres drawn from the (augmented) start distribution, unit
  lengthscales (or `init_lengthscales`), weights N(0, init_target_std^2 / num_basis) (with
  parametrisation "targets": pseudo-targets N(0, init_target_std^2)); linear: weights
  N(0, init_target_std^2), zero offset."""
  p, u, dt = len(layout.inputs), action_size, config.dtype
  m0, v0 = jnp.asarray(layout.init_mean, dt), jnp.asarray(layout.init_var, dt)
  k1, k2 = jax.random.split(key)
  std = config.policy.init_target_std
  if config.policy.kind == "linear":
    return PolicyParams(inputs=std * jax.random.normal(k1, (u, p), dt),
                        weights=jnp.zeros((u,), dt), log_lengthscales=jnp.zeros((u, p), dt))
  b = config.policy.num_basis
  x = m0 + jax.random.normal(k1, (b, layout.state_size), dt) * jnp.sqrt(v0)
  aug = jax.vmap(functools.partial(_augment_point, layout))(x)[:, jnp.asarray(layout.inputs)]
  ls = config.policy.init_lengthscales
  log_ls = jnp.zeros((u, p), dt) if ls is None else jnp.broadcast_to(
      jnp.log(jnp.asarray(ls, dt)), (u, p))
  scale = std if config.policy.parametrisation == "targets" else std / b**0.5
  return PolicyParams(inputs=aug, weights=scale * jax.random.normal(k2, (b, u), dt),
                      log_lengthscales=log_ls)


def _policy_moments(config: Config, params: PolicyParams, mi: jax.Array, si: jax.Array):
  """(mean [U], cov [U, U], gain [U, P]) of u = u_max sin(pi(x_pol)) for x_pol ~ N(mi, si),
  with gain = E[du/dx_pol] (so cov(z, u) = cov(z, x_pol) gain^T)."""
  if config.policy.kind == "linear":
    m0, s0, _ = moments.linear(mi, si, params.inputs, params.weights)
    j0 = params.inputs
  else:
    post = _rbf_gp(config, params)
    mean_fn = lambda mm: gp.moment_match(post, mm, si, model_variance=False)[0]
    m0, s0, _ = gp.moment_match(post, mi, si, model_variance=False)
    j0 = jax.jacfwd(mean_fn)(mi)
  u_max, v0 = config.policy.u_max, jnp.diag(s0)
  if config.policy.squash == "sin":
    mu, su, _ = moments.sin_squash(m0, s0, u_max)
    # Stein through the squashing: E[du/du0] = u_max E[cos u0] (PILCO's gSin chain rule).
    gain = u_max * jnp.exp(-0.5 * v0) * jnp.cos(m0)
  else:
    mu, su, _ = moments.sat_squash(m0, s0, u_max)
    # E[d/du0 (9 sin u0 + sin 3 u0) / 8] = (9 E[cos u0] + 3 E[cos 3 u0]) / 8.
    gain = u_max / 8.0 * (9.0 * jnp.exp(-0.5 * v0) * jnp.cos(m0)
                          + 3.0 * jnp.exp(-4.5 * v0) * jnp.cos(3.0 * m0))
  return mu, su, gain[:, None] * j0


def squash(config: Config, u0: jax.Array) -> jax.Array:
  """u_max squash(u0) for a known u0 (see `PolicyConfig.squash`)."""
  if config.policy.squash == "sin":
    return config.policy.u_max * jnp.sin(u0)
  return config.policy.u_max * (9.0 * jnp.sin(u0) + jnp.sin(3.0 * u0)) / 8.0


def policy_action(config: Config, layout: Layout, params: PolicyParams,
                  ) -> Callable[[jax.Array], jax.Array]:
  """x [D] -> u [U]: the deterministic controller for a known state."""
  idx = jnp.asarray(layout.inputs)
  post = None if config.policy.kind == "linear" else _rbf_gp(config, params)

  def act(x):
    xi = _augment_point(layout, x.astype(params.inputs.dtype))[idx]
    u0 = (params.inputs @ xi + params.weights if post is None else gp.predict(post, xi)[0])
    return squash(config, u0).astype(jnp.float32)                      # the env's dtype

  return act


def make_policy(config: Config, layout: Layout, params: PolicyParams,
                noise: jax.Array | None = None) -> acting.Policy:
  """The controller as an `envs.acting.Policy` on the physical-state observation; with
  `noise` [T + 1, D] it acts at step t on the observation plus noise[t] (measurement noise:
  see `observe`)."""
  act = policy_action(config, layout, params)
  if noise is None:
    return acting.Policy(init=lambda key: (), act=lambda st, key, obs: (act(obs), st, {}))
  return acting.Policy(init=lambda key: jnp.zeros((), jnp.int32),
                       act=lambda t, key, obs: (act(obs + noise[t]), t + 1, {}))


def measurement_noise(config: Config, layout: Layout, key: PRNGKey) -> jax.Array | None:
  """One episode's measurement noise [T + 1, D] (noise[t] on the t-th state observed), or
  None when `config.measurement_noise_std` is 0."""
  if not config.measurement_noise_std:
    return None
  shape = (config.episode_length + 1, layout.state_size)
  return config.measurement_noise_std * jax.random.normal(key, shape, jnp.float32)


def observe(transitions: Transition, noise: jax.Array | None) -> Transition:
  """The transitions as observed through `noise` [T + 1, D] (the episode's, from
  `measurement_noise`): obs_t + noise[t], next_obs_t + noise[t + 1], so consecutive
  transitions share each noisy observation."""
  if noise is None:
    return transitions
  return transitions._replace(obs=transitions.obs + noise[:-1],
                              next_obs=transitions.next_obs + noise[1:])


# ------------------------------------------------------------------------------------------
# The predicted rollout.


def cost_weights(config: Config, layout: Layout) -> tuple[jax.Array, jax.Array]:
  """(target [C], W [C, C]) of the saturating cost on the augmented state's cost dims:
  W = tip^T tip / width^2, so (z - t)^T W (z - t) = |tip offset|^2 / width^2."""
  tip = jnp.asarray(layout.tip)
  return jnp.asarray(layout.target), tip.T @ tip / config.cost_width**2


def expected_cost(config: Config, layout: Layout, m: jax.Array, s: jax.Array
                  ) -> tuple[jax.Array, jax.Array]:
  """Mean and variance of the saturating cost for the physical state x ~ N(m [D], s [D, D])."""
  ma, sa = _augment(layout, m, s)
  c = jnp.asarray(layout.cost_dims)
  target, w = cost_weights(config, layout)
  return moments.saturating_cost(ma[c], sa[c][:, c], target, w)


def propagate(config: Config, layout: Layout, policy_params: PolicyParams,
              post: gp.Posterior, m: jax.Array, s: jax.Array
              ) -> tuple[jax.Array, jax.Array]:
  """One step of the moment-matched rollout (see the module docstring): N(m [D], s [D, D])
  of the state now -> that of the next state."""
  d = layout.state_size
  ma, sa = _augment(layout, m, s)                           # [Da], [Da, Da]
  pol = jnp.asarray(layout.inputs)
  mi, si = ma[pol], sa[pol][:, pol]
  mu, su, gain = _policy_moments(config, policy_params, mi, si)
  cov_au = sa[:, pol] @ gain.T                              # cov(augmented x, u) [Da, U]
  mj, sj = moments.joint(ma, sa, mu, su, cov_au)
  da, nu = ma.shape[0], mu.shape[0]
  z = jnp.concatenate([pol, da + jnp.arange(nu)])
  mz, sz = mj[z], sj[z][:, z]
  md, sd, _ = gp.moment_match(post, mz, sz)
  cov_xd = moments.through_input(lambda mm: gp.moment_match(post, mm, sz)[0], mz,
                                 sj[:d][:, z])              # cov(x, delta) [D, D]
  s_next = s + sd + cov_xd + cov_xd.T
  return m + md, 0.5 * (s_next + s_next.T)


def predicted_cost(config: Config, layout: Layout, policy_params: PolicyParams,
                   post: gp.Posterior, horizon: int) -> tuple[jax.Array, jax.Array]:
  """The expected cost summed over `horizon` steps from the reset distribution, and the
  per-step costs [H] (of the states after each action), by `lax.scan`."""
  gain, costs = _predicted_gain(config, layout, policy_params, post, horizon)
  return horizon - gain, costs


def _predicted_gain(config, layout, policy_params, post, horizon):
  """sum_t E[exp(-d_t^2 / (2 width^2))] = horizon - predicted cost: the same objective
  negated, without float32's rounding of 1 - (nearly 1) while the pole is still far from the
  goal, where the cost's gradient is small but not zero. Also the per-step costs [H]."""
  dtype = post.beta.dtype
  m0 = jnp.asarray(layout.init_mean, dtype)
  s0 = jnp.diag(jnp.asarray(layout.init_var, dtype))

  def body(carry, _):
    m, s = propagate(config, layout, policy_params, post, *carry)
    ma, sa = _augment(layout, m, s)
    c = jnp.asarray(layout.cost_dims)
    target, w = cost_weights(config, layout)
    sim = moments.expected_similarity(ma[c], sa[c][:, c], target, w)
    # float32 moment matching can return an indefinite covariance; the closed-form cost of
    # one is meaningless (a "similarity" above 1 that the optimiser would exploit): NaN it,
    # so `optimise_policy` rejects the point.
    sane = jnp.all(jnp.diag(s) >= 0.0) & (sim >= 0.0) & (sim <= 1.0)
    return (m, s), jnp.where(sane, sim, jnp.nan)

  _, similarity = jax.lax.scan(body, (m0, s0), None, length=horizon)
  return jnp.sum(similarity), 1.0 - similarity


def optimise_policy(config: Config, objective: Callable[[Any], jax.Array], params: Any
                    ) -> tuple[Any, jax.Array, jax.Array, jax.Array]:
  """`config.optimiser.steps` steps of L-BFGS or Adam on `objective`, as a `lax.scan` (or a
  `lax.while_loop` that stops at a stall, with `patience`); returns (the best parameters
  seen, the objective there, the objective at the start, the steps taken). Keeping the best
  guards against a step that makes the objective NaN (float32 moment matching can lose
  positive definiteness); after such a step the optimiser restarts from the best point."""
  o = config.optimiser
  first = objective(params)
  if o.steps == 0:
    return params, first, first, jnp.zeros((), jnp.int32)
  if o.kind == "lbfgs":
    opt = optax.lbfgs(learning_rate=o.learning_rate or None,
                      linesearch=optax.scale_by_zoom_linesearch(
                          max_linesearch_steps=o.max_linesearch_steps))
  else:
    opt = optax.adam(o.learning_rate)
  if o.kind == "lbfgs":
    value_and_grad = optax.value_and_grad_from_state(objective)
  else:
    value_and_grad = lambda p, state: jax.value_and_grad(objective)(p)

  def body(carry):
    p, st, best, best_value = carry
    value, grad = value_and_grad(p, state=st)
    grad = jax.tree.map(lambda g: jnp.where(jnp.isfinite(g), g, 0.0), grad)
    better = jnp.isfinite(value) & (value < best_value)
    best = jax.tree.map(lambda a, b: jnp.where(better, a, b), p, best)
    best_value = jnp.where(better, value, best_value)
    if o.kind == "lbfgs":
      updates, st_next = opt.update(grad, st, p, value=value, grad=grad, value_fn=objective)
    else:
      updates, st_next = opt.update(grad, st, p)
    # A point where the rollout went non-finite: restart from the best point so far (else
    # the zeroed gradients would leave the optimiser stuck there).
    ok = jnp.isfinite(value)
    p_next = jax.tree.map(lambda a, b: jnp.where(ok, a, b), optax.apply_updates(p, updates),
                          best)
    st_next = jax.tree.map(lambda a, b: jnp.where(ok, a, b), st_next, opt.init(best))
    return p_next, st_next, best, best_value

  init = (params, opt.init(params), params, jnp.where(jnp.isfinite(first), first, jnp.inf))
  if o.patience == 0:
    (p, _, best, best_value), _ = jax.lax.scan(lambda c, _: (body(c), None), init, None,
                                               length=o.steps)
    taken = jnp.asarray(o.steps, jnp.int32)
  else:
    # The step counter i, the reference value (the best when it last dropped by more than
    # `tolerance`) and the step that set it.
    def cond(c):
      i, _, ref_i, _ = c
      return (i < o.steps) & (i - ref_i < o.patience)

    def loop(c):
      i, ref, ref_i, inner = c
      inner = body(inner)
      dropped = inner[3] < ref - o.tolerance
      return (i + 1, jnp.where(dropped, inner[3], ref), jnp.where(dropped, i + 1, ref_i),
              inner)

    zero = jnp.zeros((), jnp.int32)
    taken, _, _, (p, _, best, best_value) = jax.lax.while_loop(
        cond, loop, (zero, init[3], zero, init))
  last = objective(p)
  better = jnp.isfinite(last) & (last < best_value)
  best = jax.tree.map(lambda a, b: jnp.where(better, a, b), p, best)
  return best, jnp.where(better, last, best_value), first, taken


# ------------------------------------------------------------------------------------------
# The algorithm.


class State(NamedTuple):
  """What a PILCO run carries from trial to trial (one seed; vmapped runs add a seed axis).

  Attributes:
    buffer: every transition so far, observations = physical states.  # capacity [C, ...]
    gp_params: the GP's hyperparameters (warm start of the next fit).
    policy_params: the policy (warm start of the next improvement).
    key: the run's random key.
    trial: trials completed, random ones included.              # [] int32
    env_steps: env steps taken so far.                          # [] int32
  """

  buffer: buffer_lib.BufferState
  gp_params: gp.GPParams
  policy_params: PolicyParams
  key: PRNGKey
  trial: jax.Array
  env_steps: jax.Array


def gp_data(layout: Layout, data: Transition, dtype: Any = None
            ) -> tuple[jax.Array, jax.Array]:
  """GP inputs [N, P + U] = [augmented state's policy inputs, action] and targets [N, D] =
  next state - state, from transitions with physical-state observations, in `dtype` (None:
  JAX's default float, float64 under x64; the buffer holds the env's float32)."""
  dtype = jnp.result_type(float) if dtype is None else dtype
  obs, next_obs = data.obs.astype(dtype), data.next_obs.astype(dtype)
  aug = jax.vmap(functools.partial(_augment_point, layout))(obs)
  inputs = jnp.concatenate([aug[:, jnp.asarray(layout.inputs)], data.action.astype(dtype)], -1)
  return inputs, next_obs - obs


def episode_metrics(config: Config, layout: Layout, ep: acting.EpisodeResult) -> dict:
  """train/return, train/episode_length, train/success and policy/real_cost (the saturating
  cost of each state reached, summed; the predicted cost's counterpart)."""
  target, _ = cost_weights(config, layout)
  c, tip = jnp.asarray(layout.cost_dims), jnp.asarray(layout.tip)
  aug = jax.vmap(functools.partial(_augment_point, layout))(ep.transitions.next_obs)
  dist = jnp.linalg.norm((aug[:, c] - target) @ tip.T, axis=-1)            # [T]
  cost = 1.0 - jnp.exp(-0.5 * dist**2 / config.cost_width**2)
  last = jnp.arange(dist.shape[0]) >= ep.length - config.success_steps
  held = jnp.all(jnp.where(last & ep.valid, dist < config.success_distance, True))
  success = held & (ep.length >= config.success_steps)
  return {"train/return": ep.ret, "train/episode_length": ep.length,
          "train/success": success.astype(jnp.float32),
          "policy/real_cost": jnp.sum(jnp.where(ep.valid, cost, 0.0)),
          "policy/final_tip_distance": dist[ep.length - 1]}


def _init(parts: Parts, config: Config, key: PRNGKey):
  env, layout = parts.env, parts.layout
  example = Transition.zeros((env.observation_size,), env.action_size)
  buffer = buffer_lib.init(config.buffer_capacity, example)
  key, policy_key = jax.random.split(key)
  done = []
  for _ in range(config.random_trials):
    key, ep_key = jax.random.split(key)
    ep = acting.episode(env, acting.uniform_random(env.action_size), ep_key,
                        config.episode_length)
    noise = measurement_noise(config, layout, jax.random.fold_in(ep_key, 1))
    buffer = buffer_lib.add_masked(buffer, observe(ep.transitions, noise), ep.valid)
    done.append(episode_metrics(config, layout, ep))
  done = jax.tree.map(lambda *x: jnp.stack(x), *done)
  inputs, targets = gp_data(layout, buffer.data, config.dtype)
  state = State(buffer=buffer,
                gp_params=gp.init_params(inputs, targets, buffer_lib.valid_mask(buffer)),
                policy_params=init_policy(config, layout, policy_key, env.action_size),
                key=key, trial=jnp.asarray(config.random_trials, jnp.int32),
                env_steps=jnp.sum(done["train/episode_length"]).astype(jnp.int32))
  done["env_steps"] = jnp.cumsum(done["train/episode_length"])
  return state, done


def init(key: PRNGKey, config: Config) -> State:
  """Empty buffer, then `random_trials` episodes of uniformly random actions; initial GP
  hyperparameters from those data and PILCO's initial policy."""
  return _init(make_parts(config), config, key)[0]


def fit_model(config: Config, layout: Layout, params: gp.GPParams, buffer, key: PRNGKey,
              rows: int | None = None) -> tuple[gp.GPParams, gp.Posterior, jax.Array]:
  """Fits the hyperparameters on the buffer, then the posterior (sparse once the data exceed
  `sparse_inducing` rows); returns them and the log marginal likelihood per data point,
  averaged over the outputs.

  `rows` (a Python int): only the buffer's first `rows` slots are used, which must hold every
  valid row (the buffer fills in order and never wraps: its capacity is the whole run's), so
  the GP's shapes, and the predicted rollout's cost (quadratic in the rows), are those of the
  data there can be by then rather than of the whole run's capacity. None: every slot."""
  data, mask = buffer.data, buffer_lib.valid_mask(buffer)
  if rows is not None:
    data, mask = jax.tree.map(lambda x: x[:rows], data), mask[:rows]
  inputs, targets = gp_data(layout, data, config.dtype)
  params, info = gp.fit(params, inputs, targets, mask, config.model.fit)
  lml = jnp.mean(info.lml) / jnp.maximum(mask.sum(), 1)
  m = config.model.sparse_inducing
  if m is None or m >= inputs.shape[0]:
    post = gp.posterior(params, inputs, targets, mask)
  else:
    exact = lambda: gp.posterior(params, inputs[:m], targets[:m], mask[:m])
    sparse = lambda: gp.sparse_posterior(params, inputs, targets,
                                         gp.select_inducing(key, inputs, mask, m), mask)
    post = jax.lax.cond(buffer.size <= m, exact, sparse)
  return params, post, lml


def make_step(config: Config, parts: Parts | None = None, rows: int | None = None
              ) -> Callable[[State], tuple[State, dict]]:
  """Returns `step(state) -> (state, metrics)`: one PILCO trial (fit the GP, improve the
  policy on the predicted cost, run one episode). Pure and unjitted. `rows`: the GP sees only
  the buffer's first `rows` slots, which must hold all the data so far (see `fit_model`;
  `rows_before(config, i)` for trial i); None: the whole buffer (any trial)."""
  parts = parts or make_parts(config)
  env, layout = parts.env, parts.layout

  def step(state: State) -> tuple[State, dict]:
    key, model_key, ep_key = jax.random.split(state.key, 3)
    noise_key = jax.random.fold_in(ep_key, 1)          # used only with measurement noise
    gp_params, post, lml = fit_model(config, layout, state.gp_params, state.buffer,
                                     model_key, rows)
    horizon = config.episode_length
    objective = lambda p: -_predicted_gain(config, layout, p, post, horizon)[0]
    policy_params, best, first, taken = optimise_policy(config, objective,
                                                        state.policy_params)
    noise = measurement_noise(config, layout, noise_key)
    ep = acting.episode(env, make_policy(config, layout, policy_params, noise), ep_key,
                        config.episode_length)
    buffer = buffer_lib.add_masked(state.buffer, observe(ep.transitions, noise), ep.valid)
    metrics = {
        **episode_metrics(config, layout, ep),
        "env_steps": state.env_steps + ep.length,
        "model/log_marginal_likelihood": lml,
        "model/noise_std": jnp.mean(jnp.exp(gp_params.log_noise_std)),
        "policy/predicted_cost": horizon + best,
        "policy/initial_predicted_cost": horizon + first,
        "policy/optimiser_steps": taken,
        "nonfinite/model_params": tree.nonfinite(gp_params),
        "nonfinite/policy_params": tree.nonfinite(policy_params),
    }
    new_state = State(buffer=buffer, gp_params=gp_params, policy_params=policy_params,
                      key=key, trial=state.trial + 1, env_steps=state.env_steps + ep.length)
    return new_state, metrics

  return step


NONFINITE = {"nonfinite/model_params": "the GP hyperparameters",
             "nonfinite/policy_params": "the policy parameters"}


def rows_before(config: Config, trial: int) -> int:
  """The most transitions there can be before trial `trial` (0-based, random ones included):
  every earlier trial's full episode."""
  return min(trial, config.random_trials + config.trials) * config.episode_length


@functools.lru_cache(maxsize=16)
def make(config: Config) -> Algorithm:
  """PILCO as an `Algorithm` for `mbrl_jax.run.train`: the random trial(s), then
  `config.trials` trials, each one compiled call (validated before anything compiles).

  With `config.specialise_rows` each trial's program is specialised to the rows there can be
  by then (`step_at`: the GP and the predicted rollout on `rows_before(config, i)` rows
  rather than the whole run's capacity), so a run compiles once per trial; either way a
  second run (a resume, another seed batch) compiles nothing.

  The history holds, per trial [random_trials + trials, (S)]: "train/return",
  "train/episode_length", "train/success" (1.0 when the tip stayed within
  `success_distance` of the goal for the last `success_steps` steps), "env_steps",
  "policy/real_cost", and for the learnt trials "policy/predicted_cost" (after improvement),
  "policy/initial_predicted_cost" (before), "policy/optimiser_steps" and
  "model/log_marginal_likelihood" (per point).
  A NaN or Inf in the GP hyperparameters or the policy stops the run.
  """
  parts = make_parts(config)
  steps: dict[int, Callable] = {}

  def step_at(trial: int) -> Callable:
    rows = rows_before(config, trial)
    if rows not in steps:
      steps[rows] = make_step(config, parts, rows)
    return steps[rows]

  return Algorithm(name="pilco", unit="trial", config=config,
                   init=lambda key: _init(parts, config, key),
                   step=make_step(config, parts),
                   step_at=step_at if config.specialise_rows else None,
                   num_chunks=config.random_trials + config.trials, nonfinite=NONFINITE)
