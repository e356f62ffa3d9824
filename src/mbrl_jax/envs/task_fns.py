"""Reward and termination functions of (obs, action, next_obs), per env.

Every function has the signature ``fn(obs, action, next_obs) -> value`` with
obs/next_obs ``[..., D]`` and action ``[..., A]``, returns float32 ``[...]``
(any leading batch axes, so they also work unbatched and under vmap), is pure
JAX, and reproduces the env's own ``state.reward`` / ``state.done`` for envs
built by :func:`mbrl_jax.envs.make` with the same keyword arguments (and
``action_repeat=1``). Termination values are float32 1.0 / 0.0 like Brax's
``done`` (use ``> 0.5`` for a bool); they describe the env's true termination,
not the time limit (``info['truncation']``).

Per-env formulas (primes are next_obs):

* cartpole_continuous: r = 1; done = |x'| > 2.4 or |theta'| > 12 deg.
* cartpole_swingup: r = exp(-|tip' - (0, L)|^2 / L^2) - 0.01 |clip(a)|^2; never.
* cartpole_v1: as cartpole_continuous (the action, an int, is not used).
* catch: r = +1 / -1 when the ball has landed in next_obs's bottom row under / not under
  the paddle, else 0; done = the ball has landed.
* pendulum: r = -(th^2 + 0.1 thdot^2 + 0.001 (2 clip(a))^2) on the PRE-step obs.
* gymnasium:Pendulum-v1 (the host env of :mod:`mbrl_jax.envs.gym_adapter`): pendulum's; the
  adapter maps actions in [-1, 1] onto gymnasium's torque in [-2, 2], so a = u / 2 as ours.
* inverted_pendulum (Brax): r = 1; done = |theta'| > 0.2 (obs[1] = hinge angle).
* reacher (Brax): r = -|fingertip' - target'| - |a|^2, from next_obs[-3:] (the
  post-step tip-to-target vector; Brax computes it after the physics step).
* hopper (Brax, obs = [x, z, angle, 3 joints, 6 unclipped velocities]):
  r = w_f (x' - x) / dt + healthy_reward - w_c |a|^2 with dt = 0.008;
  done = not healthy(next_obs): z' > 0.7, |angle'| < 0.2, |next_obs[2:]| < 100.
* walker2d (Brax, obs = [x, z, angle, 6 joints, 9 clipped velocities]):
  r as hopper (dt = 0.008); done = not (0.8 < z' < 2.0 and |angle'| < 1).
* halfcheetah (Brax, obs = [x, 8 positions, 9 velocities]):
  r = w_f (x' - x) / dt - 0.1 |a|^2 with dt = 0.05; never terminates.
* dmc/cartpole_swingup, dmc/cartpole_balance, dmc/pendulum_swingup, dmc/reacher_easy,
  dmc/reacher_hard (MuJoCo Playground, action repeat 1): the suite's rewards, see
  :mod:`mbrl_jax.envs.dmc`; never terminate.

With ``terminate_when_unhealthy=False`` hopper/walker2d get r's healthy term
multiplied by healthy(next_obs) and never terminate, as in Brax.

Your own env's functions: :func:`register` them under the env's name (e.g.
``"gymnasium:MountainCarContinuous-v0"``) before a config naming it is built; then PETS plans
with them and MBPO stops its model rollouts with the termination function.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

from brax.envs.base import Env
import jax
import jax.numpy as jnp

from mbrl_jax.envs import cartpole
from mbrl_jax.envs import discrete
from mbrl_jax.envs import dmc
from mbrl_jax.envs import pendulum
from mbrl_jax.envs import registry

TaskFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


class TaskFns(NamedTuple):
  """reward_fn and termination_fn of one env, both (obs, action, next_obs) -> [...]."""

  reward_fn: TaskFn
  termination_fn: TaskFn


def _f32(x: jax.Array) -> jax.Array:
  return jnp.asarray(x, jnp.float32)


def _never(obs: jax.Array, action: jax.Array, next_obs: jax.Array) -> jax.Array:
  del obs, action
  return jnp.zeros(next_obs.shape[:-1], jnp.float32)


def _ones(obs: jax.Array, action: jax.Array, next_obs: jax.Array) -> jax.Array:
  del obs, action
  return jnp.ones(next_obs.shape[:-1], jnp.float32)


# --- our envs -----------------------------------------------------------------


def _cartpole_continuous(env: Env) -> TaskFns:
  del env
  return TaskFns(
      cartpole.cartpole_continuous_reward,
      cartpole.cartpole_continuous_termination,
  )


def _cartpole_swingup(env: Env) -> TaskFns:
  reward_fn = functools.partial(
      cartpole.cartpole_swingup_reward,
      pole_length=env.pole_length, action_cost=env.action_cost,
  )
  return TaskFns(reward_fn, cartpole.never_terminates)


def _catch(env: Env) -> TaskFns:
  sizes = dict(rows=env.rows, columns=env.columns)
  return TaskFns(functools.partial(discrete.catch_reward, **sizes),
                 functools.partial(discrete.catch_termination, **sizes))


def _pendulum(env: Env) -> TaskFns:
  del env
  return TaskFns(pendulum.pendulum_reward, _never)


# --- Brax envs ----------------------------------------------------------------


def _inverted_pendulum(env: Env) -> TaskFns:
  del env

  def termination_fn(
      obs: jax.Array, action: jax.Array, next_obs: jax.Array
  ) -> jax.Array:  # [...]
    del obs, action
    return _f32(jnp.abs(next_obs[..., 1]) > 0.2)

  return TaskFns(_ones, termination_fn)


def _safe_norm_last(x: jax.Array) -> jax.Array:
  """brax.math.safe_norm over the last axis only ([..., D] -> [...])."""
  is_zero = jnp.all(jnp.abs(x) <= 1e-8, axis=-1, keepdims=True)  # allclose(x, 0)
  n = jnp.linalg.norm(x + is_zero * 1.0, axis=-1)
  return n * (1.0 - is_zero[..., 0])


def _reacher(env: Env) -> TaskFns:
  del env

  def reward_fn(
      obs: jax.Array, action: jax.Array, next_obs: jax.Array
  ) -> jax.Array:  # [...]
    del obs
    reward_dist = -_safe_norm_last(next_obs[..., -3:])
    reward_ctrl = -jnp.square(action).sum(axis=-1)
    return _f32(reward_dist + reward_ctrl)

  return TaskFns(reward_fn, _never)


def _require_x_in_obs(name: str, env: Env) -> None:
  # pylint: disable-next=protected-access
  if env._exclude_current_positions_from_observation:
    raise ValueError(
        f'{name}: the forward reward needs the x position in the obs; build the '
        'env with exclude_current_positions_from_observation=False (the '
        'default of mbrl_jax.envs.make).'
    )


def _forward_reward(
    obs: jax.Array, next_obs: jax.Array, weight: float, dt: jax.Array
) -> jax.Array:
  return weight * ((next_obs[..., 0] - obs[..., 0]) / dt)


# pylint: disable=protected-access
def _healthy_locomotion(
    env: Env, is_healthy: Callable[[jax.Array], jax.Array]
) -> TaskFns:
  """Hopper / walker2d: forward velocity + healthy bonus - control cost,
  terminating when unhealthy (if the env is configured to)."""
  dt = env.dt
  w_f, w_c = env._forward_reward_weight, env._ctrl_cost_weight
  healthy_reward, terminate = env._healthy_reward, env._terminate_when_unhealthy

  def reward_fn(
      obs: jax.Array, action: jax.Array, next_obs: jax.Array
  ) -> jax.Array:  # [...]
    healthy = (
        healthy_reward if terminate else healthy_reward * is_healthy(next_obs)
    )
    ctrl_cost = w_c * jnp.sum(jnp.square(action), axis=-1)
    return _f32(_forward_reward(obs, next_obs, w_f, dt) + healthy - ctrl_cost)

  def termination_fn(
      obs: jax.Array, action: jax.Array, next_obs: jax.Array
  ) -> jax.Array:  # [...]
    del obs, action
    if not terminate:
      return jnp.zeros(next_obs.shape[:-1], jnp.float32)
    return _f32(1.0 - is_healthy(next_obs))

  return TaskFns(reward_fn, termination_fn)


def _hopper(env: Env) -> TaskFns:
  _require_x_in_obs('hopper', env)
  if not isinstance(env, registry.HopperFullObs):
    raise ValueError(
        'hopper termination needs unclipped velocities; use '
        'mbrl_jax.envs.make("hopper") (HopperFullObs).'
    )
  min_z, max_z = env._healthy_z_range
  min_angle, max_angle = env._healthy_angle_range
  min_state, max_state = env._healthy_state_range

  def is_healthy(next_obs: jax.Array) -> jax.Array:  # [..., D] -> bool [...]
    z, angle = next_obs[..., 1], next_obs[..., 2]
    state_vec = next_obs[..., 2:]  # q[2:] and unclipped qd
    healthy = jnp.all((min_state < state_vec) & (state_vec < max_state), -1)
    healthy &= (min_z < z) & (z < max_z)
    healthy &= (min_angle < angle) & (angle < max_angle)
    return healthy

  return _healthy_locomotion(env, is_healthy)


def _walker2d(env: Env) -> TaskFns:
  _require_x_in_obs('walker2d', env)
  min_z, max_z = env._healthy_z_range
  min_angle, max_angle = env._healthy_angle_range

  def is_healthy(next_obs: jax.Array) -> jax.Array:  # [..., D] -> bool [...]
    z, angle = next_obs[..., 1], next_obs[..., 2]
    return (z > min_z) & (z < max_z) & (angle > min_angle) & (angle < max_angle)

  return _healthy_locomotion(env, is_healthy)


def _halfcheetah(env: Env) -> TaskFns:
  _require_x_in_obs('halfcheetah', env)
  dt = env.dt
  w_f, w_c = env._forward_reward_weight, env._ctrl_cost_weight

  def reward_fn(
      obs: jax.Array, action: jax.Array, next_obs: jax.Array
  ) -> jax.Array:  # [...]
    ctrl_cost = w_c * jnp.sum(jnp.square(action), axis=-1)
    return _f32(_forward_reward(obs, next_obs, w_f, dt) - ctrl_cost)

  return TaskFns(reward_fn, _never)
# pylint: enable=protected-access


_FACTORIES: dict[str, Callable[[Env], TaskFns]] = {
    'cartpole_continuous': _cartpole_continuous,
    'cartpole_swingup': _cartpole_swingup,
    'cartpole_v1': _cartpole_continuous,  # the same reward (1) and termination
    'catch': _catch,
    'pendulum': _pendulum,
    'inverted_pendulum': _inverted_pendulum,
    'reacher': _reacher,
    'hopper': _hopper,
    'walker2d': _walker2d,
    'halfcheetah': _halfcheetah,
    'gymnasium:Pendulum-v1': _pendulum,   # gymnasium's own, stepped on the host
    **{name: (lambda env, f=f: TaskFns(f(env), _never)) for name, f in dmc.TASK_FNS.items()},
}


def register(name: str, reward_fn: TaskFn, termination_fn: TaskFn | None = None) -> None:
  """Registers reward and termination functions for env `name` (any name `make` accepts,
  e.g. "gymnasium:MyEnv-v0"), so `get_task_fns(name)` and the algorithms that plan with the
  known reward (PETS) or stop rollouts at termination (MBPO) take it.

  Args:
    name: the env's name.
    reward_fn: ``reward_fn(obs, action, next_obs) -> float32 [...]`` (actions as the
      algorithms see them: in [-1, 1] for a gymnasium Box env, see
      :class:`mbrl_jax.envs.gym_adapter.GymnasiumEnv`).
    termination_fn: likewise, 1.0 where next_obs ends the episode; None: never.

  Example:
    >>> register('gymnasium:Pendulum-v1', pendulum.pendulum_reward)   # what is built in
  """
  termination_fn = termination_fn or _never
  _FACTORIES[name] = lambda env: TaskFns(reward_fn, termination_fn)


def task_fn_names() -> tuple[str, ...]:
  """Names that have reward and termination functions."""
  return tuple(sorted(_FACTORIES))


def get_task_fns(name: str, **env_kwargs: Any) -> TaskFns:
  """Reward and termination fns matching ``make(name, **env_kwargs)``.

  The env is constructed (cheaply, nothing is compiled) to read its constants
  (dt, reward weights, health ranges), so non-default constructor kwargs are
  honoured.

  Raises:
    ValueError: no task fns for `name` (lists those available), or kwargs that
      make the reward unrecoverable from observations.
  """
  if name not in _FACTORIES:
    raise ValueError(
        f'No reward/termination functions for environment {name!r}. '
        f'Available: {", ".join(task_fn_names())}'
    )
  return _FACTORIES[name](registry.make_unwrapped(name, **env_kwargs))


def get_reward_fn(name: str, **env_kwargs: Any) -> TaskFn:
  """``reward_fn(obs, action, next_obs) -> float32 [...]`` for env `name`."""
  return get_task_fns(name, **env_kwargs).reward_fn


def has_termination_fn(name: str) -> bool:
  """Whether `get_termination_fn(name)` has an answer: every name of `task_fn_names`, and
  every DM Control name (with or without options), whose tasks never terminate, also those
  without a closed-form reward (MBPO learns the reward and needs only this)."""
  return name in _FACTORIES or dmc.is_dmc_name(name)


def get_termination_fn(name: str, **env_kwargs: Any) -> TaskFn:
  """``termination_fn(obs, action, next_obs) -> float32 [...]`` (1.0 = done)."""
  if name not in _FACTORIES and dmc.is_dmc_name(name):
    return _never                 # the suite's tasks end only at the time limit
  return get_task_fns(name, **env_kwargs).termination_fn
