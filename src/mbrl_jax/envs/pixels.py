"""Pixel observations for the classic-control envs, as a Brax `Wrapper`."""

from __future__ import annotations

from brax.envs.base import Env, State, Wrapper
import jax

VECTOR_OBS_KEY = 'vector_obs'


class PixelObservation(Wrapper):
  """Replaces ``State.obs`` with a rendered uint8 image [size, size, 3].

  Works for envs whose unwrapped env has ``render_pixels(pipeline_state, size)``
  (cartpole_continuous, cartpole_swingup, pendulum); may sit above or below
  Brax's ``EpisodeWrapper``. Rendering is pure JAX (jit/vmap friendly).

  The underlying state stays available: ``State.pipeline_state`` is untouched and
  the vector observation is kept in ``State.info['vector_obs']`` ([D] float32),
  so the vector env's reward/termination fns apply to
  ``(info['vector_obs'] before, action, info['vector_obs'] after)``. (Under
  Brax's AutoResetWrapper only obs and pipeline_state are reset, so
  ``info['vector_obs']`` then holds the pre-reset terminal obs;
  :func:`mbrl_jax.envs.rollout` resets whole states and has no such caveat.)
  """

  def __init__(self, env: Env, size: int = 64):
    super().__init__(env)
    if not hasattr(env.unwrapped, 'render_pixels'):
      raise ValueError(
          f'{type(env.unwrapped).__name__} has no render_pixels(); pixel '
          'observations are available for cartpole_continuous, '
          'cartpole_swingup and pendulum.'
      )
    self.size = size

  @property
  def observation_size(self) -> tuple[int, int, int]:
    return (self.size, self.size, 3)

  def render(self, pipeline_state: jax.Array) -> jax.Array:
    """Renders one unbatched physical state to uint8 [size, size, 3]."""
    return self.env.unwrapped.render_pixels(pipeline_state, self.size)

  def _with_pixels(self, state: State) -> State:
    info = {**state.info, VECTOR_OBS_KEY: state.obs}
    return state.replace(obs=self.render(state.pipeline_state), info=info)

  def reset(self, rng: jax.Array) -> State:
    return self._with_pixels(self.env.reset(rng))

  def step(self, state: State, action: jax.Array) -> State:
    # Inner envs (and Brax's EpisodeWrapper scan carry) see the vector obs.
    inner = state.replace(obs=state.info[VECTOR_OBS_KEY])
    return self._with_pixels(self.env.step(inner, action))
