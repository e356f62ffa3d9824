"""World Models' V: a convolutional variational autoencoder of single frames.

Ha & Schmidhuber 2018 ("Recurrent World Models Facilitate Policy Evolution", the V of
V + M + C) compress each frame o to a small Gaussian latent z:

  q(z | o) = N(mean(o), diag(std(o)^2)),  p(z) = N(0, I),  o ~ decoder(z)
  loss = recon_scale * sum_pixels (decoder(z) - o)^2 + kl_scale * max(KL(q || p), free_nats)

with z = mean + std * eps (the reparameterisation trick) and o scaled to [0, 1]. The squared
error is the paper's L2 reconstruction term (a Gaussian decoder of fixed variance up to a
constant); `free_nats` is its "KL tolerance" (their car racing VAE floors the KL at 0.5 nats
per latent, 16 nats for 32 latents). The CNN is the world model's (`mbrl_jax.models.rssm`:
`ConvEncoder` / `ConvDecoder`, stride-2 `Down` / `Up` stages without convolution ops), with
two dense heads for the mean and the log standard deviation.

Example (eager CPU dispatch makes it ~10 s, so the suite skips it):
  >>> vae = make_vae((16, 16, 3), config=VAEConfig(latent=4, depth=4))  # doctest: +SKIP
  >>> params = vae.init(jax.random.key(0))  # doctest: +SKIP
  >>> frames = jnp.zeros((5, 16, 16, 3), jnp.uint8)
  >>> mean, log_std = vae.encode(params, frames)  # doctest: +SKIP
  >>> mean.shape, vae.decode(params, mean).shape  # doctest: +SKIP
  ((5, 4), (5, 16, 16, 3))
  >>> loss, metrics = vae.loss(params, jax.random.key(1), frames)  # doctest: +SKIP
  >>> sorted(metrics)  # doctest: +SKIP
  ['vae_kl', 'vae_loss', 'vae_recon']
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mbrl_jax import checks
from mbrl_jax.models.rssm import ConvDecoder, ConvEncoder, cnn_stages
from mbrl_jax.types import PRNGKey

LOG_STD_MIN = -10.0
LOG_STD_MAX = 2.0


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  """Sizes and loss weights of the VAE.

  Attributes:
    latent: Z, the size of z (the paper: 32 for car racing, 64 for Doom).
    depth: channels of the first CNN stage (doubling per stage).
    recon_scale: weight of the summed squared pixel error.
    kl_scale: weight of the KL term.
    free_nats: the KL term is max(KL, free_nats) per frame (0: the plain ELBO).
  """

  latent: int = 32
  depth: int = 16
  recon_scale: float = 1.0
  kl_scale: float = 1.0
  free_nats: float = 0.0

  def __post_init__(self):
    checks.positive_int(self, "latent", "depth")
    checks.in_range(self, "recon_scale", 0.0, low_open=True)
    checks.in_range(self, "kl_scale", 0.0)
    checks.in_range(self, "free_nats", 0.0)


class VAE(NamedTuple):
  """The VAE's pure functions (see `make_vae`).

  Attributes:
    init: `init(key) -> params`.
    encode: `encode(params, frames [..., S, S, C] uint8) -> (mean, log_std)`, each [..., Z].
    sample: `sample(key, mean, log_std) -> z` = mean + exp(log_std) * eps, [..., Z].
    decode: `decode(params, z [..., Z]) -> frames [..., S, S, C]`, floats (in [0, 1] where
      the decoder is right; `to_image` clips them).
    loss: `loss(params, key, frames [B, S, S, C]) -> (scalar, metrics)` (negative ELBO as in
      the module docstring, averaged over the batch).
    latent: Z.
    image_shape: (S, S, C).
  """

  init: Callable[[PRNGKey], Any]
  encode: Callable[..., tuple[jax.Array, jax.Array]]
  sample: Callable[..., jax.Array]
  decode: Callable[..., jax.Array]
  loss: Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
  latent: int
  image_shape: tuple[int, int, int]


def gaussian_kl(mean: jax.Array, log_std: jax.Array) -> jax.Array:
  """KL(N(mean, diag(exp(log_std)^2)) || N(0, I)), summed over the last axis: [..., Z] -> [...].

    KL = sum_i 0.5 * (mean_i^2 + std_i^2 - 1) - log_std_i
  """
  return jnp.sum(0.5 * (jnp.square(mean) + jnp.exp(2.0 * log_std) - 1.0) - log_std, axis=-1)


def squared_error(recon: jax.Array, target: jax.Array, event_dims: int = 3) -> jax.Array:
  """Sum of squared errors over the last `event_dims` axes: [..., S, S, C] -> [...]."""
  return jnp.sum(jnp.square(recon - target), axis=tuple(range(-event_dims, 0)))


def to_unit(frames: jax.Array) -> jax.Array:
  """uint8 frames -> float32 in [0, 1]."""
  return frames.astype(jnp.float32) / 255.0


def to_image(decoded: jax.Array) -> jax.Array:
  """Decoded frames clipped to [0, 1] (for display)."""
  return jnp.clip(decoded, 0.0, 1.0)


class _Net(nn.Module):
  config: VAEConfig
  stages: int
  channels: int

  def setup(self):
    c = self.config
    self.encoder = ConvEncoder(c.depth, self.stages)
    self.heads = nn.Dense(2 * c.latent)
    self.decoder = ConvDecoder(c.depth, self.stages, self.channels)

  def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:   # [N, S, S, C] in [-.5, .5]
    mean, log_std = jnp.split(self.heads(self.encoder(x)), 2, axis=-1)
    return mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)

  def decode(self, z: jax.Array) -> jax.Array:                     # [N, Z] -> [N, S, S, C]
    return self.decoder(z) + 0.5

  def __call__(self, x: jax.Array) -> jax.Array:
    mean, _ = self.encode(x)
    return self.decode(mean)


def make_vae(image_shape: Sequence[int], *, config: VAEConfig = VAEConfig()) -> VAE:
  """Builds the convolutional VAE for square uint8 images of side 4 * 2^k (8, 16, 32, 64).

  Args:
    image_shape: (S, S, C).
    config: sizes and loss weights.

  Returns:
    A `VAE` of pure functions; any leading axes are allowed on frames and latents.
  """
  image_shape = tuple(int(s) for s in image_shape)
  if len(image_shape) != 3 or image_shape[0] != image_shape[1] or image_shape[2] < 1:
    raise ValueError(f"make_vae: image_shape must be (S, S, channels), got {image_shape}")
  stages = cnn_stages(image_shape[0])
  net = _Net(config=config, stages=stages, channels=image_shape[2])
  c = config

  def flat(fn, x, event_dims):
    lead = x.shape[:x.ndim - event_dims]
    out = fn(x.reshape((-1,) + x.shape[x.ndim - event_dims:]))
    return jax.tree.map(lambda o: o.reshape(lead + o.shape[1:]), out)

  def init(key: PRNGKey):
    return net.init(key, jnp.zeros((1,) + image_shape, jnp.float32))

  def encode(params, frames: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = to_unit(frames) - 0.5
    return flat(lambda v: net.apply(params, v, method=_Net.encode), x, 3)

  def sample(key: PRNGKey, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    return mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)

  def decode(params, z: jax.Array) -> jax.Array:
    return flat(lambda v: net.apply(params, v, method=_Net.decode), z, 1)

  def loss(params, key: PRNGKey, frames: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    mean, log_std = encode(params, frames)
    z = sample(key, mean, log_std)
    recon = jnp.mean(squared_error(decode(params, z), to_unit(frames)))
    kl = gaussian_kl(mean, log_std)                                       # [B]
    kl_term = jnp.mean(jnp.maximum(kl, c.free_nats))
    total = c.recon_scale * recon + c.kl_scale * kl_term
    return total, {"vae_loss": total, "vae_recon": recon, "vae_kl": jnp.mean(kl)}

  return VAE(init=init, encode=encode, sample=sample, decode=decode, loss=loss,
             latent=c.latent, image_shape=image_shape)
