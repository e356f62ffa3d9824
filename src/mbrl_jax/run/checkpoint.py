"""Checkpoints of a whole training state with orbax: parameters, optimizer states, buffers,
keys and counters, no pickle.

`Checkpointer(dir, meta=...)` keeps the last `max_to_keep` checkpoints in `dir/<step>/`. Each
holds the state (typed PRNG keys are stored as their key data and re-wrapped on restore), the
`meta` dict it was written with (config, seeds: what must match to continue) and a JSON `extra`
(e.g. the metric history so far). Orbax writes a checkpoint into a temporary directory and
renames it when complete, so a process killed mid-write leaves the previous checkpoint as the
latest loadable one.

Restoring refuses, with a message naming the difference, a checkpoint written with another
`meta` (another config or seed) or holding arrays of other shapes or dtypes than the template.

Example:
  >>> import tempfile
  >>> state = {"w": jnp.arange(3.0), "key": jax.random.key(0), "step": jnp.asarray(3)}
  >>> ckpt = Checkpointer(tempfile.mkdtemp(), meta={"config": {"lr": 0.1}})
  >>> ckpt.save(3, state, extra={"history": {"loss": [1.0, 0.5]}})
  >>> restored, extra = ckpt.restore(jax.eval_shape(lambda: state))
  >>> restored["w"].tolist(), int(restored["step"]), extra["history"]["loss"]
  ([0.0, 1.0, 2.0], 3, [1.0, 0.5])
  >>> Checkpointer(ckpt.directory, meta={"config": {"lr": 0.2}}).restore(state)
  Traceback (most recent call last):
  ...
  mbrl_jax.run.checkpoint.CheckpointError: checkpoint ... was written by a different run; ...
    config.lr: checkpoint has 0.1, this run has 0.2
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _ocp():
  """orbax.checkpoint, imported on first use: it takes about 1.5 s of a process's start (a
  script's `--help` and the notebooks that never checkpoint need not pay it)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  return ocp


def run_meta(algorithm: str, key: Any, config: Any) -> dict:
  """The `meta` of an algorithm's run: what a checkpoint must share with a run to be resumed
  by it (the algorithm, its config dataclass and the seed keys)."""
  return {"algorithm": algorithm, "config": dataclasses.asdict(config),
          "keys": np.asarray(jax.random.key_data(key)).tolist()}


class CheckpointError(ValueError):
  """A checkpoint that cannot be used: corrupt, or written by another run."""


def _is_key(x: Any) -> bool:
  return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _name(path) -> str:
  parts = []
  for p in path:
    if isinstance(p, jax.tree_util.GetAttrKey):
      parts.append(p.name)
    elif isinstance(p, jax.tree_util.DictKey):
      parts.append(str(p.key))
    elif isinstance(p, jax.tree_util.SequenceKey):
      parts.append(str(p.idx))
    else:
      parts.append(str(p).strip(".[]'\""))
  return ".".join(parts) or "root"


def _to_storable(state: Any) -> dict[str, Any]:
  """The state as a flat {dotted path: array} dict, keys as their key data. Flat names keep
  the stored arrays matched to the state's fields by name, not by position."""
  leaves = jax.tree_util.tree_leaves_with_path(state)
  return {_name(p): (jax.random.key_data(x) if _is_key(x) else x) for p, x in leaves}


def _storable_template(template: Any) -> dict[str, jax.ShapeDtypeStruct]:
  def leaf(x):
    if _is_key(x):
      x = jax.eval_shape(jax.random.key_data, x)
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype)
  return {_name(p): leaf(x) for p, x in jax.tree_util.tree_leaves_with_path(template)}


def _from_storable(stored: dict[str, Any], template: Any) -> Any:
  def leaf(path, t):
    # Uncommitted, like a jitted function's outputs, so that the restored state hits the same
    # compiled step as a fresh one instead of compiling it again.
    x = jnp.asarray(np.asarray(stored[_name(path)]))
    if _is_key(t):
      # A template from eval_shape holds no key, only its dtype, which knows the impl.
      return jax.random.wrap_key_data(x, impl=t.dtype._impl)  # pylint: disable=protected-access
    return x
  return jax.tree_util.tree_map_with_path(leaf, template)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(d, dict):
    out = {}
    for k, v in d.items():
      out.update(_flatten(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: d}


def _canonical(meta: dict) -> dict:
  """What `meta` looks like after a JSON round trip (tuples become lists)."""
  return json.loads(json.dumps(meta))


class Checkpointer:
  """Saves and restores a training state under `directory` (see the module docstring).

  Args:
    directory: where checkpoints go (created).
    meta: JSON-able description of the run (config, seeds); a checkpoint is restored only
      into a run with equal `meta`.
    max_to_keep: newest checkpoints kept; older ones are deleted after a successful save.
  """

  def __init__(self, directory: str | pathlib.Path, *, meta: dict, max_to_keep: int = 2):
    if max_to_keep < 1:
      raise ValueError(f"max_to_keep must be >= 1, got {max_to_keep}")
    self.directory = pathlib.Path(directory).absolute()
    self.meta = _canonical(meta)
    ocp = _ocp()
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                             enable_async_checkpointing=False, create=True),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler(),
                       "extra": ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step, or None."""
    self._manager.reload()
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    self._manager.reload()
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, *, extra: dict | None = None) -> None:
    """Writes checkpoint `step` (synchronously; complete or absent, never half-written)."""
    ocp = _ocp()
    self._manager.save(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardSave(_to_storable(state)),
        meta=ocp.args.JsonSave(self.meta),
        extra=ocp.args.JsonSave(_canonical(extra or {}))))
    self._manager.wait_until_finished()

  def restore(self, template: Any, step: int | None = None) -> tuple[Any, dict]:
    """Restores checkpoint `step` (default: the latest) into the structure of `template`.

    Args:
      template: a state or its `jax.eval_shape`, giving the tree, shapes and dtypes expected.
      step: which checkpoint.

    Returns:
      (state, extra).

    Raises:
      FileNotFoundError: no checkpoint.
      CheckpointError: corrupt, another run's (other meta), or other shapes/dtypes.
    """
    ocp = _ocp()
    step = self.latest_step() if step is None else step
    if step is None or step not in self.all_steps():
      raise FileNotFoundError(f"no checkpoint {'' if step is None else step} in {self.directory}")
    where = self.directory / str(step)
    try:
      saved = self._manager.restore(step, args=ocp.args.Composite(
          meta=ocp.args.JsonRestore(), extra=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types for unreadable files
      raise CheckpointError(f"checkpoint {where} is unreadable (corrupt?): {e}") from e
    mine, theirs = _flatten(self.meta), _flatten(saved["meta"] or {})
    differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    if differ:
      lines = [f"  {k}: checkpoint has {theirs.get(k, '<absent>')!r}, this run has "
               f"{mine.get(k, '<absent>')!r}" for k in differ[:10]]
      raise CheckpointError(f"checkpoint {where} was written by a different run; refusing to "
                            "resume. Differences:\n" + "\n".join(lines))
    want = _storable_template(template)
    try:
      stored_meta = self._manager.item_metadata(step)["state"]
      got = {k: (tuple(m.shape), np.dtype(m.dtype)) for k, m in dict(stored_meta).items()}
    except Exception as e:
      raise CheckpointError(f"checkpoint {where} is unreadable (corrupt?): {e}") from e
    expected = {k: (tuple(s.shape), np.dtype(s.dtype)) for k, s in want.items()}
    if set(got) != set(expected):
      missing, unknown = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
      raise CheckpointError(f"checkpoint {where} holds other arrays than this run's state "
                            f"(missing: {missing[:5]}, unexpected: {unknown[:5]}); refusing "
                            "to resume")
    for k in sorted(expected):
      if got[k] != expected[k]:
        (gs, gd), (es, ed) = got[k], expected[k]
        raise CheckpointError(f"checkpoint {where}: {k} is {gd}{list(gs)}, this run expects "
                              f"{ed}{list(es)}; refusing to resume")
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(want)))
    except Exception as e:
      raise CheckpointError(f"checkpoint {where} is unreadable (corrupt?): {e}") from e
    return _from_storable(restored["state"], template), saved["extra"] or {}
