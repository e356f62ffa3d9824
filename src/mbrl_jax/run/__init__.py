"""The driver: `train(algorithm, key)` runs any algorithm made by an algorithm module's
`make(config)` (seeds vmapped, compiled chunks, checkpoints and resume, the NaN stop,
progress), and what a run needs around it: metric files (JSON Lines, CSV, TensorBoard),
learning-curve plots (`mbrl_jax.run.plot`, also a command: `python -m mbrl_jax.run.plot DIR
[DIR ...]`), the command line of the scripts (`mbrl_jax.run.cli`) and device meshes for the
seed axis.

Layer 5: it drives `mbrl_jax.algorithms`, which import nothing from here."""

from mbrl_jax.run.checkpoint import Checkpointer, CheckpointError, run_meta
from mbrl_jax.run.devices import seed_mesh, seed_sharding, shard_seeds, to_host
from mbrl_jax.run.loop import History, describe_nonfinite, run_chunks, train
from mbrl_jax.run.metrics import MetricsWriter, read_jsonl, write_csv, write_jsonl_rows

__all__ = [
    "Checkpointer", "CheckpointError", "History", "MetricsWriter", "describe_nonfinite",
    "read_jsonl", "run_chunks", "run_meta", "seed_mesh", "seed_sharding", "shard_seeds",
    "to_host", "train", "write_csv", "write_jsonl_rows",
]
