"""What a run needs around its compiled loop: metric files and learning-curve plots
(`mbrl_jax.run.plot`, also a command: `python -m mbrl_jax.run.plot DIR [DIR ...]`)."""

from mbrl_jax.run.metrics import read_jsonl, write_jsonl_rows

__all__ = ["read_jsonl", "write_jsonl_rows"]
