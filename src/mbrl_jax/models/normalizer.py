"""Per-dimension standardisation with statistics kept in a pytree.

The statistics live inside the model's parameters (see `ensemble.EnsembleParams`), so whatever
holds the parameters (a planner, a checkpoint, a vmapped seed axis) holds the statistics too.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

# A dimension whose standard deviation is below this is constant in the data: its std is
# stored as 0, `normalize` maps it to 0 and `denormalize` maps anything back to the mean. So
# a model never sees a division by a tiny std on its inputs, and predicts a constant target
# (the position of a goal that never moves, a contact flag never set) exactly, instead of
# letting a small output error feed back through its inputs and blow up a rollout.
MIN_STD = 1e-6


class Normalizer(NamedTuple):
  """Mean and scale of a vector quantity.

  Attributes:
    mean: per-dimension mean.                                     # [D]
    std: per-dimension standard deviation; 0 marks a constant dimension. # [D]
  """

  mean: jax.Array
  std: jax.Array


def identity(size: int) -> Normalizer:
  """A normaliser that leaves vectors of length `size` unchanged."""
  return Normalizer(mean=jnp.zeros((size,), jnp.float32), std=jnp.ones((size,), jnp.float32))


def fit(x: jax.Array, mask: jax.Array | None = None) -> Normalizer:
  """Statistics of the rows of `x` where `mask` is true.

  Args:
    x: data.                                    # [N, D]
    mask: which rows count; all when None.      # [N]

  Returns:
    A `Normalizer`. Dimensions with std below MIN_STD get std 0 (constant). With no valid
    rows the identity normaliser is returned.
  """
  x = x.astype(jnp.float32)
  if mask is None:
    mask = jnp.ones(x.shape[:1], bool)
  w = mask.astype(jnp.float32)[:, None]        # [N, 1]
  x = jnp.where(mask[:, None], x, 0.0)         # rows left out may hold NaN or garbage
  count = jnp.maximum(w.sum(), 1.0)
  mean = x.sum(0) / count
  var = (jnp.square(x - mean) * w).sum(0) / count
  std = jnp.sqrt(var)
  std = jnp.where(std < MIN_STD, 0.0, std)
  has_data = w.sum() > 0
  return Normalizer(
      mean=jnp.where(has_data, mean, 0.0), std=jnp.where(has_data, std, 1.0))


def constants_only(norm: Normalizer) -> Normalizer:
  """`norm` with every dimension but the constant ones (std 0) made the identity.

  What a model that is not meant to standardise a quantity still needs: its constant
  dimensions pinned to their value (so they are predicted exactly, see MIN_STD) and every
  other dimension left in its original units.
  """
  constant = norm.std == 0
  return Normalizer(mean=jnp.where(constant, norm.mean, 0.0),
                    std=jnp.where(constant, 0.0, 1.0).astype(norm.std.dtype))


def normalize(norm: Normalizer, x: jax.Array) -> jax.Array:
  """(x - mean) / std, and 0 in constant dimensions; broadcasts over leading axes [..., D]."""
  constant = norm.std == 0
  return jnp.where(constant, 0.0, (x - norm.mean) / jnp.where(constant, 1.0, norm.std))


def denormalize(norm: Normalizer, x: jax.Array) -> jax.Array:
  """x * std + mean (the mean in constant dimensions), the inverse of `normalize`."""
  return x * norm.std + norm.mean
