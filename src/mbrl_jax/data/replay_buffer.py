"""A fixed-capacity ring replay buffer whose whole state is a pytree of arrays.

All functions are pure module functions over a `BufferState`. The state is
self-describing: the capacity and per-field shapes/dtypes are the (static)
shapes/dtypes of `state.data`, so no closure or factory object is needed, and
every function composes directly with `jax.jit`, `jax.vmap` (a batch of
buffers, e.g. one per seed or per parallel environment) and `jax.lax.scan`.

Typical use::

  state = init(capacity, example_transition)      # example has no batch axis
  add_fn = jax.jit(add, donate_argnums=0)         # in-place ring writes
  state = add_fn(state, transition_or_batch)
  batch = jax.jit(sample, static_argnums=2)(state, key, 256)
  seqs, ok = jax.jit(sample_sequences, static_argnums=(2, 3))(state, key, 16, 50)

Layout invariant: slots are filled in order 0, 1, 2, ...; while the buffer is
not full `insert_pos == size` and slots `[0, size)` are filled; once full,
`size == capacity` and `insert_pos` is the slot of the oldest transition (the
next one to be overwritten). Hence the filled slots are always exactly
`arange(capacity) < size`.

Dtype policy (applies to `add`): a value is accepted when its dtype is of the
same *kind* as the buffer field's dtype -- bool, integer (signed or unsigned),
floating, complex -- and is then cast to the field dtype (e.g. float64 ->
float32, int64 -> int32, int32 -> uint8; range/precision loss within a kind is
the caller's responsibility). Cross-kind values raise a ValueError (int obs
into a float buffer, float pixels into a uint8 image buffer, bool flags into
float `terminated`/`truncated` fields). Python scalars follow JAX's weak-type
rule: a Python bool/int/float is accepted by any field of the same or a
"higher" kind (bool < int < float < complex), e.g. `reward=1` into a float
field. Shapes are strict (see `add`).
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mbrl_jax.types import PRNGKey, Transition

_FORMAT_NAME = "mbrl_jax.replay_buffer"
_FORMAT_VERSION = 1
_FIELDS = Transition._fields


class BufferState(NamedTuple):
  """State of a ring replay buffer with capacity C (a pytree of arrays).

  Attributes:
    data: the storage; every field has a leading capacity axis, e.g.
      obs [C, *obs_shape], action [C, A], reward [C], terminated [C], ...
      Unfilled slots hold zeros.
    insert_pos: slot the next transition will be written to.        # [] int32
    size: number of filled slots, min(total_added, C).               # [] int32
    total_added: transitions ever added (wraps after 2**31 - 1).    # [] int32
  """

  data: Transition
  insert_pos: jax.Array
  size: jax.Array
  total_added: jax.Array


# ----------------------------------------------------------------------------
# Helpers.


def capacity(state: BufferState) -> int:
  """Static capacity C of a (single, un-vmapped) buffer."""
  return int(state.data.obs.shape[0])


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


def _check_transition_type(transition: Any, fn: str) -> None:
  if not isinstance(transition, Transition):
    raise TypeError(f"{fn}: expected a mbrl_jax.types.Transition, got "
                    f"{type(transition).__name__}.")


# ----------------------------------------------------------------------------
# Construction.


def init(capacity: int, example: Transition) -> BufferState:
  """Creates an empty buffer able to hold `capacity` transitions.

  Args:
    capacity: number of slots C (a static Python int >= 1).
    example: one transition WITHOUT a batch axis (arrays, numpy arrays, Python
      scalars or `jax.ShapeDtypeStruct`s); only shapes and dtypes are used.
      Dtypes are canonicalised for the current JAX config (float64 ->
      float32 unless x64 is enabled).

  Returns:
    An empty BufferState; each data field is zeros [C, *example_field.shape].
  """
  if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)):
    raise TypeError(f"init: capacity must be a Python int, got {capacity!r}.")
  if capacity < 1:
    raise ValueError(f"init: capacity must be >= 1, got {capacity}.")
  _check_transition_type(example, "init")

  def zeros(name: str, x: Any) -> jax.Array:
    shape, dtype = _shape_dtype(x)
    if _kind(dtype) == "other":
      raise ValueError(f"init: field '{name}' has unsupported dtype {dtype}.")
    dtype = jax.dtypes.canonicalize_dtype(dtype)
    return jnp.zeros((int(capacity),) + shape, dtype)

  data = Transition(*(zeros(n, getattr(example, n)) for n in _FIELDS))
  # Distinct buffers for each counter, so the state can be donated.
  return BufferState(data=data,
                     insert_pos=jnp.zeros((), jnp.int32),
                     size=jnp.zeros((), jnp.int32),
                     total_added=jnp.zeros((), jnp.int32))


# ----------------------------------------------------------------------------
# Adding.


def _validate_add(state: BufferState,
                  transitions: Transition) -> tuple[Transition, int]:
  """Checks shapes/dtypes; returns (batch with leading axis B, B)."""
  _check_transition_type(transitions, "add")
  batch_sizes = {}
  values = []
  for name in _FIELDS:
    buf = getattr(state.data, name)
    field_shape, field_dtype = tuple(buf.shape[1:]), buf.dtype
    x = getattr(transitions, name)

    py_kind = _python_scalar_kind(x)
    if py_kind is not None:
      if _KIND_ORDER[py_kind] > _KIND_ORDER.get(_kind(field_dtype), -1):
        raise ValueError(
            f"add: field '{name}' got a Python {type(x).__name__} but the "
            f"buffer stores {field_dtype} (a Python scalar may only go into a "
            "field of the same or a higher kind: bool < int < float).")
      shape = ()
    else:
      shape, dtype = _shape_dtype(x)
      if _kind(dtype) != _kind(field_dtype):
        raise ValueError(
            f"add: field '{name}' has dtype {dtype} but the buffer stores "
            f"{field_dtype}; only same-kind casts are allowed (bool/integer/"
            f"floating/complex), got {_kind(dtype)} for a {_kind(field_dtype)} "
            "field. Cast explicitly if that is intended.")

    if shape == field_shape:
      batch_sizes[name] = None
    elif len(shape) == len(field_shape) + 1 and shape[1:] == field_shape:
      batch_sizes[name] = shape[0]
    else:
      batched = "(B, " + ", ".join(map(str, field_shape)) + ")"
      raise ValueError(
          f"add: field '{name}' has shape {shape}; expected {field_shape} "
          f"(one transition) or {batched if field_shape else '(B,)'} "
          "(a batch of B).")
    values.append(x)

  distinct = set(batch_sizes.values())
  if len(distinct) != 1:
    desc = ", ".join(f"{n}: {'single' if b is None else f'batch of {b}'}"
                     for n, b in batch_sizes.items())
    raise ValueError("add: fields disagree on whether this is one transition "
                     f"or a batch (and on the batch size): {desc}.")
  b = distinct.pop()

  out = []
  for name, x in zip(_FIELDS, values):
    dtype = getattr(state.data, name).dtype
    x = jnp.asarray(x).astype(dtype)
    out.append(x[None] if b is None else x)
  return Transition(*out), (1 if b is None else int(b))


def add(state: BufferState, transitions: Transition) -> BufferState:
  """Appends one transition or a batch of B transitions (ring overwrite).

  Single vs batch is decided per field by comparing ndim with the buffer's
  per-field ndim (`state.data.<field>.ndim - 1`): equal ndim means one
  transition, one extra leading axis means a batch of B = that axis (the
  trailing shape must match exactly), anything else raises ValueError naming
  the field. All six fields must agree (all single, or all batches of the same
  B). B is static, so these checks run at trace time. See the module docstring
  for the dtype policy.

  Transition j of the batch (0-based) is written to slot
  `(insert_pos + j) % C`, so a batch that runs past the end wraps around to
  slot 0 and overwrites the oldest data. If B > C only the last C transitions
  are kept (as if added one by one). The returned state has exactly the same
  structure, shapes and dtypes as the input, so `jax.jit(add,
  donate_argnums=0)` updates the storage in place.

  Args:
    state: a single buffer (use `jax.vmap` for a batch of buffers).
    transitions: a Transition, fields [*field_shape] or [B, *field_shape].

  Returns:
    The new BufferState.
  """
  batch, b = _validate_add(state, transitions)
  c = capacity(state)
  if b == 0:
    return state
  m = min(b, c)  # Only the last m items can survive.
  items = jax.tree.map(lambda x: x[b - m:], batch)
  # Item b - m + j goes to slot (insert_pos + b - m + j) % C; all distinct.
  idx = (state.insert_pos + ((b - m) % c) + jnp.arange(m, dtype=jnp.int32)) % c
  data = jax.tree.map(
      lambda buf, x: buf.at[idx].set(
          x, unique_indices=True, mode="promise_in_bounds"),
      state.data, items)
  return BufferState(
      data=data,
      insert_pos=((state.insert_pos + (b % c)) % c).astype(jnp.int32),
      size=jnp.minimum(state.size + min(b, c), c).astype(jnp.int32),
      total_added=(state.total_added + b).astype(jnp.int32),
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


def sample(state: BufferState, key: PRNGKey, batch_size: int) -> Transition:
  """Draws `batch_size` transitions uniformly (with replacement) from the
  filled slots.

  `batch_size` is static (use `static_argnums=2` under jit). Sampling from an
  empty buffer returns copies of slot 0 (zeros); check `state.size > 0`.

  Returns:
    A Transition with fields [batch_size, *field_shape].
  """
  idx = jax.random.randint(key, (batch_size,), 0,
                           jnp.maximum(state.size, 1), dtype=jnp.int32)
  return jax.tree.map(lambda x: x[idx], state.data)


def _episode_ends(state: BufferState) -> jax.Array:
  """[C] bool: slot holds a transition that ends an episode."""
  def flag(x: jax.Array) -> jax.Array:
    x = x != 0
    return x.reshape(x.shape[0], -1).any(axis=1) if x.ndim > 1 else x
  return flag(state.data.terminated) | flag(state.data.truncated)


def _chronological_start_mask(state: BufferState, length: int) -> jax.Array:
  """[C] bool over chronological positions t (0 = oldest)."""
  c = capacity(state)
  done = _episode_ends(state)[chronological_slots(state)]
  # cum[k] = number of episode ends among chronological positions [0, k).
  cum = jnp.concatenate(
      [jnp.zeros((1,), jnp.int32), jnp.cumsum(done.astype(jnp.int32))])
  t = jnp.arange(c, dtype=jnp.int32)
  # Ends at positions t .. t+L-2 (all but the window's last step) forbid it.
  inner_ends = cum[jnp.minimum(t + length - 1, c)] - cum[t]
  return (t + length <= state.size) & (inner_ends == 0)


def _check_length(state: BufferState, length: int, fn: str) -> None:
  if isinstance(length, bool) or not isinstance(length, (int, np.integer)):
    raise TypeError(f"{fn}: length must be a static Python int, got "
                    f"{length!r}.")
  if not 1 <= length <= capacity(state):
    raise ValueError(f"{fn}: length must be in [1, capacity={capacity(state)}"
                     f"], got {length}.")


def sequence_start_mask(state: BufferState, length: int) -> jax.Array:
  """Which slots may start a valid window of `length` transitions.

  A window starting at slot s covers slots s, s+1, ..., s+L-1 (mod C). It is
  valid iff all its slots are filled, it does not run past the newest
  transition (i.e. it does not cross the ring's write head into the oldest
  data), and none of its first L-1 transitions ends an episode
  (`terminated != 0 or truncated != 0`); the last one may.

  Returns:
    [C] bool indexed by slot.
  """
  _check_length(state, length, "sequence_start_mask")
  c = capacity(state)
  oldest = (state.insert_pos - state.size) % c
  chron = _chronological_start_mask(state, length)
  return chron[(jnp.arange(c, dtype=jnp.int32) - oldest) % c]


def sample_sequences(state: BufferState, key: PRNGKey, batch_size: int,
                     length: int) -> tuple[Transition, jax.Array]:
  """Draws contiguous windows uniformly (with replacement) over valid windows.

  Validity is defined in `sequence_start_mask`. Each call costs O(C) (a
  cumulative sum over episode-end flags) plus O(batch_size * (log C + L)).
  The buffer assumes consecutive `add`s are consecutive time steps of one
  stream; for N parallel environments keep N buffers under `jax.vmap`.

  Args:
    state: a single buffer.
    key: PRNG key.
    batch_size: number of windows B (static).
    length: window length L (static, 1 <= L <= C).

  Returns:
    (windows, valid): windows is a Transition with fields
    [B, L, *field_shape]; valid is a [] bool that is False iff no valid window
    exists (e.g. too little data, or episodes shorter than L). When False the
    windows all start at the oldest slot and are NOT valid (they may contain
    unfilled zero slots or episode ends); their values are finite, so they can
    be masked out with `valid` inside a jitted loss.
  """
  _check_length(state, length, "sample_sequences")
  c = capacity(state)
  mask = _chronological_start_mask(state, length)
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
  """Builds a buffer from arrays of N transitions (e.g. a D4RL-style dataset).

  Each argument has a leading axis of length N, in time order. Dtypes are
  canonicalised for JAX (float64 -> float32, int64 -> int32 without x64);
  bool `terminated`/`truncated` (D4RL "terminals"/"timeouts") become float32
  0/1, matching the Transition convention. `truncated=None` means all zeros.

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


def save(path: str | os.PathLike, state: BufferState) -> None:
  """Writes `state` to an uncompressed `.npz` file at exactly `path`.

  The file stores the six data fields (`data.<field>`), `insert_pos`, `size`,
  `total_added`, the field names and a format tag; no pickled objects. The
  write is atomic: data goes to a temporary file in the same directory which
  then replaces `path`, so an interrupted save never corrupts an existing
  file. A vmapped batch of buffers (leading batch axes on every leaf) can be
  saved and loaded too.
  """
  _check_transition_type(state.data, "save")
  state = jax.device_get(state)
  arrays = {f"data.{n}": np.asarray(getattr(state.data, n)) for n in _FIELDS}
  arrays.update(
      insert_pos=np.asarray(state.insert_pos, np.int32),
      size=np.asarray(state.size, np.int32),
      total_added=np.asarray(state.total_added, np.int32),
      format=np.asarray(_FORMAT_NAME),
      version=np.asarray(_FORMAT_VERSION, np.int32),
      fields=np.asarray(_FIELDS),
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


def load(path: str | os.PathLike) -> BufferState:
  """Reads a buffer written by `save` (with `allow_pickle=False`).

  Raises:
    FileNotFoundError: if `path` does not exist.
    ValueError: if the file is truncated, corrupt, not a replay-buffer file,
      or its contents are inconsistent (message names the problem).
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

  required = ["format", "version", "fields", "insert_pos", "size",
              "total_added"] + [f"data.{n}" for n in _FIELDS]
  missing = [k for k in required if k not in arrays]
  if missing:
    raise fail(f"missing entries {missing}")
  if str(arrays["format"]) != _FORMAT_NAME:
    raise fail(f"format tag is {str(arrays['format'])!r}, expected "
               f"{_FORMAT_NAME!r}")
  if int(arrays["version"]) != _FORMAT_VERSION:
    raise fail(f"unsupported format version {int(arrays['version'])}")
  if tuple(str(s) for s in arrays["fields"]) != _FIELDS:
    raise fail(f"field names {list(arrays['fields'])} != {list(_FIELDS)}")

  counters = {k: arrays[k] for k in ("insert_pos", "size", "total_added")}
  batch_shape = counters["insert_pos"].shape
  for k, v in counters.items():
    if v.dtype != np.int32 or v.shape != batch_shape:
      raise fail(f"'{k}' has dtype {v.dtype} and shape {v.shape}, expected "
                 f"int32 {batch_shape}")
  nb = len(batch_shape)
  obs = arrays["data.obs"]
  if obs.ndim < nb + 1 or obs.shape[:nb] != batch_shape:
    raise fail(f"'data.obs' has shape {obs.shape}, incompatible with batch "
               f"shape {batch_shape}")
  cap = obs.shape[nb]
  if cap < 1:
    raise fail("capacity is 0")
  for n in _FIELDS:
    x = arrays[f"data.{n}"]
    if _kind(x.dtype) == "other":
      raise fail(f"field '{n}' has unsupported dtype {x.dtype}")
    if x.ndim < nb + 1 or x.shape[:nb + 1] != batch_shape + (cap,):
      raise fail(f"field '{n}' has shape {x.shape}, expected leading "
                 f"{batch_shape + (cap,)}")
  ins, size = counters["insert_pos"], counters["size"]
  if np.any(size < 0) or np.any(size > cap):
    raise fail(f"size {size} outside [0, {cap}]")
  if np.any(ins < 0) or np.any(ins >= cap):
    raise fail(f"insert_pos {ins} outside [0, {cap})")
  if np.any((size < cap) & (ins != size)):
    raise fail(f"insert_pos {ins} != size {size} in a non-full buffer")

  data = Transition(*(jnp.asarray(arrays[f"data.{n}"]) for n in _FIELDS))
  return BufferState(data=data,
                     insert_pos=jnp.asarray(ins),
                     size=jnp.asarray(size),
                     total_added=jnp.asarray(counters["total_added"]))
