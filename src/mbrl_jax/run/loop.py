"""The one `train` that drives every algorithm (`mbrl_jax.algorithms.base.Algorithm`): vmap
over seeds, jit with the state donated, a compile cache, and the host-side loop around the
compiled chunks (a PETS trial, an MBPO epoch, a Dreamer training chunk): metric history,
progress callbacks, periodic checkpoints, resume, and a stop on NaN or Inf that names the
chunk and the component and keeps the last good checkpoint."""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any, Callable

import jax
import numpy as np

from mbrl_jax import compile as compile_lib
from mbrl_jax.run.checkpoint import Checkpointer, run_meta
from mbrl_jax.run.devices import to_host
from mbrl_jax.tree import check_key

if TYPE_CHECKING:
  from mbrl_jax.algorithms.base import Algorithm


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
    step: Callable[[Any], tuple[Any, dict]] | Callable[[int], Callable],
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
    state_fn: Callable[[int, Any], Any] | None = None,
    per_chunk: bool = False,
) -> tuple[Any, History]:
  """Calls the compiled `step` for chunks start..stop-1 (`per_chunk`: `step(i)` is chunk i's
  compiled step).

  After each chunk: `check_fn(metrics)` may return a description of a non-finite component,
  which stops the run with FloatingPointError (naming the chunk, the component and the last
  good checkpoint, which is kept); the metrics join `history`; `progress_fn(i, metrics)` runs;
  every `checkpoint_every` chunks and after the last one, the state is checkpointed as step
  i + 1 with the history; then `state_fn(i, state)` runs (e.g. filming the policy), before the
  next chunk is given the state (donated).
  """
  last_saved = checkpointer.latest_step() if checkpointer is not None else None
  for i in range(start, stop):
    state, metrics = (step(i) if per_chunk else step)(state)
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
    if state_fn is not None:
      state_fn(i, state)
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


# Recent `train` calls' compiled functions: (name, config, seed axis, options) ->
# (init, step, step_at, jitted init, jitted step of chunk i).
_COMPILED: collections.OrderedDict = collections.OrderedDict()
_COMPILED_MAX = 8


def _one_seed(fn: Callable) -> Callable:
  """`fn` on a batch of one seed, computed unbatched: the leading axis of size 1 is dropped
  from every input leaf and put back on every output leaf. Same values as `jax.vmap(fn)`,
  but `vmap` turns each `lax.cond` into a `select` that runs both branches (L-BFGS's zoom
  line search in PILCO: 2.8x slower as a batch of one)."""
  def unbatched(*args):
    out = fn(*jax.tree.map(lambda x: x[0], args))
    return jax.tree.map(lambda x: x[None], out)
  return unbatched


def _seed_axis(fn: Callable, seeds: int | None) -> Callable:
  """`fn` for `seeds` seeds along a leading axis (None: no seed axis)."""
  if seeds is None:
    return fn
  return _one_seed(fn) if seeds == 1 else jax.vmap(fn)


def _compiled(algorithm: Algorithm, seeds: int | None
              ) -> tuple[Callable, Callable[[int], Callable]]:
  """The jitted init of `algorithm` and a function of the chunk index giving the jitted step
  (`algorithm.step`, or what `algorithm.step_at` returns for that chunk, each distinct one
  jitted once), for `seeds` seeds along a leading axis (vmapped; a batch of one computed
  unbatched, see `_one_seed`) or for one key without a seed axis (None). A later call with
  the same `init`, `step` and `step_at` functions (the algorithm modules' `make` memoises
  them per config) and the same compiler options reuses them, so a second `train` (a resume, another seed batch, a notebook
  cell run again) compiles nothing; other functions under the same name and config (an
  algorithm built or patched by hand) are compiled anew."""
  options = compile_lib.compiler_options(algorithm.dot_rows)
  axis = None if seeds is None else seeds == 1        # what the compiled programs depend on
  cache_key = (algorithm.name, algorithm.config, axis, tuple(sorted(options.items())))
  cached = _COMPILED.get(cache_key)
  fns = (algorithm.init, algorithm.step, algorithm.step_at)
  if cached is None or any(a is not b for a, b in zip(cached[:3], fns)):
    init_fn = _seed_axis(algorithm.init, seeds)
    jitted_steps: dict[int, tuple[Callable, Callable]] = {}     # id(step) -> (step, jitted)

    def step_at(i: int) -> Callable:
      fn = algorithm.step if algorithm.step_at is None else algorithm.step_at(i)
      hit = jitted_steps.get(id(fn))
      if hit is None or hit[0] is not fn:
        hit = (fn, jax.jit(_seed_axis(fn, seeds), donate_argnums=0,
                           compiler_options=options))
        jitted_steps[id(fn)] = hit
      return hit[1]

    cached = (*fns, jax.jit(init_fn, compiler_options=options), step_at)
    _COMPILED[cache_key] = cached
    while len(_COMPILED) > _COMPILED_MAX:
      _COMPILED.popitem(last=False)
  _COMPILED.move_to_end(cache_key)
  return cached[3], cached[4]


def train(
    algorithm: Algorithm,
    key: jax.Array,
    *,
    progress_fn: Callable[[int, dict], Any] | None = None,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    state_fn: Callable[[int, Any], Any] | None = None,
) -> tuple[Any, dict[str, np.ndarray]]:
  """Runs any algorithm: init, then its compiled chunks, seeds vmapped, with checkpoints.

  Args:
    algorithm: from the algorithm module's `make(config)` (e.g. `pets.make(pets.PRESETS[
      "quick"])`), see `mbrl_jax.algorithms.base.Algorithm`.
    key: a typed key (one seed) or a 1-D batch of them (seeds, vmapped through the same
      compiled calls; split over devices when the batch is placed with a multi-device
      sharding, see `shard_seeds`).
    progress_fn: called after every chunk, those run by init included, as
      `progress_fn(i, metrics)` with NumPy arrays (a seed axis first when `key` is a batch).
    checkpoint_dir: where to checkpoint the whole state (orbax) and the metric history: after
      init and every `checkpoint_every` chunks (the last one always).
    checkpoint_every: chunks between checkpoints.
    resume: continue from the latest checkpoint in `checkpoint_dir`, which must have been
      written by the same algorithm, config and keys (fresh start if there is none); the
      result equals an uninterrupted run's.
    state_fn: called after every compiled chunk as `state_fn(i, state)` with the state (seed
      axis first when batched), before the next chunk takes it; for work on the state outside
      the compiled loop, such as recording a video of the policy.

  Returns:
    The final state and the history, {metric: [num_chunks, (S)]}.

  Raises:
    FloatingPointError: a `nonfinite/...` metric was True; the message names the chunk, the
      seed and the component, and the last good checkpoint is kept.
    CheckpointError: `resume` with a checkpoint of another run, or a corrupt one.

  Example:
    >>> from mbrl_jax.algorithms import pets
    >>> algorithm = pets.make(pets.PRESETS["quick"])
    >>> keys = jnp.stack([jax.random.key(s) for s in range(4)])
    >>> state, history = train(algorithm, keys)       # doctest: +SKIP
    >>> history["train/return"].shape                  # doctest: +SKIP
    (6, 4)
  """
  check_key(key)
  if checkpoint_every < 1:
    raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
  batched = key.ndim == 1
  init_fn, step_at = _compiled(algorithm, key.shape[0] if batched else None)
  sharding = key.sharding if batched and len(key.sharding.device_set) > 1 else None
  checkpointer = None if checkpoint_dir is None else Checkpointer(
      checkpoint_dir, meta=run_meta(algorithm.name, key, algorithm.config))
  name, unit = algorithm.name, algorithm.unit

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
      step_at, state, start=start, stop=algorithm.num_chunks, history=history, name=name,
      unit=unit, checkpointer=checkpointer, checkpoint_every=checkpoint_every,
      check_fn=lambda m: describe_nonfinite(m, algorithm.nonfinite), progress_fn=progress_fn,
      state_fn=state_fn, per_chunk=True)
  return state, history.stacked()
