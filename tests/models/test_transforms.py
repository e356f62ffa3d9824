"""symlog / symexp and two-hot encoding against hand-computed values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax.models import transforms


def test_symlog_symexp_hand_values():
  x = jnp.array([-math.e + 1.0, -1.0, 0.0, 1.0, math.e ** 2 - 1.0])
  np.testing.assert_allclose(jax.jit(transforms.symlog)(x), [-1.0, -math.log(2.0), 0.0,
                                                              math.log(2.0), 2.0], rtol=1e-6)
  np.testing.assert_allclose(transforms.symexp(jnp.array([-1.0, 0.0, 2.0])),
                             [-(math.e - 1.0), 0.0, math.e ** 2 - 1.0], rtol=1e-6)
  y = jnp.linspace(-1000.0, 1000.0, 101)
  np.testing.assert_allclose(transforms.symexp(transforms.symlog(y)), y, rtol=1e-5, atol=1e-5)


def test_bins_are_dreamerv3_grid():
  bins = transforms.symlog_bins()
  assert bins.shape == (255,)
  np.testing.assert_allclose([bins[0], bins[127], bins[-1]], [-20.0, 0.0, 20.0], atol=1e-6)
  np.testing.assert_allclose(np.diff(np.asarray(bins)), 40.0 / 254, rtol=1e-4)
  with pytest.raises(ValueError, match="num_bins"):
    transforms.symlog_bins(1)


def test_twohot_encode_hand_values():
  bins = jnp.array([-2.0, 0.0, 1.0, 3.0])
  enc = jax.jit(transforms.twohot_encode)(jnp.array([0.25, 1.0, -5.0, 7.0, 2.5]), bins)
  np.testing.assert_allclose(enc, [
      [0.0, 0.75, 0.25, 0.0],     # between 0 and 1
      [0.0, 0.0, 1.0, 0.0],       # exactly on a bin
      [1.0, 0.0, 0.0, 0.0],       # below the grid: all on the first bin
      [0.0, 0.0, 0.0, 1.0],       # above the grid: all on the last bin
      [0.0, 0.0, 0.25, 0.75],     # non-uniform spacing: (3 - 2.5) / 2
  ], atol=1e-6)


def test_twohot_symlog_roundtrip_and_decode():
  bins = transforms.symlog_bins()
  y = jnp.array([-300.0, -1.5, 0.0, 0.3, 42.0, 1e4])
  enc = transforms.twohot_symlog_encode(y, bins)            # [6, 255]
  assert enc.shape == (6, 255)
  np.testing.assert_allclose(enc.sum(-1), 1.0, rtol=1e-6)
  assert int((enc > 0).sum(-1).max()) <= 2
  # Expected bin in symlog space is exactly symlog(y).
  np.testing.assert_allclose(transforms.symexp(enc @ bins), y, rtol=1e-4, atol=1e-5)
  # log(two-hot) as logits decodes back to y (the softmax of log-weights is the weights).
  logits = jnp.log(jnp.maximum(enc, 1e-30))
  np.testing.assert_allclose(transforms.twohot_decode(logits, bins), y, rtol=1e-4, atol=1e-5)
  # Uniform logits decode to 0 (a symmetric grid).
  np.testing.assert_allclose(transforms.twohot_decode(jnp.zeros((255,)), bins), 0.0, atol=1e-5)


def test_twohot_loss_hand_value_and_minimum():
  bins = jnp.array([-1.0, 0.0, 1.0])
  # y = symexp(0.5) sits half-way between bins 0 and 1 (symlog space): target [0, .5, .5].
  y = transforms.symexp(jnp.array(0.5))
  logits = jnp.array([0.0, 1.0, 2.0])
  logp = jax.nn.log_softmax(logits)
  np.testing.assert_allclose(transforms.twohot_loss(logits, y, bins),
                             -(0.5 * logp[1] + 0.5 * logp[2]), rtol=1e-6)
  # The loss is minimised (= entropy of the target, log 2) at logits = log(target).
  best = transforms.twohot_loss(jnp.log(jnp.array([1e-9, 0.5, 0.5])), y, bins)
  np.testing.assert_allclose(best, math.log(2.0), rtol=1e-5)
  # No gradient into the target.
  g = jax.grad(lambda t: transforms.twohot_loss(logits, t, bins))(y)
  assert float(g) == 0.0
