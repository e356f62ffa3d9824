"""gym Pendulum-v1 in pure JAX on Brax's `Env` API, with actions in [-1, 1]."""

from __future__ import annotations

from brax.envs.base import Env, State
import jax
import jax.numpy as jnp

from mbrl_jax.envs import rendering

PENDULUM_MAX_TORQUE = 2.0
PENDULUM_MAX_SPEED = 8.0


def pendulum_reward(
    obs: jax.Array, action: jax.Array, next_obs: jax.Array
) -> jax.Array:
  """gym Pendulum-v1 reward on the PRE-step obs and the torque u = 2 clip(a).

    r = -(th_n^2 + 0.1 thdot^2 + 0.001 u^2),  th_n = atan2(sin th, cos th)

  (atan2 of the observed cos/sin equals gym's angle_normalize(th) up to float
  rounding; both square to the same value at +-pi.)

  Args:
    obs: [..., 3] = [cos(th), sin(th), thdot] before the step.
    action: [..., 1] in [-1, 1] (clipped).
    next_obs: [..., 3] (unused).

  Returns:
    float32 [...].
  """
  del next_obs
  th = jnp.arctan2(obs[..., 1], obs[..., 0])
  thdot = obs[..., 2]
  u = PENDULUM_MAX_TORQUE * jnp.clip(action[..., 0], -1.0, 1.0)
  cost = jnp.square(th) + 0.1 * jnp.square(thdot) + 0.001 * jnp.square(u)
  return (-cost).astype(jnp.float32)


class Pendulum(Env):
  """gym Pendulum-v1 dynamics and reward, actions normalised to [-1, 1].

  * State (``pipeline_state``): [th, thdot] float32 (th unwrapped, 0 = upright).
  * Obs: ``[cos(th), sin(th), thdot]`` float32 [3].
  * Action: [1] in [-1, 1], clipped, torque u = 2 * a (gym's [-2, 2]).
  * Dynamics (g = 10, m = 1, l = 1, dt = 0.05), semi-implicit Euler as gym:
    thdot' = clip(thdot + (3g/(2l) sin(th) + 3/(m l^2) u) dt, -8, 8);
    th' = th + thdot' dt.
  * Reward: :func:`pendulum_reward` on the pre-step state (as gym).
  * Never terminates; ``make('pendulum')`` adds a 200-step limit (gym's).
  * Reset: th ~ U[-pi, pi], thdot ~ U[-1, 1].
  """

  def __init__(
      self, g: float = 10.0, m: float = 1.0, l: float = 1.0, dt: float = 0.05
  ):
    self.g = g
    self.m = m
    self.l = l
    self._dt = dt

  @property
  def observation_size(self) -> int:
    return 3

  @property
  def action_size(self) -> int:
    return 1

  @property
  def backend(self) -> str:
    return 'jax'

  @property
  def dt(self) -> float:
    return self._dt

  @staticmethod
  def get_obs(q: jax.Array) -> jax.Array:
    """[th, thdot] -> [cos th, sin th, thdot], [3]."""
    return jnp.stack([jnp.cos(q[0]), jnp.sin(q[0]), q[1]])

  def reset(self, rng: jax.Array) -> State:
    high = jnp.array([jnp.pi, 1.0], jnp.float32)
    q = jax.random.uniform(rng, (2,), jnp.float32, -high, high)
    zero = jnp.zeros((), jnp.float32)
    return State(q, self.get_obs(q), zero, zero, {}, {})

  def step(self, state: State, action: jax.Array) -> State:
    q = state.pipeline_state  # [2]
    obs = self.get_obs(q)
    th, thdot = q
    u = PENDULUM_MAX_TORQUE * jnp.clip(action[0], -1.0, 1.0)
    new_thdot = thdot + (
        3.0 * self.g / (2.0 * self.l) * jnp.sin(th)
        + 3.0 / (self.m * self.l**2) * u
    ) * self._dt
    new_thdot = jnp.clip(new_thdot, -PENDULUM_MAX_SPEED, PENDULUM_MAX_SPEED)
    new_th = th + new_thdot * self._dt
    next_q = jnp.stack([new_th, new_thdot])
    next_obs = self.get_obs(next_q)
    reward = pendulum_reward(obs, action, next_obs)
    return state.replace(
        pipeline_state=next_q, obs=next_obs,
        reward=reward, done=jnp.zeros((), jnp.float32),
    )

  def render_pixels(self, pipeline_state: jax.Array, size: int) -> jax.Array:
    """uint8 [size, size, 3]; pivot at the centre, view [-1.2, 1.2]^2."""
    th = pipeline_state[0]
    return rendering.render_pendulum(
        jnp.cos(th), jnp.sin(th), size=size, length=self.l,
        half_width=1.2 * self.l,
    )
