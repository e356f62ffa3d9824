"""Small traceable helpers over pytrees and keys (layer 0: imports nothing from the package).

Used inside compiled steps by every algorithm (`nonfinite`) and on entry by the driver
(`check_key`), so neither algorithms nor models need `mbrl_jax.run` for them.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def nonfinite(tree: Any) -> jax.Array:
  """Whether any floating leaf of `tree` holds a NaN or Inf.

  Traceable; for a batch of seeds, `jax.vmap` it (the leading axis is not reduced here).

  Returns:
    [] bool; False for a tree without floating leaves.

  Example:
    >>> bool(nonfinite({"w": jnp.array([1.0, jnp.nan]), "n": jnp.array(3)}))
    True
    >>> bool(nonfinite((jnp.zeros(2), jnp.arange(2))))
    False
  """
  flags = [~jnp.isfinite(x).all() for x in jax.tree.leaves(tree)
           if jnp.issubdtype(x.dtype, jnp.floating)]
  return jnp.any(jnp.stack(flags)) if flags else jnp.asarray(False)


def is_key(x: Any) -> bool:
  """Whether `x` is a typed PRNG key array (`jax.random.key`), of any shape."""
  return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def check_key(key: Any) -> None:
  """Raises ValueError unless `key` is a typed PRNG key or a 1-D batch of them (seeds).

  Example:
    >>> check_key(jax.random.key(0))
    >>> check_key(jax.random.PRNGKey(0))
    Traceback (most recent call last):
    ...
    ValueError: key must be a typed PRNG key (jax.random.key) or ..., got uint32 of shape (2,)
  """
  if not is_key(key) or key.ndim > 1:
    raise ValueError(f"key must be a typed PRNG key (jax.random.key) or a 1-D batch of them, "
                     f"got {getattr(key, 'dtype', type(key))} of shape {np.shape(key)}")
