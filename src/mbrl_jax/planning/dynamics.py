"""Differentiable dynamics and costs for planners that need them (iLQR), on the observation
vector a learned model sees, from the true pure-JAX envs or from a learned ensemble.

Plan space: the observation. The true model of an env maps obs -> its physical state
(`pipeline_state`), takes the env's own `step` and returns the next obs, so one planner (and
one cost, the negated known reward of (obs, action, next_obs) from `envs.get_task_fns`) serves
the true model and a learned ensemble alike, and the MPC controller's feedback acts on what
the agent observes. For cartpole_swingup the obs [x, x_dot, cos, sin, theta_dot] carries the
angle as (cos, sin): the state is [x, x_dot, atan2(sin, cos), theta_dot], exact on the unit
circle (the obs the env produces), and the obs-space Jacobians have rank 4 of 5, which the
Riccati recursion does not mind. pendulum: [cos, sin, thdot] -> [atan2(sin, cos), thdot].
cartpole_continuous: obs == state.

  f = true_dynamics("cartpole_swingup")      # f(params, obs [5], action [1]) -> obs' [5]
  cost = true_cost("cartpole_swingup")       # cost(params, obs, action, obs') -> []

Example:
  >>> f, cost = true_dynamics("pendulum"), true_cost("pendulum")
  >>> obs = jnp.array([1.0, 0.0, 0.0])                  # upright, at rest
  >>> f(None, obs, jnp.zeros(1)).tolist(), float(cost(None, obs, jnp.zeros(1), obs))
  ([1.0, 0.0, 0.0], 0.0)
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from brax.envs.base import State as EnvState

from mbrl_jax import envs
from mbrl_jax.models import ModelStep
from mbrl_jax.types import Params, PRNGKey


def _swingup_state(obs: jax.Array) -> jax.Array:
  return jnp.stack([obs[0], obs[1], jnp.arctan2(obs[3], obs[2]), obs[4]])


def _pendulum_state(obs: jax.Array) -> jax.Array:
  return jnp.stack([jnp.arctan2(obs[1], obs[0]), obs[2]])


# env name -> obs [O] -> the env's pipeline_state.
OBS_TO_STATE: dict[str, Callable[[jax.Array], jax.Array]] = {
    "cartpole_swingup": _swingup_state,
    "pendulum": _pendulum_state,
    "cartpole_continuous": lambda obs: obs,
}
TRUE_DYNAMICS_ENVS = tuple(OBS_TO_STATE)
"""Envs whose true dynamics are differentiable pure JAX on their obs (`true_dynamics`)."""

ILQR_ENVS = ("cartpole_swingup", "pendulum")
"""Envs iLQR can plan on (with the true model or a learned one): they never terminate (iLQR
has no notion of termination) and their known reward has a useful gradient (cartpole_
continuous' is a constant alive bonus)."""


def _check(name: str) -> None:
  if name not in OBS_TO_STATE:
    raise ValueError(f"{name!r} has no differentiable true dynamics here; those that do: "
                     f"{', '.join(TRUE_DYNAMICS_ENVS)}")


def true_dynamics(name: str) -> Callable[[Params, jax.Array, jax.Array], jax.Array]:
  """`f(params, obs [O], action [A]) -> next_obs [O]`: the env's own step (params unused)."""
  _check(name)
  env = envs.make_unwrapped(name)
  to_state = OBS_TO_STATE[name]

  def f(params: Params, obs: jax.Array, action: jax.Array) -> jax.Array:
    del params
    zero = jnp.zeros((), jnp.float32)
    state = EnvState(pipeline_state=to_state(obs), obs=obs, reward=zero, done=zero,
                     metrics={}, info={})
    return env.step(state, action).obs

  return f


def true_cost(name: str) -> Callable[[Params, jax.Array, jax.Array, jax.Array], jax.Array]:
  """`cost(params, obs, action, next_obs) -> []`: minus the env's known reward."""
  reward_fn = envs.get_task_fns(name).reward_fn
  return lambda params, obs, action, next_obs: -reward_fn(obs, action, next_obs)


def true_model_fn(name: str) -> Callable[..., ModelStep]:
  """The true dynamics as a row-batched `planning.ModelFn` (for `make_trajectory_evaluator`
  and the sampling optimizers): `(params, key, obs [N, O], action [N, A]) -> ModelStep`
  with `reward=None` (give the evaluator the env's reward_fn)."""
  f = jax.vmap(true_dynamics(name), in_axes=(None, 0, 0))

  def model_fn(params: Params, key: PRNGKey, obs: jax.Array, action: jax.Array,
               noise: jax.Array | None = None) -> ModelStep:
    del key, noise
    return ModelStep(next_obs=f(params, obs, action), reward=None)

  return model_fn


def ensemble_mean_dynamics(ensemble) -> Callable[[Params, jax.Array, jax.Array], jax.Array]:
  """`f(ensemble_params, obs [O], action [A]) -> next_obs [O]`: the mean over the elite
  members of their predicted means (`predict(..., mode="expectation", sample=False)`),
  deterministic and differentiable."""

  def f(params: Params, obs: jax.Array, action: jax.Array) -> jax.Array:
    out = ensemble.predict(params, jax.random.key(0), obs[None], action[None],
                           mode="expectation", sample=False)
    return out.next_obs[0]

  return f
