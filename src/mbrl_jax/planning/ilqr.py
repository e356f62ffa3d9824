"""LQR and iLQR (box-constrained, Levenberg-Marquardt regularised) as pure functions, and an
MPC controller that applies iLQR's feedback gains between replans.

`lqr` solves the finite-horizon, time-varying discrete LQR problem with the general quadratic
stage cost by a backward Riccati `lax.scan`. `make_ilqr(dynamics, cost, ...)` builds an `ILQR`
whose `optimize(params, x0, u_init)` runs iLQR on any differentiable JAX dynamics and cost:

  x_{t+1} = dynamics(params, x_t, u_t)                 x [S], u [A]
  J = sum_t cost(params, x_t, u_t, x_{t+1}) + terminal_cost(params, x_H)

Design:
  * iLQR, i.e. Gauss-Newton on the dynamics (Li & Todorov 2004; Tassa, Erez, Todorov 2012):
    the dynamics enter the backward pass through their Jacobians only (`jax.jacfwd`); the
    cost's gradient and Hessian (`jax.grad`, `jax.hessian`) are exact in (x, u, x') and
    chained through the dynamics' Jacobians (l(x, u) = cost(x, u, f(x, u)), its f_xx term
    dropped as well). Full DDP's dynamics Hessian tensors would cost S times more per step and
    are rarely worth it in MPC (Tassa et al. 2012).
  * Regularisation as Tassa et al. 2012, section II.F: mu is added to V'_xx in Q_uu and Q_ux
    (Q_uu = l_uu + f_u' (V'_xx + mu I) f_u), which keeps the step a state-space trust region
    (unlike a mu I on Q_uu alone). mu shrinks by `mu_factor` after an accepted step (to 0
    below `mu_min`), grows after a rejected one or a Q_uu that is not positive definite.
  * Control limits: box-DDP (Tassa, Mansard, Todorov 2014). At each step the feedforward is
    the Newton step clipped to the box (u_lo - u_t <= k_t <= u_hi - u_t); the clamped
    dimensions get zero feedback rows and the free ones are re-solved on the free block of
    Q_uu. For one action dimension (every env here) that is the box QP's exact solution; for
    A > 1 it is one projected-Newton pass (Tassa et al. iterate it). Forward passes clip
    u = u_t + alpha k_t + K_t (x - x_t) to the box as well. Clamping (rather than squashing
    through tanh) keeps the cost's own landscape, and the zero rows of K keep the MPC
    controller's feedback from pushing a saturated action further out.
  * Line search: every step size in the static tuple `line_search` is tried in parallel (a
    `vmap` of forward passes); the lowest total cost is accepted if it is below the current
    one. The iterations are a `lax.while_loop` with a static maximum (one compile; under
    `vmap` over start states every row runs until the last one stops).

References: Li & Todorov 2004 ("Iterative linear quadratic regulator design for nonlinear
biological movement systems"); Tassa, Erez & Todorov 2012 ("Synthesis and stabilization of
complex behaviors through online trajectory optimization"); Tassa, Mansard & Todorov 2014
("Control-limited differential dynamic programming").

Example (a double integrator, from x = (1, 0) to 0):
  >>> A = jnp.array([[1.0, 0.1], [0.0, 1.0]]); B = jnp.array([[0.0], [0.1]])
  >>> dyn = lambda p, x, u: A @ x + B @ u
  >>> cost = lambda p, x, u, x_next: x @ x + 0.1 * u @ u
  >>> ilqr = make_ilqr(dyn, cost, horizon=20, action_size=1, lower=-1.0, upper=1.0)
  >>> u, x, K, k, info = ilqr.optimize(None, jnp.array([1.0, 0.0]), jnp.zeros((20, 1)))
  >>> u.shape, x.shape, K.shape, bool(info.costs[0] < info.initial_cost)
  ((20, 1), (21, 2), (20, 1, 2), True)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mbrl_jax import checks
from mbrl_jax.planning.optimizers import _check_bounds
from mbrl_jax.types import Params, PRNGKey

DynamicsFn = Callable[[Params, jax.Array, jax.Array], jax.Array]     # (params, x [S], u [A]) -> [S]
CostFn = Callable[[Params, jax.Array, jax.Array, jax.Array], jax.Array]  # (params, x, u, x') -> []
TerminalCostFn = Callable[[Params, jax.Array], jax.Array]            # (params, x_H [S]) -> []


# ---------------------------------------------------------------------------------------------
# The backward Riccati pass (shared by `lqr` and iLQR).


class LQRSolution(NamedTuple):
  """A finite-horizon LQR solution in deviation coordinates: du_t = K_t dx_t + k_t.

  Attributes:
    K: feedback gains.                                                     # [H, A, S]
    k: feedforward terms.                                                  # [H, A]
    V_x: gradient of the cost-to-go at each step (V_x[H] the terminal's).  # [H + 1, S]
    V_xx: Hessian of the cost-to-go.                                       # [H + 1, S, S]
    expected: predicted cost change of the full step, (k'Q_u, k'Q_uu k / 2) summed over t,
      so a step of size alpha changes the cost by alpha e0 + alpha^2 e1.  # [2]
    failed: some Q_uu (regularised) was not positive definite.             # [] bool
  """

  K: jax.Array
  k: jax.Array
  V_x: jax.Array
  V_xx: jax.Array
  expected: jax.Array
  failed: jax.Array


def _riccati(f_x, f_u, l_x, l_u, l_xx, l_uu, l_ux, V_x_final, V_xx_final, *, mu=0.0,
             du_lower=None, du_upper=None) -> LQRSolution:
  """The backward pass over the horizon (a reverse `lax.scan`); shapes as in `lqr`."""
  H, S, A = f_u.shape
  eye_s = jnp.eye(S, dtype=f_x.dtype)
  if du_lower is None:
    du_lower = jnp.full((H, A), -jnp.inf, f_x.dtype)
    du_upper = jnp.full((H, A), jnp.inf, f_x.dtype)

  def step(carry, inputs):
    V_x, V_xx = carry                                                       # [S], [S, S]
    fx, fu, lx, lu, lxx, luu, lux, lo, hi = inputs
    Q_x = lx + fx.T @ V_x
    Q_u = lu + fu.T @ V_x
    Q_xx = lxx + fx.T @ V_xx @ fx
    Q_uu = luu + fu.T @ V_xx @ fu
    Q_ux = lux + fu.T @ V_xx @ fx
    V_reg = V_xx + mu * eye_s
    Q_uu_reg = luu + fu.T @ V_reg @ fu
    Q_uu_reg = 0.5 * (Q_uu_reg + Q_uu_reg.T)
    Q_ux_reg = lux + fu.T @ V_reg @ fx
    chol = jnp.linalg.cholesky(Q_uu_reg)
    failed = ~jnp.all(jnp.isfinite(chol))
    solve = lambda L, b: jax.scipy.linalg.cho_solve((L, True), b)
    k_newton = -solve(chol, Q_u)
    # Box: clip the Newton step, zero the feedback of clamped dimensions and re-solve the
    # free ones on the free block of Q_uu (exact for A = 1; one projected-Newton pass else).
    k_clip = jnp.clip(k_newton, lo, hi)
    clamped = (k_clip != k_newton)                                          # [A]
    free = ~clamped
    both = free[:, None] & free[None, :]
    M = jnp.where(both, Q_uu_reg, 0.0) + jnp.diag(clamped.astype(Q_uu.dtype))
    chol_f = jnp.linalg.cholesky(M)
    rhs = Q_u + Q_uu_reg @ jnp.where(clamped, k_clip, 0.0)
    k = jnp.where(clamped, k_clip, jnp.clip(-solve(chol_f, rhs), lo, hi))
    K = jnp.where(free[:, None], -solve(chol_f, Q_ux_reg), 0.0)
    V_x = Q_x + K.T @ Q_uu @ k + K.T @ Q_u + Q_ux.T @ k
    V_xx = Q_xx + K.T @ Q_uu @ K + K.T @ Q_ux + Q_ux.T @ K
    V_xx = 0.5 * (V_xx + V_xx.T)
    expected = jnp.stack([k @ Q_u, 0.5 * k @ Q_uu @ k])
    return (V_x, V_xx), (K, k, V_x, V_xx, expected, failed)

  (_, _), (K, k, V_x, V_xx, expected, failed) = jax.lax.scan(
      step, (V_x_final, V_xx_final),
      (f_x, f_u, l_x, l_u, l_xx, l_uu, l_ux, du_lower, du_upper), reverse=True)
  return LQRSolution(K=K, k=k, V_x=jnp.concatenate([V_x, V_x_final[None]]),
                     V_xx=jnp.concatenate([V_xx, V_xx_final[None]]),
                     expected=expected.sum(0), failed=jnp.any(failed))


def lqr(A: jax.Array, B: jax.Array, Q: jax.Array, R: jax.Array, *, horizon: int | None = None,
        N: jax.Array | None = None, q: jax.Array | None = None, r: jax.Array | None = None,
        Q_final: jax.Array | None = None, q_final: jax.Array | None = None) -> LQRSolution:
  """Finite-horizon, time-varying discrete LQR by the backward Riccati recursion.

  Minimises sum_{t<H} [x_t'Q_t x_t / 2 + u_t'R_t u_t / 2 + u_t'N_t x_t + q_t'x_t + r_t'u_t]
  + x_H'Q_final x_H / 2 + q_final'x_H subject to x_{t+1} = A_t x_t + B_t u_t; the optimum is
  u_t = K_t x_t + k_t. Every matrix may be per step (a leading [H] axis) or shared.

  Args:
    A: [S, S] or [H, S, S].   B: [S, A] or [H, S, A].
    Q: [S, S] or [H, S, S].   R: [A, A] or [H, A, A] (positive definite).
    horizon: H; needed when no argument has a time axis.
    N: cross terms [A, S] or [H, A, S] (default 0).
    q, r: linear terms [S] / [A] or per step (default 0).
    Q_final, q_final: terminal cost (default Q_final = Q of the last step, q_final = 0).

  Returns:
    `LQRSolution` (K [H, A, S], k [H, A], the value function V_x [H + 1, S], V_xx).

  Example (a scalar system: the gain of a long horizon is the infinite-horizon one):
    >>> sol = lqr(jnp.eye(1), jnp.eye(1), jnp.eye(1), jnp.eye(1), horizon=50)
    >>> round(float(sol.K[0, 0, 0]), 4)        # -1 / golden ratio
    -0.618
  """
  A, B, Q, R = (jnp.asarray(m, jnp.float32) for m in (A, B, Q, R))
  if horizon is None:
    timed = [m.shape[0] for m, d in ((A, 3), (B, 3), (Q, 3), (R, 3)) if m.ndim == d]
    if not timed:
      raise ValueError("lqr: give horizon= when no matrix has a time axis [H, ...]")
    horizon = timed[0]
  H = horizon
  S, Au = B.shape[-2], B.shape[-1]
  per_step = lambda m, nd: jnp.broadcast_to(m, (H,) + m.shape[-nd:]) if m.ndim == nd else m
  A, B, Q, R = per_step(A, 2), per_step(B, 2), per_step(Q, 2), per_step(R, 2)
  N = jnp.zeros((H, Au, S)) if N is None else per_step(jnp.asarray(N, jnp.float32), 2)
  q = jnp.zeros((H, S)) if q is None else per_step(jnp.asarray(q, jnp.float32), 1)
  r = jnp.zeros((H, Au)) if r is None else per_step(jnp.asarray(r, jnp.float32), 1)
  Q_final = Q[-1] if Q_final is None else jnp.asarray(Q_final, jnp.float32)
  q_final = jnp.zeros((S,)) if q_final is None else jnp.asarray(q_final, jnp.float32)
  shapes = {"A": (A, (H, S, S)), "B": (B, (H, S, Au)), "Q": (Q, (H, S, S)),
            "R": (R, (H, Au, Au)), "N": (N, (H, Au, S)), "q": (q, (H, S)), "r": (r, (H, Au)),
            "Q_final": (Q_final, (S, S)), "q_final": (q_final, (S,))}
  for name, (m, shape) in shapes.items():
    if m.shape != shape:
      raise ValueError(f"lqr: {name} must have shape {shape} (or without the [H] axis); "
                       f"got {m.shape}")
  return _riccati(A, B, q, r, Q, R, N, q_final, Q_final)


# ---------------------------------------------------------------------------------------------
# iLQR.


@dataclasses.dataclass(frozen=True)
class ILQRConfig:
  """iLQR with box limits, Levenberg-Marquardt regularisation and a parallel line search.

  Attributes:
    name: the config's tag ("ilqr").
    iterations: maximum iterations (backward pass + line search) per `optimize` call.
    mu_init: initial regularisation on V'_xx (0: a plain Newton step, as LQR).
    mu_min: below this mu is set to 0 after an accepted step; the floor when it grows.
    mu_max: mu above this stops the iterations (not converged).
    mu_factor: mu is divided by it after an accepted step, multiplied after a rejected one.
    line_search: step sizes tried (in parallel) on the feedforward, largest first.
    tolerance: converged when an accepted step lowers the cost by less than
      tolerance * (1 + |cost|), or when the backward pass predicts less than that.
  """

  name: Literal["ilqr"] = "ilqr"
  iterations: int = 10
  mu_init: float = 1e-2
  mu_min: float = 1e-6
  mu_max: float = 1e10
  mu_factor: float = 4.0
  line_search: tuple[float, ...] = (1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125)
  tolerance: float = 1e-6

  def __post_init__(self):
    checks.positive_int(self, "iterations")
    checks.in_range(self, "mu_init", 0.0)
    checks.in_range(self, "mu_min", 0.0, low_open=True)
    checks.in_range(self, "mu_max", self.mu_min, low_open=True)
    checks.in_range(self, "mu_factor", 1.0, low_open=True)
    checks.in_range(self, "tolerance", 0.0)
    steps = self.line_search
    if (not isinstance(steps, tuple) or not steps
        or not all(isinstance(a, (int, float)) and not isinstance(a, bool) and 0 < a <= 1
                   for a in steps)):
      checks.fail(self, "line_search", f"must be a non-empty tuple of step sizes in (0, 1], "
                  f"got {steps!r}")


class ILQRInfo(NamedTuple):
  """Diagnostics of one iLQR `optimize` call.

  Attributes:
    initial_cost: cost of the initial (clipped) sequence.                     # []
    costs: cost after each iteration (NaN for iterations not run).            # [I]
    cost: final cost.                                                         # []
    mu: the regularisation at the end.                                        # []
    iterations: iterations run.                                               # [] int32
    converged: the last accepted step, or the step the last backward pass predicts,
      improves the cost by less than the tolerance.                           # [] bool
  """

  initial_cost: jax.Array
  costs: jax.Array
  cost: jax.Array
  mu: jax.Array
  iterations: jax.Array
  converged: jax.Array


class ILQR(NamedTuple):
  """iLQR as pure functions. Build with `make_ilqr`.

  Attributes:
    optimize: `optimize(params, x0 [S], u_init [H, A]) -> (u [H, A], x [H + 1, S],
      K [H, A, S], k [H, A], ILQRInfo)`: the optimised sequence (in the box), its state
      trajectory, and the feedback gains and feedforward of the backward pass about it, so
      u = clip(u_t + K_t (x - x_t)) is the local controller near the trajectory.
    rollout: `rollout(params, x0 [S], u [H, A]) -> (x [H + 1, S], cost [])`, u clipped.
    horizon: H.
    action_size: A.
    lower: the action box's lower bounds (float32 numpy).                     # [H, A]
    upper: its upper bounds.                                                  # [H, A]
  """

  optimize: Callable[..., tuple[jax.Array, jax.Array, jax.Array, jax.Array, ILQRInfo]]
  rollout: Callable[[Params, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
  horizon: int
  action_size: int
  lower: np.ndarray
  upper: np.ndarray


def make_ilqr(dynamics: DynamicsFn, cost: CostFn, *, horizon: int, action_size: int,
              lower: Any = -1.0, upper: Any = 1.0, terminal_cost: TerminalCostFn | None = None,
              config: ILQRConfig = ILQRConfig()) -> ILQR:
  """Builds iLQR for `dynamics` and `cost` (see the module docstring for the method).

  Args:
    dynamics: `dynamics(params, x [S], u [A]) -> x' [S]`, differentiable in x and u.
    cost: `cost(params, x [S], u [A], x' [S]) -> []`, the stage cost (twice differentiable),
      e.g. a negated reward of (obs, action, next_obs).
    horizon: H.
    action_size: A.
    lower, upper: the action box, scalars, [A] or [H, A].
    terminal_cost: optional `terminal_cost(params, x_H [S]) -> []`.
    config: an `ILQRConfig`.

  Returns:
    An `ILQR`; `optimize` jits once per shape and vmaps over x0 (and params, u_init).
  """
  if not isinstance(config, ILQRConfig):
    raise ValueError(f"config must be an ILQRConfig; got {type(config).__name__}")
  # The sampling optimizers' checks: positive ints, finite bounds [H, A] with lower <= upper.
  H, A, lo, hi = _check_bounds(horizon, action_size, lower, upper)
  alphas = np.asarray(config.line_search, np.float32)
  c = config

  def rollout(params, x0, u):
    u = jnp.clip(u, lo, hi)

    def step(x, u_t):
      x_next = dynamics(params, x, u_t)
      return x_next, (x_next, cost(params, x, u_t, x_next))

    x_H, (xs, costs) = jax.lax.scan(step, x0, u)
    total = costs.sum() + (0.0 if terminal_cost is None else terminal_cost(params, x_H))
    return jnp.concatenate([x0[None], xs]), total

  def forward(params, x0, x_bar, u_bar, K, k, alpha):
    """u_t = clip(u_bar_t + alpha k_t + K_t (x_t - x_bar_t)), rolled out: (x, u, cost)."""

    def step(x, inputs):
      xb, ub, K_t, k_t, lo_t, hi_t = inputs
      u = jnp.clip(ub + alpha * k_t + K_t @ (x - xb), lo_t, hi_t)
      x_next = dynamics(params, x, u)
      return x_next, (x_next, u, cost(params, x, u, x_next))

    x_H, (xs, us, costs) = jax.lax.scan(step, x0, (x_bar[:-1], u_bar, K, k, lo, hi))
    total = costs.sum() + (0.0 if terminal_cost is None else terminal_cost(params, x_H))
    return jnp.concatenate([x0[None], xs]), us, total

  def linearize(params, x, u):
    """Dynamics Jacobians and the stage cost's derivatives along (x [H + 1], u [H])."""
    S = x.shape[-1]

    def one(x_t, u_t, x_next):
      f_x, f_u = jax.jacfwd(dynamics, argnums=(1, 2))(params, x_t, u_t)
      z = jnp.concatenate([x_t, u_t, x_next])
      c = lambda z: cost(params, z[:S], z[S:S + A], z[S + A:])
      g, h = jax.grad(c)(z), jax.hessian(c)(z)
      # Chain through x' = f(x, u) (Gauss-Newton: no second derivatives of f).
      J = jnp.concatenate([jnp.eye(S + A), jnp.concatenate([f_x, f_u], axis=1)])  # [2S+A, S+A]
      l_z, l_zz = J.T @ g, J.T @ h @ J
      return f_x, f_u, l_z[:S], l_z[S:], l_zz[:S, :S], l_zz[S:, S:], l_zz[S:, :S]

    derivs = jax.vmap(one)(x[:-1], u, x[1:])
    if terminal_cost is None:
      V_x, V_xx = jnp.zeros((S,), x.dtype), jnp.zeros((S, S), x.dtype)
    else:
      V_x = jax.grad(terminal_cost, argnums=1)(params, x[-1])
      V_xx = jax.hessian(terminal_cost, argnums=1)(params, x[-1])
    return derivs + (V_x, V_xx)

  def backward(lin, u, mu):
    sol = _riccati(*lin, mu=mu, du_lower=lo - u, du_upper=hi - u)
    ok = ~sol.failed
    # A failed pass proposes no change (the line search then rejects it and mu grows).
    return (jnp.where(ok, sol.K, 0.0), jnp.where(ok, sol.k, 0.0),
            jnp.where(ok, sol.expected.sum(), -jnp.inf))

  def stationary(expected, J):
    """The backward pass predicts less than the tolerance from a full step."""
    return -expected < c.tolerance * (1.0 + jnp.abs(J))

  def optimize(params, x0, u_init):
    x0 = jnp.asarray(x0, jnp.float32)
    u_init = jnp.asarray(u_init, jnp.float32)
    if x0.ndim != 1:
      raise ValueError(f"x0 must be one state [S]; got shape {x0.shape} (vmap for a batch)")
    if u_init.shape != (H, A):
      raise ValueError(f"u_init must have shape [H, A] = {(H, A)}; got {u_init.shape}")
    S = x0.shape[0]
    # The loop's first pass (n = 0) is the initial rollout: zero gains about the clipped
    # u_init reproduce it, it is accepted against J = inf, linearised and solved, and it
    # changes no mu and counts as no iteration. So the loop body is the only copy of the
    # linearisation and the backward pass in the program (half the compile time).
    lin_shape = jax.eval_shape(linearize, params, jnp.zeros((H + 1, S)), jnp.zeros((H, A)))
    lin = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), lin_shape)

    def cond(carry):
      n, done = carry[0], carry[-1]
      return (n <= c.iterations) & ~done

    def body(carry):
      n, x, u, J, J0, lin, K, k, mu, costs, _, _ = carry
      first = n == 0
      xs, us, Js = jax.vmap(lambda a: forward(params, x0, x, u, K, k, a))(alphas)
      Js = jnp.where(jnp.isfinite(Js), Js, jnp.inf)
      best = jnp.argmin(Js)
      accept = Js[best] < J
      x_new = jnp.where(accept, xs[best], x)
      u_new = jnp.where(accept, us[best], u)
      J_new = jnp.where(accept, Js[best], J)
      small = ~first & accept & (J - J_new < c.tolerance * (1.0 + jnp.abs(J_new)))
      mu_down = jnp.where(mu / c.mu_factor < c.mu_min, 0.0, mu / c.mu_factor)
      mu_up = jnp.maximum(mu * c.mu_factor, c.mu_min)
      mu_new = jnp.where(first, mu, jnp.where(accept, mu_down, mu_up))
      lin_new = jax.tree.map(lambda a, b: jnp.where(accept, a, b),
                             linearize(params, x_new, u_new), lin)
      K_new, k_new, expected = backward(lin_new, u_new, mu_new)
      costs = jnp.where(first, costs, costs.at[n - 1].set(J_new))
      converged = small | stationary(expected, J_new)
      done = converged | (mu_new > c.mu_max)
      return (n + 1, x_new, u_new, J_new, jnp.where(first, J_new, J0), lin_new, K_new, k_new,
              mu_new, costs, converged, done)

    inf = jnp.asarray(jnp.inf, jnp.float32)
    init = (jnp.zeros((), jnp.int32), jnp.zeros((H + 1, S), jnp.float32),
            jnp.clip(u_init, lo, hi), inf, inf, lin, jnp.zeros((H, A, S), jnp.float32),
            jnp.zeros((H, A), jnp.float32), jnp.asarray(c.mu_init, jnp.float32),
            jnp.full((c.iterations,), jnp.nan, jnp.float32), jnp.asarray(False),
            jnp.asarray(False))
    n, x, u, J_final, J0, _, K, k, mu, costs, converged, _ = jax.lax.while_loop(
        cond, body, init)
    info = ILQRInfo(initial_cost=J0, costs=costs, cost=J_final, mu=mu,
                    iterations=jnp.maximum(n - 1, 0), converged=converged)
    return u, x, K, k, info

  return ILQR(optimize=optimize, rollout=rollout, horizon=H, action_size=A, lower=lo, upper=hi)


# ---------------------------------------------------------------------------------------------
# MPC with iLQR.


class ILQRMPCState(NamedTuple):
  """State of an iLQR MPC controller.

  Attributes:
    plan: the latest optimised action sequence.                                  # [H, A]
    states: its predicted state trajectory.                                      # [H + 1, S]
    gains: the feedback gains about it.                                          # [H, A, S]
    offset: actions of `plan` already executed.                                  # [] int32
    key: the controller's random key (unused by iLQR; kept for the MPC protocol).
  """

  plan: jax.Array
  states: jax.Array
  gains: jax.Array
  offset: jax.Array
  key: PRNGKey


class ILQRMPC(NamedTuple):
  """Pure functions of an iLQR MPC controller (the protocol of `planning.MPC`).

  Attributes:
    init: `init(key) -> ILQRMPCState`.
    act: `act(state, params, obs [S]) -> (action [A], ILQRMPCState, ILQRInfo)`; the info is
      that of this step's optimisation, NaN-filled (0 / False in integer and bool leaves) on
      steps that did not replan.
    replan_every: actions executed from one plan before re-optimising.
  """

  init: Callable[[PRNGKey], ILQRMPCState]
  act: Callable[[ILQRMPCState, Params, jax.Array], tuple[jax.Array, ILQRMPCState, ILQRInfo]]
  replan_every: int


def make_ilqr_mpc(ilqr: ILQR, state_size: int, *, replan_every: int = 1,
                  feedback: bool = True) -> ILQRMPC:
  """MPC with iLQR: re-optimise every `replan_every` steps, warm-started with the previous
  plan shifted by the executed actions (padded by repeating its last action); in between,
  apply u = clip(u_t + K_t (obs - x_t)) with the plan's gains (`feedback=False`: u_t only).

  Args:
    ilqr: from `make_ilqr`; it plans on the vector `act` is given (an observation).
    state_size: S, the size of that vector (for the initial state's shapes).
    replan_every: k >= 1 (at most the horizon). With k > 1 the decision is a `lax.cond`.
    feedback: apply the gains between replans.
  """
  if isinstance(replan_every, bool) or not isinstance(replan_every, int) or replan_every < 1:
    raise ValueError(f"replan_every must be a positive int, got {replan_every!r}")
  H, A, S = ilqr.horizon, ilqr.action_size, state_size
  if replan_every > H:
    raise ValueError(f"replan_every ({replan_every}) cannot exceed the horizon ({H})")
  mid = jnp.asarray((ilqr.lower + ilqr.upper) / 2)                          # [H, A]

  def init(key: PRNGKey) -> ILQRMPCState:
    return ILQRMPCState(plan=mid, states=jnp.zeros((H + 1, S), jnp.float32),
                        gains=jnp.zeros((H, A, S), jnp.float32),
                        offset=jnp.asarray(replan_every, jnp.int32), key=key)

  def _replan(state: ILQRMPCState, params: Params, obs: jax.Array):
    n = replan_every
    warm = jnp.concatenate([state.plan[n:], jnp.repeat(state.plan[-1:], n, axis=0)])
    u, x, K, _, info = ilqr.optimize(params, obs, warm)
    return state._replace(plan=u, states=x, gains=K, offset=jnp.zeros((), jnp.int32)), info

  def act(state: ILQRMPCState, params: Params, obs: jax.Array):
    obs = jnp.asarray(obs, jnp.float32)
    if replan_every == 1:
      state, info = _replan(state, params, obs)
    else:
      info_shape = jax.eval_shape(lambda: _replan(state, params, obs)[1])
      blank = lambda x: jnp.full(x.shape, jnp.nan if jnp.issubdtype(x.dtype, jnp.floating)
                                 else 0, x.dtype)
      keep = lambda s: (s, jax.tree.map(blank, info_shape))
      state, info = jax.lax.cond(state.offset >= replan_every,
                                 lambda s: _replan(s, params, obs), keep, state)
    t = state.offset
    u = state.plan[t]
    if feedback:
      u = u + state.gains[t] @ (obs - state.states[t])
    action = jnp.clip(u, ilqr.lower[0], ilqr.upper[0])
    return action, state._replace(offset=t + 1), info

  return ILQRMPC(init=init, act=act, replan_every=replan_every)
