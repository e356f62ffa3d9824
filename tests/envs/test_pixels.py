"""PixelObservation wrapper and the JAX rasteriser."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax import envs
from mbrl_jax.envs import rendering

SIZE = 32


def _is_cart(img):
  """Cart-coloured pixels (dark blue): [S, S] bool."""
  img = np.asarray(img, np.int32)
  return (img[..., 2] - img[..., 0] > 60) & (img[..., 2] < 200)


def _is_pole(img):
  """Pole-coloured pixels (orange): [S, S] bool."""
  img = np.asarray(img, np.int32)
  return (img[..., 0] - img[..., 2] > 60)


def _centroid(mask):
  rows, cols = np.nonzero(mask)
  return rows.mean(), cols.mean()


@pytest.mark.parametrize(
    'name, vec_dim', [('cartpole_continuous', 4), ('cartpole_swingup', 5), ('pendulum', 3)])
def test_pixel_env_shapes_jit_vmap(name, vec_dim):
  env = envs.PixelObservation(envs.make(name), size=SIZE)
  assert env.observation_size == (SIZE, SIZE, 3)
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  reset = jax.jit(jax.vmap(env.reset))
  step = jax.jit(jax.vmap(env.step))
  state = reset(keys)
  assert state.obs.shape == (3, SIZE, SIZE, 3) and state.obs.dtype == jnp.uint8
  next_state = step(state, jnp.ones((3, 1)))
  assert next_state.obs.shape == (3, SIZE, SIZE, 3)
  assert next_state.obs.dtype == jnp.uint8
  # The vector obs and the dynamics are those of the vector env.
  vec_env = envs.make(name)
  vec_next = jax.jit(jax.vmap(vec_env.step))(jax.vmap(vec_env.reset)(keys), jnp.ones((3, 1)))
  assert next_state.info['vector_obs'].shape == (3, vec_dim)
  np.testing.assert_allclose(next_state.info['vector_obs'], vec_next.obs, atol=1e-6)
  np.testing.assert_allclose(next_state.reward, vec_next.reward, atol=1e-6)
  reward_fn = envs.get_reward_fn(name)
  np.testing.assert_allclose(
      reward_fn(state.info['vector_obs'], jnp.ones((3, 1)), next_state.info['vector_obs']),
      next_state.reward, atol=1e-5)
  # Different initial states give different images.
  assert np.any(np.asarray(state.obs[0]) != np.asarray(state.obs[1]))


def test_cart_position_moves_cart_pixels():
  env = envs.CartpoleContinuous()
  render = jax.jit(lambda q: env.render_pixels(q, 64))
  left = render(jnp.array([-1.0, 0.0, 0.0, 0.0]))
  right = render(jnp.array([1.0, 0.0, 0.0, 0.0]))
  (rl, cl), (rr, cr) = _centroid(_is_cart(left)), _centroid(_is_cart(right))
  px = 5.2 / 64  # world units per pixel of the cartpole_continuous view
  assert cr - cl == pytest.approx(2.0 / px, abs=1.0)
  assert rl == pytest.approx(rr)
  assert _is_cart(left).sum() == pytest.approx(_is_cart(right).sum(), abs=3)


def test_pole_angle_changes_pole_pixels():
  env = envs.CartpoleSwingup()
  render = jax.jit(lambda q: env.render_pixels(q, 64))
  up = render(jnp.array([0.0, 0.0, 0.0, 0.0]))
  down = render(jnp.array([0.0, 0.0, np.pi, 0.0]))
  lean = render(jnp.array([0.0, 0.0, 0.5 * np.pi, 0.0]))  # towards +x
  centre = 31.5
  r_up, c_up = _centroid(_is_pole(up))
  r_down, c_down = _centroid(_is_pole(down))
  r_lean, c_lean = _centroid(_is_pole(lean))
  assert r_up < centre - 2 and r_down > centre + 2  # row 0 is the top
  assert c_up == pytest.approx(centre, abs=1) and c_down == pytest.approx(centre, abs=1)
  assert c_lean > centre + 2 and r_lean == pytest.approx(centre, abs=1.5)


def test_pendulum_rod_follows_angle():
  env = envs.Pendulum()
  render = jax.jit(jax.vmap(lambda q: env.render_pixels(q, 48)))
  imgs = render(jnp.array([[0.0, 0.0], [np.pi, 0.0], [0.5 * np.pi, 0.0]]))
  lit = [_is_pole(img) for img in imgs]
  centre = 23.5
  assert _centroid(lit[0])[0] < centre - 3  # upright: rod above the pivot
  assert _centroid(lit[1])[0] > centre + 3  # hanging
  assert _centroid(lit[2])[1] < centre - 3  # th = pi/2: tip at (-1, 0), as gym draws
  assert not np.array_equal(np.asarray(imgs[0]), np.asarray(imgs[1]))


def test_segment_alpha_is_a_capsule():
  u, v, px = rendering.pixel_grid(40, (0.0, 0.0), 2.0)
  alpha = rendering.segment_alpha(
      u, v, jnp.array([-1.0, 0.0]), jnp.array([1.0, 0.0]), 0.25, px)
  alpha = np.asarray(alpha)
  assert alpha.min() == 0.0 and alpha.max() == 1.0
  # Area ~ 2 * 2r + pi r^2 in world units.
  area = alpha.sum() * px**2
  assert area == pytest.approx(4 * 0.25 + np.pi * 0.25**2, rel=0.05)


def test_pixel_wrapper_rejects_envs_without_renderer():
  with pytest.raises(ValueError, match='render_pixels'):
    envs.PixelObservation(envs.make('reacher'))


def test_pixel_rollout_with_time_limit_outside():
  from brax.envs.wrappers import training  # pylint: disable=g-import-not-at-top
  base = envs.make('pendulum', episode_length=None)
  env = training.EpisodeWrapper(envs.PixelObservation(base, size=SIZE), 4, 1)
  tr, final = jax.jit(
      lambda k: envs.batch_rollout(env, envs.random_policy(1), k, 2, 6)
  )(jax.random.PRNGKey(7))
  assert tr.obs.shape == (2, 6, SIZE, SIZE, 3) and tr.obs.dtype == jnp.uint8
  np.testing.assert_array_equal(tr.truncated[:, 3], 1.0)
  assert final.info['vector_obs'].shape == (2, 3)
  # Each image is the rendering of its vector state.
  np.testing.assert_array_equal(
      final.obs, jax.vmap(lambda q: base.render_pixels(q, SIZE))(final.pipeline_state))
