"""Acting in an env: one policy type with its own state, and the one way every algorithm
steps, collects and evaluates.

A `Policy` is a pair of pure functions, `init(key) -> policy_state` (called at every episode
start: an MPC plan, a recurrent filter's latent, or `()`) and `act(policy_state, key, obs) ->
(action, policy_state, info)`. Parameters are closed over where the policy is built (inside
the compiled step that uses them), as in `mbrl_jax.planning.make_mpc`.

What acting carries between calls is an `Actor`: the env state, the policy state and the
running episode's return and length. Three functions use it:

  actor, tr, info, ended = step(env, policy, actor, key)        # one env step, auto reset
  actor, tr, info, ended = collect(env, policy, actor, key, T)   # T steps, tr [T, ...]
  result = episode(env, policy, key, max_steps)                  # one episode from a reset
  result = evaluate(env, policy, key, num_episodes, max_steps)   # complete episodes, vmapped

Episodes that end inside a `collect` are counted once, in `Episodes` (how many ended, the sum
of their returns and lengths), so an algorithm reports `train/return` the same way everywhere.
`episode` stops acting at the first `done` (no auto reset) and marks its last step truncated
when `max_steps` cuts it; `evaluate` therefore returns one complete episode per row.

Example:
  >>> from mbrl_jax import envs
  >>> env = envs.make("pendulum")
  >>> policy = uniform_random(env.action_size)
  >>> actor = reset(env, policy, jax.random.key(0))
  >>> actor, tr, _, ended = collect(env, policy, actor, jax.random.key(1), 250)
  >>> tr.reward.shape, int(ended.count), int(actor.episode_length)   # 200-step episodes
  ((250,), 1, 50)
  >>> result = evaluate(env, policy, jax.random.key(2), num_episodes=3, max_steps=200)
  >>> result.returns.shape, result.lengths.tolist()
  ((3,), [200, 200, 200])
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from brax.envs.base import Env
from brax.envs.base import State as EnvState
from brax.envs.wrappers import training as brax_training

from mbrl_jax.types import PRNGKey, Transition


class Policy(NamedTuple):
  """A policy with its own state.

  Attributes:
    init: `init(key) -> policy_state`, at every episode start.
    act: `act(policy_state, key, obs) -> (action [A], policy_state, info)`; `info` is any
      pytree of per-step diagnostics (e.g. the planner's), `()` when there are none.
  """

  init: Callable[[PRNGKey], Any]
  act: Callable[[Any, PRNGKey, jax.Array], tuple[jax.Array, Any, Any]]


def stateless(fn: Callable[[PRNGKey, jax.Array], jax.Array]) -> Policy:
  """A `Policy` from `fn(key, obs) -> action`, with state `()` and info `()`."""
  return Policy(init=lambda key: (), act=lambda state, key, obs: (fn(key, obs), state, ()))


def uniform_random(action_size: int) -> Policy:
  """Actions drawn uniformly from [-1, 1]^action_size."""
  return stateless(lambda key, obs: jax.random.uniform(key, (action_size,), jnp.float32,
                                                       -1.0, 1.0))


class Actor(NamedTuple):
  """What acting carries from step to step and from chunk to chunk (one env).

  Attributes:
    env_state: the env's state; `env_state.obs` is the observation to act on.
    policy_state: the policy's state in the running episode.
    episode_return: return of the running episode so far.       # []
    episode_length: steps of the running episode so far.        # [] int32
  """

  env_state: EnvState
  policy_state: Any
  episode_return: jax.Array
  episode_length: jax.Array


class Episodes(NamedTuple):
  """The episodes that ended during a `step` or `collect`.

  Attributes:
    count: how many ended.                      # [] int32
    return_sum: the sum of their returns.       # []
    length_sum: the sum of their lengths.       # [] int32
  """

  count: jax.Array
  return_sum: jax.Array
  length_sum: jax.Array

  @staticmethod
  def none() -> "Episodes":
    """No episode yet: the start of a sum."""
    return Episodes(count=jnp.zeros((), jnp.int32), return_sum=jnp.zeros((), jnp.float32),
                    length_sum=jnp.zeros((), jnp.int32))

  def mean_return(self) -> jax.Array:
    """Mean return of the ended episodes; NaN when none ended. [] float."""
    return jnp.where(self.count > 0, self.return_sum / jnp.maximum(self.count, 1), jnp.nan)

  def mean_length(self) -> jax.Array:
    """Mean length of the ended episodes; NaN when none ended. [] float."""
    return jnp.where(self.count > 0, self.length_sum / jnp.maximum(self.count, 1), jnp.nan)


class EpisodeResult(NamedTuple):
  """One episode from a reset, at most `max_steps` long.

  Attributes:
    transitions: every step computed; those after the end are not valid.   # [T, ...]
    valid: the step belongs to the episode.                                 # [T] bool
    info: the policy's info per step (NaN after the end; 0 in integer leaves). # [T, ...]
    ret: the episode's return.                                              # []
    length: the episode's length.                                           # [] int32
  """

  transitions: Transition
  valid: jax.Array
  info: Any
  ret: jax.Array
  length: jax.Array


class EvalResult(NamedTuple):
  """Returns and lengths of complete evaluation episodes.

  Attributes:
    returns: one return per episode.     # [N]
    lengths: one length per episode.     # [N] int32
  """

  returns: jax.Array
  lengths: jax.Array


def reset_env(env: Env, key: PRNGKey) -> EnvState:
  """`env.reset(key)` with float32 reward and done, so reset and stepped states match."""
  state = env.reset(key)
  return state.replace(reward=jnp.zeros((), jnp.float32), done=jnp.zeros((), jnp.float32))


def env_step(env: Env, state: EnvState, action: jax.Array) -> tuple[EnvState, Transition]:
  """`env.step` and the `Transition` it makes: terminated is done without the time limit's
  truncation (Brax's `info["truncation"]`, zeros without it)."""
  nxt = env.step(state, action)
  reward = jnp.asarray(nxt.reward, jnp.float32)
  done = jnp.asarray(nxt.done, jnp.float32)
  truncated = jnp.asarray(nxt.info.get("truncation", jnp.zeros_like(done)), jnp.float32)
  tr = Transition(obs=state.obs, action=action, reward=reward, next_obs=nxt.obs,
                  terminated=done * (1.0 - truncated), truncated=truncated)
  return nxt.replace(reward=reward, done=done), tr


def check_env(env: Env) -> None:
  """Raises ValueError if `env` is wrapped in Brax's AutoResetWrapper: acting resets episodes
  itself and records the true final observation, which that wrapper replaces."""
  e = env
  while True:
    if isinstance(e, brax_training.AutoResetWrapper):
      raise ValueError("acting resets episodes itself and needs the true final obs; pass an env "
                       "without AutoResetWrapper (mbrl_jax.envs.make adds none)")
    if not hasattr(e, "env") or e is e.unwrapped:
      return
    e = e.env


def reset(env: Env, policy: Policy, key: PRNGKey) -> Actor:
  """A fresh episode: the env reset and the policy's initial state."""
  check_env(env)
  env_key, policy_key = jax.random.split(key)
  return Actor(env_state=reset_env(env, env_key), policy_state=policy.init(policy_key),
               episode_return=jnp.zeros((), jnp.float32),
               episode_length=jnp.zeros((), jnp.int32))


def step(env: Env, policy: Policy, actor: Actor, key: PRNGKey, *, auto_reset: bool = True
         ) -> tuple[Actor, Transition, Any, Episodes]:
  """One env step with the policy; with `auto_reset`, an episode that ends (termination or
  time limit) is followed by a fresh one (env and policy state), from the next step on.

  Returns:
    (actor, transition, info, ended): `transition.next_obs` is the step's own observation,
    before any reset; `ended` counts the episode if it ended on this step.
  """
  act_key, reset_key = jax.random.split(key)
  action, policy_state, info = policy.act(actor.policy_state, act_key, actor.env_state.obs)
  nxt, tr = env_step(env, actor.env_state, action)
  ret, length = actor.episode_return + tr.reward, actor.episode_length + 1
  # An episode ends once: without auto reset a finished env keeps reporting done.
  done = (nxt.done > 0.5) & (actor.env_state.done < 0.5)
  ended = Episodes(count=done.astype(jnp.int32), return_sum=jnp.where(done, ret, 0.0),
                   length_sum=jnp.where(done, length, 0))
  stepped = Actor(env_state=nxt, policy_state=policy_state, episode_return=ret,
                  episode_length=length)
  if auto_reset:
    # A select, not a lax.cond: a reset is cheap next to XLA:CPU's cost of a conditional in a
    # scanned step (and under vmap a cond runs both branches anyway).
    fresh = reset(env, policy, reset_key)
    stepped = jax.tree.map(lambda r, s: jnp.where(nxt.done > 0.5, r, s), fresh, stepped)
  return stepped, tr, info, ended


def collect(env: Env, policy: Policy, actor: Actor, key: PRNGKey, steps: int, *,
            auto_reset: bool = True) -> tuple[Actor, Transition, Any, Episodes]:
  """`steps` calls of `step` as a `lax.scan`.

  Returns:
    (actor, transitions [T, ...], info [T, ...], ended): `ended` sums the episodes that
    ended during these steps.
  """
  def body(carry, k):
    actor, ended = carry
    actor, tr, info, now = step(env, policy, actor, k, auto_reset=auto_reset)
    return (actor, jax.tree.map(jnp.add, ended, now)), (tr, info)

  (actor, ended), (transitions, info) = jax.lax.scan(
      body, (actor, Episodes.none()), jax.random.split(key, steps))
  return actor, transitions, info, ended


def episode(env: Env, policy: Policy, key: PRNGKey, max_steps: int) -> EpisodeResult:
  """One episode from a reset, until `done` or `max_steps` steps (then the last step is
  marked truncated unless it terminated). After the end the policy is not called (a
  `lax.cond`; under `vmap` both branches run) and the steps are not valid."""
  reset_key, steps_key = jax.random.split(key)
  actor = reset(env, policy, reset_key)                 # checks the env
  action_shape, _, info_shape = jax.eval_shape(policy.act, actor.policy_state, steps_key,
                                               actor.env_state.obs)
  blank = lambda x: jnp.full(x.shape, jnp.nan if jnp.issubdtype(x.dtype, jnp.floating) else 0,
                             x.dtype)
  nan_info = lambda: jax.tree.map(blank, info_shape)
  # The idle action has the policy's own shape and dtype (a discrete env's is an int []).
  idle = lambda state, key, obs: (jnp.zeros(action_shape.shape, action_shape.dtype), state,
                                  nan_info())

  def body(carry, xs):
    env_state, policy_state, active, ret = carry
    t, k = xs
    action, policy_state, info = jax.lax.cond(active, policy.act, idle, policy_state, k,
                                              env_state.obs)
    nxt, tr = env_step(env, env_state, action)
    cut = (t == max_steps - 1) & (tr.terminated < 0.5)
    tr = tr._replace(truncated=jnp.where(cut, 1.0, tr.truncated))
    ret = ret + jnp.where(active, tr.reward, 0.0)
    return (nxt, policy_state, active & (nxt.done < 0.5), ret), (tr, info, active)

  init = (actor.env_state, actor.policy_state, jnp.asarray(True), jnp.zeros((), jnp.float32))
  (_, _, _, ret), (transitions, info, valid) = jax.lax.scan(
      body, init, (jnp.arange(max_steps), jax.random.split(steps_key, max_steps)))
  return EpisodeResult(transitions=transitions, valid=valid, info=info, ret=ret,
                       length=valid.sum().astype(jnp.int32))


def evaluate(env: Env, policy: Policy, key: PRNGKey, num_episodes: int, max_steps: int
             ) -> EvalResult:
  """`num_episodes` complete episodes (`episode`, vmapped), each ending at `done` or after
  `max_steps` steps: their returns and lengths [N]."""
  results = jax.vmap(lambda k: episode(env, policy, k, max_steps))(
      jax.random.split(key, num_episodes))
  return EvalResult(returns=results.ret, lengths=results.length)
