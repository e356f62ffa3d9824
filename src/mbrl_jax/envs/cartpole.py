"""Cart-pole environments in pure JAX on Brax's `Env` API.

* :class:`CartpoleContinuous` -- the continuous-action cart-pole balance task of
  mbrl-lib (`mbrl/env/cartpole_continuous.py`), which is gym's CartPole-v1 physics
  with force = 10 * action.
* :class:`CartpoleSwingup` -- a PETS-style (Chua et al., 2018) swing-up task.

Both keep the physical state ``[x, x_dot, theta, theta_dot]`` (float32, [4]) in
``State.pipeline_state`` and recompute observations from it, so wrappers that
replace ``State.obs`` (e.g. pixels) do not affect the dynamics. Angles: theta = 0
is the pole upright, positive theta leans the pole towards +x; the pole tip is at
``(x + L sin(theta), L cos(theta))`` with L the full pole length.

The time limit is not part of these classes: :func:`mbrl_jax.envs.make` wraps them
in Brax's ``EpisodeWrapper`` (200 steps by default).
"""

from __future__ import annotations

import math

from brax.envs.base import Env, State
import jax
import jax.numpy as jnp

from mbrl_jax.envs import rendering


def gym_cartpole_accelerations(
    state: jax.Array,
    force: jax.Array,
    *,
    gravity: float,
    masscart: float,
    masspole: float,
    half_length: float,
) -> tuple[jax.Array, jax.Array]:
  """Cart and pole accelerations of gym's frictionless cart-pole.

  A cart (mass M) on a frictionless rail carries a uniform rod (mass m,
  half-length l) on a frictionless pivot; with F the horizontal force on the cart:

    temp   = (F + m l theta_dot^2 sin(theta)) / (M + m)
    th_acc = (g sin(theta) - cos(theta) temp) / (l (4/3 - m cos^2(theta) / (M + m)))
    x_acc  = temp - m l th_acc cos(theta) / (M + m)

  Args:
    state: [x, x_dot, theta, theta_dot], [4].
    force: horizontal force on the cart, [].

  Returns:
    (x_acc, theta_acc), [] each.
  """
  _, _, theta, theta_dot = state
  total_mass = masscart + masspole
  polemass_length = masspole * half_length
  costheta, sintheta = jnp.cos(theta), jnp.sin(theta)
  temp = (force + polemass_length * theta_dot**2 * sintheta) / total_mass
  thetaacc = (gravity * sintheta - costheta * temp) / (
      half_length * (4.0 / 3.0 - masspole * costheta**2 / total_mass)
  )
  xacc = temp - polemass_length * thetaacc * costheta / total_mass
  return xacc, thetaacc


def gym_cartpole_euler_step(
    state: jax.Array,
    force: jax.Array,
    *,
    gravity: float,
    masscart: float,
    masspole: float,
    half_length: float,
    tau: float,
) -> jax.Array:
  """One explicit Euler step of gym's cart-pole (CartPole-v1's "euler" integrator).

  Positions are updated with the OLD velocities:
  x += tau x_dot; x_dot += tau x_acc; theta += tau theta_dot; theta_dot += tau theta_acc,
  with the accelerations of :func:`gym_cartpole_accelerations`.

  Args:
    state: [x, x_dot, theta, theta_dot], [4].
    force: horizontal force on the cart, [].

  Returns:
    The next state, [4].
  """
  xacc, thetaacc = gym_cartpole_accelerations(
      state, force, gravity=gravity, masscart=masscart, masspole=masspole,
      half_length=half_length,
  )
  x, x_dot, theta, theta_dot = state
  return jnp.stack([
      x + tau * x_dot,
      x_dot + tau * xacc,
      theta + tau * theta_dot,
      theta_dot + tau * thetaacc,
  ])


class _VectorStateEnv(Env):
  """Shared plumbing: physical state vector in `pipeline_state`, float32 scalars."""

  @property
  def backend(self) -> str:
    return 'jax'

  @property
  def action_size(self) -> int:
    return 1

  def _state(
      self, q: jax.Array, obs: jax.Array, reward: jax.Array, done: jax.Array,
      info: dict | None = None,
  ) -> State:
    return State(
        pipeline_state=q,
        obs=obs,
        reward=jnp.asarray(reward, jnp.float32),
        done=jnp.asarray(done, jnp.float32),
        metrics={},
        info={} if info is None else info,
    )


# ------------------------------------------------------------------------------
# Continuous cart-pole (mbrl-lib / gym physics), balance task.
# ------------------------------------------------------------------------------

CARTPOLE_X_THRESHOLD = 2.4
CARTPOLE_THETA_THRESHOLD = 12 * 2 * math.pi / 360  # 12 degrees, in radians


def cartpole_continuous_termination(
    obs: jax.Array, action: jax.Array, next_obs: jax.Array
) -> jax.Array:
  """1.0 where |x'| > 2.4 or |theta'| > 12 deg (on the NEXT obs), else 0.0.

  Args: obs [..., 4], action [..., 1], next_obs [..., 4]. Returns float32 [...].
  """
  del obs, action
  x, theta = next_obs[..., 0], next_obs[..., 2]
  done = (
      (x < -CARTPOLE_X_THRESHOLD)
      | (x > CARTPOLE_X_THRESHOLD)
      | (theta < -CARTPOLE_THETA_THRESHOLD)
      | (theta > CARTPOLE_THETA_THRESHOLD)
  )
  return done.astype(jnp.float32)


def cartpole_continuous_reward(
    obs: jax.Array, action: jax.Array, next_obs: jax.Array
) -> jax.Array:
  """+1.0 on every step, including the terminating one (gym / mbrl-lib's env).

  Note: mbrl-lib's *planning* reward_fn is ``(~termination).float()``, i.e. 0 on
  the terminating step, which disagrees with its env by one step. We follow the
  env. Planners that mask rewards after the first termination (as mbrl-lib's
  ModelEnv does) still see the same ranking: return = steps until termination.

  Args: obs [..., 4], action [..., 1], next_obs [..., 4]. Returns float32 [...].
  """
  del obs, action
  return jnp.ones(next_obs.shape[:-1], jnp.float32)


class CartpoleContinuous(_VectorStateEnv):
  """mbrl-lib's continuous cart-pole (gym CartPole physics), pure JAX.

  * State / obs: ``[x, x_dot, theta, theta_dot]`` float32 [4] (obs == state).
  * Action: [1] in [-1, 1] (clipped); force = 10 * action.
  * Dynamics: gym's equations (:func:`gym_cartpole_accelerations`) with g = 9.8,
    M = 1.0, m = 0.1, half pole length 0.5, explicit Euler with tau = 0.02:
    x += tau x_dot; x_dot += tau x_acc; theta += tau theta_dot;
    theta_dot += tau theta_acc (positions updated with the OLD velocities).
  * Reward: 1.0 on every step, including the terminating one.
  * done: 1.0 when the NEXT state has |x| > 2.4 or |theta| > 12 deg.
  * Reset: every state component ~ U[-0.05, 0.05].
  * Time limit: none here; ``make('cartpole_continuous')`` adds 200 steps.
  """

  def __init__(
      self,
      gravity: float = 9.8,
      masscart: float = 1.0,
      masspole: float = 0.1,
      half_length: float = 0.5,
      force_mag: float = 10.0,
      tau: float = 0.02,
      reset_noise_scale: float = 0.05,
  ):
    self.gravity = gravity
    self.masscart = masscart
    self.masspole = masspole
    self.half_length = half_length
    self.force_mag = force_mag
    self.tau = tau
    self.reset_noise_scale = reset_noise_scale

  @property
  def observation_size(self) -> int:
    return 4

  @property
  def dt(self) -> float:
    return self.tau

  def physics_step(self, q: jax.Array, force: jax.Array) -> jax.Array:
    """[4] state, [] force in newtons -> the next [4] state (one Euler step of tau)."""
    return gym_cartpole_euler_step(
        q, force, gravity=self.gravity, masscart=self.masscart,
        masspole=self.masspole, half_length=self.half_length, tau=self.tau,
    )

  def reset(self, rng: jax.Array) -> State:
    q = jax.random.uniform(
        rng, (4,), jnp.float32, -self.reset_noise_scale, self.reset_noise_scale
    )
    return self._state(q, q, 0.0, 0.0)

  def step(self, state: State, action: jax.Array) -> State:
    q = state.pipeline_state  # [4]
    obs = q
    force = self.force_mag * jnp.clip(action[0], -1.0, 1.0)
    next_q = self.physics_step(q, force)
    reward = cartpole_continuous_reward(obs, action, next_q)
    done = cartpole_continuous_termination(obs, action, next_q)
    return state.replace(
        pipeline_state=next_q, obs=next_q,
        reward=reward, done=done,
    )

  def render_pixels(self, pipeline_state: jax.Array, size: int) -> jax.Array:
    """uint8 [size, size, 3]; fixed view x in [-2.6, 2.6], y in [-2.1, 3.1]."""
    x, _, theta, _ = pipeline_state
    return rendering.render_cartpole(
        x, jnp.cos(theta), jnp.sin(theta), size=size,
        pole_length=2.0 * self.half_length, half_width=2.6, center=(0.0, 0.5),
        cart_half_extents=(0.25, 0.15),
    )


# ------------------------------------------------------------------------------
# Swing-up (PETS-style).
# ------------------------------------------------------------------------------


def cartpole_swingup_reward(
    obs: jax.Array,
    action: jax.Array,
    next_obs: jax.Array,
    *,
    pole_length: float = 0.6,
    action_cost: float = 0.01,
) -> jax.Array:
  """PETS swing-up reward on the NEXT state and the (clipped) action.

    tip = (x' + L sin(theta'), L cos(theta')),  goal = (0, L)
    r   = exp(-|tip - goal|^2 / L^2) - action_cost * sum(clip(a, -1, 1)^2)

  Args:
    obs: [..., 5] (unused).
    action: [..., 1].
    next_obs: [..., 5] = [x, x_dot, cos(theta), sin(theta), theta_dot].

  Returns:
    float32 [...].
  """
  del obs
  x, cos_th, sin_th = next_obs[..., 0], next_obs[..., 2], next_obs[..., 3]
  tip_x = x + pole_length * sin_th
  tip_y = pole_length * cos_th
  dist_sq = jnp.square(tip_x) + jnp.square(tip_y - pole_length)
  a = jnp.clip(action, -1.0, 1.0)
  return (
      jnp.exp(-dist_sq / pole_length**2)
      - action_cost * jnp.sum(jnp.square(a), axis=-1)
  ).astype(jnp.float32)


def never_terminates(
    obs: jax.Array, action: jax.Array, next_obs: jax.Array
) -> jax.Array:
  """Always 0.0, float32 [...]."""
  del obs, action
  return jnp.zeros(next_obs.shape[:-1], jnp.float32)


class CartpoleSwingup(_VectorStateEnv):
  """Cart-pole swing-up in the spirit of PETS (Chua et al., 2018), pure JAX.

  * Physics: gym's frictionless cart-pole equations
    (:func:`gym_cartpole_accelerations`; `friction` > 0 adds viscous friction on
    the cart, force - friction * x_dot, as pilco-matlab's b = 0.1) with a uniform pole of full length
    L = 0.6 (half-length 0.3), cart mass 0.5, pole mass 0.5, g = 9.8, no rail
    limits (x is unbounded), integrated with classical RK4: each env step
    (dt = 0.04 s, PETS' 0.02 s x frame-skip 2) is `num_substeps` = 2 RK4 steps of
    0.02 s with the force held constant.
  * Action: [1] in [-1, 1] (clipped); force = 10 * action (N).
  * Obs: ``[x, x_dot, cos(theta), sin(theta), theta_dot]`` float32 [5].
  * Reward (next state): ``exp(-|tip - (0, L)|^2 / L^2) - 0.01 * a^2`` with
    ``tip = (x + L sin(theta), L cos(theta))`` (:func:`cartpole_swingup_reward`);
    1.0 - cost with the pole upright over x = 0, ~exp(-4) hanging down.
  * Never terminates; ``make('cartpole_swingup')`` adds a 200-step limit (8 s).
  * Reset: pole hanging down: theta = pi + N(0, 0.1^2); x, x_dot, theta_dot ~
    N(0, 0.1^2) (PETS resets qpos, qvel with N(0, 0.1^2) noise).

  Differences from PETS' MuJoCo model (capsule geometry, ~10.5 kg cart, ~5 kg
  pole, 300 N max force, joint damping 1, soft rail limit at +-2.5): ours is the
  idealised frictionless system above, so returns are comparable in scale (same
  reward shape, horizon and control period) but not identical.
  """

  def __init__(
      self,
      gravity: float = 9.8,
      cart_mass: float = 0.5,
      pole_mass: float = 0.5,
      pole_length: float = 0.6,
      force_mag: float = 10.0,
      dt: float = 0.04,
      num_substeps: int = 2,
      action_cost: float = 0.01,
      reset_noise_std: float = 0.1,
      friction: float = 0.0,
  ):
    if friction < 0.0:
      raise ValueError(f"CartpoleSwingup: friction must be >= 0, got {friction}")
    self.gravity = gravity
    self.cart_mass = cart_mass
    self.pole_mass = pole_mass
    self.pole_length = pole_length
    self.force_mag = force_mag
    self._dt = dt
    self.num_substeps = num_substeps
    self.action_cost = action_cost
    self.reset_noise_std = reset_noise_std
    self.friction = friction

  @property
  def observation_size(self) -> int:
    return 5

  @property
  def dt(self) -> float:
    return self._dt

  def get_obs(self, q: jax.Array) -> jax.Array:
    """[x, x_dot, theta, theta_dot] -> [x, x_dot, cos, sin, theta_dot], [5]."""
    x, x_dot, theta, theta_dot = q
    return jnp.stack([x, x_dot, jnp.cos(theta), jnp.sin(theta), theta_dot])

  def reset(self, rng: jax.Array) -> State:
    noise = self.reset_noise_std * jax.random.normal(rng, (4,), jnp.float32)
    q = noise.at[2].add(jnp.pi)
    return self._state(q, self.get_obs(q), 0.0, 0.0)

  def _derivative(self, q: jax.Array, force: jax.Array) -> jax.Array:
    xacc, thetaacc = gym_cartpole_accelerations(
        q, force - self.friction * q[1], gravity=self.gravity, masscart=self.cart_mass,
        masspole=self.pole_mass, half_length=0.5 * self.pole_length,
    )
    return jnp.stack([q[1], xacc, q[3], thetaacc])

  def step(self, state: State, action: jax.Array) -> State:
    q = state.pipeline_state  # [4]
    obs = self.get_obs(q)
    force = self.force_mag * jnp.clip(action[0], -1.0, 1.0)
    h = self._dt / self.num_substeps

    def rk4(q: jax.Array, _) -> tuple[jax.Array, None]:
      k1 = self._derivative(q, force)
      k2 = self._derivative(q + 0.5 * h * k1, force)
      k3 = self._derivative(q + 0.5 * h * k2, force)
      k4 = self._derivative(q + h * k3, force)
      return q + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4), None

    next_q, _ = jax.lax.scan(rk4, q, None, length=self.num_substeps)
    next_obs = self.get_obs(next_q)
    reward = cartpole_swingup_reward(
        obs, action, next_obs,
        pole_length=self.pole_length, action_cost=self.action_cost,
    )
    return state.replace(
        pipeline_state=next_q, obs=next_obs,
        reward=reward, done=jnp.zeros((), jnp.float32),
    )

  def render_pixels(self, pipeline_state: jax.Array, size: int) -> jax.Array:
    """uint8 [size, size, 3]; fixed view x, y in [-2, 2] (cart may leave it)."""
    x, _, theta, _ = pipeline_state
    return rendering.render_cartpole(
        x, jnp.cos(theta), jnp.sin(theta), size=size,
        pole_length=self.pole_length, half_width=2.0,
        cart_half_extents=(0.15, 0.08),
    )
