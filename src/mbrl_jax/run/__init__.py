"""What a run needs around its compiled loop: metric files and learning-curve plots."""

from mbrl_jax.run.metrics import read_jsonl, write_jsonl_rows
from mbrl_jax.run.plot import plot_learning_curves

__all__ = ["read_jsonl", "write_jsonl_rows", "plot_learning_curves"]
