"""MuZero / AlphaZero: the value transform and two-hot targets, n-step targets and unroll
masks against hand computations (episode ends included), the halved gradient through the
unroll, a tiny learning run that beats its own untrained network, the second chunk compiling
nothing, and bad configs refused before compiling."""

import contextlib
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax

from mbrl_jax import run as run_lib
from mbrl_jax.algorithms import muzero
from tests.conftest import count_compilations


def test_h_transform_round_trip_and_two_hot_targets_by_hand():
  support = muzero.Support(max=1.0, bins=21)                  # bins -1.0, -0.9, ..., 1.0
  inside = jnp.array([-2.0, -0.3, 0.0, 0.7, 2.5])

  @jax.jit
  def compute(x, targets):
    h = rlax.signed_hyperbolic(x)
    back = support.to_scalar(jnp.log(support.to_probs(inside) + 1e-12))
    return h, rlax.signed_parabolic(h), support.to_probs(targets), back

  x = jnp.array([-300.0, -3.0, -0.5, 0.0, 0.5, 3.0, 99.0])
  quarter = float(rlax.signed_parabolic(jnp.float32(0.25)))
  h, round_trip, probs, back = compute(x, jnp.array([0.0, quarter, 3.0, -5.0]))
  # h(3) = sqrt(4) - 1 + 0.001 * 3 = 1.003
  np.testing.assert_allclose(float(h[5]), 1.003, rtol=1e-6)
  np.testing.assert_allclose(round_trip, x, rtol=1e-4, atol=1e-4)
  expected = np.zeros((4, 21))
  expected[0, 10] = 1.0                                       # h = 0: the middle bin
  expected[1, 12] = expected[1, 13] = 0.5                     # h = 0.25: halfway 0.2 / 0.3
  expected[2, 20] = 1.0                                       # h = 1.003 clipped to 1
  expected[3, 0] = 1.0                                        # h < -1 clipped to -1
  np.testing.assert_allclose(probs, expected, atol=1e-3)      # float32 h(h^-1(0.25))
  # Logits that put the two-hot mass back give the scalar back (inside the support).
  np.testing.assert_allclose(back, inside, rtol=1e-3, atol=1e-3)


def test_n_step_targets_by_hand_with_episode_ends():
  r = jnp.arange(1.0, 7.0)                      # 1 .. 6
  v = 10.0 * r                                  # 10 .. 60
  zeros = jnp.zeros(6)
  f = jax.jit(muzero.n_step_targets, static_argnums=(4, 5, 6))
  # No end: z_k = r_k + 0.5 r_{k+1} + 0.25 v_{k+2}.
  np.testing.assert_allclose(f(r, v, zeros, zeros, 0.5, 2, 3), [9.5, 13.5, 17.5])
  # Termination at step 1: z_0 = 1 + 0.5 * 2 (no bootstrap), z_1 = 2; step 2 is a new episode.
  term = zeros.at[1].set(1.0)
  np.testing.assert_allclose(f(r, v, term, zeros, 0.5, 2, 3), [2.0, 2.0, 17.5])
  # Truncation at step 0: z_0 = 1 + 0.5 * v_0 (the last state's value stands in).
  trunc = zeros.at[0].set(1.0)
  np.testing.assert_allclose(f(r, v, zeros, trunc, 0.5, 2, 3), [6.0, 13.5, 17.5])
  with pytest.raises(ValueError, match="shorter than num"):
    muzero.n_step_targets(r, v, zeros, zeros, 0.5, 4, 3)
  # Unroll masks for K = 3 positions after position 0.
  m = muzero.unroll_masks(term, zeros, 3)
  np.testing.assert_array_equal(m.in_episode, [True, True, False, False])
  np.testing.assert_array_equal(m.absorbed, [False, False, True, True])
  m = muzero.unroll_masks(zeros, zeros.at[1].set(1.0), 3)
  np.testing.assert_array_equal(m.in_episode, [True, True, False, False])
  np.testing.assert_array_equal(m.absorbed, [False] * 4)


def test_make_targets_zero_after_termination_and_mask_the_policy():
  config = dataclasses.replace(muzero.PRESETS["quick"], unroll_steps=2, td_steps=1,
                               discount=0.5)
  w = muzero.StepRecord(
      obs=jnp.zeros((4, 50)), action=jnp.zeros(4, jnp.int32), reward=jnp.array([0., 1., 7., 7.]),
      policy=jnp.full((4, 3), 1 / 3), value=jnp.array([2., 4., 8., 8.]),
      is_first=jnp.array([False, False, True, False]),
      terminated=jnp.array([0., 1., 0., 0.]), truncated=jnp.zeros(4))
  t = jax.jit(muzero.make_targets, static_argnums=1)(w, config)
  np.testing.assert_allclose(t.value, [0 + 0.5 * 4, 1.0, 0.0])  # position 2: absorbed
  np.testing.assert_allclose(t.value_weight, [1, 1, 1])
  np.testing.assert_allclose(t.reward, [0.0, 1.0])
  np.testing.assert_allclose(t.policy_weight, [1, 1, 0])


def test_unroll_halves_the_gradient_into_each_dynamics_step():
  # Dynamics latent' = 3 latent: forward 3^k latent_0; backward (3 * 1/2)^k.
  dynamics = lambda params, s, a: (3.0 * s, jnp.zeros(s.shape[:-1] + (5,)))
  latent0 = jnp.array([[1.0, -2.0]])
  actions = jnp.zeros((1, 3), jnp.int32)

  @jax.jit
  def compute(s):
    latents, rewards = muzero.unroll(dynamics, None, s, actions)
    grads = [jax.grad(lambda z, k=k: muzero.unroll(dynamics, None, z, actions)[0][k].sum())(s)
             for k in range(4)]
    hook = jax.grad(lambda x: jnp.sum(muzero.scale_gradient(x, 0.5) * jnp.array([2.0, 4.0])))(
        jnp.ones(2))
    return latents, rewards, grads, hook

  latents, rewards, grads, hook = compute(latent0)
  assert len(latents) == 4 and len(rewards) == 3
  for k in range(4):
    np.testing.assert_allclose(latents[k], 3.0 ** k * latent0)
    np.testing.assert_allclose(grads[k], np.full((1, 2), 1.5 ** k), rtol=1e-6)
  np.testing.assert_allclose(hook, [1.0, 2.0])


# AlphaZero on Catch: the true model with a learned prior and value. With 8 simulations a
# zero-value search cannot see the landing 9 steps ahead, so catching the ball needs the
# learned value and policy.
TINY = muzero.Config(algo="alphazero", env="catch", num_simulations=8, env_steps=2048,
                     steps_per_chunk=1024, num_envs=16, updates_per_step=8, td_steps=9,
                     hidden_sizes=(32,), batch_size=32, replay_capacity=2048,
                     eval_episodes=32, learning_rate=3e-3)


@pytest.fixture(scope="module")
def tiny_run():
  counter = []
  with contextlib.ExitStack() as stack:
    def progress(chunk, metrics):
      if chunk == 0:
        counter.append(stack.enter_context(count_compilations()))

    algorithm = muzero.make(TINY)
    keys = jnp.stack([jax.random.key(s) for s in range(2)])
    state, history = run_lib.train(algorithm, keys, progress_fn=progress)
    compiles = counter[0].count
  return algorithm, keys, state, history, compiles


def test_alphazero_learns_catch_and_the_second_chunk_compiles_nothing(tiny_run):
  algorithm, keys, state, history, compiles = tiny_run
  assert compiles == 0
  np.testing.assert_array_equal(history["env_steps"], [[1024, 1024], [2048, 2048]])
  assert np.all(np.isfinite(history["loss/total"]))
  # The untrained network (same seeds) with the same evaluation.
  parts = muzero.make_parts(TINY)
  fresh = jax.vmap(lambda k: muzero.init(k, TINY).params)(keys)
  untrained = jax.jit(jax.vmap(lambda p, k: muzero.evaluate(parts, TINY, p, k).returns.mean()))(
      fresh, jax.random.split(jax.random.key(7), 2))
  final = history["eval/return"][-1]
  # Random play catches about 1 ball in 5 (mean -0.6); the untrained search scores about 0.
  assert final.mean() >= 0.5 and final.mean() >= float(np.mean(untrained)) + 0.4, (
      final, untrained)


@pytest.mark.parametrize("change,message", [
    (dict(num_simulations=0), "muzero.Config.num_simulations must be a positive int"),
    (dict(unroll_steps=0), "muzero.Config.unroll_steps must be a positive int"),
    (dict(env="pendulum"), "muzero.Config.env 'pendulum' has continuous actions; muzero needs "
     "a discrete-action env: cartpole_v1, catch"),
    (dict(env="nope"), "muzero.Config.env 'nope' is unknown"),
    (dict(algo="dreamer"), "muzero.Config.algo 'dreamer' is unknown"),
    (dict(search="beam"), "muzero.Config.search 'beam' is unknown"),
    (dict(steps_per_chunk=100), r"muzero.Config.steps_per_chunk \(100\) must be a multiple"),
    (dict(batch_size=20), r"muzero.Config.batch_size \(20\) must be a multiple"),
    (dict(support_bins=20), "muzero.Config.support_bins must be odd"),
    (dict(replay_capacity=64), r"muzero.Config.replay_capacity \(64\) leaves each"),
    (dict(env_steps=100), r"muzero.Config.env_steps \(100\) is less than one chunk"),
])
def test_bad_config_is_refused_before_compiling(change, message):
  with count_compilations() as c:
    with pytest.raises(ValueError, match=message):
      muzero.make(dataclasses.replace(muzero.PRESETS["quick"], **change))
  assert c.count == 0


def test_presets_are_valid():
  assert {"catch", "cartpole_v1", "alphazero_catch", "alphazero_cartpole_v1"} <= set(
      muzero.PRESETS)
  assert muzero.PRESETS["alphazero_catch"].unroll == 0 and muzero.PRESETS["catch"].unroll == 5
