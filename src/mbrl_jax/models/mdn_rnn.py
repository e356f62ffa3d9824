"""World Models' M: an MDN-RNN, an LSTM over [z_t, a_t] with a mixture density output.

Ha & Schmidhuber 2018 model the next latent z_{t+1} (from the VAE, `mbrl_jax.models.vae`)
given the LSTM's state h_{t+1} after reading [z_t, a_t]:

  h_{t+1} = LSTM(h_t, [z_t, a_t])
  p(z_{t+1} | h_{t+1}) = sum_k pi_k N(z_{t+1}; mu_k, diag(sigma_k^2))     (K components)
  r_t ~ N(reward(h_{t+1}), 1),  done_t ~ Bernoulli(sigmoid(done(h_{t+1})))

Here the K components are over the whole latent vector, each with a diagonal covariance
(the paper's code mixes each latent dimension separately; one mixture over the vector keeps
a sample's dimensions coherent, and is the same family for K = 1). Sampling at temperature
tau, as the paper does, divides the mixture logits by tau and scales each std by sqrt(tau):
tau -> 0 gives the mean of the most likely component, tau = 1 the model itself, tau > 1 a
more uncertain dream (their Doom controller trained best at tau = 1.15).

Example (eager CPU dispatch makes it ~8 s, so the suite skips it):
  >>> config = MDNConfig(hidden=8, mixtures=3)
  >>> mdn = make_mdn_rnn(latent=4, action_size=1, config=config)  # doctest: +SKIP
  >>> params = mdn.init(jax.random.key(0))  # doctest: +SKIP
  >>> z, a = jnp.zeros((2, 6, 4)), jnp.zeros((2, 5, 1))   # z: T + 1 steps  # doctest: +SKIP
  >>> hs, out = mdn.unroll(params, z[:, :-1], a)  # doctest: +SKIP
  >>> hs.shape, out.mean.shape, log_prob(out, z[:, 1:]).shape  # doctest: +SKIP
  ((2, 5, 8), (2, 5, 3, 4), (2, 5))
  >>> sample(jax.random.key(1), out, tau=1.15).shape  # doctest: +SKIP
  (2, 5, 4)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mbrl_jax import checks
from mbrl_jax.types import PRNGKey

LOG_STD_MIN = -7.0
LOG_STD_MAX = 2.0


@dataclasses.dataclass(frozen=True)
class MDNConfig:
  """Sizes and loss weights of the MDN-RNN.

  Attributes:
    hidden: H, LSTM units (the paper: 256 for car racing, 512 for Doom).
    mixtures: K, Gaussian components of the next-latent density (the paper: 5).
    reward_scale: weight of the reward head's squared error.
    done_scale: weight of the done head's cross-entropy.
  """

  hidden: int = 64
  mixtures: int = 5
  reward_scale: float = 1.0
  done_scale: float = 1.0

  def __post_init__(self):
    checks.positive_int(self, "hidden", "mixtures")
    checks.in_range(self, "reward_scale", 0.0)
    checks.in_range(self, "done_scale", 0.0)


class LSTMState(NamedTuple):
  """The LSTM's carry.

  Attributes:
    c: cell state.      # [..., H]
    h: hidden state, what the heads and World Models' controller read.  # [..., H]
  """

  c: jax.Array
  h: jax.Array


class MDNOutput(NamedTuple):
  """The predictions after one step (leading axes as the inputs').

  Attributes:
    logits: mixture log-weights (unnormalised).           # [..., K]
    mean: component means.                                # [..., K, Z]
    log_std: component log standard deviations.           # [..., K, Z]
    reward: predicted reward of the step.                 # [...]
    done_logit: logit of the step ending the episode.     # [...]
  """

  logits: jax.Array
  mean: jax.Array
  log_std: jax.Array
  reward: jax.Array
  done_logit: jax.Array


class MDNRNN(NamedTuple):
  """The MDN-RNN's pure functions (see `make_mdn_rnn`).

  Attributes:
    init: `init(key) -> params`.
    initial_state: `initial_state(batch_shape=()) -> LSTMState` of zeros.
    step: `step(params, state, z [..., Z], action [..., A]) -> (state, MDNOutput)`.
    unroll: `unroll(params, z [B, T, Z], action [B, T, A], state=None) -> (h [B, T, H],
      MDNOutput [B, T])`: a scan of `step` from `state` (default zeros); output t predicts
      z_{t+1}, r_t and done_t.
    loss: `loss(params, z [B, T + 1, Z], action [B, T, A], reward [B, T], done [B, T]) ->
      (scalar, metrics)`: the negative log-likelihood of z_{1..T} per latent dimension, plus
      the weighted reward squared error and done cross-entropy, averaged over [B, T].
    latent: Z.
    action_size: A.
    hidden: H.
  """

  init: Callable[[PRNGKey], Any]
  initial_state: Callable[..., LSTMState]
  step: Callable[..., tuple[LSTMState, MDNOutput]]
  unroll: Callable[..., tuple[jax.Array, MDNOutput]]
  loss: Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
  latent: int
  action_size: int
  hidden: int


def log_prob(out: MDNOutput, z: jax.Array) -> jax.Array:
  """log p(z) under the mixture: [..., Z] -> [...].

    log sum_k softmax(logits)_k prod_d N(z_d; mean_kd, exp(log_std_kd)^2)
  """
  log_w = jax.nn.log_softmax(out.logits, axis=-1)                               # [..., K]
  x = (z[..., None, :] - out.mean) * jnp.exp(-out.log_std)                      # [..., K, Z]
  comp = jnp.sum(-0.5 * jnp.square(x) - out.log_std - 0.5 * math.log(2 * math.pi), axis=-1)
  return jax.nn.logsumexp(log_w + comp, axis=-1)


def sample(key: PRNGKey, out: MDNOutput, tau: float | jax.Array = 1.0) -> jax.Array:
  """A next latent at temperature tau > 0: a component k ~ softmax(logits / tau), then
  z = mean_k + exp(log_std_k) * sqrt(tau) * eps: [..., Z]. tau may be traced."""
  k_key, n_key = jax.random.split(key)
  k = jax.random.categorical(k_key, out.logits / tau, axis=-1)                   # [...]
  pick = lambda x: jnp.take_along_axis(x, k[..., None, None], axis=-2)[..., 0, :]
  mean, log_std = pick(out.mean), pick(out.log_std)
  eps = jax.random.normal(n_key, mean.shape, mean.dtype)
  return mean + jnp.exp(log_std) * jnp.sqrt(tau) * eps


class _Net(nn.Module):
  latent: int
  config: MDNConfig

  def setup(self):
    c = self.config
    self.cell = nn.OptimizedLSTMCell(c.hidden)
    self.head = nn.Dense(c.mixtures * (1 + 2 * self.latent) + 2)

  def __call__(self, carry: LSTMState, x: jax.Array) -> tuple[LSTMState, MDNOutput]:
    (c, h), _ = self.cell((carry.c, carry.h), x)
    K, Z = self.config.mixtures, self.latent
    out = self.head(h)
    lead = out.shape[:-1]
    logits = out[..., :K]
    mean = out[..., K:K + K * Z].reshape(lead + (K, Z))
    log_std = out[..., K + K * Z:K + 2 * K * Z].reshape(lead + (K, Z))
    log_std = jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)
    return LSTMState(c=c, h=h), MDNOutput(logits=logits, mean=mean, log_std=log_std,
                                          reward=out[..., -2], done_logit=out[..., -1])


def make_mdn_rnn(latent: int, action_size: int, *, config: MDNConfig = MDNConfig()) -> MDNRNN:
  """Builds the MDN-RNN for latents of size Z = `latent` and actions of size A.

  Returns:
    An `MDNRNN` of pure functions.
  """
  for name, value in (("latent", latent), ("action_size", action_size)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"make_mdn_rnn: {name} must be a positive int, got {value!r}")
  c = config
  net = _Net(latent=latent, config=c)

  def initial_state(batch_shape=()) -> LSTMState:
    zeros = jnp.zeros(tuple(batch_shape) + (c.hidden,), jnp.float32)
    return LSTMState(c=zeros, h=zeros)

  def init(key: PRNGKey):
    return net.init(key, initial_state((1,)), jnp.zeros((1, latent + action_size)))

  def step(params, state: LSTMState, z: jax.Array, action: jax.Array):
    x = jnp.concatenate([z, action.astype(z.dtype)], axis=-1)
    return net.apply(params, state, x)

  def unroll(params, z: jax.Array, action: jax.Array, state: LSTMState | None = None):
    if state is None:
      state = initial_state(z.shape[:1])
    swap = lambda x: jnp.swapaxes(x, 0, 1)

    def body(carry, inputs):
      carry, out = step(params, carry, *inputs)
      return carry, (carry.h, out)

    _, (hs, out) = jax.lax.scan(body, state, (swap(z), swap(action)))
    return swap(hs), jax.tree.map(swap, out)

  def loss(params, z: jax.Array, action: jax.Array, reward: jax.Array, done: jax.Array):
    _, out = unroll(params, z[:, :-1], action)
    nll = -jnp.mean(log_prob(out, z[:, 1:])) / latent
    reward_mse = jnp.mean(jnp.square(out.reward - reward))
    done = done.astype(jnp.float32)
    done_bce = jnp.mean(jnp.logaddexp(0.0, out.done_logit) - done * out.done_logit)
    total = nll + c.reward_scale * reward_mse + c.done_scale * done_bce
    return total, {"mdn_loss": total, "mdn_nll": nll, "mdn_reward_mse": reward_mse,
                   "mdn_done_bce": done_bce}

  return MDNRNN(init=init, initial_state=initial_state, step=step, unroll=unroll, loss=loss,
                latent=latent, action_size=action_size, hidden=c.hidden)
