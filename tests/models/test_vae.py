"""World Models' VAE: the ELBO terms against hand values, the loss against its pieces."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax.models import vae as vae_lib


@pytest.fixture(scope="module")
def tiny():
  vae = vae_lib.make_vae((8, 8, 3), config=vae_lib.VAEConfig(latent=3, depth=2))
  params = jax.jit(vae.init)(jax.random.key(0))
  frames = jax.random.randint(jax.random.key(1), (4, 8, 8, 3), 0, 256).astype(jnp.uint8)
  return vae, params, frames


def test_gaussian_kl_hand_values():
  # mean (1, 0), std (1, 2): 0.5 * (1 + 1 - 1) - 0 + 0.5 * (0 + 4 - 1) - log 2.
  kl = vae_lib.gaussian_kl(jnp.array([1.0, 0.0]), jnp.log(jnp.array([1.0, 2.0])))
  np.testing.assert_allclose(kl, 0.5 + 1.5 - math.log(2.0), rtol=1e-6)
  assert float(vae_lib.gaussian_kl(jnp.zeros(5), jnp.zeros(5))) == 0.0


def test_squared_error_hand_values():
  a = jnp.zeros((2, 2, 2, 1)).at[0, 0, 0, 0].set(0.5).at[1, 1, 1, 0].set(2.0)
  np.testing.assert_allclose(vae_lib.squared_error(a, jnp.zeros_like(a)), [0.25, 4.0])


def test_loss_is_recon_plus_kl_with_the_same_sample(tiny):
  vae, params, frames = tiny
  key = jax.random.key(2)
  loss, metrics = jax.jit(vae.loss)(params, key, frames)
  mean, log_std = jax.jit(vae.encode)(params, frames)
  z = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
  recon = np.sum((np.asarray(jax.jit(vae.decode)(params, z)) - np.asarray(frames) / 255.0) ** 2,
                 axis=(1, 2, 3)).mean()
  std = np.exp(np.asarray(log_std))
  kl = (0.5 * (np.asarray(mean) ** 2 + std ** 2 - 1) - np.log(std)).sum(-1).mean()
  np.testing.assert_allclose(metrics["vae_recon"], recon, rtol=1e-4)
  np.testing.assert_allclose(metrics["vae_kl"], kl, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(loss, recon + kl, rtol=1e-4)
  # Free nats floor the KL term (per frame) but not the reported KL.
  floored = vae_lib.make_vae((8, 8, 3), config=vae_lib.VAEConfig(latent=3, depth=2,
                                                                 free_nats=1e3))
  loss2, metrics2 = jax.jit(floored.loss)(params, key, frames)
  np.testing.assert_allclose(loss2, recon + 1e3, rtol=1e-4)
  np.testing.assert_allclose(metrics2["vae_kl"], kl, rtol=1e-4, atol=1e-6)


def test_shapes_and_leading_axes(tiny):
  vae, params, frames = tiny
  mean, log_std = vae.encode(params, frames.reshape(2, 2, 8, 8, 3))
  assert mean.shape == log_std.shape == (2, 2, 3)
  assert vae.decode(params, mean).shape == (2, 2, 8, 8, 3)


def test_bad_inputs():
  with pytest.raises(ValueError, match="image_shape"):
    vae_lib.make_vae((8, 16, 3))
  with pytest.raises(ValueError, match="4 \\* 2\\^k"):
    vae_lib.make_vae((12, 12, 3))
  with pytest.raises(ValueError, match="VAEConfig.latent must be a positive int"):
    vae_lib.VAEConfig(latent=0)
  with pytest.raises(ValueError, match="VAEConfig.free_nats"):
    vae_lib.VAEConfig(free_nats=-1.0)
