"""RSSM world model: KL balancing and free bits, straight-through categoricals, filtering
consistency, imagination, and the loss falling on a fixed batch (tiny sizes)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mbrl_jax.models import rssm
from mbrl_jax.types import Transition

TINY = rssm.WorldModelConfig(deter=32, stoch=4, classes=4, hidden=32, mlp_layers=1,
                             cnn_depth=4)


# ---------------------------------------------------------------------------- distributions


def test_categorical_kl_hand_value():
  p = jnp.log(jnp.array([[0.5, 0.5], [0.9, 0.1]]))          # [G=2, C=2]
  q = jnp.log(jnp.array([[0.25, 0.75], [0.5, 0.5]]))
  want = (0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
          + 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5))
  np.testing.assert_allclose(rssm.categorical_kl(p, q), want, rtol=1e-5)


def test_kl_balancing_gradients_and_free_bits():
  post = jnp.log(jnp.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]))   # [G=2, C=3], KL ~ 1.6
  prior = jnp.log(jnp.array([[0.2, 0.5, 0.3], [0.4, 0.4, 0.2]]))
  kl = float(rssm.categorical_kl(post, prior))
  assert kl > 1.0

  def term(name, free):
    return lambda a, b: rssm.kl_loss(a, b, free_nats=free)[1][name]

  # Values: dyn and rep are both KL(post || prior) (balancing only changes the gradients).
  loss, terms = rssm.kl_loss(post, prior, free_nats=1.0, dyn_scale=1.0, rep_scale=0.1)
  np.testing.assert_allclose([terms["dyn"], terms["rep"]], [kl, kl], rtol=1e-5)
  np.testing.assert_allclose(loss, 1.1 * kl, rtol=1e-5)
  # dyn trains only the prior, rep only the posterior.
  g_post, g_prior = jax.grad(term("dyn", 1.0), argnums=(0, 1))(post, prior)
  assert np.all(np.asarray(g_post) == 0.0) and np.abs(g_prior).max() > 1e-3
  g_post, g_prior = jax.grad(term("rep", 1.0), argnums=(0, 1))(post, prior)
  assert np.abs(g_post).max() > 1e-3 and np.all(np.asarray(g_prior) == 0.0)
  # The loss's gradients are those of the two terms, scaled 1.0 and 0.1.
  total = lambda a, b: rssm.kl_loss(a, b, free_nats=1.0)[0]
  g_post_total, g_prior_total = jax.grad(total, argnums=(0, 1))(post, prior)
  g_rep_post = jax.grad(term("rep", 1.0), argnums=0)(post, prior)
  g_dyn_prior = jax.grad(term("dyn", 1.0), argnums=1)(post, prior)
  np.testing.assert_allclose(g_post_total, 0.1 * g_rep_post, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(g_prior_total, g_dyn_prior, rtol=1e-5, atol=1e-7)
  # Free bits: below the threshold the term is the constant and carries no gradient.
  loss, terms = rssm.kl_loss(post, prior, free_nats=2.0)
  np.testing.assert_allclose([terms["dyn"], terms["rep"], terms["kl"]], [2.0, 2.0, kl],
                             rtol=1e-5)
  np.testing.assert_allclose(loss, 2.2, rtol=1e-6)
  grads = jax.grad(lambda a, b: rssm.kl_loss(a, b, free_nats=2.0)[0], argnums=(0, 1))(
      post, prior)
  assert all(np.all(np.asarray(g) == 0.0) for g in grads)


def test_unimix_and_straight_through():
  logits = jnp.array([[20.0, 0.0, 0.0, 0.0]])
  mixed = rssm.unimix_logits(logits, 0.01)
  probs = np.exp(np.asarray(mixed))
  np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-6)
  assert probs.min() >= 0.01 / 4 * 0.999
  sample = rssm.sample_straight_through(jax.random.key(0), mixed)
  assert set(np.unique(np.asarray(sample)).tolist()) <= {0.0, 1.0}
  assert float(sample.sum()) == 1.0
  # The sample's gradient is the gradient of the probabilities.
  w = jnp.array([[1.0, 2.0, 3.0, 4.0]])
  g = jax.grad(lambda l: jnp.sum(w * rssm.sample_straight_through(jax.random.key(0), l)))(
      mixed)
  g_ref = jax.grad(lambda l: jnp.sum(w * jax.nn.softmax(l)))(mixed)
  np.testing.assert_allclose(g, g_ref, rtol=1e-6)
  # Sample frequencies follow the distribution.
  keys = jax.random.split(jax.random.key(1), 4000)
  logits2 = jnp.log(jnp.array([0.1, 0.2, 0.3, 0.4]))
  freq = jax.vmap(lambda k: rssm.sample_straight_through(k, logits2))(keys).mean(0)
  np.testing.assert_allclose(freq, [0.1, 0.2, 0.3, 0.4], atol=0.03)


# ---------------------------------------------------------------------------- the model


def _window(key, obs_shape, B=8, L=10):
  """Smooth fake dynamics: obs follows a damped rotation driven by the action; reward is a
  function of the next obs; terminated at the last step of half the windows."""
  k1, k2 = jax.random.split(key)
  if len(obs_shape) == 3:
    obs = jax.random.randint(k1, (B, L + 1) + obs_shape, 0, 256).astype(jnp.uint8)
    obs = obs.at[:, :, : obs_shape[0] // 2].set(0)
    action = jax.random.uniform(k2, (B, L, 1), minval=-1, maxval=1)
    reward = action[..., 0] * 2.0
  else:
    x0 = jax.random.normal(k1, (B, 2))
    action = jax.random.uniform(k2, (B, L, 1), minval=-1, maxval=1)

    def step(x, a):
      c, s = math.cos(0.3), math.sin(0.3)
      nxt = 0.95 * jnp.stack([c * x[:, 0] - s * x[:, 1], s * x[:, 0] + c * x[:, 1]], -1)
      nxt = nxt + 0.3 * a
      return nxt, nxt

    _, xs = jax.lax.scan(step, x0, jnp.swapaxes(action, 0, 1))
    xs = jnp.concatenate([x0[:, None], jnp.swapaxes(xs, 0, 1)], 1)   # [B, L+1, 2]
    obs = jnp.concatenate([xs, 10.0 * xs[..., :1]], -1)              # [B, L+1, 3]
    reward = -5.0 * jnp.sum(obs[:, 1:, :2] ** 2, -1)
  terminated = jnp.zeros((B, L)).at[: B // 2, -1].set(1.0)
  return Transition(obs=obs[:, :-1], action=action, reward=reward, next_obs=obs[:, 1:],
                    terminated=terminated, truncated=jnp.zeros((B, L)))


@pytest.fixture(scope="module")
def vector_model():
  wm = rssm.make_world_model(3, 1, config=TINY)
  return wm, wm.init(jax.random.key(0))


def test_observe_matches_obs_step_loop_and_resets(vector_model):
  wm, params = vector_model
  w = _window(jax.random.key(1), (3,), B=2, L=4)
  obs = jnp.concatenate([w.obs[:, :1], w.next_obs], 1)                # [2, 5, 3]
  prev_action = jnp.concatenate([jnp.zeros((2, 1, 1)), w.action], 1)
  is_first = jnp.zeros((2, 5), bool).at[:, 0].set(True).at[1, 3].set(True)
  key = jax.random.key(2)
  post, prior = jax.jit(wm.observe)(params, key, obs, prev_action, is_first)
  assert post.deter.shape == (2, 5, 32) and post.stoch.shape == (2, 5, 4, 4)
  # Same keys, one step at a time, from a non-initial state (is_first resets it).
  state = jax.tree.map(lambda x: x + 3.0, wm.initial_state((2,)))
  obs_step = jax.jit(wm.obs_step)
  for t, k in enumerate(jax.random.split(key, 5)):
    state, pr = obs_step(params, k, state, prev_action[:, t], obs[:, t], is_first[:, t])
    for a, b in ((state, post), (pr, prior)):
      jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y[:, t], rtol=1e-4, atol=1e-5),
                   a, b)
  # A reset mid-sequence: sequence 1 from t=3 equals a fresh filter of obs[1, 3:].
  # (Batched like observe, so the samples use the same random bits.)
  keys = jax.random.split(key, 5)
  state = wm.initial_state((2,))
  for t in (3, 4):
    state, _ = obs_step(params, keys[t], state, prev_action[:, t], obs[:, t],
                           jnp.full((2,), t == 3))
    np.testing.assert_allclose(state.deter[1], post.deter[1, t], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(state.stoch[1], post.stoch[1, t])
  # The posterior's distribution is mixed with 1% uniform.
  assert float(jnp.exp(post.logits).min()) >= 0.01 / 4 * 0.999


def test_imagine_rolls_the_prior_with_the_policy(vector_model):
  wm, params = vector_model
  start = jax.tree.map(lambda x: x[:, 0], wm.observe(
      params, jax.random.key(0), jnp.ones((6, 1, 3)), jnp.zeros((6, 1, 1)),
      jnp.ones((6, 1), bool))[0])
  seen = []

  def policy(key, feat):
    seen.append(feat.shape)
    return jnp.tanh(feat[:, :1]) * 0.5

  states, actions = jax.jit(wm.imagine, static_argnums=(3, 4))(
      params, jax.random.key(3), start, policy, 7)
  assert seen == [(6, wm.feature_size)]
  assert states.deter.shape == (6, 8, 32) and actions.shape == (6, 7, 1)
  np.testing.assert_allclose(states.deter[:, 0], start.deter)
  np.testing.assert_allclose(actions[:, 0], 0.5 * np.tanh(start.deter[:, :1]), rtol=1e-5)
  # Step 1 is the prior after action 0 (same key split as imagine).
  k = jax.random.split(jax.random.key(3), 7)[0]
  _, model_key = jax.random.split(k)
  nxt = wm.img_step(params, model_key, start, actions[:, 0])
  np.testing.assert_allclose(states.deter[:, 1], nxt.deter, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(states.stoch[:, 1], nxt.stoch)
  # Gradients reach the policy's parameters through the imagined states.
  def objective(scale):
    s, _ = wm.imagine(params, jax.random.key(3), start,
                      lambda k, f: jnp.tanh(scale * f[:, :1]), 7)
    return jnp.sum(wm.reward(params, wm.features(s)) + s.deter.sum())
  assert abs(float(jax.jit(jax.grad(objective))(0.5))) > 0.0


def test_loss_resets_the_state_at_a_per_step_is_first(vector_model):
  """A window that runs into a new episode at step k: from k on, the posteriors and every loss
  term are those of any other window with the same steps from k (whatever came before), and
  the steps before k still count; without is_first the prefix leaks in."""
  wm, params = vector_model
  w = _window(jax.random.key(6), (3,), B=2, L=6)
  other = _window(jax.random.key(7), (3,), B=2, L=6)
  k = 3                                               # model step k observes next_obs[:, 2]
  # Same steps from k on; a different episode before (obs, actions, rewards).
  mixed = jax.tree.map(lambda a, b: jnp.concatenate([a[:, :k - 1], b[:, k - 1:]], 1),
                       other, w)
  mixed = mixed._replace(obs=mixed.obs.at[:, k - 1].set(other.obs[:, k - 1]))
  is_first = jnp.zeros((2, 7), bool).at[:, k].set(True)
  loss = jax.jit(wm.loss)
  key = jax.random.key(8)
  _, a = loss(params, key, w, None, is_first)
  _, b = loss(params, key, mixed, None, is_first)
  for x, y in zip(a.post, b.post):
    np.testing.assert_allclose(x[:, k:], y[:, k:], rtol=1e-5, atol=1e-6)
    assert not np.allclose(x[:, :k], y[:, :k])
  # The reset state is the fresh one: the first step after it has the deter of a window start.
  np.testing.assert_allclose(a.post.deter[:, k], a.post.deter[:, 0], rtol=1e-5, atol=1e-6)
  # Without the reset, step k depends on the prefix.
  _, c = loss(params, key, w)
  _, d = loss(params, key, mixed)
  assert not np.allclose(c.post.deter[:, k:], d.post.deter[:, k:])
  # Every step counts: the loss of the two windows differs only through steps before k.
  assert float(a.metrics["wm_loss"]) != float(b.metrics["wm_loss"])
  with pytest.raises(ValueError, match="is_first must be"):
    wm.loss(params, key, w, None, jnp.zeros((2, 6), bool))


def _make_fit(wm, steps, lr=3e-3):
  """A compiled `fit(params, window, valid) -> (params, metrics [steps])` of Adam steps."""
  opt = optax.adam(lr)

  def step(carry, k):
    params, opt_state, window, valid = carry
    (loss, aux), g = jax.value_and_grad(wm.loss, has_aux=True)(params, k, window, valid)
    updates, opt_state = opt.update(g, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state, window, valid), aux.metrics

  @jax.jit
  def fit(params, window, valid):
    (params, *_), metrics = jax.lax.scan(step, (params, opt.init(params), window, valid),
                                         jax.random.split(jax.random.key(7), steps))
    return params, metrics

  return fit


def _fit(wm, params, window, steps, valid=True):
  params, metrics = _make_fit(wm, steps)(params, window, jnp.asarray(valid))
  return params, jax.tree.map(np.asarray, metrics)


def test_loss_falls_on_a_fixed_batch_vector(vector_model):
  wm, params = vector_model
  window = _window(jax.random.key(4), (3,))
  fit = _make_fit(wm, steps=60)
  new_params, m = jax.tree.map(np.asarray, fit(params, window, jnp.asarray(True)))
  first, last = m["wm_loss"][:3].mean(), m["wm_loss"][-3:].mean()
  assert last < 0.6 * first, (first, last)
  assert m["wm_recon"][-3:].mean() < 0.3 * m["wm_recon"][:3].mean()
  assert m["wm_reward_nll"][-3:].mean() < 0.6 * m["wm_reward_nll"][:3].mean()
  assert m["wm_cont_nll"][-3:].mean() < m["wm_cont_nll"][:3].mean()
  assert np.all(np.isfinite(m["wm_loss"]))
  # The reward head's decoded prediction moved towards the targets (zero-initialised head).
  obs = jnp.concatenate([window.obs[:, :1], window.next_obs], 1)
  prev_action = jnp.concatenate([jnp.zeros((8, 1, 1)), window.action], 1)
  post = wm.observe(new_params, jax.random.key(0), obs, prev_action,
                    jnp.zeros((8, 11), bool).at[:, 0].set(True))[0]
  pred = wm.reward(new_params, wm.features(post)[:, 1:])
  err0 = float(jnp.abs(window.reward).mean())
  assert float(jnp.abs(pred - window.reward).mean()) < 0.6 * err0
  # Open-loop prediction (context of 4 observations, then 6 actions) improved with training.
  def open_loop_error(p):
    pred, rew = jax.jit(wm.open_loop)(p, jax.random.key(1), obs[:, :4], prev_action[:, :4],
                                      window.action[:, 3:9])
    assert pred.shape == (8, 6, 3) and rew.shape == (8, 6)
    return float(jnp.abs(pred - window.next_obs[:, 3:9]).mean())
  assert open_loop_error(new_params) < 0.7 * open_loop_error(params)
  # An invalid batch (valid=False) contributes nothing: zero loss, parameters unchanged.
  same_params, m = fit(params, window, jnp.asarray(False))
  assert float(jnp.abs(m["wm_loss"]).max()) == 0.0
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), same_params, params)


def test_loss_falls_on_a_fixed_batch_pixels():
  wm = rssm.make_world_model((8, 8, 3), 1, config=TINY)
  params = wm.init(jax.random.key(0))
  window = _window(jax.random.key(5), (8, 8, 3), B=4, L=5)
  assert window.obs.dtype == jnp.uint8
  _, m = _fit(wm, params, window, steps=30)
  assert m["wm_recon"][-3:].mean() < 0.8 * m["wm_recon"][:3].mean()
  assert m["wm_loss"][-3:].mean() < m["wm_loss"][:3].mean()
  decoded = wm.decode(params, jnp.zeros((2, wm.feature_size)))
  assert decoded.shape == (2, 8, 8, 3)
  assert float(decoded.min()) >= 0.0 and float(decoded.max()) <= 1.0


def test_bad_config_names_the_field():
  with pytest.raises(ValueError, match="deter"):
    rssm.make_world_model(3, 1, config=rssm.WorldModelConfig(deter=0))
  with pytest.raises(ValueError, match="unimix"):
    rssm.make_world_model(3, 1, config=rssm.WorldModelConfig(unimix=1.5))
  with pytest.raises(ValueError, match="side"):
    rssm.make_world_model((20, 20, 3), 1, config=TINY)
  assert set(rssm.PRESETS) >= {"cpu", "large"}
  for preset in rssm.PRESETS.values():
    rssm.validate_config(preset)


def test_space_to_depth_round_trip():
  x = jnp.arange(2 * 4 * 6 * 3, dtype=jnp.float32).reshape(2, 4, 6, 3)
  y = rssm.space_to_depth(x)
  assert y.shape == (2, 2, 3, 12)
  # Block (1, 2) of image 1: rows 2-3, columns 4-5, channels in (row, column, channel) order.
  np.testing.assert_array_equal(y[1, 1, 2], x[1, 2:4, 4:6].reshape(-1))
  np.testing.assert_array_equal(rssm.depth_to_space(y), x)


def test_down_is_a_4x4_stride_2_convolution():
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  down = rssm.Down(5)
  params = down.init(jax.random.key(1), x)
  kernel = params["params"]["Dense_0"]["kernel"]          # [(tap row, tap col, r, c, in), out]
  w = kernel.reshape(2, 2, 2, 2, 3, 5).transpose(0, 2, 1, 3, 4, 5).reshape(4, 4, 3, 5)
  expected = jax.lax.conv_general_dilated(
      x, w, window_strides=(2, 2), padding=((2, 0), (2, 0)),
      dimension_numbers=("NHWC", "HWIO", "NHWC")) + params["params"]["Dense_0"]["bias"]
  np.testing.assert_allclose(down.apply(params, x), expected, atol=1e-5)


def test_up_is_a_4x4_stride_2_transposed_convolution():
  x = np.asarray(jax.random.normal(jax.random.key(0), (1, 3, 4, 2)))
  up = rssm.Up(3)
  params = up.init(jax.random.key(1), jnp.asarray(x))
  kernel = np.asarray(params["params"]["Dense_0"]["kernel"]).reshape(2, 2, 2, 2, 2, 3)
  # Slow reference: input pixel i adds x[i] @ w[k] to output pixel 2i + k - 2, k = 0..3, where
  # the dense layer's tap t and phase r hold w[r + 2 - 2t].
  w = np.zeros((4, 4, 2, 3))
  for th in range(2):
    for tw in range(2):
      for rh in range(2):
        for rw in range(2):
          w[rh + 2 - 2 * th, rw + 2 - 2 * tw] = kernel[th, tw, :, rh, rw, :]
  expected = np.tile(np.asarray(params["params"]["Dense_0"]["bias"]).reshape(2, 2, 3),
                     (3, 4, 1))[None]
  for i in range(3):
    for j in range(4):
      for kh in range(4):
        for kw in range(4):
          p, q = 2 * i + kh - 2, 2 * j + kw - 2
          if 0 <= p < 6 and 0 <= q < 8:
            expected[0, p, q] += x[0, i, j] @ w[kh, kw]
  np.testing.assert_allclose(up.apply(params, jnp.asarray(x)), expected, atol=1e-5)
