"""The host-side loop around an algorithm's compiled chunks (a PETS trial, an MBPO epoch, a
Dreamer training chunk): metric history, progress callbacks, periodic checkpoints, resume,
and a stop on NaN or Inf that names the chunk and the component and keeps the last good
checkpoint."""

from __future__ import annotations

import collections
from typing import Any, Callable, Hashable

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


def describe_nonfinite(metrics: dict[str, Any], flags: dict[str, str]) -> str | None:
  """For a check_fn: `flags` maps boolean metric names to the component they cover; returns
  e.g. "NaN/Inf in the model parameters (seed index [1])" or None."""
  for metric, component in flags.items():
    bad = np.asarray(metrics[metric]).astype(bool)
    if bad.any():
      where = ""
      if bad.ndim == 1:
        where = f" (seed index {np.flatnonzero(bad).tolist()})"
      return f"NaN/Inf in {component}{where}"
  return None




# Compiled (init, step) pairs of recent train_chunks calls, by (cache_key, batched).
_COMPILED: collections.OrderedDict = collections.OrderedDict()
_COMPILED_MAX = 8


def check_key(key: Any) -> None:
  """Raises ValueError unless `key` is a typed PRNG key or a 1-D batch of them (seeds)."""
  if not (hasattr(key, "dtype") and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)) \
      or key.ndim > 1:
    raise ValueError(f"key must be a typed PRNG key (jax.random.key) or a 1-D batch of them, "
                     f"got {getattr(key, 'dtype', type(key))} of shape {np.shape(key)}")


def train_chunks(
    key: jax.Array,
    *,
    init_fn: Callable[[jax.Array], tuple[Any, dict]],
    step_fn: Callable[[Any], tuple[Any, dict]],
    num_chunks: int,
    name: str,
    unit: str,
    meta: dict,
    check_fn: Callable[[dict], str | None] | None = None,
    progress_fn: Callable[[int, dict], Any] | None = None,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    jit: Callable[..., Any] = jax.jit,
    cache_key: Hashable | None = None,
) -> tuple[Any, dict[str, np.ndarray]]:
  """An algorithm's `train`: init, then compiled chunks, seeds vmapped, with checkpoints.

  Args:
    key: a typed key (one seed) or a 1-D batch of them (seeds, vmapped; sharded over devices
      when the batch is placed with a multi-device sharding, see `shard_seeds`).
    init_fn: unbatched `init_fn(key) -> (state, done)`, where `done` holds the metrics of the
      chunks init already ran, each [D] (e.g. PETS' random trials; D may be 0 with `{}`).
    step_fn: unbatched, pure `step_fn(state) -> (state, metrics)`: one chunk.
    num_chunks: total chunks, those done by init included.
    name, unit: for messages ("PETS", "trial").
    meta: what a checkpoint must share to be resumed (config, keys), JSON-able.
    check_fn, progress_fn: see `run_chunks`; progress also runs for the init's chunks.
    checkpoint_dir, checkpoint_every: checkpoints after init and every N chunks.
    resume: continue from the latest checkpoint in `checkpoint_dir` (fresh start if none).
    jit: the compiler (e.g. `mbrl_jax.compile.jit`); the step is jitted with its state donated.
    cache_key: a hashable that determines `init_fn` and `step_fn` completely (e.g.
      ("pets", config)). Calls with an equal key reuse the first call's compiled functions,
      so a second `train` in the same process (a resume, another seed batch, a notebook
      cell run again) does not compile again. The last few keys are kept.

  Returns:
    The final state and the history, {metric: [num_chunks, (S)]}.
  """
  check_key(key)
  if checkpoint_every < 1:
    raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
  batched = key.ndim == 1
  cached = _COMPILED.get((cache_key, batched)) if cache_key is not None else None
  if cached is None:
    if batched:
      init_fn, step_fn = jax.vmap(init_fn), jax.vmap(step_fn)
    cached = (jit(init_fn), jit(step_fn, donate_argnums=0))
    if cache_key is not None:
      _COMPILED[(cache_key, batched)] = cached
      while len(_COMPILED) > _COMPILED_MAX:
        _COMPILED.popitem(last=False)
  else:
    _COMPILED.move_to_end((cache_key, batched))
  init_fn, step = cached
  sharding = key.sharding if batched and len(key.sharding.device_set) > 1 else None
  checkpointer = None if checkpoint_dir is None else Checkpointer(checkpoint_dir, meta=meta)

  if resume and checkpointer is not None and checkpointer.latest_step() is not None:
    state, extra = checkpointer.restore(jax.eval_shape(init_fn, key)[0])
    if sharding is not None:
      state = jax.device_put(state, sharding)
    history = History.from_json(extra["history"])
    start = checkpointer.latest_step()
  else:
    state, done = init_fn(key)
    done = {k: to_host(v) for k, v in done.items()}                # [(S,) D]
    if batched:
      done = {k: np.moveaxis(v, 0, -1) for k, v in done.items()}  # [D, S]
    history = History()
    start = len(next(iter(done.values()))) if done else 0
    for i in range(start):
      metrics = {k: v[i] for k, v in done.items()}
      history.append(metrics)
      if progress_fn is not None:
        progress_fn(i, metrics)
    if checkpointer is not None:
      checkpointer.save(start, state, extra={"history": history.to_json()})

  state, history = run_chunks(
      step, state, start=start, stop=num_chunks, history=history, name=name, unit=unit,
      checkpointer=checkpointer, checkpoint_every=checkpoint_every, check_fn=check_fn,
      progress_fn=progress_fn)
  return state, history.stacked()
