"""World Models' MDN-RNN: the mixture log-likelihood against NumPy, temperature semantics,
the unroll against stepping by hand."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax.models import mdn_rnn as mdn_lib


def _random_output(key, lead=(), K=3, Z=2):
  k1, k2, k3 = jax.random.split(key, 3)
  return mdn_lib.MDNOutput(
      logits=jax.random.normal(k1, lead + (K,)) * 2.0,
      mean=jax.random.normal(k2, lead + (K, Z)) * 3.0,
      log_std=jax.random.uniform(k3, lead + (K, Z), minval=-1.0, maxval=0.5),
      reward=jnp.zeros(lead), done_logit=jnp.zeros(lead))


def test_log_prob_against_numpy():
  out = _random_output(jax.random.key(0), lead=(4,))
  z = np.asarray(jax.random.normal(jax.random.key(1), (4, 2)))
  got = np.asarray(jax.jit(mdn_lib.log_prob)(out, jnp.asarray(z)))
  logits, mean, std = (np.asarray(out.logits, np.float64), np.asarray(out.mean, np.float64),
                       np.exp(np.asarray(out.log_std, np.float64)))
  w = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  want = []
  for b in range(4):
    p = 0.0
    for k in range(3):
      dens = 1.0
      for d in range(2):
        dens *= (math.exp(-0.5 * ((z[b, d] - mean[b, k, d]) / std[b, k, d]) ** 2)
                 / (std[b, k, d] * math.sqrt(2 * math.pi)))
      p += w[b, k] * dens
    want.append(math.log(p))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def samples():
  out = _random_output(jax.random.key(2))
  draw = jax.jit(jax.vmap(mdn_lib.sample, in_axes=(0, None, None)))
  keys = jax.random.split(jax.random.key(3), 40_000)
  return out, {tau: np.asarray(draw(keys, out, tau)) for tau in (1e-6, 1.0, 2.0)}


def test_temperature_one_is_the_model(samples):
  out, drawn = samples
  w = np.asarray(jax.nn.softmax(out.logits))
  mean, var = np.asarray(out.mean), np.exp(2 * np.asarray(out.log_std))
  mix_mean = (w[:, None] * mean).sum(0)
  mix_var = (w[:, None] * (var + mean ** 2)).sum(0) - mix_mean ** 2
  np.testing.assert_allclose(drawn[1.0].mean(0), mix_mean, atol=0.06)
  np.testing.assert_allclose(drawn[1.0].var(0), mix_var, rtol=0.05)


def test_temperature_to_zero_is_the_mode_component_mean(samples):
  out, drawn = samples
  mode = np.asarray(out.mean)[int(np.argmax(np.asarray(out.logits)))]
  np.testing.assert_allclose(drawn[1e-6], np.broadcast_to(mode, drawn[1e-6].shape), atol=0.02)


def test_temperature_two_is_flatter_weights_and_wider_components(samples):
  out, drawn = samples
  # logits / 2 flattens the weights and std * sqrt(2) widens the components.
  w2 = np.asarray(jax.nn.softmax(out.logits / 2.0))
  mean, var = np.asarray(out.mean), 2.0 * np.exp(2 * np.asarray(out.log_std))
  mix_mean = (w2[:, None] * mean).sum(0)
  np.testing.assert_allclose(drawn[2.0].mean(0), mix_mean, atol=0.08)
  mix_var = (w2[:, None] * (var + mean ** 2)).sum(0) - mix_mean ** 2
  np.testing.assert_allclose(drawn[2.0].var(0), mix_var, rtol=0.05)


def test_unroll_is_steps_and_loss_is_the_nll():
  mdn = mdn_lib.make_mdn_rnn(3, 1, config=mdn_lib.MDNConfig(hidden=5, mixtures=2))
  params = jax.jit(mdn.init)(jax.random.key(0))
  z = jax.random.normal(jax.random.key(1), (2, 5, 3))
  a = jax.random.uniform(jax.random.key(2), (2, 4, 1), minval=-1, maxval=1)
  reward = jax.random.normal(jax.random.key(3), (2, 4))
  hs, out = jax.jit(mdn.unroll)(params, z[:, :-1], a)
  state = mdn.initial_state((2,))
  step = jax.jit(mdn.step)
  for t in range(4):
    state, o = step(params, state, z[:, t], a[:, t])
    np.testing.assert_allclose(hs[:, t], state.h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.mean[:, t], o.mean, rtol=1e-5, atol=1e-6)
  loss, metrics = jax.jit(mdn.loss)(params, z, a, reward, jnp.zeros((2, 4)))
  nll = -np.mean(np.asarray(mdn_lib.log_prob(out, z[:, 1:]))) / 3
  mse = np.mean((np.asarray(out.reward) - np.asarray(reward)) ** 2)
  bce = np.mean(np.logaddexp(0.0, np.asarray(out.done_logit)))
  np.testing.assert_allclose(metrics["mdn_nll"], nll, rtol=1e-5)
  np.testing.assert_allclose(loss, nll + mse + bce, rtol=1e-5)


def test_bad_inputs():
  with pytest.raises(ValueError, match="latent must be a positive int"):
    mdn_lib.make_mdn_rnn(0, 1)
  with pytest.raises(ValueError, match="MDNConfig.mixtures must be a positive int"):
    mdn_lib.MDNConfig(mixtures=0)
