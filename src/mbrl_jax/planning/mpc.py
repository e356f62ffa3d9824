"""Model-predictive control: re-optimise an action sequence and execute its first action(s).

The controller is a pair of pure functions over an `MPCState`; the model parameters are an
argument of `act`, so the same controller serves a model that is refitted between trials.

Example:
  >>> evaluate = make_trajectory_evaluator(partial(ens.predict, mode="tsinf"), reward_fn=...)
  >>> mpc = make_mpc(make_cem(horizon=15, action_size=1), evaluate)
  >>> state = mpc.init(key)
  >>> action, state, info = mpc.act(state, params, obs)
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from mbrl_jax.planning.optimizers import Optimizer, OptimizerInfo, shift
from mbrl_jax.types import Params, PRNGKey


class MPCState(NamedTuple):
  """State of an MPC controller.

  Attributes:
    plan: the latest optimised action sequence (warm start of the next optimisation). # [H, A]
    offset: actions of `plan` already executed.                                        # [] int32
    key: the controller's random key.
  """

  plan: jax.Array
  offset: jax.Array
  key: PRNGKey


class MPC(NamedTuple):
  """Pure functions of an MPC controller. Build with `make_mpc`.

  Attributes:
    init: `init(key) -> MPCState`.
    act: `act(state, params, obs) -> (action [A], MPCState, OptimizerInfo)`; the info is that
      of this step's optimisation, NaN-filled on steps that did not replan.
    replan_every: actions executed from one plan before re-optimising.
  """

  init: Callable[[PRNGKey], MPCState]
  act: Callable[..., tuple[jax.Array, MPCState, OptimizerInfo]]
  replan_every: int


# evaluate(params, key, obs [O], actions [P, H, A]) -> returns [P] (or an object with .returns)
Evaluator = Callable[[Params, PRNGKey, jax.Array, jax.Array], Any]


def make_mpc(optimizer: Optimizer, evaluate: Evaluator, *, replan_every: int = 1) -> MPC:
  """Builds an MPC controller.

  Args:
    optimizer: an action-sequence optimizer (`mbrl_jax.planning.make_cem`, ...).
    evaluate: scores action sequences from an observation under model `params`; e.g. a
      `make_trajectory_evaluator(...)` function.
    replan_every: re-optimise every k steps, executing the plan's actions in between. The
      warm start is the previous plan shifted by k, padded with the optimizer's initial mean.
      With k > 1 the decision is a `lax.cond`: under `vmap` both branches run every step.
  """
  if not isinstance(replan_every, int) or replan_every < 1:
    raise ValueError(f"replan_every must be a positive int, got {replan_every!r}")
  neutral = optimizer.init()                                     # [H, A]
  horizon = neutral.shape[0]
  if replan_every > horizon:
    raise ValueError(f"replan_every ({replan_every}) cannot exceed the horizon ({horizon})")

  def init(key: PRNGKey) -> MPCState:
    # offset == replan_every makes the first `act` optimise, from the neutral plan.
    return MPCState(plan=neutral, offset=jnp.asarray(replan_every, jnp.int32), key=key)

  def _scores(params, key, obs):
    def objective(actions):
      out = evaluate(params, key, obs, actions)
      return getattr(out, "returns", out)
    return objective

  def _replan(state: MPCState, params: Params, obs: jax.Array):
    key, opt_key, eval_key = jax.random.split(state.key, 3)
    warm = shift(state.plan, neutral[-1], steps=replan_every)
    plan, info = optimizer.optimize(opt_key, _scores(params, eval_key, obs), warm)
    return MPCState(plan=plan, offset=jnp.zeros((), jnp.int32), key=key), info

  def act(state: MPCState, params: Params,
          obs: jax.Array) -> tuple[jax.Array, MPCState, OptimizerInfo]:
    if replan_every == 1:
      state, info = _replan(state, params, obs)
    else:
      info_shape = jax.eval_shape(lambda: _replan(state, params, obs)[1])
      keep = lambda s: (s, jax.tree.map(lambda x: jnp.full(x.shape, jnp.nan, x.dtype), info_shape))
      state, info = jax.lax.cond(state.offset >= replan_every,
                                 lambda s: _replan(s, params, obs), keep, state)
    action = state.plan[state.offset]
    return action, state._replace(offset=state.offset + 1), info

  return MPC(init=init, act=act, replan_every=replan_every)
