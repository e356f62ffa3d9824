"""What a run needs around its compiled loop: metric files (JSON Lines, CSV, TensorBoard),
learning-curve plots (`mbrl_jax.run.plot`, also a command: `python -m mbrl_jax.run.plot DIR
[DIR ...]`), orbax checkpoints with resume, the chunk loop with its NaN stop, and device meshes
for the seed axis.

This package imports nothing from `mbrl_jax.algorithms`, so algorithms can use it."""

from mbrl_jax.run.checkpoint import Checkpointer, CheckpointError, run_meta
from mbrl_jax.run.devices import seed_mesh, seed_sharding, shard_seeds, to_host
from mbrl_jax.run.loop import (History, check_key, describe_nonfinite, nonfinite_leaves,
                               run_chunks, train_chunks)
from mbrl_jax.run.metrics import MetricsWriter, read_jsonl, write_csv, write_jsonl_rows

__all__ = [
    "Checkpointer", "CheckpointError", "History", "MetricsWriter", "check_key",
    "describe_nonfinite", "nonfinite_leaves", "read_jsonl", "run_chunks", "run_meta",
    "seed_mesh", "seed_sharding", "shard_seeds", "to_host", "train_chunks", "write_csv",
    "write_jsonl_rows",
]
