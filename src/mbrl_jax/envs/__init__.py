"""mbrl_jax.envs: environments on Brax's `Env` API, task fns and rollouts.

* :func:`make` / :func:`registered_names`: our pure-JAX classic-control envs
  (``cartpole_continuous``, ``cartpole_swingup``, ``pendulum``; actions in
  [-1, 1], 200-step episodes), the discrete ones of :mod:`mbrl_jax.envs.discrete`
  (``cartpole_v1``, ``catch``: int32 [] actions, ``num_actions``, a true ``model_step``
  for tree search; ``DISCRETE_ENVS``) and every Brax env by name, time-limited with
  Brax's ``EpisodeWrapper``; ``"gymnasium:<id>"`` (:mod:`mbrl_jax.envs.gym_adapter`) and
  ``"dmc/<task>[?action_repeat=k]"``, DeepMind Control through MuJoCo Playground
  (:mod:`mbrl_jax.envs.dmc`, the ``dmc`` extra).
* :func:`get_task_fns` (and :func:`get_reward_fn`, :func:`get_termination_fn`):
  ``fn(obs, action, next_obs)`` that reproduce the env's reward and done exactly;
  :func:`has_termination_fn` also answers for the dmc tasks without a closed-form reward.
* :class:`PixelObservation`: uint8 [size, size, 3] image observations.
* :mod:`mbrl_jax.envs.acting`: one policy type with its own state and the one
  way to step, collect and evaluate (``acting.step``, ``collect``, ``episode``,
  ``evaluate``), used by every algorithm.
* :mod:`mbrl_jax.envs.maze`: Sutton & Barto's chapter-8 grid mazes ("dyna",
  "blocking", "shortcut") as pure functions (``transition``, ``walls_at``,
  ``recurrent_model`` for tree search) and the discrete-action env :class:`Maze`.
* :func:`rollout` / :func:`batch_rollout`: ``lax.scan`` rollouts of a stateless
  ``policy_fn(key, obs)``, returning :class:`mbrl_jax.types.Transition` with a
  leading time axis.
"""

from mbrl_jax.envs import acting
from mbrl_jax.envs import discrete
from mbrl_jax.envs import dmc
from mbrl_jax.envs import maze

from mbrl_jax.envs.cartpole import CartpoleContinuous
from mbrl_jax.envs.cartpole import CartpoleSwingup
from mbrl_jax.envs.discrete import CartpoleV1
from mbrl_jax.envs.discrete import Catch
from mbrl_jax.envs.discrete import DISCRETE_ENVS
from mbrl_jax.envs.discrete import num_actions
from mbrl_jax.envs.gym_adapter import from_gymnasium
from mbrl_jax.envs.maze import Maze
from mbrl_jax.envs.pendulum import Pendulum
from mbrl_jax.envs.pixels import PixelObservation
from mbrl_jax.envs.registry import check_continuous_env
from mbrl_jax.envs.registry import continuous_names
from mbrl_jax.envs.registry import default_episode_length
from mbrl_jax.envs.registry import HopperFullObs
from mbrl_jax.envs.registry import make
from mbrl_jax.envs.registry import make_unwrapped
from mbrl_jax.envs.registry import registered_names
from mbrl_jax.envs.rollout import batch_rollout
from mbrl_jax.envs.rollout import random_policy
from mbrl_jax.envs.rollout import rollout
from mbrl_jax.envs.task_fns import get_reward_fn
from mbrl_jax.envs.task_fns import get_task_fns
from mbrl_jax.envs.task_fns import get_termination_fn
from mbrl_jax.envs.task_fns import has_termination_fn
from mbrl_jax.envs.task_fns import task_fn_names
from mbrl_jax.envs.task_fns import TaskFns

__all__ = [
    'CartpoleContinuous',
    'CartpoleSwingup',
    'CartpoleV1',
    'Catch',
    'DISCRETE_ENVS',
    'HopperFullObs',
    'Maze',
    'Pendulum',
    'PixelObservation',
    'TaskFns',
    'acting',
    'check_continuous_env',
    'continuous_names',
    'batch_rollout',
    'default_episode_length',
    'discrete',
    'from_gymnasium',
    'get_reward_fn',
    'get_task_fns',
    'get_termination_fn',
    'has_termination_fn',
    'make',
    'maze',
    'make_unwrapped',
    'num_actions',
    'random_policy',
    'registered_names',
    'rollout',
    'task_fn_names',
]
