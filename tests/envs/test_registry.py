"""make(), registered names and task-fn lookup (no Brax compilation here)."""

from __future__ import annotations

from brax.envs import half_cheetah, inverted_pendulum, walker2d
from brax.envs.wrappers import training
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax import envs


def test_registered_names_cover_ours_and_brax():
  names = envs.registered_names()
  for name in ('cartpole_continuous', 'cartpole_swingup', 'pendulum',
               'inverted_pendulum', 'reacher', 'hopper', 'walker2d',
               'halfcheetah', 'ant', 'humanoid'):
    assert name in names
  assert list(names) == sorted(names)


def test_unknown_name_lists_valid_names():
  with pytest.raises(ValueError, match='Unknown environment') as err:
    envs.make('cartpole-v9')
  for name in ('cartpole_swingup', 'pendulum', 'hopper', 'halfcheetah'):
    assert name in str(err.value)


def test_make_time_limits():
  env = envs.make('pendulum')
  assert isinstance(env, training.EpisodeWrapper)
  assert env.episode_length == 200
  assert isinstance(env.unwrapped, envs.Pendulum)
  assert env.observation_size == 3 and env.action_size == 1
  assert isinstance(envs.make('pendulum', episode_length=None), envs.Pendulum)
  assert envs.make('cartpole_swingup', episode_length=50).episode_length == 50
  assert envs.make('reacher').episode_length == 1000


def test_make_forwards_kwargs_to_our_envs():
  env = envs.make('cartpole_swingup', episode_length=None, pole_length=1.0)
  assert env.pole_length == 1.0
  fns = envs.get_task_fns('cartpole_swingup', pole_length=1.0)
  up = jnp.array([0.0, 0.0, 1.0, 0.0, 0.0])
  side = jnp.array([0.0, 0.0, 0.0, 1.0, 0.0])  # tip at (L, 0): dist^2 = 2 L^2
  assert float(fns.reward_fn(up, jnp.zeros(1), side)) == pytest.approx(np.exp(-2.0))


def test_brax_env_by_name():
  env = envs.make('inverted_pendulum', episode_length=None)
  assert isinstance(env, inverted_pendulum.InvertedPendulum)
  assert env.action_size == 1
  cheetah = envs.make('halfcheetah', episode_length=None)
  assert isinstance(cheetah, half_cheetah.Halfcheetah)
  # x position kept in the obs so the forward reward is a function of obs.
  # pylint: disable-next=protected-access
  assert cheetah._exclude_current_positions_from_observation is False
  walker = envs.make('walker2d', episode_length=None,
                     exclude_current_positions_from_observation=True)
  assert isinstance(walker, walker2d.Walker2d)
  # pylint: disable-next=protected-access
  assert walker._exclude_current_positions_from_observation is True
  assert isinstance(envs.make('hopper', episode_length=None), envs.HopperFullObs)


def test_task_fn_lookup_errors():
  with pytest.raises(ValueError, match='No reward/termination') as err:
    envs.get_task_fns('ant')
  assert 'hopper' in str(err.value) and 'pendulum' in str(err.value)
  with pytest.raises(ValueError, match='exclude_current_positions'):
    envs.get_reward_fn('halfcheetah', exclude_current_positions_from_observation=True)
  with pytest.raises(ValueError, match='No reward/termination'):
    envs.get_termination_fn('nope')


def test_task_fns_reflect_brax_kwargs_and_batch_axes():
  # dt = 0.01 * 5 and ctrl weight 0.1 by default; a different weight is honoured.
  obs = jnp.zeros((18,))
  next_obs = obs.at[0].set(0.5)
  a = jnp.ones((6,))
  r = envs.get_reward_fn('halfcheetah')(obs, a, next_obs)
  assert float(r) == pytest.approx(0.5 / 0.05 - 0.6, rel=1e-5)
  r2 = envs.get_reward_fn('halfcheetah', ctrl_cost_weight=1.0)(obs, a, next_obs)
  assert float(r2) == pytest.approx(0.5 / 0.05 - 6.0, rel=1e-5)
  # Leading batch axes broadcast like vmap.
  fns = envs.get_task_fns('hopper')
  key = jax.random.PRNGKey(0)
  o, n = jax.random.normal(key, (2, 7, 12))
  o = o.at[..., 1].add(1.25)
  n = n.at[..., 1].add(1.25) * jnp.where(jnp.arange(12) == 2, 0.1, 1.0)
  act = jax.random.uniform(key, (7, 3), minval=-1, maxval=1)
  for fn in fns:
    np.testing.assert_allclose(fn(o, act, n), jax.vmap(fn)(o, act, n), rtol=1e-6)
  done = np.asarray(fns.termination_fn(o, act, n))
  z, angle = np.asarray(n[:, 1]), np.asarray(n[:, 2])
  np.testing.assert_array_equal(done, ~((z > 0.7) & (np.abs(angle) < 0.2)))


@pytest.mark.parametrize('module', ['pets', 'mbpo', 'dreamer', 'mpc_control'])
@pytest.mark.parametrize('env', ['catch', 'cartpole_v1'])
def test_continuous_algorithms_refuse_discrete_envs_in_one_line(module, env):
  import importlib
  config_cls = importlib.import_module(f'mbrl_jax.algorithms.{module}').Config
  with pytest.raises(ValueError, match=rf"^{module}\.Config\.env '{env}' has discrete "
                     r"actions; this algorithm needs continuous ones \(discrete envs: "
                     r"cartpole_v1, catch;[^\n]*\)$"):
    config_cls(env=env)


def test_continuous_names_leave_out_the_discrete_envs():
  names = envs.continuous_names()
  assert 'pendulum' in names and 'hopper' in names
  assert not set(envs.DISCRETE_ENVS) & set(names)
  assert set(names) | set(envs.DISCRETE_ENVS) == set(envs.registered_names())
