"""`make(name)` for our envs and every Brax env, with time limits.

Time limits: ``make`` wraps the env in Brax's ``EpisodeWrapper`` (the way
``brax.envs.create`` does), which sets ``done = 1`` once ``episode_length``
steps have been taken and ``info['truncation'] = 1`` when that happened without
a true termination. Defaults: 200 steps for cartpole_continuous,
cartpole_swingup and pendulum (mbrl-lib / PETS / gym), 500 for cartpole_v1 (gym), 9 for
catch (bsuite), 1000 for Brax envs.
``episode_length=None`` returns the bare env. No AutoResetWrapper is added:
:func:`mbrl_jax.envs.rollout` resets itself so it can record the true final obs.

Brax constructor defaults changed by ``make`` (override any by keyword):

* hopper, walker2d, halfcheetah: ``exclude_current_positions_from_observation=
  False``, so obs[0] is the root x position and the forward reward
  ``w * (x' - x) / dt`` is a function of (obs, next_obs).
* hopper: additionally the velocity part of the obs is NOT clipped to [-10, 10]
  (:class:`HopperFullObs`), because Brax's hopper terminates when any joint
  velocity leaves (-100, 100), which clipped velocities cannot reveal.
"""

from __future__ import annotations

from typing import Any, Callable

from brax import envs as brax_envs
from brax.envs import hopper as brax_hopper
from brax.envs.base import Env
from brax.envs.wrappers import training
import jax
import jax.numpy as jnp

from mbrl_jax.envs.cartpole import CartpoleContinuous, CartpoleSwingup
from mbrl_jax import checks
from mbrl_jax.envs.discrete import CartpoleV1, Catch, DISCRETE_ENVS
from mbrl_jax.envs import dmc
from mbrl_jax.envs import gym_adapter
from mbrl_jax.envs.pendulum import Pendulum


class HopperFullObs(brax_hopper.Hopper):
  """Brax's Hopper with unclipped joint velocities in the observation.

  obs = [q (with q[1] replaced by the torso height z), qd], i.e. with
  ``exclude_current_positions_from_observation=False``:
  [x, z, torso angle, thigh, leg, foot, 6 velocities], [12]. Brax's hopper clips
  qd to [-10, 10] in the obs but terminates on |qd| >= 100, so the unclipped
  velocities are needed for an exact termination_fn. Dynamics, reward and done
  are Brax's, unchanged.
  """

  def _get_obs(self, pipeline_state: Any) -> jax.Array:
    position = pipeline_state.q.at[1].set(pipeline_state.x.pos[0, 2])
    if self._exclude_current_positions_from_observation:
      position = position[1:]
    return jnp.concatenate([position, pipeline_state.qd])


_OURS: dict[str, Callable[..., Env]] = {
    'cartpole_continuous': CartpoleContinuous,
    'cartpole_swingup': CartpoleSwingup,
    'pendulum': Pendulum,
    'cartpole_v1': CartpoleV1,
    'catch': Catch,
}

# Constructor overrides and defaults for Brax envs (see module docstring).
_BRAX_OVERRIDES: dict[str, tuple[Callable[..., Env], dict[str, Any]]] = {
    'hopper': (
        HopperFullObs,
        {'exclude_current_positions_from_observation': False},
    ),
    'walker2d': (
        brax_envs.walker2d.Walker2d,
        {'exclude_current_positions_from_observation': False},
    ),
    'halfcheetah': (
        brax_envs.half_cheetah.Halfcheetah,
        {'exclude_current_positions_from_observation': False},
    ),
}

DEFAULT_EPISODE_LENGTHS: dict[str, int] = {
    'cartpole_continuous': 200, 'cartpole_swingup': 200, 'pendulum': 200,
    'cartpole_v1': 500,  # gym's CartPole-v1
    'catch': 9,          # bsuite: the ball lands after 9 steps (the env ends itself then)
}
BRAX_DEFAULT_EPISODE_LENGTH = 1000


class _Default:

  def __repr__(self) -> str:
    return 'DEFAULT'


DEFAULT: Any = _Default()


def registered_names() -> tuple[str, ...]:
  """All names accepted by :func:`make` (ours and Brax's), sorted."""
  # pylint: disable-next=protected-access
  return tuple(sorted(set(_OURS) | set(brax_envs._envs)))


def continuous_names() -> tuple[str, ...]:
  """The names of :func:`registered_names` whose actions are continuous (all but
  ``envs.discrete.DISCRETE_ENVS``)."""
  return tuple(n for n in registered_names() if n not in DISCRETE_ENVS)


def check_continuous_env(config: Any, field: str = 'env') -> None:
  """A config's env field names a registered env with continuous actions (one-line error)."""
  name = getattr(config, field)
  if gym_adapter.is_gymnasium_name(name):  # "gymnasium:<id>": the adapter checks its spaces
    return gym_adapter.check_name(config, field, continuous=True)
  if dmc.is_dmc_name(name):  # "dmc/<task>[?options]": MuJoCo Playground's DM Control suite
    return dmc.check_name(config, field)
  if name in DISCRETE_ENVS:
    checks.fail(config, field, f'{name!r} has discrete actions; this algorithm needs '
                f'continuous ones (discrete envs: {", ".join(DISCRETE_ENVS)}; '
                f'algorithms.mcts_control and dyna_dqn take them)')
  checks.one_of(config, field, registered_names())


def default_episode_length(name: str) -> int:
  """Episode length used by ``make(name)`` when none is given."""
  if gym_adapter.is_gymnasium_name(name):  # the gymnasium spec's max_episode_steps
    return gym_adapter.default_episode_length(name)
  if dmc.is_dmc_name(name):  # the suite's 1000 env steps over the action repeat
    return dmc.default_episode_length(name)
  _check_name(name)
  return DEFAULT_EPISODE_LENGTHS.get(name, BRAX_DEFAULT_EPISODE_LENGTH)


def _check_name(name: str) -> None:
  if name not in registered_names():
    raise ValueError(
        f'Unknown environment {name!r}. Valid names: '
        + ', '.join(registered_names())
    )


def make_unwrapped(name: str, **kwargs: Any) -> Env:
  """Constructs the bare env `name` (no time limit) with `make`'s defaults."""
  if gym_adapter.is_gymnasium_name(name):  # "gymnasium:<id>": stepped on the host
    return gym_adapter.from_gymnasium(name, **kwargs)
  if dmc.is_dmc_name(name):  # "dmc/<task>[?action_repeat=k&impl=...]": MuJoCo Playground
    return dmc.make_dmc(name, **kwargs)
  _check_name(name)
  if name in _OURS:
    return _OURS[name](**kwargs)
  if name in _BRAX_OVERRIDES:
    ctor, defaults = _BRAX_OVERRIDES[name]
    return ctor(**{**defaults, **kwargs})
  return brax_envs.get_environment(name, **kwargs)


def make(
    name: str,
    episode_length: int | None = DEFAULT,
    action_repeat: int = 1,
    **kwargs: Any,
) -> Env:
  """Creates environment `name`, by default wrapped in a time limit.

  Args:
    name: one of :func:`registered_names` (ours or any Brax env), or "gymnasium:<id>" for
      a gymnasium env stepped on the host (:mod:`mbrl_jax.envs.gym_adapter`).
    episode_length: steps per episode for Brax's ``EpisodeWrapper``; default
      :func:`default_episode_length`; ``None`` for the bare env.
    action_repeat: Brax ``EpisodeWrapper`` action repeat (rewards are summed
      over repeats, so the task fns are only exact for ``action_repeat=1``).
    **kwargs: forwarded to the env constructor (overriding ``make``'s Brax
      defaults, see the module docstring).

  Returns:
    A Brax ``Env`` (unbatched: vmap it or wrap it in ``VmapWrapper``).

  Raises:
    ValueError: unknown name (the message lists the valid names).
  """
  env = make_unwrapped(name, **kwargs)
  if episode_length is DEFAULT:
    episode_length = default_episode_length(name)
    if isinstance(env, Catch):        # the ball lands after rows - 1 steps, however many rows
      episode_length = env.rows - 1
  if episode_length is not None:
    env = training.EpisodeWrapper(env, episode_length, action_repeat)
  return env
