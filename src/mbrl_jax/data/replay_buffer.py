"""A fixed-capacity ring replay buffer over any experience pytree.

All functions are pure module functions over a `BufferState`. The experience
stored is any pytree of arrays -- a `mbrl_jax.types.Transition`, a NamedTuple
of one's own, a (nested) dict -- and every leaf gets a leading capacity axis.
The state is self-describing: the capacity and per-leaf shapes/dtypes are the
(static) shapes/dtypes of `state.data`, so no closure or factory object is
needed, and every function composes directly with `jax.jit`, `jax.vmap` (a
batch of buffers, e.g. one per seed or per parallel environment) and
`jax.lax.scan`.

Typical use::

  state = init(capacity, example)                 # example has no batch axis
  add_fn = jax.jit(add, donate_argnums=0)         # in-place ring writes
  state = add_fn(state, item_or_batch)
  batch = jax.jit(sample, static_argnums=2)(state, key, 256)
  seqs, ok = jax.jit(sample_sequences, static_argnums=(2, 3))(state, key, 16, 50)

Leaves are named by their tree path in error messages: 'obs' for a field or
dict key at the top level, 'extras.log_prob' for a nested one, '0' for a tuple
entry and '<root>' when the experience is a single array.

Layout invariant: slots are filled in order 0, 1, 2, ...; while the buffer is
not full `insert_pos == size` and slots `[0, size)` are filled; once full,
`size == capacity` and `insert_pos` is the slot of the oldest item (the next
one to be overwritten). Hence the filled slots are always exactly
`arange(capacity) < size`.

Dtype policy (applies to `add` and `add_masked`): a value is accepted when its
dtype is of the same *kind* as the buffer leaf's dtype -- bool, integer
(signed or unsigned), floating, complex -- and is then cast to the leaf dtype
(e.g. float64 -> float32, int64 -> int32, int32 -> uint8; range/precision loss
within a kind is the caller's responsibility). Cross-kind values raise a
ValueError (int obs into a float buffer, float pixels into a uint8 image
buffer, bool flags into float `terminated`/`truncated` leaves). Python scalars
follow JAX's weak-type rule: a Python bool/int/float is accepted by any leaf of
the same or a "higher" kind (bool < int < float < complex), e.g. `reward=1`
into a float leaf. Shapes are strict (see `add`).

Episode boundaries (used by `sequence_start_mask` / `sample_sequences`) come
from top-level leaves of the experience, by the first rule that applies:

1. `is_first` ([] bool per step): the step starts an episode. Use this for
   any new experience type (it is what DreamerV3 stores).
2. `terminated` and/or `truncated` (a plain `Transition` has both): a step
   whose flag is nonzero ends its episode, so the next step starts one.
3. Neither: episode boundaries are unknown; only `cross_episodes=True`
   sampling is possible.

Example: two 5-step episodes marked by `is_first`; a window of 5 steps lies
within one episode unless `cross_episodes=True`.

  >>> import jax, jax.numpy as jnp
  >>> from mbrl_jax import data
  >>> step = dict(obs=jnp.zeros(3), reward=jnp.zeros(()),
  ...             is_first=jnp.zeros((), bool))
  >>> buf = data.init(100, step)
  >>> buf = data.add(buf, dict(obs=jnp.ones((10, 3)), reward=jnp.arange(10.0),
  ...                          is_first=jnp.arange(10) % 5 == 0))
  >>> windows, ok = data.sample_sequences(buf, jax.random.key(0), 8, 5)
  >>> windows["obs"].shape, bool(ok)
  ((8, 5, 3), True)
  >>> sorted(set(data.sequence_start_mask(buf, 5).nonzero()[0].tolist()))
  [0, 5]
  >>> int(data.sequence_start_mask(buf, 5, cross_episodes=True).sum())
  6
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mbrl_jax.types import PRNGKey, Transition

_FORMAT_NAME = "mbrl_jax.replay_buffer"
# Version 1 (still read): a Transition only, leaves `data.<field>` and `fields`.
# Version 2: any pytree; leaf paths and the container kind in a JSON `tree`.
_FORMAT_VERSION = 2
_ROOT = "<root>"
_IS_FIRST = "is_first"
_END_FLAGS = ("terminated", "truncated")


class BufferState(NamedTuple):
  """State of a ring replay buffer with capacity C (a pytree of arrays).

  Attributes:
    data: the storage, an experience pytree whose every leaf has a leading
      capacity axis, e.g. for a Transition obs [C, *obs_shape], action [C, A],
      reward [C], terminated [C], ... Unfilled slots hold zeros.
    insert_pos: slot the next item will be written to.               # [] int32
    size: number of filled slots, min(total_added, C).               # [] int32
    total_added: items ever added (wraps after 2**31 - 1).           # [] int32
  """

  data: Any
  insert_pos: jax.Array
  size: jax.Array
  total_added: jax.Array


# ----------------------------------------------------------------------------
# Helpers.


def _key_name(key: Any) -> str:
  """One path component as text: a field name, a dict key or an index."""
  for attr in ("name", "key", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _path_parts(path: tuple[Any, ...]) -> tuple[str, ...]:
  return tuple(_key_name(k) for k in path)


def _leaf_name(parts: tuple[str, ...]) -> str:
  return ".".join(parts) if parts else _ROOT


def _named_leaves(tree: Any) -> list[tuple[str, Any]]:
  """[(tree-path name, leaf)] in `jax.tree.leaves` order."""
  return [(_leaf_name(_path_parts(p)), x)
          for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _describe(tree: Any) -> str:
  names = [n for n, _ in _named_leaves(tree)]
  return f"{type(tree).__name__} with leaves {names}"


def capacity(state: BufferState) -> int:
  """Static capacity C of a (single, un-vmapped) buffer."""
  leaves = jax.tree.leaves(state.data)
  if not leaves:
    raise ValueError("capacity: the buffer's data has no array leaves.")
  return int(leaves[0].shape[0])


def _shape_dtype(x: Any) -> tuple[tuple[int, ...], np.dtype]:
  if not hasattr(x, "shape") or not hasattr(x, "dtype"):
    x = np.asarray(x)
  return tuple(x.shape), np.dtype(x.dtype)


def _kind(dtype: Any) -> str:
  if jnp.issubdtype(dtype, jnp.bool_):
    return "bool"
  if jnp.issubdtype(dtype, jnp.integer):
    return "integer"
  if jnp.issubdtype(dtype, jnp.floating):
    return "floating"
  if jnp.issubdtype(dtype, jnp.complexfloating):
    return "complex"
  return "other"


_KIND_ORDER = {"bool": 0, "integer": 1, "floating": 2, "complex": 3}
_PY_SCALAR_KIND = ((bool, "bool"), (int, "integer"), (float, "floating"),
                   (complex, "complex"))


def _python_scalar_kind(x: Any) -> str | None:
  for typ, kind in _PY_SCALAR_KIND:  # bool before int: bool subclasses int.
    if isinstance(x, typ):
      return kind
  return None


def _top_level_leaf(data: Any, name: str) -> jax.Array | None:
  """The leaf at path (name,) -- `data.name` or `data[name]` -- if any."""
  for path, x in jax.tree_util.tree_flatten_with_path(data)[0]:
    if len(path) == 1 and _key_name(path[0]) == name:
      return x
  return None


def _check_is_first(data: Any, fn: str) -> jax.Array | None:
  """The stored `is_first` leaf [C] bool, if the experience has one."""
  is_first = _top_level_leaf(data, _IS_FIRST)
  if is_first is not None and (is_first.ndim != 1 or
                               _kind(is_first.dtype) != "bool"):
    raise ValueError(
        f"{fn}: leaf 'is_first' must be a [] bool per step, got shape "
        f"{tuple(is_first.shape[1:])} and dtype {is_first.dtype}.")
  return is_first


# ----------------------------------------------------------------------------
# Construction.


def init(capacity: int, example: Any) -> BufferState:
  """Creates an empty buffer able to hold `capacity` items.

  Args:
    capacity: number of slots C (a static Python int >= 1).
    example: one item WITHOUT a batch axis: any pytree (a Transition, a
      NamedTuple, a dict, ...) whose leaves are arrays, numpy arrays, Python
      scalars or `jax.ShapeDtypeStruct`s; only its structure, shapes and
      dtypes are used. A Python list or tuple is a tree node (its entries
      become leaves): give a vector leaf as an array. Dtypes are
      canonicalised for the current JAX config (float64 -> float32 unless
      x64 is enabled). A top-level `is_first` leaf must be a [] bool (see
      the module docstring on episode boundaries).

  Returns:
    An empty BufferState; each data leaf is zeros [C, *example_leaf.shape],
    in a tree of the example's structure.
  """
  if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)):
    raise TypeError(f"init: capacity must be a Python int, got {capacity!r}.")
  if capacity < 1:
    raise ValueError(f"init: capacity must be >= 1, got {capacity}.")
  named = _named_leaves(example)
  if not named:
    raise ValueError(f"init: the example has no array leaves "
                     f"({type(example).__name__}).")

  def zeros(name: str, x: Any) -> jax.Array:
    shape, dtype = _shape_dtype(x)
    if _kind(dtype) == "other":
      raise ValueError(f"init: leaf '{name}' has unsupported dtype {dtype}.")
    dtype = jax.dtypes.canonicalize_dtype(dtype)
    return jnp.zeros((int(capacity),) + shape, dtype)

  data = jax.tree.unflatten(jax.tree.structure(example),
                            [zeros(n, x) for n, x in named])
  _check_is_first(data, "init")
  # Distinct buffers for each counter, so the state can be donated.
  return BufferState(data=data,
                     insert_pos=jnp.zeros((), jnp.int32),
                     size=jnp.zeros((), jnp.int32),
                     total_added=jnp.zeros((), jnp.int32))


# ----------------------------------------------------------------------------
# Adding.


def _validate_add(state: BufferState, items: Any,
                  fn: str) -> tuple[list[jax.Array], int | None]:
  """Checks structure/shapes/dtypes of `items` against the buffer.

  Returns:
    (leaves cast to the buffer dtypes, in `jax.tree.leaves(state.data)`
    order, B) where B is None for one item (leaves [*leaf_shape]) and the
    batch size for a batch (leaves [B, *leaf_shape]).
  """
  treedef = jax.tree.structure(state.data)
  try:
    # Up to the buffer's leaves: a list given for an array leaf stays whole.
    values = treedef.flatten_up_to(items)
  except (ValueError, TypeError):
    raise TypeError(f"{fn}: the experience's tree structure differs from the "
                    f"buffer's: expected {_describe(state.data)}, got "
                    f"{_describe(items)}.") from None
  batch_sizes = {}
  for (name, buf), x in zip(_named_leaves(state.data), values):
    leaf_shape, leaf_dtype = tuple(buf.shape[1:]), buf.dtype

    py_kind = _python_scalar_kind(x)
    if py_kind is not None:
      if _KIND_ORDER[py_kind] > _KIND_ORDER.get(_kind(leaf_dtype), -1):
        raise ValueError(
            f"{fn}: leaf '{name}' got a Python {type(x).__name__} but the "
            f"buffer stores {leaf_dtype} (a Python scalar may only go into a "
            "leaf of the same or a higher kind: bool < int < float).")
      shape = ()
    else:
      shape, dtype = _shape_dtype(x)
      if _kind(dtype) != _kind(leaf_dtype):
        raise ValueError(
            f"{fn}: leaf '{name}' has dtype {dtype} but the buffer stores "
            f"{leaf_dtype}; only same-kind casts are allowed (bool/integer/"
            f"floating/complex), got {_kind(dtype)} for a {_kind(leaf_dtype)} "
            "leaf. Cast explicitly if that is intended.")

    if shape == leaf_shape:
      batch_sizes[name] = None
    elif len(shape) == len(leaf_shape) + 1 and shape[1:] == leaf_shape:
      batch_sizes[name] = shape[0]
    else:
      batched = "(B, " + ", ".join(map(str, leaf_shape)) + ")"
      raise ValueError(
          f"{fn}: leaf '{name}' has shape {shape}; expected {leaf_shape} "
          f"(one item) or {batched if leaf_shape else '(B,)'} "
          "(a batch of B).")

  distinct = set(batch_sizes.values())
  if len(distinct) != 1:
    desc = ", ".join(f"{n}: {'single' if b is None else f'batch of {b}'}"
                     for n, b in batch_sizes.items())
    raise ValueError(f"{fn}: leaves disagree on whether this is one item or "
                     f"a batch (and on the batch size): {desc}.")
  b = distinct.pop()
  out = [jnp.asarray(x).astype(buf.dtype)
         for buf, x in zip(jax.tree.leaves(state.data), values)]
  return out, (None if b is None else int(b))


def add(state: BufferState, items: Any) -> BufferState:
  """Appends one item or a batch of B items (ring overwrite).

  Single vs batch is decided per leaf by comparing ndim with the buffer's
  per-leaf ndim (`leaf.ndim - 1`): equal ndim means one item, one extra
  leading axis means a batch of B = that axis (the trailing shape must match
  exactly), anything else raises ValueError naming the leaf. All leaves must
  agree (all single, or all batches of the same B), and `items` must have the
  buffer's tree structure (else TypeError). B is static, so these checks run
  at trace time. See the module docstring for the dtype policy.

  Item j of the batch (0-based) is written to slot `(insert_pos + j) % C`, so
  a batch that runs past the end wraps around to slot 0 and overwrites the
  oldest data. If B > C only the last C items are kept (as if added one by
  one). The returned state has exactly the same structure, shapes and dtypes
  as the input, so `jax.jit(add, donate_argnums=0)` updates the storage in
  place.

  Args:
    state: a single buffer (use `jax.vmap` for a batch of buffers).
    items: a tree of the buffer's structure, leaves [*leaf_shape] or
      [B, *leaf_shape].

  Returns:
    The new BufferState.
  """
  leaves, b = _validate_add(state, items, "add")
  if b is None:
    leaves, b = [x[None] for x in leaves], 1
  c = capacity(state)
  if b == 0:
    return state
  m = min(b, c)  # Only the last m items can survive.
  # Item b - m + j goes to slot (insert_pos + b - m + j) % C; all distinct.
  idx = (state.insert_pos + ((b - m) % c) + jnp.arange(m, dtype=jnp.int32)) % c
  new = [buf.at[idx].set(x[b - m:], unique_indices=True,
                         mode="promise_in_bounds")
         for buf, x in zip(jax.tree.leaves(state.data), leaves)]
  return BufferState(
      data=jax.tree.unflatten(jax.tree.structure(state.data), new),
      insert_pos=((state.insert_pos + (b % c)) % c).astype(jnp.int32),
      size=jnp.minimum(state.size + min(b, c), c).astype(jnp.int32),
      total_added=(state.total_added + b).astype(jnp.int32),
  )


def add_masked(state: BufferState, rows: Any, valid: jax.Array) -> BufferState:
  """Appends, in order, the rows whose `valid` flag is True (ring overwrite).

  The result equals `add(state, rows[valid])` -- the same slots, counters and
  ring wrap-around, and only the last C valid rows kept when more than C are
  valid -- but with static shapes, so `valid` may be traced (e.g. model
  rollouts whose episodes end at different steps). Rows are checked like
  `add`'s batches (structure, strict shapes, the dtype policy).

  Args:
    state: a single buffer.
    rows: a tree of the buffer's structure with leaves [R, *leaf_shape].
    valid: which rows to keep, in row order.                        # [R] bool

  Returns:
    The new BufferState (same structure, shapes and dtypes as `state`).
  """
  leaves, r = _validate_add(state, rows, "add_masked")
  if r is None:
    raise ValueError("add_masked: rows must have a leading row axis R; got "
                     "one item (use add).")
  v_shape, v_dtype = _shape_dtype(valid)
  if v_shape != (r,) or _kind(v_dtype) != "bool":
    raise ValueError(f"add_masked: valid must be [R={r}] bool, got shape "
                     f"{v_shape} and dtype {v_dtype}.")
  c = capacity(state)
  valid = jnp.asarray(valid)
  offset = jnp.cumsum(valid.astype(jnp.int32)) - 1  # [R] rank among valid rows
  count = valid.sum(dtype=jnp.int32)
  # Valid rows ranked below count - C would be overwritten: drop them (slot C).
  keep = valid & (offset >= count - c)
  idx = jnp.where(keep, (state.insert_pos + offset) % c, c)
  new = [buf.at[idx].set(x, mode="drop")
         for buf, x in zip(jax.tree.leaves(state.data), leaves)]
  return BufferState(
      data=jax.tree.unflatten(jax.tree.structure(state.data), new),
      insert_pos=((state.insert_pos + count) % c).astype(jnp.int32),
      size=jnp.minimum(state.size + count, c).astype(jnp.int32),
      total_added=(state.total_added + count).astype(jnp.int32),
  )


# ----------------------------------------------------------------------------
# Reading and sampling.


def valid_mask(state: BufferState) -> jax.Array:
  """Which slots hold data, for fixed-shape consumers of `state.data`.

  Returns:
    [C] bool, True for filled slots (always `arange(C) < size`).
  """
  return jnp.arange(capacity(state), dtype=jnp.int32) < state.size


def chronological_slots(state: BufferState) -> jax.Array:
  """Slot indices from oldest to newest.

  Returns:
    [C] int32; entries [0, size) are the filled slots in insertion order
    (oldest first); the remaining entries are unfilled slots.
  """
  c = capacity(state)
  oldest = (state.insert_pos - state.size) % c
  return ((oldest + jnp.arange(c, dtype=jnp.int32)) % c).astype(jnp.int32)


def sample(state: BufferState, key: PRNGKey, batch_size: int) -> Any:
  """Draws `batch_size` items uniformly (with replacement) from the filled
  slots.

  `batch_size` is static (use `static_argnums=2` under jit). Sampling from an
  empty buffer returns copies of slot 0 (zeros); check `state.size > 0`.

  Returns:
    A tree of the buffer's structure with leaves [batch_size, *leaf_shape].
  """
  idx = jax.random.randint(key, (batch_size,), 0,
                           jnp.maximum(state.size, 1), dtype=jnp.int32)
  return jax.tree.map(lambda x: x[idx], state.data)


def sample_newest(state: BufferState, key: PRNGKey, batch_size: int,
                  window: int | jax.Array) -> Any:
  """Draws `batch_size` items uniformly (with replacement) from the newest
  `min(window, size)` items.

  MBPO trains its policy on the newest model rollouts this way. `window` may
  be traced; a window < 1 (or an empty buffer) counts as 1: every draw is the
  newest slot (zeros while the buffer is empty).

  Args:
    state: a single buffer.
    key: PRNG key.
    batch_size: number of draws B (static).
    window: how many of the newest items to draw from.              # [] int

  Returns:
    A tree of the buffer's structure with leaves [B, *leaf_shape].
  """
  c = capacity(state)
  n = jnp.maximum(jnp.minimum(window, state.size), 1).astype(jnp.int32)
  back = jax.random.randint(key, (batch_size,), 0, n, dtype=jnp.int32)
  idx = (state.insert_pos - 1 - back) % c
  return jax.tree.map(lambda x: x[idx], state.data)


def _cuts(state: BufferState, cross_episodes: bool, fn: str) -> jax.Array:
  """[C] bool over chronological positions k: an episode boundary lies
  between positions k and k + 1 (so no window may contain both)."""
  c = capacity(state)
  if cross_episodes:
    return jnp.zeros((c,), bool)
  chron = chronological_slots(state)
  is_first = _check_is_first(state.data, fn)
  if is_first is not None:  # Rule 1: step k + 1 starts an episode.
    return jnp.concatenate([is_first[chron][1:], jnp.zeros((1,), bool)])
  ends = [x for x in (_top_level_leaf(state.data, n) for n in _END_FLAGS)
          if x is not None]
  if not ends:
    raise ValueError(
        f"{fn}: the experience ({_describe(state.data)}) has no 'is_first', "
        "'terminated' or 'truncated' leaf, so episode boundaries are unknown; "
        "add an 'is_first' leaf or pass cross_episodes=True.")

  def flag(x: jax.Array) -> jax.Array:  # Rule 2: step k ends an episode.
    x = x != 0
    return x.reshape(x.shape[0], -1).any(axis=1) if x.ndim > 1 else x

  done = flag(ends[0])
  for x in ends[1:]:
    done = done | flag(x)
  return done[chron]


def _chronological_start_mask(state: BufferState, length: int,
                              cross_episodes: bool, fn: str) -> jax.Array:
  """[C] bool over chronological positions t (0 = oldest)."""
  c = capacity(state)
  cut = _cuts(state, cross_episodes, fn)
  # cum[k] = number of cuts among chronological positions [0, k).
  cum = jnp.concatenate(
      [jnp.zeros((1,), jnp.int32), jnp.cumsum(cut.astype(jnp.int32))])
  t = jnp.arange(c, dtype=jnp.int32)
  # Cuts after positions t .. t+L-2 (inside the window) forbid it.
  inner_cuts = cum[jnp.minimum(t + length - 1, c)] - cum[t]
  return (t + length <= state.size) & (inner_cuts == 0)


def _check_length(state: BufferState, length: int, fn: str) -> None:
  if isinstance(length, bool) or not isinstance(length, (int, np.integer)):
    raise TypeError(f"{fn}: length must be a static Python int, got "
                    f"{length!r}.")
  if not 1 <= length <= capacity(state):
    raise ValueError(f"{fn}: length must be in [1, capacity={capacity(state)}"
                     f"], got {length}.")


def sequence_start_mask(state: BufferState, length: int, *,
                        cross_episodes: bool = False) -> jax.Array:
  """Which slots may start a valid window of `length` consecutive items.

  A window starting at slot s covers slots s, s+1, ..., s+L-1 (mod C). It is
  valid iff all its slots are filled, it does not run past the newest item
  (i.e. it does not cross the ring's write head into the oldest data) and,
  unless `cross_episodes`, it lies within one episode. Episode boundaries
  follow the module docstring's rules:

  - experience with a top-level `is_first` leaf: none of steps 2..L of the
    window is first (step 1 may be, or may be mid-episode);
  - otherwise (e.g. a plain Transition) none of steps 1..L-1 has a nonzero
    `terminated` or `truncated` (the last step may end the episode);
  - with neither leaf a ValueError is raised unless `cross_episodes`.

  Args:
    state: a single buffer.
    length: window length L (static, 1 <= L <= C).
    cross_episodes: if True (static), windows may span episode boundaries;
      only filled slots and the write head limit them.

  Returns:
    [C] bool indexed by slot.
  """
  _check_length(state, length, "sequence_start_mask")
  c = capacity(state)
  oldest = (state.insert_pos - state.size) % c
  chron = _chronological_start_mask(state, length, cross_episodes,
                                    "sequence_start_mask")
  return chron[(jnp.arange(c, dtype=jnp.int32) - oldest) % c]


def sample_sequences(state: BufferState, key: PRNGKey, batch_size: int,
                     length: int, *,
                     cross_episodes: bool = False) -> tuple[Any, jax.Array]:
  """Draws contiguous windows uniformly (with replacement) over valid windows.

  Validity (including which episode-boundary rule applies) is defined in
  `sequence_start_mask`. With `cross_episodes=True` a window may run from one
  episode into the next, as DreamerV3 samples them; the consumer then resets
  its recurrent state where `is_first` is True (or after a step that ends an
  episode, for a Transition). Each call costs O(C) (a cumulative sum over
  boundary flags) plus O(batch_size * (log C + L)). The buffer assumes
  consecutive `add`s are consecutive time steps of one stream; for N parallel
  environments keep N buffers under `jax.vmap`.

  Args:
    state: a single buffer.
    key: PRNG key.
    batch_size: number of windows B (static).
    length: window length L (static, 1 <= L <= C).
    cross_episodes: allow windows across episode boundaries (static keyword:
      `static_argnames="cross_episodes"` under jit); default False.

  Returns:
    (windows, valid): windows is a tree of the buffer's structure with leaves
    [B, L, *leaf_shape]; valid is a [] bool that is False iff no valid window
    exists (e.g. too little data, or episodes shorter than L). When False the
    windows all start at the oldest slot and are NOT valid (they may contain
    unfilled zero slots or episode boundaries); their values are finite, so
    they can be masked out with `valid` inside a jitted loss.
  """
  _check_length(state, length, "sample_sequences")
  c = capacity(state)
  mask = _chronological_start_mask(state, length, cross_episodes,
                                   "sample_sequences")
  cum_valid = jnp.cumsum(mask.astype(jnp.int32))  # [C]
  n_valid = cum_valid[-1]
  # k-th valid start (0-based) is the first t with cum_valid[t] > k.
  k = jax.random.randint(key, (batch_size,), 0, jnp.maximum(n_valid, 1),
                         dtype=jnp.int32)
  t = jnp.searchsorted(cum_valid, k, side="right").astype(jnp.int32)
  t = jnp.where(n_valid > 0, t, 0)
  oldest = (state.insert_pos - state.size) % c
  slots = (oldest + t[:, None] + jnp.arange(length, dtype=jnp.int32)) % c
  windows = jax.tree.map(lambda x: x[slots], state.data)
  return windows, n_valid > 0


# ----------------------------------------------------------------------------
# Offline datasets.


def from_numpy(obs: Any,
               action: Any,
               reward: Any,
               next_obs: Any,
               terminated: Any,
               truncated: Any | None = None,
               capacity: int | None = None) -> BufferState:
  """Builds a Transition buffer from arrays of N transitions (e.g. a
  D4RL-style dataset).

  Each argument has a leading axis of length N, in time order. Dtypes are
  canonicalised for JAX (float64 -> float32, int64 -> int32 without x64);
  bool `terminated`/`truncated` (D4RL "terminals"/"timeouts") become float32
  0/1, matching the Transition convention. `truncated=None` means all zeros.
  For any other experience tree use `add(init(capacity, example), batch)`.

  Args:
    capacity: buffer size; defaults to N. If capacity < N only the last
      `capacity` transitions are kept; if larger, the rest stays unfilled.

  Returns:
    A BufferState holding the transitions in order (slot i = transition i when
    capacity >= N).
  """
  arrays = dict(obs=obs, action=action, reward=reward, next_obs=next_obs,
                terminated=terminated, truncated=truncated)
  arrays = {k: (None if v is None else np.asarray(v))
            for k, v in arrays.items()}
  for name, x in arrays.items():
    if x is not None and x.ndim == 0:
      raise ValueError(f"from_numpy: '{name}' must have a leading axis of "
                       f"length N, got a scalar.")
  n = arrays["obs"].shape[0]
  bad = {k: v.shape[0] for k, v in arrays.items()
         if v is not None and v.shape[0] != n}
  if bad:
    raise ValueError(f"from_numpy: all arrays must have the same length N; "
                     f"obs has N={n} but {bad}.")
  if arrays["truncated"] is None:
    arrays["truncated"] = np.zeros_like(arrays["terminated"])
  for name in ("terminated", "truncated"):
    if arrays[name].dtype == np.bool_:
      arrays[name] = arrays[name].astype(np.float32)
  arrays = {k: v.astype(jax.dtypes.canonicalize_dtype(v.dtype), copy=False)
            for k, v in arrays.items()}
  if capacity is None:
    capacity = max(n, 1)
  batch = Transition(**arrays)
  example = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype),
                         batch)
  return add(init(capacity, example), batch)


# ----------------------------------------------------------------------------
# Saving and loading (no pickle).


def _entry(parts: tuple[str, ...]) -> str:
  """The .npz entry of a leaf: 'data.obs', 'data.extras.log_prob', 'data'."""
  return ".".join(("data",) + parts)


_TRANSITION_PARTS = [(f,) for f in Transition._fields]


def save(path: str | os.PathLike, state: BufferState) -> None:
  """Writes `state` to an uncompressed `.npz` file at exactly `path`.

  The file stores each data leaf under `data.<tree path>` (e.g. `data.obs`,
  `data.extras.log_prob`), `insert_pos`, `size`, `total_added`, a format tag
  and version, and a JSON `tree` entry with the leaf paths and whether the
  data is a Transition; no pickled objects. The write is atomic: data goes to
  a temporary file in the same directory which then replaces `path`, so an
  interrupted save never corrupts an existing file. A vmapped batch of
  buffers (leading batch axes on every leaf) can be saved and loaded too.
  """
  parts = [_path_parts(p)
           for p, _ in jax.tree_util.tree_flatten_with_path(state.data)[0]]
  if not parts:
    raise ValueError("save: the buffer's data has no array leaves.")
  entries = [_entry(p) for p in parts]
  if len(set(entries)) != len(entries):
    raise ValueError(f"save: leaf paths collide when joined with '.': "
                     f"{entries}.")
  container = ("Transition" if isinstance(state.data, Transition) and
               parts == _TRANSITION_PARTS else "tree")
  state = jax.device_get(state)
  arrays = {e: np.asarray(x)
            for e, x in zip(entries, jax.tree.leaves(state.data))}
  arrays.update(
      insert_pos=np.asarray(state.insert_pos, np.int32),
      size=np.asarray(state.size, np.int32),
      total_added=np.asarray(state.total_added, np.int32),
      format=np.asarray(_FORMAT_NAME),
      version=np.asarray(_FORMAT_VERSION, np.int32),
      tree=np.asarray(json.dumps({"container": container,
                                  "paths": [list(p) for p in parts]})),
  )
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".",
                             suffix=".tmp", dir=directory)
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **arrays)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    try:
      os.unlink(tmp)
    except OSError:
      pass
    raise


def _nested_dicts(parts: list[tuple[str, ...]], leaves: list[Any]) -> Any:
  if parts == [()]:
    return leaves[0]
  out: dict[str, Any] = {}
  for p, x in zip(parts, leaves):
    node = out
    for k in p[:-1]:
      node = node.setdefault(k, {})
    node[p[-1]] = x
  return out


def _file_tree(arrays: dict[str, np.ndarray],
               fail: Any) -> tuple[str, list[tuple[str, ...]]]:
  """(container, leaf paths) of a file, for format versions 1 and 2."""
  version = int(arrays["version"])
  if version == 1:  # Transition only, written before the pytree buffer.
    if "fields" not in arrays:
      raise fail("missing entries ['fields']")
    fields = tuple(str(s) for s in arrays["fields"])
    if fields != Transition._fields:
      raise fail(f"field names {list(fields)} != {list(Transition._fields)}")
    return "Transition", _TRANSITION_PARTS
  if version != 2:
    raise fail(f"unsupported format version {version} (this reader knows 1 "
               f"and {_FORMAT_VERSION})")
  if "tree" not in arrays:
    raise fail("missing entries ['tree']")
  try:
    tree = json.loads(str(arrays["tree"]))
    container, paths = tree["container"], tree["paths"]
    parts = [tuple(str(k) for k in p) for p in paths]
    ok = (container in ("Transition", "tree") and parts and
          all(isinstance(p, list) for p in paths) and
          (len(parts) == 1 or () not in parts))
  except (ValueError, KeyError, TypeError):
    ok = False
  if not ok:
    raise fail("its 'tree' entry is not a valid tree description")
  if container == "Transition" and parts != _TRANSITION_PARTS:
    raise fail(f"Transition leaves {parts} != {list(Transition._fields)}")
  return container, parts


def load(path: str | os.PathLike, like: Any = None) -> BufferState:
  """Reads a buffer written by `save` (with `allow_pickle=False`).

  Reads both format versions: 1 (Transition buffers saved before the buffer
  took any pytree) and 2 (today's).

  Args:
    path: the file.
    like: optional experience tree of the saved buffer's structure, e.g. the
      `example` given to `init` (only its structure is used; its leaf paths
      must equal the file's). Without it a Transition buffer comes back as a
      Transition and any other tree as nested dicts keyed by path component
      (a NamedTuple's fields become dict keys).

  Raises:
    FileNotFoundError: if `path` does not exist.
    ValueError: if the file is truncated, corrupt, not a replay-buffer file,
      its contents are inconsistent, or its leaves differ from `like`'s
      (message names the problem).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"load: no replay-buffer file at '{path}'.")

  def fail(msg: str) -> ValueError:
    return ValueError(f"load: '{path}' is not a valid replay-buffer file: "
                      f"{msg}")

  try:
    with open(path, "rb") as fh:  # Our handle: closed even if np.load fails.
      npz = np.load(fh, allow_pickle=False)
      if not isinstance(npz, np.lib.npyio.NpzFile):
        raise fail("not an .npz archive")
      with npz:
        arrays = {k: npz[k] for k in npz.files}  # Reads + CRC-checks all.
  except (ValueError, zipfile.BadZipFile, OSError, EOFError, KeyError) as e:
    if str(e).startswith("load:"):
      raise
    raise fail(f"corrupt or truncated ({type(e).__name__}: {e})") from e

  missing = [k for k in ("format", "version") if k not in arrays]
  if missing:
    raise fail(f"missing entries {missing}")
  if str(arrays["format"]) != _FORMAT_NAME:
    raise fail(f"format tag is {str(arrays['format'])!r}, expected "
               f"{_FORMAT_NAME!r}")
  container, parts = _file_tree(arrays, fail)
  required = (["insert_pos", "size", "total_added"] +
              [_entry(p) for p in parts])
  missing = [k for k in required if k not in arrays]
  if missing:
    raise fail(f"missing entries {missing}")

  counters = {k: arrays[k] for k in ("insert_pos", "size", "total_added")}
  batch_shape = counters["insert_pos"].shape
  for k, v in counters.items():
    if v.dtype != np.int32 or v.shape != batch_shape:
      raise fail(f"'{k}' has dtype {v.dtype} and shape {v.shape}, expected "
                 f"int32 {batch_shape}")
  nb = len(batch_shape)
  first = arrays[_entry(parts[0])]
  if first.ndim < nb + 1 or first.shape[:nb] != batch_shape:
    raise fail(f"'{_entry(parts[0])}' has shape {first.shape}, incompatible "
               f"with batch shape {batch_shape}")
  cap = first.shape[nb]
  if cap < 1:
    raise fail("capacity is 0")
  for p in parts:
    x, name = arrays[_entry(p)], _leaf_name(p)
    if _kind(x.dtype) == "other":
      raise fail(f"leaf '{name}' has unsupported dtype {x.dtype}")
    if x.ndim < nb + 1 or x.shape[:nb + 1] != batch_shape + (cap,):
      raise fail(f"leaf '{name}' has shape {x.shape}, expected leading "
                 f"{batch_shape + (cap,)}")
  ins, size = counters["insert_pos"], counters["size"]
  if np.any(size < 0) or np.any(size > cap):
    raise fail(f"size {size} outside [0, {cap}]")
  if np.any(ins < 0) or np.any(ins >= cap):
    raise fail(f"insert_pos {ins} outside [0, {cap})")
  if np.any((size < cap) & (ins != size)):
    raise fail(f"insert_pos {ins} != size {size} in a non-full buffer")

  leaves = [jnp.asarray(arrays[_entry(p)]) for p in parts]
  if like is not None:
    like_parts = [_path_parts(q) for q, _ in
                  jax.tree_util.tree_flatten_with_path(like)[0]]
    if like_parts != parts:
      raise fail(f"its leaves {[_leaf_name(p) for p in parts]} differ from "
                 f"like's {[_leaf_name(p) for p in like_parts]}")
    data = jax.tree.unflatten(jax.tree.structure(like), leaves)
  elif container == "Transition":
    data = Transition(*leaves)
  else:
    data = _nested_dicts(parts, leaves)
  return BufferState(data=data,
                     insert_pos=jnp.asarray(ins),
                     size=jnp.asarray(size),
                     total_added=jnp.asarray(counters["total_added"]))
