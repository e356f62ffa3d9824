"""The host-side loop around an algorithm's compiled chunks (a PETS trial, an MBPO epoch, a
Dreamer training chunk): metric history, progress callbacks, periodic checkpoints, resume,
and a stop on NaN or Inf that names the chunk and the component and keeps the last good
checkpoint."""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from mbrl_jax.run.checkpoint import Checkpointer
from mbrl_jax.run.devices import to_host


def nonfinite_leaves(tree: Any) -> jax.Array:
  """Whether any floating leaf of `tree` holds a NaN or Inf: a [] bool, traceable (for a
  batch of seeds, `jax.vmap` it)."""
  flags = [~jax.numpy.isfinite(x).all() for x in jax.tree.leaves(tree)
           if jax.numpy.issubdtype(x.dtype, jax.numpy.floating)]
  return jax.numpy.any(jax.numpy.stack(flags)) if flags else jax.numpy.asarray(False)


class History:
  """Per-chunk metrics, kept as lists of NumPy values and stacked on request."""

  def __init__(self, values: dict[str, list] | None = None):
    self.values: dict[str, list] = {k: list(v) for k, v in (values or {}).items()}
    self.length = max((len(v) for v in self.values.values()), default=0)

  def append(self, metrics: dict[str, Any]) -> None:
    for name, value in metrics.items():
      if name not in self.values:
        self.values[name] = [np.full(np.shape(value), np.nan)] * self.length
      self.values[name].append(np.asarray(value))
    self.length += 1
    for name, column in self.values.items():
      if len(column) < self.length:        # a metric missing this chunk
        column.append(np.full(np.shape(column[-1]), np.nan))

  def stacked(self) -> dict[str, np.ndarray]:
    return {name: np.stack(column) for name, column in self.values.items()}

  def to_json(self) -> dict[str, list]:
    return {name: [np.asarray(v, np.float64).tolist() for v in column]
            for name, column in self.values.items()}

  @classmethod
  def from_json(cls, data: dict[str, list]) -> "History":
    return cls({name: [np.asarray(v, np.float64) for v in column]
                for name, column in data.items()})


def run_chunks(
    step: Callable[[Any], tuple[Any, dict]],
    state: Any,
    *,
    start: int,
    stop: int,
    history: History,
    name: str,
    unit: str = "chunk",
    checkpointer: Checkpointer | None = None,
    checkpoint_every: int = 1,
    check_fn: Callable[[dict], str | None] | None = None,
    progress_fn: Callable[[int, dict], Any] | None = None,
) -> tuple[Any, History]:
  """Calls the compiled `step` for chunks start..stop-1.

  After each chunk: `check_fn(metrics)` may return a description of a non-finite component,
  which stops the run with FloatingPointError (naming the chunk, the component and the last
  good checkpoint, which is kept); the metrics join `history`; `progress_fn(i, metrics)` runs;
  every `checkpoint_every` chunks and after the last one, the state is checkpointed as step
  i + 1 with the history.
  """
  last_saved = checkpointer.latest_step() if checkpointer is not None else None
  for i in range(start, stop):
    state, metrics = step(state)
    metrics = jax.tree.map(to_host, metrics)
    problem = check_fn(metrics) if check_fn is not None else None
    if problem:
      kept = (f"the last good checkpoint is {checkpointer.directory / str(last_saved)} (kept; "
              "--resume continues from it)" if last_saved is not None else
              "no checkpoint was written")
      raise FloatingPointError(f"{name} {unit} {i}: {problem}; stopped, {kept}")
    history.append(metrics)
    if progress_fn is not None:
      progress_fn(i, metrics)
    if checkpointer is not None and ((i + 1 - start) % checkpoint_every == 0 or i + 1 == stop):
      checkpointer.save(i + 1, state, extra={"history": history.to_json()})
      last_saved = i + 1
  return state, history


def describe_nonfinite(metrics: dict[str, Any], flags: dict[str, str],
                       seeds: list[int] | None = None) -> str | None:
  """For a check_fn: `flags` maps boolean metric names to the component they cover; returns
  e.g. "NaN/Inf in the model parameters (seed index [1])" or None."""
  for metric, component in flags.items():
    bad = np.asarray(metrics[metric]).astype(bool)
    if bad.any():
      where = ""
      if bad.ndim == 1:
        idx = np.flatnonzero(bad)
        where = (f" (seeds {[seeds[j] for j in idx]})" if seeds else
                 f" (seed index {idx.tolist()})")
      return f"NaN/Inf in {component}{where}"
  return None


