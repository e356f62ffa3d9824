"""Policy rollouts in Brax envs as `lax.scan`, returning `Transition`s: `rollout` is
`mbrl_jax.envs.acting.collect` for a stateless `policy_fn(key, obs)`."""

from __future__ import annotations

from typing import Callable

from brax.envs.base import Env, State
import jax
import jax.numpy as jnp

from mbrl_jax.envs import acting
from mbrl_jax.types import PRNGKey, Transition

PolicyFn = Callable[[PRNGKey, jax.Array], jax.Array]


def random_policy(action_size: int) -> PolicyFn:
  """``policy_fn(key, obs) -> U[-1, 1]^action_size`` actions, [A]."""

  def policy_fn(key: PRNGKey, obs: jax.Array) -> jax.Array:
    del obs
    return jax.random.uniform(key, (action_size,), jnp.float32, -1.0, 1.0)

  return policy_fn


def rollout(
    env: Env,
    policy_fn: PolicyFn,
    key: PRNGKey,
    num_steps: int,
    *,
    init_state: State | None = None,
    auto_reset: bool = True,
) -> tuple[Transition, State]:
  """Runs `policy_fn` for `num_steps` steps of one (unbatched) env.

  Args:
    env: an unbatched Brax ``Env`` (e.g. from :func:`mbrl_jax.envs.make`),
      without AutoResetWrapper.
    policy_fn: ``policy_fn(key, obs) -> action`` with obs [*obs_shape] and
      action [A]. Close over parameters (``functools.partial``) to use a
      parametric policy; doing so inside a jitted function keeps them traced.
    key: PRNG key (raw uint32 [2], as Brax expects).
    num_steps: T, a static int.
    init_state: state to start from; default ``env.reset(key')``.
    auto_reset: when True, an env whose ``done`` is 1 (termination or time
      limit) is reset (with a fresh key) before the next step. The recorded
      ``next_obs`` is always the obs the step produced, before any reset.

  Returns:
    (transitions, final_state): a ``Transition`` with leading time axis:
    obs [T, *obs_shape], action [T, A], reward [T], next_obs [T, *obs_shape],
    terminated [T] (done and not truncated), truncated [T] (Brax
    ``EpisodeWrapper``'s ``info['truncation']``; zeros without it); and the state
    after the last step (after its reset, if any), to continue from. For a batch,
    ``jax.vmap`` over keys (see :func:`batch_rollout`).
  """
  acting.check_env(env)
  key_init, key_steps = jax.random.split(key)
  if init_state is None:
    state = acting.reset_env(env, key_init)
  else:
    state = init_state.replace(reward=jnp.asarray(init_state.reward, jnp.float32),
                               done=jnp.asarray(init_state.done, jnp.float32))
  actor = acting.Actor(env_state=state, policy_state=(), episode_return=jnp.zeros(()),
                       episode_length=jnp.zeros((), jnp.int32))
  actor, transitions, _, _ = acting.collect(env, acting.stateless(policy_fn), actor, key_steps,
                                            num_steps, auto_reset=auto_reset)
  return transitions, actor.env_state


def batch_rollout(
    env: Env,
    policy_fn: PolicyFn,
    key: PRNGKey,
    num_envs: int,
    num_steps: int,
    **kwargs,
) -> tuple[Transition, State]:
  """`num_envs` independent rollouts: ``jax.vmap`` of :func:`rollout` over keys.

  Returns:
    Transitions with leading axes [num_envs, T, ...] and the final states
    (batched [num_envs, ...]).
  """
  keys = jax.random.split(key, num_envs)
  return jax.vmap(
      lambda k: rollout(env, policy_fn, k, num_steps, **kwargs)
  )(keys)
