"""Shared pytrees and aliases (layer 0: imports nothing from the rest of the package)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

PRNGKey = jax.Array
Params = Any  # an opaque pytree of arrays
Metrics = dict[str, jax.Array]


class Transition(NamedTuple):
  """One environment transition, or a batch of them (leading axes are batch axes).

  Attributes:
    obs: observation before the action.          # [..., *obs_shape]
    action: action taken.                         # [..., A]
    reward: reward received.                      # [...]
    next_obs: observation after the action.       # [..., *obs_shape]
    terminated: 1.0 where the episode truly ended (no bootstrapping past it).   # [...]
    truncated: 1.0 where the episode was cut by a time limit, not terminated.  # [...]
  """

  obs: jax.Array
  action: jax.Array
  reward: jax.Array
  next_obs: jax.Array
  terminated: jax.Array
  truncated: jax.Array

  @classmethod
  def zeros(cls, obs_shape: tuple[int, ...], action_size: int, obs_dtype: Any = jnp.float32
            ) -> "Transition":
    """One all-zero transition without a batch axis (e.g. a replay buffer's example):
    obs and next_obs [*obs_shape] of `obs_dtype`, action [action_size], scalars float32."""
    obs = jnp.zeros(obs_shape, obs_dtype)
    scalar = jnp.zeros((), jnp.float32)
    return cls(obs=obs, action=jnp.zeros((action_size,), jnp.float32), reward=scalar,
               next_obs=obs, terminated=scalar, truncated=scalar)
