"""Devices: a mesh over the available devices with the seed axis sharded by `NamedSharding`.

N seeds of an algorithm are one `jax.vmap`; placing their keys with `shard_seeds` splits the
seed axis over the devices, and `jax.jit` propagates that sharding through `init` and every
compiled chunk (each device runs its seeds; no `pmap`). On CPU, try it with
`XLA_FLAGS=--xla_force_host_platform_device_count=4`.

Results and the layout (measured on XLA:CPU, tested across processes by
tests/run/test_devices_across_processes.py): the same seeds on the same layout give bitwise the
same results in every process. How many seeds are batched together can change the last bits
too: with the model fit as a batched `while_loop` (since issue 12), seed 3 run alone and seed
3 batched with seed 4 on one device gave the same returns but parameters that differ in their
last bits. Sharded over several devices, each device runs XLA's partitioned program for
its local share of the seeds; it compiles to other fusions than the one-device program and rounds
differently (after one PETS model fit the parameters are up to ~6e-5 apart; one planning step on
equal inputs is bitwise equal), and a closed loop of planning and refitting amplifies that into
different returns. A sharded seed's results depend on the seeds per device (equal on 2 and on 4
devices with one seed each) and differ from one device's. Running each device's share as its
own one-device program gave one device's results for a model fit, at one compilation per device.

Multi-host: call `jax.distributed.initialize()` first on every host (it reads
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID, or the cluster's environment on
SLURM / TPU pods; the scripts' `--distributed` flag does it); `jax.devices()` then lists every
host's devices and `seed_mesh` spans them. `shard_seeds` builds the global array from each
host's identical copy, and `to_host` gathers a result from all hosts. Two hosts:

  # host 0; on host 1 the same with JAX_PROCESS_ID=1
  JAX_COORDINATOR_ADDRESS=10.0.0.1:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0 \\
    python experiments/pets.py --distributed --seeds 16 --out runs/pets16

(Tested here only with forced CPU devices in one process; the multi-process path follows JAX's
documented API but has not been run on real hosts.)
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
  """Places every array of `tree` (leading axis = seeds) with its seed axis sharded. Across
  several processes every process must pass the same values."""
  sharding = seed_sharding(mesh)

  def place(x):
    if jax.process_count() == 1:
      return jax.device_put(x, sharding)
    is_key = jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
    data = np.asarray(jax.random.key_data(x) if is_key else x)
    array = jax.make_array_from_callback(data.shape, sharding, lambda index: data[index])
    return jax.random.wrap_key_data(array, impl=jax.random.key_impl(x)) if is_key else array

  return jax.tree.map(place, tree)


def to_host(x: Any) -> np.ndarray:
  """A (possibly multi-host) array as one NumPy array on this host."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)

