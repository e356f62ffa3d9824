"""Model-predictive control: re-optimise an action sequence and execute its first action(s).

The controller is a pair of pure functions over an `MPCState`, which carries the optimizer's
`PlanState` (the warm-start mean and, for iCEM, its elites) from one step to the next, shifted
by the actions executed in between. The model parameters are an argument of `act`, so the same
controller serves a model that is refitted between trials.

Example (a known 1-D model: the action moves the state; the reward is -|state|):
  >>> from mbrl_jax.planning import ICEMConfig, make_optimizer, make_trajectory_evaluator
  >>> from mbrl_jax.models import ModelStep
  >>> model = lambda params, key, obs, action: ModelStep(next_obs=obs + params * action,
  ...                                                    reward=-jnp.abs(obs[:, 0]))
  >>> evaluate = make_trajectory_evaluator(model, num_particles=1)
  >>> mpc = make_mpc(make_optimizer(ICEMConfig(population=32), horizon=5, action_size=1),
  ...                evaluate)
  >>> state = mpc.init(jax.random.key(0))
  >>> action, state, info = mpc.act(state, 0.5, jnp.array([2.0]))    # params = 0.5
  >>> bool(action[0] < 0), state.plan_state.elites.shape           # push back towards 0
  (True, (1, 5, 1))
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from mbrl_jax.planning.base import Evaluator, Optimizer, OptimizerInfo, PlanState
from mbrl_jax.types import Params, PRNGKey


class MPCState(NamedTuple):
  """State of an MPC controller.

  Attributes:
    plan: the latest optimised action sequence.                                  # [H, A]
    plan_state: the optimizer's state after that optimisation (not yet shifted).
    offset: actions of `plan` already executed.                                  # [] int32
    key: the controller's random key.
  """

  plan: jax.Array
  plan_state: PlanState
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
  act: Callable[[MPCState, Params, jax.Array], tuple[jax.Array, MPCState, OptimizerInfo]]
  replan_every: int


def make_mpc(optimizer: Optimizer, evaluate: Evaluator, *, replan_every: int = 1) -> MPC:
  """Builds an MPC controller.

  Args:
    optimizer: an action-sequence optimizer (`mbrl_jax.planning.make_optimizer`).
    evaluate: scores action sequences from an observation under model `params`; e.g. a
      `make_trajectory_evaluator(...)` function. The optimizer passes each evaluation its key.
    replan_every: re-optimise every k steps, executing the plan's actions in between. The
      warm start is the optimizer's state shifted by k (`optimizer.shift`: the mean and the
      carried elites lose their first k actions and end with the neutral action).
      With k > 1 the decision is a `lax.cond`: under `vmap` both branches run every step.
  """
  if not isinstance(replan_every, int) or replan_every < 1:
    raise ValueError(f"replan_every must be a positive int, got {replan_every!r}")
  neutral = optimizer.init()                                     # PlanState
  horizon = neutral.mean.shape[0]
  if replan_every > horizon:
    raise ValueError(f"replan_every ({replan_every}) cannot exceed the horizon ({horizon})")

  def init(key: PRNGKey) -> MPCState:
    # offset == replan_every makes the first `act` optimise. The neutral state is "shifted" too
    # (the shift of a midpoint sequence is the same sequence).
    return MPCState(plan=neutral.mean, plan_state=neutral,
                    offset=jnp.asarray(replan_every, jnp.int32), key=key)

  def _replan(state: MPCState, params: Params, obs: jax.Array):
    key, opt_key = jax.random.split(state.key)
    objective = lambda k, actions: evaluate(params, k, obs, actions).returns
    warm = optimizer.shift(state.plan_state, replan_every)
    plan, plan_state, info = optimizer.optimize(opt_key, objective, warm)
    return MPCState(plan=plan, plan_state=plan_state, offset=jnp.zeros((), jnp.int32),
                    key=key), info

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
