"""planning.ilqr: LQR against the Riccati solution, iLQR on LQ and nonlinear problems, box
limits, jit / vmap without recompiling, the MPC controller, the true-model swing-up."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from mbrl_jax import envs
from mbrl_jax.envs import acting
from mbrl_jax.planning import (ILQRConfig, ensemble_mean_dynamics, lqr, make_ilqr,
                               make_ilqr_mpc, true_cost, true_dynamics)
from tests.conftest import count_compilations

# A discretised double integrator with a damped second state.
A = np.array([[1.0, 0.1], [0.0, 0.95]])
B = np.array([[0.005], [0.1]])
Q = np.diag([1.0, 0.2])
R = np.array([[0.1]])


def _lq_problem(horizon, lower=-100.0, upper=100.0, config=None):
  dyn = lambda p, x, u: jnp.asarray(A, jnp.float32) @ x + jnp.asarray(B, jnp.float32) @ u
  cost = lambda p, x, u, x_next: 0.5 * x @ Q @ x + 0.5 * u @ R @ u
  terminal = lambda p, x: 0.5 * x @ Q @ x
  return make_ilqr(dyn, cost, horizon=horizon, action_size=1, lower=lower, upper=upper,
                   terminal_cost=terminal,
                   config=config or ILQRConfig(iterations=1, mu_init=0.0))


def _lqr_rollout(sol, x0):
  x, us = np.asarray(x0, np.float64), []
  for K, k in zip(np.asarray(sol.K), np.asarray(sol.k)):
    u = K @ x + k
    us.append(u)
    x = A @ x + B @ u
  return np.stack(us)


def test_lqr_long_horizon_gain_is_the_infinite_horizon_gain():
  P = scipy.linalg.solve_discrete_are(A, B, Q, R)
  K_inf = -np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)
  sol = jax.jit(lambda: lqr(A, B, Q, R, horizon=300))()
  chex.assert_shape((sol.K, sol.k, sol.V_xx), [(300, 1, 2), (300, 1), (301, 2, 2)])
  np.testing.assert_allclose(sol.K[0], K_inf, rtol=1e-4)
  np.testing.assert_allclose(sol.V_xx[0], P, rtol=1e-4)
  np.testing.assert_allclose(sol.k, 0.0, atol=1e-7)     # no linear terms


def test_lqr_linear_and_cross_terms_match_a_shifted_problem():
  # Cost (x - a)'Q(x - a) / 2 written with linear terms q = -Q a: the same gains, and the
  # feedforward of the tracking problem.
  a = np.array([0.5, 0.0])
  sol = lqr(A, B, Q, R, horizon=5, q=-Q @ a, q_final=-Q @ a, N=np.zeros((1, 2)))
  base = lqr(A, B, Q, R, horizon=5)
  np.testing.assert_allclose(sol.K, base.K, rtol=1e-5)
  assert np.all(np.abs(sol.k) > 0)
  with pytest.raises(ValueError, match="horizon="):
    lqr(A, B, Q, R)


def test_ilqr_solves_a_linear_quadratic_problem_in_one_iteration_batched_compiled_once():
  H = 30
  ilqr = _lq_problem(H, config=ILQRConfig(iterations=4, mu_init=0.0))
  x0 = jnp.array([[1.0, -0.5], [-2.0, 0.3]])                    # two start states, vmapped
  run = jax.jit(jax.vmap(ilqr.optimize, in_axes=(None, 0, 0)))
  u, x, K, k, info = run(None, x0, jnp.zeros((2, H, 1)))
  chex.assert_shape((u, x, K, k, info.costs), [(2, H, 1), (2, H + 1, 2), (2, H, 1, 2),
                                               (2, H, 1), (2, 4)])
  ref = lqr(A, B, Q, R, horizon=H)
  for i in range(2):
    np.testing.assert_allclose(u[i], _lqr_rollout(ref, x0[i]), atol=1e-4)
    np.testing.assert_allclose(K[i], ref.K, rtol=1e-4, atol=1e-5)
  # One iteration, after which the backward pass predicts no further gain: converged.
  np.testing.assert_array_equal(info.iterations, [1, 1])
  assert np.all(info.converged) and np.all(np.isnan(info.costs[:, 1:]))
  assert np.all(info.costs[:, 0] < info.initial_cost)
  np.testing.assert_allclose(info.cost[0], ilqr.rollout(None, x0[0], u[0])[1], rtol=1e-5)
  x0b, u0b = x0 * 0.5, jnp.full((2, H, 1), 0.1, jnp.float32)
  with count_compilations() as compiles:
    jax.block_until_ready(run(None, x0b, u0b))
  assert compiles.count == 0


def test_box_limits_hold_and_the_clamped_gains_are_zero():
  H = 20
  ilqr = _lq_problem(H, lower=-0.5, upper=0.3, config=ILQRConfig(iterations=8))
  x0 = jnp.array([3.0, 2.0])                                  # far: the box binds
  u, x, K, _, info = jax.jit(ilqr.optimize)(None, x0, jnp.zeros((H, 1)))
  assert float(u.min()) >= -0.5 - 1e-6 and float(u.max()) <= 0.3 + 1e-6
  at_bound = np.isclose(np.asarray(u[:, 0]), -0.5, atol=1e-5)
  assert at_bound.sum() >= 3
  np.testing.assert_allclose(np.asarray(K)[at_bound], 0.0)
  # Box-iLQR beats the unconstrained LQR optimum clipped to the box.
  u_clipped = _lqr_rollout(lqr(A, B, Q, R, horizon=H), x0)
  assert float(info.cost) <= float(ilqr.rollout(None, x0, jnp.asarray(u_clipped))[1]) + 1e-5


def _pendulum_ilqr(horizon=15, iterations=5):
  f, cost = true_dynamics("pendulum"), true_cost("pendulum")
  return make_ilqr(f, cost, horizon=horizon, action_size=1,
                   config=ILQRConfig(iterations=iterations))


def test_config_checks():
  with pytest.raises(ValueError, match="ilqr.ILQRConfig.iterations must be a positive int"):
    ILQRConfig(iterations=0)
  with pytest.raises(ValueError, match="ilqr.ILQRConfig.line_search"):
    ILQRConfig(line_search=(1.0, 2.0))
  with pytest.raises(ValueError, match="mu_factor"):
    ILQRConfig(mu_factor=1.0)
  with pytest.raises(ValueError, match="those that do: cartpole_swingup"):
    true_dynamics("hopper")


def test_pets_takes_an_ilqr_config_and_round_trips_it():
  import dataclasses
  import json
  from mbrl_jax.algorithms import pets
  from mbrl_jax.run import config as config_lib
  config = pets.PRESETS["ilqr-swingup"]
  assert config.planner.is_ilqr and pets.planner_rows_per_member(config) is None
  saved = json.loads(json.dumps(dataclasses.asdict(config)))
  assert saved["planner"]["optimizer"]["name"] == "ilqr"
  assert config_lib.from_dict(pets.Config, saved) == config
  with pytest.raises(ValueError, match="pets.Config.env 'cartpole_continuous' cannot be planned"):
    dataclasses.replace(config, env="cartpole_continuous")
  with pytest.raises(ValueError, match="pets.PlannerConfig.discount must be 1 with ILQRConfig"):
    dataclasses.replace(config.planner, discount=0.99)


def test_mpc_applies_the_gains_between_replans():
  ilqr = _pendulum_ilqr()
  mpc = make_ilqr_mpc(ilqr, 3, replan_every=3)
  state = mpc.init(jax.random.key(0))
  obs = jnp.array([jnp.cos(0.4), jnp.sin(0.4), 0.0])
  act = jax.jit(mpc.act)
  a0, state, info0 = act(state, None, obs)
  assert int(info0.iterations) >= 1 and int(state.offset) == 1
  np.testing.assert_allclose(a0, state.plan[0], atol=1e-6)      # on the plan's own state
  off = state.states[1] + jnp.array([0.0, 0.0, 0.5])             # off the predicted state
  a1, state1, info1 = act(state, None, off)
  expected = jnp.clip(state.plan[1] + state.gains[1] @ (off - state.states[1]), -1, 1)
  np.testing.assert_allclose(a1, expected, atol=1e-6)
  assert np.isnan(float(info1.cost)) and int(info1.iterations) == 0   # no replan
  np.testing.assert_allclose(state1.plan, state.plan)


def test_ilqr_plans_on_the_ensemble_mean():
  from mbrl_jax import models
  ens = models.make_ensemble(3, 1, num_members=2, hidden_sizes=(8,))
  params = ens.init(jax.random.key(0))
  ilqr = make_ilqr(ensemble_mean_dynamics(ens), true_cost("pendulum"), horizon=4,
                   action_size=1, config=ILQRConfig(iterations=1))
  x0 = jnp.array([jnp.cos(1.0), jnp.sin(1.0), 0.1])
  u, x, K, _, info = jax.jit(ilqr.optimize)(params, x0, jnp.zeros((4, 1)))
  assert np.all(np.isfinite(K)) and float(info.cost) <= float(info.initial_cost)
  mean = ens.predict(params, jax.random.key(1), x[:1], u[:1], mode="expectation", sample=False)
  np.testing.assert_allclose(x[1], mean.next_obs[0], atol=1e-5)    # the mean prediction


def test_ilqr_mpc_swings_up_and_balances_cartpole_with_the_true_model():
  env = envs.make("cartpole_swingup")
  ilqr = make_ilqr(true_dynamics("cartpole_swingup"), true_cost("cartpole_swingup"),
                   horizon=20, action_size=1, config=ILQRConfig(iterations=5))
  mpc = make_ilqr_mpc(ilqr, env.observation_size)
  policy = acting.Policy(init=mpc.init, act=lambda s, key, obs: mpc.act(s, None, obs))
  ep = jax.jit(lambda k: acting.episode(env, policy, k, 200))(jax.random.key(3))
  cos = np.asarray(ep.transitions.next_obs[:, 2])
  assert cos[0] < -0.9                                  # starts hanging down
  assert cos[-50:].min() > 0.95, cos[-50:].min()        # up and balanced at the end
  assert float(ep.ret) > 150
