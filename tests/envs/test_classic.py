"""Hand-computed checks of cartpole_continuous, cartpole_swingup and pendulum."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax import envs
from mbrl_jax.envs.cartpole import CartpoleContinuous, CartpoleSwingup
from mbrl_jax.envs.pendulum import Pendulum

THETA_THRESHOLD = 12 * 2 * math.pi / 360


# ----------------------------------------------------------------------------- #
# NumPy references (float64), written from the gym sources' equations.
# ----------------------------------------------------------------------------- #


def np_gym_cartpole_step(state, action, masscart=1.0, masspole=0.1,
                         length=0.5, force_mag=10.0, tau=0.02, gravity=9.8):
  x, x_dot, theta, theta_dot = state
  force = force_mag * float(np.clip(action, -1, 1))
  total_mass = masspole + masscart
  polemass_length = masspole * length
  costheta, sintheta = math.cos(theta), math.sin(theta)
  temp = (force + polemass_length * theta_dot**2 * sintheta) / total_mass
  thetaacc = (gravity * sintheta - costheta * temp) / (
      length * (4.0 / 3.0 - masspole * costheta**2 / total_mass))
  xacc = temp - polemass_length * thetaacc * costheta / total_mass
  x = x + tau * x_dot
  x_dot = x_dot + tau * xacc
  theta = theta + tau * theta_dot
  theta_dot = theta_dot + tau * thetaacc
  terminated = bool(x < -2.4 or x > 2.4 or theta < -THETA_THRESHOLD
                    or theta > THETA_THRESHOLD)
  return np.array([x, x_dot, theta, theta_dot]), 1.0, terminated


def np_gym_pendulum_step(th, thdot, u):
  g, m, l, dt = 10.0, 1.0, 1.0, 0.05
  u = float(np.clip(u, -2.0, 2.0))
  angle_normalize = ((th + np.pi) % (2 * np.pi)) - np.pi
  cost = angle_normalize**2 + 0.1 * thdot**2 + 0.001 * u**2
  newthdot = thdot + (3 * g / (2 * l) * np.sin(th) + 3.0 / (m * l**2) * u) * dt
  newthdot = np.clip(newthdot, -8.0, 8.0)
  newth = th + newthdot * dt
  return newth, newthdot, -cost


def np_swingup_rk4_step(q, a, dt=0.04, substeps=2, M=0.5, m=0.5, L=0.6, g=9.8,
                        force_mag=10.0):
  """Independent Lagrangian form: [[M+m, m l c], [m l c, 4/3 m l^2]] acc = rhs."""
  l = L / 2
  force = force_mag * float(np.clip(a, -1, 1))

  def deriv(s):
    _, xd, th, thd = s
    c, sn = np.cos(th), np.sin(th)
    mass = np.array([[M + m, m * l * c], [m * l * c, 4.0 / 3.0 * m * l**2]])
    rhs = np.array([force + m * l * thd**2 * sn, m * g * l * sn])
    xacc, thacc = np.linalg.solve(mass, rhs)
    return np.array([xd, xacc, thd, thacc])

  h = dt / substeps
  s = np.array(q, np.float64)
  for _ in range(substeps):
    k1 = deriv(s)
    k2 = deriv(s + 0.5 * h * k1)
    k3 = deriv(s + 0.5 * h * k2)
    k4 = deriv(s + h * k3)
    s = s + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
  return s


def _state_at(env, q):
  """Unwrapped state with physical state q (obs/reward/done filled by reset)."""
  state = env.reset(jax.random.PRNGKey(0))
  q = jnp.asarray(q, jnp.float32)
  return state.replace(pipeline_state=q)


# ----------------------------------------------------------------------------- #
# cartpole_continuous
# ----------------------------------------------------------------------------- #


def test_cartpole_step_matches_gym_reference():
  env = CartpoleContinuous()
  step = jax.jit(env.step)
  rng = np.random.default_rng(0)
  for _ in range(20):
    q = rng.uniform([-2, -2, -0.2, -2], [2, 2, 0.2, 2])
    a = rng.uniform(-1.5, 1.5)  # beyond [-1, 1] too: clipped
    ref_q, ref_r, ref_done = np_gym_cartpole_step(q, a)
    out = step(_state_at(env, q), jnp.array([a], jnp.float32))
    np.testing.assert_allclose(out.obs, ref_q, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.pipeline_state, ref_q, rtol=1e-5, atol=1e-5)
    assert float(out.reward) == ref_r
    assert float(out.done) == float(ref_done)


@pytest.mark.parametrize(
    'q, done',
    [
        ([2.39, 1.0, 0.0, 0.0], 1.0),  # next x = 2.41 > 2.4
        ([-2.39, -1.0, 0.0, 0.0], 1.0),  # next x = -2.41
        ([2.30, 1.0, 0.0, 0.0], 0.0),  # next x = 2.32
        ([0.0, 0.0, 0.205, 1.0], 1.0),  # next theta = 0.225 > 0.2094
        ([0.0, 0.0, -0.205, -1.0], 1.0),
        ([0.0, 0.0, 0.18, 1.0], 0.0),  # next theta = 0.2 < 0.2094
    ],
)
def test_cartpole_terminates_on_next_state(q, done):
  env = CartpoleContinuous()
  out = jax.jit(env.step)(_state_at(env, q), jnp.zeros((1,)))
  assert float(out.done) == done
  assert float(out.reward) == 1.0  # also on the terminating step (gym)
  fns = envs.get_task_fns('cartpole_continuous')
  obs = jnp.asarray(q, jnp.float32)
  assert float(fns.termination_fn(obs, jnp.zeros(1), out.obs)) == done
  assert float(fns.reward_fn(obs, jnp.zeros(1), out.obs)) == 1.0


def test_cartpole_reset_distribution():
  env = CartpoleContinuous()
  states = jax.jit(jax.vmap(env.reset))(
      jax.random.split(jax.random.PRNGKey(1), 2000))
  obs = np.asarray(states.obs)
  assert obs.shape == (2000, 4) and obs.dtype == np.float32
  assert np.all(np.abs(obs) <= 0.05)
  assert np.all(obs.min(0) < -0.045) and np.all(obs.max(0) > 0.045)
  np.testing.assert_array_equal(obs, states.pipeline_state)
  assert np.all(np.asarray(states.done) == 0)


# ----------------------------------------------------------------------------- #
# cartpole_swingup
# ----------------------------------------------------------------------------- #


def test_swingup_starts_hanging_down():
  env = CartpoleSwingup()
  states = jax.jit(jax.vmap(env.reset))(
      jax.random.split(jax.random.PRNGKey(2), 1000))
  obs = np.asarray(states.obs)
  assert obs.shape == (1000, 5)
  assert np.all(obs[:, 2] < -0.8)  # cos(theta): pole below the cart
  np.testing.assert_allclose(np.std(states.pipeline_state[:, 2]), 0.1, rtol=0.15)
  np.testing.assert_allclose(obs[:, 2] ** 2 + obs[:, 3] ** 2, 1.0, atol=1e-6)
  # Hanging down the tip is 2L from the goal: reward ~ exp(-4).
  fns = envs.get_task_fns('cartpole_swingup')
  r = fns.reward_fn(obs, np.zeros((1000, 1)), obs)
  assert np.all(np.asarray(r) < 0.1)


def test_swingup_reward_hand_values():
  fns = envs.get_task_fns('cartpole_swingup')
  up = jnp.array([0.0, 0.0, 1.0, 0.0, 0.0])
  down = jnp.array([0.0, 0.0, -1.0, 0.0, 0.0])
  side = jnp.array([0.3, 0.0, 0.0, 1.0, 0.0])  # tip at (0.9, 0)
  zero, one = jnp.zeros(1), jnp.ones(1)
  assert float(fns.reward_fn(down, zero, up)) == pytest.approx(1.0)
  assert float(fns.reward_fn(down, one, up)) == pytest.approx(0.99)
  assert float(fns.reward_fn(down, 3 * one, up)) == pytest.approx(0.99)  # clipped
  assert float(fns.reward_fn(up, zero, down)) == pytest.approx(math.exp(-4.0))
  expected = math.exp(-(0.9**2 + 0.6**2) / 0.36)
  assert float(fns.reward_fn(up, zero, side)) == pytest.approx(expected, rel=1e-5)
  assert float(fns.termination_fn(up, zero, side)) == 0.0


def test_swingup_step_matches_numpy_rk4():
  env = CartpoleSwingup()
  step = jax.jit(env.step)
  rng = np.random.default_rng(3)
  for _ in range(10):
    q = rng.uniform([-1, -2, -np.pi, -6], [1, 2, np.pi, 6])
    a = rng.uniform(-1, 1)
    ref = np_swingup_rk4_step(q, a)
    out = step(_state_at(env, q), jnp.array([a], jnp.float32))
    np.testing.assert_allclose(out.pipeline_state, ref, rtol=1e-4, atol=1e-4)
    ref_obs = [ref[0], ref[1], np.cos(ref[2]), np.sin(ref[2]), ref[3]]
    np.testing.assert_allclose(out.obs, ref_obs, rtol=1e-4, atol=1e-4)
    assert float(out.done) == 0.0


def _swingup_invariants(q):
  """(energy, horizontal momentum) of the swing-up cart-pole's physical state q (cart 0.5 kg,
  pole 0.5 kg with its centre 0.3 m from the pivot, g 9.8)."""
  M, m, l, g = 0.5, 0.5, 0.3, 9.8
  _, xd, th, thd = q
  kinetic = (0.5 * (M + m) * xd**2 + m * l * xd * thd * jnp.cos(th)
             + 0.5 * (4.0 / 3.0) * m * l**2 * thd**2)
  return kinetic + m * g * l * jnp.cos(th), (M + m) * xd + m * l * thd * jnp.cos(th)


def _unforced(env, q, steps=200):
  """The physical states of `steps` steps with zero force from q, [steps, 4]."""
  def body(s, _):
    s = env.step(s, jnp.zeros((1,)))
    return s, s.pipeline_state
  return jax.jit(lambda q: jax.lax.scan(body, _state_at(env, q), None, length=steps)[1])(q)


def test_swingup_conserves_energy_and_momentum_without_force():
  q0 = jnp.array([0.1, 0.5, 2.0, 3.0])
  qs = _unforced(CartpoleSwingup(), q0)
  e0, p0 = _swingup_invariants(q0)
  e, p = jax.vmap(_swingup_invariants)(qs)
  assert np.max(np.abs(np.asarray(e) - float(e0))) < 1e-3 * abs(float(e0)) + 1e-3
  assert np.max(np.abs(np.asarray(p) - float(p0))) < 1e-3
  # ... and the motion is not trivial.
  assert np.ptp(np.asarray(qs[:, 2])) > 1.0


def test_swingup_friction_drains_momentum_by_b_times_the_distance_travelled():
  """With viscous cart friction b (pilco-matlab's 0.1) the only horizontal external force is
  -b x_dot, so the horizontal momentum obeys p(t) - p(0) = -b (x(t) - x(0)) exactly, and the
  energy only falls; b = 0 is the frictionless env above."""
  b = 0.1
  q0 = jnp.array([0.1, 2.0, 2.0, 3.0])
  qs = np.asarray(_unforced(CartpoleSwingup(friction=b), q0))
  e0, p0 = _swingup_invariants(q0)
  e, p = (np.asarray(v) for v in jax.vmap(_swingup_invariants)(jnp.asarray(qs)))
  np.testing.assert_allclose(p - float(p0), -b * (qs[:, 0] - 0.1), atol=1e-3)
  assert abs(float(p[-1] - p0)) > 0.3                 # friction did act
  assert np.all(np.diff(np.concatenate([[float(e0)], e])) < 1e-4)
  with pytest.raises(ValueError, match="friction must be >= 0"):
    CartpoleSwingup(friction=-1.0)


# ----------------------------------------------------------------------------- #
# pendulum
# ----------------------------------------------------------------------------- #


def test_pendulum_step_matches_gym_reference():
  env = Pendulum()
  step = jax.jit(env.step)
  rng = np.random.default_rng(4)
  for i in range(30):
    # Include unwrapped angles and speeds that hit the +-8 clip.
    th = rng.uniform(-3 * np.pi, 3 * np.pi)
    thdot = rng.uniform(-8, 8) if i % 3 else 7.9 * np.sign(rng.normal())
    a = rng.uniform(-1.3, 1.3)
    ref_th, ref_thdot, ref_r = np_gym_pendulum_step(th, thdot, 2.0 * a)
    out = step(_state_at(env, [th, thdot]), jnp.array([a], jnp.float32))
    np.testing.assert_allclose(
        out.obs, [np.cos(ref_th), np.sin(ref_th), ref_thdot], atol=1e-5)
    np.testing.assert_allclose(float(out.reward), ref_r, rtol=1e-5, atol=1e-5)
    assert float(out.done) == 0.0


def test_pendulum_reset_distribution():
  env = Pendulum()
  states = jax.jit(jax.vmap(env.reset))(
      jax.random.split(jax.random.PRNGKey(5), 2000))
  q = np.asarray(states.pipeline_state)
  assert np.all(np.abs(q[:, 0]) <= np.pi) and np.all(np.abs(q[:, 1]) <= 1.0)
  assert q[:, 0].min() < -3.0 and q[:, 0].max() > 3.0
  np.testing.assert_allclose(states.obs[:, 0], np.cos(q[:, 0]), atol=1e-6)


# ----------------------------------------------------------------------------- #
# Parity of task fns with the env, through make() + rollout (time limits too).
# ----------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    'name', ['cartpole_continuous', 'cartpole_swingup', 'pendulum'])
def test_task_fns_match_env(name):
  env = envs.make(name)  # 200-step EpisodeWrapper
  policy = envs.random_policy(env.action_size)
  tr, _ = jax.jit(
      lambda k: envs.batch_rollout(env, policy, k, num_envs=5, num_steps=250)
  )(jax.random.PRNGKey(6))
  fns = envs.get_task_fns(name)
  reward = fns.reward_fn(tr.obs, tr.action, tr.next_obs)
  done = fns.termination_fn(tr.obs, tr.action, tr.next_obs)
  assert reward.shape == done.shape == (5, 250)
  np.testing.assert_allclose(reward, tr.reward, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(done, tr.terminated)
  if name == 'cartpole_continuous':
    assert tr.terminated.sum() > 10  # random actions topple the pole
  else:
    assert tr.terminated.sum() == 0
    np.testing.assert_array_equal(tr.truncated.sum(1), 1.0)  # step 200
    np.testing.assert_array_equal(tr.truncated[:, 199], 1.0)
