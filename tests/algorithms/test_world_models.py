"""World Models: config checks, CMA-ES learning a controller on a cheap true-latent task, one
compiled call per generation (no recompilation of the second), and iterative mode's chunk
(the second iteration compiles nothing; the dataset grows with the controller's episodes)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from evosax.algorithms import CMA_ES

from mbrl_jax.algorithms import world_models as wm
from mbrl_jax.models import mdn_rnn as mdn_lib
from mbrl_jax.models import vae as vae_lib

TINY = wm.Config(image_size=8, episode_length=6, random_episodes=2,
                 vae=vae_lib.VAEConfig(latent=2, depth=2), vae_steps=2, vae_batch=2,
                 mdn=mdn_lib.MDNConfig(hidden=3, mixtures=2), mdn_steps=2, mdn_batch=2,
                 mdn_seq_len=4, generations=2, population=4, rollouts=2, eval_episodes=2)


@pytest.mark.parametrize("changes, match", [
    (dict(env="hopper"), "Config.env 'hopper' has no pixel rendering"),
    (dict(image_size=12), "Config.image_size pixel observations must be square"),
    (dict(mdn_seq_len=300), "Config.mdn_seq_len \\(300\\) must be at most episode_length"),
    (dict(train_in="dream", mdn_steps=0), "Config.mdn_steps must be >= 1 with train_in"),
    (dict(train_in="imagined"), "Config.train_in 'imagined' is unknown"),
    (dict(controller_inputs="h"), "Config.controller_inputs 'h' is unknown"),
    (dict(population=2), "Config.population must be >= 4"),
    (dict(temperature=0.0), "Config.temperature must be in \\(0"),
    (dict(rollouts=0), "Config.rollouts must be a positive int"),
    (dict(iterations=-1), "Config.iterations must be an int >= 0"),
    (dict(iterations=2, collect_episodes=0), "Config.collect_episodes must be a positive int"),
    (dict(iterations=2, collect_noise=-0.1), "Config.collect_noise must be in \\[0"),
    (dict(iterations=2, mdn_steps=0), "Config.mdn_steps must be >= 1 with iterations > 0"),
    (dict(controller_hidden=(16, 0)), "Config.controller_hidden must be positive layer"),
    (dict(controller_hidden=(2.5,)), "Config.controller_hidden must be positive layer"),
])
def test_bad_config(changes, match):
  with pytest.raises(ValueError, match=match):
    dataclasses.replace(wm.PRESETS["pendulum"], **changes)


def test_controller_action_is_tanh_linear():
  theta = jnp.array([1.0, -2.0, 0.5, 3.0, 0.1, -0.2])     # W [2, 2] row-major, then b [2]
  x = jnp.array([0.3, -0.4])
  want = np.tanh(np.array([0.3, -0.4]) @ np.array([[1.0, -2.0], [0.5, 3.0]]) + [0.1, -0.2])
  np.testing.assert_allclose(wm.controller_action(theta, x, 2), want, rtol=1e-6)


def test_mlp_controller_unflattens_theta_layer_by_layer():
  # I = 2 -> H = 2 -> A = 1: theta = [vec(W1) (2 x 2), b1 (2), vec(W2) (2 x 1), b2 (1)].
  theta = jnp.array([1.0, -2.0, 0.5, 3.0, 0.1, -0.2, 0.7, -1.5, 0.3])
  x = np.array([0.3, -0.4])
  h = np.tanh(x @ np.array([[1.0, -2.0], [0.5, 3.0]]) + [0.1, -0.2])
  want = np.tanh(h @ np.array([[0.7], [-1.5]]) + [0.3])
  assert wm.controller_num_params(2, 1, (2,)) == 9
  np.testing.assert_allclose(wm.controller_action(theta, jnp.asarray(x), 1, (2,)), want,
                             rtol=1e-6)
  # The CMA-ES search space is sized from the same shapes: (48 + 1) 16 + (16 + 1) 1 on
  # pendulum's z (16) and h (32) with one hidden layer of 16, 49 for the linear C.
  for hidden, size in (((16,), 801), ((), 49)):
    config = dataclasses.replace(wm.PRESETS["pendulum"], controller_hidden=hidden)
    assert wm.make_parts(config).es.num_dims == size


def _toy_returns(thetas, keys):
  """x' = x + 0.3 a from x_0 ~ U[-1, 1], return -sum_t x_t^2 over 15 steps, controller
  a = tanh(w x + b) on the true state: returns [P, R]."""
  def episode(theta, key):
    def body(x, _):
      x = x + 0.3 * wm.controller_action(theta, x[None], 1)[0]
      return x, -x ** 2
    _, r = jax.lax.scan(body, jax.random.uniform(key, (), minval=-1.0, maxval=1.0), None,
                        length=15)
    return r.sum()
  return jax.vmap(lambda th: jax.vmap(lambda k: episode(th, k))(keys))(thetas)


def test_cma_es_learns_a_controller_on_a_true_latent_task():
  es = CMA_ES(population_size=16, solution=jnp.zeros(2))
  params = es.default_params.replace(std_init=jnp.asarray(0.5))
  parts = wm.Parts(env=None, vae=None, mdn=None, es=es, es_params=params, action_size=1)
  state = wm.init_es(parts, jax.random.key(0))
  gen = jax.jit(lambda s, k: wm.generation(es, params, s, k, _toy_returns, 8))
  eval_keys = jax.random.split(jax.random.key(1), 64)
  start = float(_toy_returns(state.mean[None], eval_keys).mean())         # w = b = 0
  best = []
  for g in range(12):
    state, returns = gen(state, jax.random.key(10 + g))
    best.append(float(returns.mean(1).max()))
  assert gen._cache_size() == 1                        # the second generation compiled nothing
  final = float(_toy_returns(state.mean[None], eval_keys).mean())
  # Doing nothing keeps sum x^2 ~ 15 / 3 = 5; a strong negative gain drives x to 0 in a few
  # steps (about -0.9 here). A broken sign or update stays near -5 or worse.
  assert start < -4.0
  assert final > -1.5, (start, final, best)
  assert state.mean[0] < -1.0                          # the gain that does it is negative


def test_generation_step_compiles_once():
  # The dream step also scores the CMA-ES mean in the real env (V, M and the env stepped
  # together), so it compiles both kinds of episode; a real-mode step is only the latter.
  train_in = "dream"
  config = dataclasses.replace(TINY, train_in=train_in)
  parts = wm.make_parts(config)
  algorithm = wm.make(config)
  assert wm.make(config) is algorithm                  # memoised per config
  state = wm.untrained_state(parts, jax.random.key(0))
  step = jax.jit(algorithm.step)
  state, m1 = step(state)
  state, m2 = step(state)
  assert step._cache_size() == 1
  per_gen = config.population * config.rollouts * config.episode_length
  assert int(m2["env_steps"]) == (2 * per_gen if train_in == "real" else 0)
  assert int(state.generation) == 2
  for m in (m1, m2):
    assert np.isfinite(float(m["eval/return"])) and not bool(m["nonfinite/es"])
    assert float(m["es/best_fitness"]) >= float(m["es/generation_best"]) - 1e-4
  assert ("train/return" in m2) == (train_in == "real")


def test_iteration_compiles_once_and_the_dataset_grows_with_controller_data():
  # Iterative mode, noise-free collection so the controller's actions can be checked exactly:
  # the first iteration collects with a bias-only controller (W = 0, b = 0.5), so every new
  # action is tanh(0.5); rows of the fixed-capacity dataset past `count` stay zero.
  config = dataclasses.replace(TINY, train_in="dream", iterations=2, collect_episodes=2,
                               collect_noise=0.0, refit_steps=2)
  parts = wm.make_parts(config)
  algorithm = wm.make(config)
  assert algorithm.unit == "iteration" and algorithm.num_chunks == 2
  state = wm.untrained_state(parts, jax.random.key(0), config)
  assert state.data.mean.shape == (config.capacity, 7, 2) and int(state.data.count) == 0
  theta = jnp.zeros(parts.es.num_dims).at[-1].set(0.5)
  state = state._replace(es=state.es.replace(mean=theta))
  mdn_before = state.mdn_params
  step = jax.jit(algorithm.step)
  state, m1 = step(state)
  first = np.asarray(state.data.action)
  state, m2 = step(state)
  assert step._cache_size() == 1                       # iteration 2 compiled nothing
  data = state.data
  assert int(data.count) == 4 and [int(m["model/dataset_episodes"]) for m in (m1, m2)] == [2, 4]
  np.testing.assert_allclose(first[:2], np.tanh(0.5), rtol=1e-6)  # the controller's actions
  np.testing.assert_array_equal(np.asarray(data.action[:2]), first[:2])   # kept, not moved
  second = np.asarray(data.action[2:4])
  assert np.all(np.abs(second) <= 1.0) and not np.allclose(second, np.tanh(0.5))  # new C
  np.testing.assert_array_equal(np.asarray(data.action[4:]), 0.0)   # unfilled rows
  assert np.all(np.asarray(data.log_std[:4]) != 0.0)                # V's encodings stored
  assert int(m2["env_steps"]) == 4 * config.episode_length          # dream: collection only
  assert int(state.generation) == 2 * config.generations
  assert not jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)),
                                       mdn_before, state.mdn_params))      # M was refitted
  for m in (m1, m2):
    for name in ("eval/return", "train/return", "es/dream_return", "model/mdn_nll",
                 "model/mdn_nll_collected", "model/vae_recon_collected"):
      assert np.isfinite(float(m[name])), name
    assert not bool(m["nonfinite/es"]) and not bool(m["nonfinite/fitness"])
