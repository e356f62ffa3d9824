"""Shared pytrees and aliases (layer 0: imports nothing from the rest of the package)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

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
