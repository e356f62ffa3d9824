"""Devices: a mesh over the available devices with the seed axis sharded by `NamedSharding`.

N seeds of an algorithm are one `jax.vmap`; placing their keys with `shard_seeds` splits the
seed axis over the devices, and `jax.jit` propagates that sharding through `init` and every
compiled chunk (each device runs its seeds; no `pmap`). On CPU, try it with
`XLA_FLAGS=--xla_force_host_platform_device_count=4`.

Multi-host: call `jax.distributed.initialize()` at the top of the script on every host (with
`coordinator_address`, `num_processes` and `process_id`, or from the cluster's environment on
SLURM / TPU pods); `jax.devices()` then lists every host's devices and `seed_mesh` spans them.
Example launch on two hosts:

  # host 0                                   # host 1
  JAX_COORDINATOR_ADDRESS=10.0.0.1:1234 \\    JAX_COORDINATOR_ADDRESS=10.0.0.1:1234 \\
  JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0 \\     JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=1 \\
  python experiments/pets.py --seeds 16 --distributed    (same command on both)
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

SEED_AXIS = "seeds"


def seed_mesh(num_seeds: int, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh named "seeds" over as many devices as evenly divide `num_seeds`.

  Args:
    num_seeds: the length of the seed axis to shard.
    devices: devices to use (default: all of `jax.devices()`).
  """
  if num_seeds < 1:
    raise ValueError(f"num_seeds must be >= 1, got {num_seeds}")
  devices = list(jax.devices() if devices is None else devices)
  n = max(d for d in range(1, len(devices) + 1) if num_seeds % d == 0)
  return Mesh(np.array(devices[:n]), (SEED_AXIS,))


def seed_sharding(mesh: Mesh) -> NamedSharding:
  """Leading axis split over the mesh's seed axis, the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(SEED_AXIS))


def shard_seeds(tree: Any, mesh: Mesh) -> Any:
  """Places every array of `tree` (leading axis = seeds) with its seed axis sharded."""
  sharding = seed_sharding(mesh)
  return jax.tree.map(lambda x: jax.device_put(x, sharding), tree)


def maybe_distributed_initialize() -> None:
  """Calls `jax.distributed.initialize()` (reading JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
  JAX_PROCESS_ID or the cluster's environment); use before any other JAX call."""
  jax.distributed.initialize()
