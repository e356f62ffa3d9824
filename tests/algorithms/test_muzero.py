"""MuZero / AlphaZero: the value transform and two-hot targets, n-step targets and unroll
masks against hand computations (episode ends included, a truncation bootstrapping from the
state it reached), the unroll's gradient factors by hand and the loss's gradient against a
hand-written backward pass with MuZero's explicit factors, reanalyse against direct searches,
a tiny learning run that beats its own untrained network, the second chunk compiling nothing
(also with reanalyse), and bad configs refused before compiling."""

import contextlib
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax

from mbrl_jax import envs
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
  b = 100.0 * r                                 # values of the states reached: 100 .. 600
  zeros = jnp.zeros(6)
  f = jax.jit(muzero.n_step_targets, static_argnums=(5, 6, 7))
  # No end: z_k = r_k + 0.5 r_{k+1} + 0.25 v_{k+2}.
  np.testing.assert_allclose(f(r, v, zeros, zeros, b, 0.5, 2, 3), [9.5, 13.5, 17.5])
  # Termination at step 1: z_0 = 1 + 0.5 * 2 (no bootstrap), z_1 = 2; step 2 is a new episode.
  term = zeros.at[1].set(1.0)
  np.testing.assert_allclose(f(r, v, term, zeros, b, 0.5, 2, 3), [2.0, 2.0, 17.5])
  # Truncation at step 0: z_0 = 1 + 0.5 * b_0 (the state step 0 reached; v_1 is the next
  # episode's).
  trunc = zeros.at[0].set(1.0)
  np.testing.assert_allclose(f(r, v, zeros, trunc, b, 0.5, 2, 3), [51.0, 13.5, 17.5])
  # Truncation at step 1: z_0 = 1 + 0.5 * 2 + 0.25 * b_1, z_1 = 2 + 0.5 * b_1.
  trunc = zeros.at[1].set(1.0)
  np.testing.assert_allclose(f(r, v, zeros, trunc, b, 0.5, 2, 3), [52.0, 102.0, 17.5])
  with pytest.raises(ValueError, match="shorter than num"):
    muzero.n_step_targets(r, v, zeros, zeros, b, 0.5, 4, 3)
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
      bootstrap=jnp.full(4, 50.0), is_first=jnp.array([False, False, True, False]),
      terminated=jnp.array([0., 1., 0., 0.]), truncated=jnp.zeros(4))
  targets = jax.jit(muzero.make_targets, static_argnums=1)
  t = targets(w, config)
  np.testing.assert_allclose(t.value, [0 + 0.5 * 4, 1.0, 0.0])  # position 2: absorbed
  np.testing.assert_allclose(t.value_weight, [1, 1, 1])
  np.testing.assert_allclose(t.reward, [0.0, 1.0])
  np.testing.assert_allclose(t.policy_weight, [1, 1, 0])
  # The same window cut by the time limit at step 1 instead: z_1 = r_1 + 0.5 b_1 (the value
  # of the state step 1 reached, not v_1 of the state it left nor v_2 of the next episode),
  # z_0 = r_0 + 0.5 v_1 (td_steps 1: no end in its one step); position 2 (the next episode)
  # carries no targets.
  cut = w._replace(terminated=jnp.zeros(4), truncated=jnp.array([0., 1., 0., 0.]),
                   bootstrap=jnp.array([30., 50., 70., 90.]))
  t = targets(cut, config)
  np.testing.assert_allclose(t.value, [0 + 0.5 * 4, 1.0 + 0.5 * 50, 0.0])
  np.testing.assert_allclose(t.value_weight, [1, 1, 0])
  np.testing.assert_allclose(t.reward_weight, [1, 1])
  np.testing.assert_allclose(t.policy_weight, [1, 1, 0])


def test_unroll_gradient_factors_by_hand():
  # Dynamics latent' = 3 latent with reward logits = the latent it was given. Forward:
  # latent_k = 3^k latent_0, reward_k = 3^k latent_0. Backward (MuZero's pseudocode: the
  # gradient halved where latent_k, k >= 1, enters the next dynamics step): latent_k reaches
  # latent_0 with 3^k 2^-(k-1) (k >= 1), reward_k with 3^k 2^-k.
  dynamics = lambda params, s, a: (3.0 * s, s)
  latent0 = jnp.array([[1.0, -2.0]])
  actions = jnp.zeros((1, 3), jnp.int32)
  unroll = lambda z: muzero.unroll(dynamics, None, z, actions)

  @jax.jit
  def compute(s):
    latents, rewards = unroll(s)
    grad_latent = [jax.grad(lambda z, k=k: unroll(z)[0][k].sum())(s) for k in range(4)]
    grad_reward = [jax.grad(lambda z, k=k: unroll(z)[1][k].sum())(s) for k in range(3)]
    hook = jax.grad(lambda x: jnp.sum(muzero.scale_gradient(x, 0.5) * jnp.array([2.0, 4.0])))(
        jnp.ones(2))
    return latents, rewards, grad_latent, grad_reward, hook, muzero.scale_gradient(s, 0.5)

  latents, rewards, grad_latent, grad_reward, hook, same = compute(latent0)
  assert len(latents) == 4 and len(rewards) == 3
  for k, factor in enumerate([1.0, 3.0, 4.5, 6.75]):          # 1, 3, 9 / 2, 27 / 4
    np.testing.assert_allclose(latents[k], 3.0 ** k * latent0)
    np.testing.assert_allclose(grad_latent[k], np.full((1, 2), factor), rtol=1e-6)
  for k, factor in enumerate([1.0, 1.5, 2.25]):               # (3 / 2)^k
    np.testing.assert_allclose(rewards[k], 3.0 ** k * latent0)
    np.testing.assert_allclose(grad_reward[k], np.full((1, 2), factor), rtol=1e-6)
  np.testing.assert_allclose(hook, [1.0, 2.0])
  np.testing.assert_array_equal(same, latent0)                # the identity forward


def _reference_loss_and_grad(nets, support, config, params, window):
  """MuZero's loss and its gradient with the pseudocode's factors written out by hand: a
  forward pass keeping every network call's VJP, then a backward pass that hands each
  latent's cotangent back step by step, multiplying by 1 / K at every unrolled position's
  loss and by 1 / 2 where a dynamics step passes its input latent's cotangent back (except
  into latent_0 = h(obs), whose first dynamics step is not scaled). No scale_gradient."""
  k_steps = config.unroll
  t = jax.vmap(lambda w: muzero.make_targets(w, config))(window)
  weight = [1.0] + [1.0 / k_steps] * k_steps
  ce = muzero.cross_entropy

  def prediction_loss(p, latent, k):
    logits, value_logits = nets.predict(p, latent)
    return jnp.mean(t.policy_weight[:, k] * ce(t.policy[:, k], logits) + config.value_coef *
                    t.value_weight[:, k] * ce(support.to_probs(t.value[:, k]), value_logits))

  def reward_loss(reward_logits, k):
    return jnp.mean(t.reward_weight[:, k] * ce(support.to_probs(t.reward[:, k]), reward_logits))

  latent0, h_vjp = jax.vjp(lambda p: nets.represent(p, window.obs[:, 0]), params)
  latents, reward_logits, g_vjps = [latent0], [], []
  for k in range(k_steps):
    (latent, r), g_vjp = jax.vjp(
        lambda p, s, k=k: nets.dynamics(p, s, window.action[:, k]), params, latents[-1])
    latents.append(latent)
    reward_logits.append(r)
    g_vjps.append(g_vjp)
  total = 0.0
  grads = jax.tree.map(jnp.zeros_like, params)
  add = lambda a, b, c=1.0: jax.tree.map(lambda x, y: x + c * y, a, b)
  cotangent = []
  for k in range(k_steps + 1):
    value, (g_params, g_latent) = jax.value_and_grad(prediction_loss, argnums=(0, 1))(
        params, latents[k], k)
    total += value
    grads = add(grads, g_params, weight[k])
    cotangent.append(weight[k] * g_latent)
  carry = cotangent[k_steps]
  for k in reversed(range(k_steps)):           # step k: latent_k -> latent_{k+1}, reward k
    value, g_reward = jax.value_and_grad(reward_loss)(reward_logits[k], k)
    total += value
    g_params, g_latent = g_vjps[k]((carry, weight[k + 1] * g_reward))
    grads = add(grads, g_params)
    carry = cotangent[k] + (0.5 if k >= 1 else 1.0) * g_latent
  grads = add(grads, h_vjp(carry)[0])
  return total, grads


def test_loss_gradient_matches_a_hand_written_backward_pass_with_muzeros_factors():
  config = dataclasses.replace(muzero.PRESETS["quick"], unroll_steps=3, td_steps=2,
                               hidden_sizes=(16,), latent_size=8, discount=0.9)
  parts = muzero.make_parts(config)
  nets, support = parts.nets, parts.support
  b, length, a = 6, config.window, parts.num_actions

  def setup(key):
    ks = jax.random.split(key, 8)
    window = muzero.StepRecord(
        obs=jax.random.bernoulli(ks[0], 0.2, (b, length, 50)).astype(jnp.float32),
        action=jax.random.randint(ks[1], (b, length), 0, a),
        reward=jax.random.randint(ks[2], (b, length), -1, 2).astype(jnp.float32),
        policy=jax.nn.softmax(jax.random.normal(ks[3], (b, length, a))),
        value=jax.random.uniform(ks[4], (b, length), minval=-1, maxval=1),
        bootstrap=jax.random.uniform(ks[5], (b, length), minval=-1, maxval=1),
        is_first=jnp.zeros((b, length), bool),
        # window 0 terminates after position 1, window 1 is truncated after position 2.
        terminated=jnp.zeros((b, length)).at[0, 1].set(1.0),
        truncated=jnp.zeros((b, length)).at[1, 2].set(1.0))
    # Trained-looking parameters: the zero-initialised heads would give zero gradients.
    leaves, treedef = jax.tree.flatten(nets.init(ks[6]))
    params = jax.tree.unflatten(treedef, [
        x + 0.3 * jax.random.normal(k, x.shape)
        for x, k in zip(leaves, jax.random.split(ks[7], len(leaves)))])
    return params, window

  @jax.jit
  def compute(key):
    params, window = setup(key)
    (loss, _), grads = jax.value_and_grad(
        lambda p: muzero.loss_fn(nets, support, config, p, window, jnp.array(True)),
        has_aux=True)(params)
    return loss, grads, _reference_loss_and_grad(nets, support, config, params, window)

  loss, grads, (ref_loss, ref_grads) = compute(jax.random.key(3))
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)      # loss values: unscaled
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(grads)]
  for path, g, ref in zip(paths, jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    assert np.abs(ref).max() > 1e-6, path
    np.testing.assert_allclose(g, ref, rtol=2e-4, atol=1e-6, err_msg=path)


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


# MuZero with reanalyse on CartPole-v1 cut to 8-step episodes (so most end by the time
# limit), tiny sizes. The learning rate is ~0 so that the parameters stay the perturbed ones
# they start from (non-zero heads), the ones every stored search and bootstrap was made with.
TINY_REANALYSE = muzero.Config(
    env="cartpole_v1", num_simulations=2, env_steps=128, steps_per_chunk=64, num_envs=8,
    updates_per_step=1, unroll_steps=2, td_steps=2, discount=0.9, latent_size=8,
    hidden_sizes=(16,), support_max=3.0, support_bins=11, batch_size=16, replay_capacity=128,
    eval_episodes=2, episode_length=8, reanalyse=True, learning_rate=1e-9)


@pytest.fixture(scope="module")
def reanalyse_run():
  algorithm = muzero.make(TINY_REANALYSE)

  @jax.jit
  def start(key):
    state, _ = algorithm.init(key)
    leaves, treedef = jax.tree.flatten(state.params)
    params = jax.tree.unflatten(treedef, [
        x + 0.3 * jax.random.normal(k, x.shape)
        for x, k in zip(leaves, jax.random.split(jax.random.key(9), len(leaves)))])
    return state._replace(params=params)

  step = jax.jit(algorithm.step)
  state, _ = step(start(jax.random.key(0)))
  jax.block_until_ready(state)
  with count_compilations() as c:
    state, metrics = step(state)
    jax.block_until_ready(state)
  return muzero.make_parts(TINY_REANALYSE), state, metrics, c.count


def test_a_chunk_with_reanalyse_runs_and_its_second_call_compiles_nothing(reanalyse_run):
  _, state, metrics, compiles = reanalyse_run
  assert compiles == 0
  assert int(metrics["env_steps"]) == 128 and int(state.updates) == 16
  assert np.isfinite(float(metrics["loss/total"])) and float(metrics["loss/total"]) > 0
  assert not bool(metrics["nonfinite/params"])


def test_reanalyse_targets_are_a_fresh_search_with_the_current_params(reanalyse_run):
  parts, state, _, _ = reanalyse_run
  length = TINY_REANALYSE.window
  windows = jax.tree.map(lambda x: x[:, :length], state.buffer.data)       # [8, L, ...]

  @jax.jit
  def compute(params, key, windows):
    # reanalyse, and the greedy search called directly on the same observations and key.
    return muzero.reanalyse(parts, params, key, windows), parts.eval_search.plan(
        params, key, windows.obs.reshape(-1, windows.obs.shape[-1]))[1]

  fresh, info = compute(state.params, jax.random.key(5), windows)
  np.testing.assert_array_equal(fresh.value, info.root_value.reshape(8, length))
  np.testing.assert_array_equal(fresh.policy, info.action_weights.reshape(8, length, -1))
  # The acting search (root noise, sampled actions) stored other values; the rest is kept.
  assert np.abs(fresh.value - windows.value).max() > 1e-3
  for name in ("obs", "action", "reward", "bootstrap", "terminated", "truncated"):
    np.testing.assert_array_equal(getattr(fresh, name), getattr(windows, name))


def test_a_truncated_step_bootstraps_from_the_state_it_reached(reanalyse_run):
  parts, state, _, _ = reanalyse_run
  data = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), state.buffer.data)  # [N C]
  truncated = np.asarray(data.truncated) > 0.5
  assert truncated.sum() >= 8                       # every env's 8-step episodes
  model = envs.make("cartpole_v1", episode_length=None).model_step

  @jax.jit
  def expected(params, obs, action):
    _, _, reached = jax.vmap(model)(obs, action)    # the true next state of every step
    return (muzero.predicted_value(parts, params, reached),
            muzero.predicted_value(parts, params, obs))

  reached, left = expected(state.params, data.obs, data.action)
  assert np.std(np.asarray(reached)) > 1e-2         # the perturbed value head is not flat
  np.testing.assert_allclose(data.bootstrap, reached, rtol=1e-4, atol=1e-4)
  # At a truncation that is not the value of the state the step left.
  assert np.abs(np.asarray(data.bootstrap - left)[truncated]).min() > 0.0


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
