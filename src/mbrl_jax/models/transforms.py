"""Value transforms of DreamerV3 (Hafner et al. 2023, "Mastering Diverse Domains through World
Models", section 2): symlog / symexp squashing and the two-hot discrete regression used by
its reward and value heads.

A two-hot head predicts logits over a fixed grid of bins that are uniformly spaced in symlog
space (255 bins in [-20, 20], i.e. symexp-spaced in the original space). A scalar target y is
encoded as the two-hot vector over the two bins around symlog(y), weighted by proximity, and
the head is trained with cross-entropy; the prediction is symexp of the expected bin. The
loss's gradient does not grow with the scale of the targets, so rewards and returns of any
magnitude can be learnt with one set of hyperparameters.

Example:
  >>> bins = symlog_bins()                                   # [255]
  >>> logits = jnp.zeros((32, 255))
  >>> targets = jnp.linspace(-100.0, 100.0, 32)              # raw units
  >>> loss = twohot_loss(logits, targets, bins)              # [32]
  >>> value = twohot_decode(logits, bins)                    # [32], raw units
  >>> loss.shape, float(jnp.abs(value).max()) < 1e-3         # uniform logits decode to ~0
  ((32,), True)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NUM_BINS = 255
BIN_LOW = -20.0
BIN_HIGH = 20.0


def symlog(x: jax.Array) -> jax.Array:
  """sign(x) * log(1 + |x|): identity-like near 0, logarithmic for large |x|."""
  return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def symexp(x: jax.Array) -> jax.Array:
  """sign(x) * (exp(|x|) - 1), the inverse of `symlog`."""
  return jnp.sign(x) * jnp.expm1(jnp.abs(x))


def symlog_bins(num_bins: int = NUM_BINS, low: float = BIN_LOW,
                high: float = BIN_HIGH) -> jax.Array:
  """The bin centres in symlog space, uniformly spaced in [low, high]: [num_bins] float32.

  In the original space the bins are `symexp(symlog_bins())`.
  """
  if not isinstance(num_bins, int) or num_bins < 2:
    raise ValueError(f"symlog_bins: num_bins must be an int >= 2, got {num_bins!r}")
  if not low < high:
    raise ValueError(f"symlog_bins: low ({low}) must be below high ({high})")
  return jnp.linspace(low, high, num_bins, dtype=jnp.float32)


def twohot_encode(x: jax.Array, bins: jax.Array) -> jax.Array:
  """Two-hot encoding of x over sorted bins (both in the same space; no transform applied).

  x between bins[k] and bins[k + 1] puts weight (bins[k + 1] - x) / (bins[k + 1] - bins[k]) on
  bin k and the rest on bin k + 1, so `sum(encoding * bins) == x` for x inside the grid;
  values outside the grid put all their weight on the nearest end bin.

  Args:
    x: values, any shape [...].
    bins: sorted bin centres [K].

  Returns:
    [..., K] float32 weights, non-negative, summing to 1.
  """
  x = jnp.asarray(x, jnp.float32)
  k = bins.shape[0]
  below = jnp.clip(jnp.sum(bins <= x[..., None], axis=-1) - 1, 0, k - 2)   # [...]
  lo, hi = bins[below], bins[below + 1]
  w_hi = jnp.clip((x - lo) / (hi - lo), 0.0, 1.0)
  return (jax.nn.one_hot(below, k) * (1.0 - w_hi)[..., None]
          + jax.nn.one_hot(below + 1, k) * w_hi[..., None])


def twohot_symlog_encode(y: jax.Array, bins: jax.Array) -> jax.Array:
  """The training target of a two-hot symexp head: `twohot_encode(symlog(y), bins)` [..., K]."""
  return twohot_encode(symlog(y), bins)


def twohot_decode(logits: jax.Array, bins: jax.Array) -> jax.Array:
  """The prediction of a two-hot symexp head: symexp(sum(softmax(logits) * bins)) [...].

  Args:
    logits: [..., K] unnormalised log-probabilities over the (symlog-space) bins.
    bins: [K] bin centres in symlog space.
  """
  probs = jax.nn.softmax(logits, axis=-1)
  return symexp(jnp.sum(probs * bins, axis=-1))


def twohot_loss(logits: jax.Array, y: jax.Array, bins: jax.Array) -> jax.Array:
  """Cross-entropy between the head's softmax(logits) and the two-hot encoding of symlog(y).

  Args:
    logits: [..., K].
    y: [...] targets in original units (gradients are not taken through them).
    bins: [K] bin centres in symlog space.

  Returns:
    [...] per-element loss (nats).
  """
  target = jax.lax.stop_gradient(twohot_symlog_encode(y, bins))
  return -jnp.sum(target * jax.nn.log_softmax(logits, axis=-1), axis=-1)
