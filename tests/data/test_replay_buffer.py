"""Tests for mbrl_jax.data (the ring replay buffer)."""

from __future__ import annotations

import collections
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax import data as rb
from mbrl_jax.types import Transition

OBS_DIM, ACT_DIM = 3, 2

# Jitted entry points shared by the tests (compiled once per shape).
add_jit = jax.jit(rb.add)
sample_jit = jax.jit(rb.sample, static_argnums=2)
sample_seq_jit = jax.jit(rb.sample_sequences, static_argnums=(2, 3))
start_mask_jit = jax.jit(rb.sequence_start_mask, static_argnums=1)


def example() -> Transition:
  return Transition(
      obs=np.zeros(OBS_DIM, np.float32),
      action=np.zeros(ACT_DIM, np.float32),
      reward=np.float32(0),
      next_obs=np.zeros(OBS_DIM, np.float32),
      terminated=np.float32(0),
      truncated=np.float32(0),
  )


def make_batch(ids, terminated=None, truncated=None) -> Transition:
  """Transitions whose every field encodes a distinct float id."""
  ids = np.asarray(ids, np.float32)
  n = ids.shape[0]
  zeros = np.zeros(n, np.float32)
  return Transition(
      obs=np.stack([ids, ids + 0.25, ids + 0.5], -1),
      action=np.stack([-ids, ids * 2], -1),
      reward=ids,
      next_obs=np.stack([ids + 1, ids + 1.25, ids + 1.5], -1),
      terminated=zeros if terminated is None else np.asarray(
          terminated, np.float32),
      truncated=zeros if truncated is None else np.asarray(
          truncated, np.float32),
  )


def single(i: float) -> Transition:
  return jax.tree.map(lambda x: x[0], make_batch([i]))


def assert_tree_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


class RefRing:
  """Slow, obviously-correct pure-Python ring buffer."""

  def __init__(self, capacity):
    self.c = capacity
    self.slots = [None] * capacity
    self.pos = 0
    self.size = 0
    self.total = 0

  def add_one(self, item):
    self.slots[self.pos] = item
    self.pos = (self.pos + 1) % self.c
    self.size = min(self.size + 1, self.c)
    self.total += 1


# ----------------------------------------------------------------------------
# Adding.


def test_init_shapes_and_counters():
  state = rb.init(10, example())
  assert state.data.obs.shape == (10, OBS_DIM)
  assert state.data.action.shape == (10, ACT_DIM)
  assert state.data.reward.shape == (10,)
  for x in (state.insert_pos, state.size, state.total_added):
    assert x.shape == () and x.dtype == jnp.int32 and int(x) == 0
  assert rb.capacity(state) == 10
  assert not np.any(rb.valid_mask(state))
  with pytest.raises(ValueError, match="capacity"):
    rb.init(0, example())
  with pytest.raises(ValueError, match="no array leaves"):
    rb.init(4, {})
  with pytest.raises(ValueError, match="'extras.note'.*dtype"):
    rb.init(4, dict(obs=np.zeros(2), extras=dict(note=np.array(["a"], object))))


def test_add_single_and_batch():
  state = rb.init(5, example())
  state = add_jit(state, single(7.0))
  assert (int(state.size), int(state.insert_pos), int(state.total_added)) == (
      1, 1, 1)
  assert_tree_equal(jax.tree.map(lambda x: x[0], state.data), single(7.0))
  state = add_jit(state, make_batch([1, 2, 3]))
  assert (int(state.size), int(state.insert_pos), int(state.total_added)) == (
      4, 4, 4)
  np.testing.assert_array_equal(state.data.reward, [7, 1, 2, 3, 0])
  np.testing.assert_array_equal(rb.valid_mask(state),
                                [True, True, True, True, False])
  # A batch that runs past the end wraps to slot 0.
  state = add_jit(state, make_batch([10, 11, 12]))
  np.testing.assert_array_equal(state.data.reward, [11, 12, 2, 3, 10])
  assert (int(state.size), int(state.insert_pos), int(state.total_added)) == (
      5, 2, 7)
  np.testing.assert_array_equal(
      state.data.reward[rb.chronological_slots(state)], [2, 3, 10, 11, 12])
  assert np.all(rb.valid_mask(state))


def test_python_scalars_and_safe_casts_accepted():
  state = rb.init(4, example())
  t = Transition(obs=np.arange(3, dtype=np.float64), action=[1.0, 2.0],
                 reward=1, next_obs=jnp.ones(3, jnp.bfloat16),
                 terminated=False, truncated=0.0)
  state = rb.add(state, t)
  assert state.data.obs.dtype == jnp.float32
  np.testing.assert_array_equal(state.data.obs[0], [0, 1, 2])
  np.testing.assert_array_equal(state.data.action[0], [1, 2])
  assert float(state.data.reward[0]) == 1.0


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("capacity", [1, 3, 7])
def test_wraparound_matches_reference(seed, capacity):
  rng = np.random.default_rng(seed)
  state = rb.init(capacity, example())
  ref = RefRing(capacity)
  next_id = 1
  for _ in range(12):
    if rng.random() < 0.3:
      state = add_jit(state, single(next_id))
      ref.add_one(next_id)
      next_id += 1
    else:
      b = int(rng.choice([0, 1, capacity - 1, capacity, capacity + 1,
                          2 * capacity + 3, int(rng.integers(1, 3 * capacity))]))
      ids = list(range(next_id, next_id + b))
      state = add_jit(state, make_batch(ids) if b else make_batch(
          np.zeros(0)))
      for i in ids:
        ref.add_one(i)
      next_id += b
    assert int(state.size) == ref.size
    assert int(state.insert_pos) == ref.pos
    assert int(state.total_added) == ref.total
    empty = np.array([s is None for s in ref.slots])
    ids = make_batch([0 if s is None else s for s in ref.slots])
    expected = jax.tree.map(
        lambda x: np.where(empty.reshape((-1,) + (1,) * (x.ndim - 1)), 0, x),
        ids)
    assert_tree_equal(state.data, expected)
    # Chronological order equals the last `size` ids added.
    chron = np.asarray(state.data.reward)[np.asarray(
        rb.chronological_slots(state))][:ref.size]
    np.testing.assert_array_equal(
        chron, np.arange(next_id - ref.size, next_id, dtype=np.float32))


def test_batch_larger_than_capacity_keeps_last_items():
  state = rb.init(4, example())
  state = add_jit(state, make_batch([100]))
  state = add_jit(state, make_batch(np.arange(1, 11)))  # 10 items, C = 4.
  chron = state.data.reward[rb.chronological_slots(state)]
  np.testing.assert_array_equal(chron, [7, 8, 9, 10])
  # Same layout as adding them one at a time.
  one_by_one = add_jit(rb.init(4, example()), make_batch([100]))
  for i in range(1, 11):
    one_by_one = add_jit(one_by_one, single(i))
  assert_tree_equal(state, one_by_one)


def test_add_inside_scan():
  def step(state, i):
    i = i.astype(jnp.float32)
    t = Transition(obs=jnp.full(OBS_DIM, i), action=jnp.zeros(ACT_DIM),
                   reward=i, next_obs=jnp.zeros(OBS_DIM), terminated=0.0,
                   truncated=0.0)
    return rb.add(state, t), None

  state, _ = jax.jit(lambda s: jax.lax.scan(step, s, jnp.arange(1, 10)))(
      rb.init(4, example()))
  np.testing.assert_array_equal(
      state.data.reward[rb.chronological_slots(state)], [6, 7, 8, 9])


# ----------------------------------------------------------------------------
# Validation.


@pytest.mark.parametrize("field", Transition._fields)
def test_wrong_shape_names_field(field):
  state = rb.init(4, example())
  batch = make_batch([1, 2])
  bad = np.zeros(getattr(batch, field).shape + (2,), np.float32)
  with pytest.raises(ValueError, match=f"'{field}'.*shape") as e:
    rb.add(state, batch._replace(**{field: bad}))
  assert str(bad.shape) in str(e.value)
  # Raised at trace time under jit too.
  with pytest.raises(ValueError, match=f"'{field}'"):
    jax.jit(rb.add)(state, batch._replace(**{field: bad}))


def test_inconsistent_batch_sizes_rejected():
  state = rb.init(4, example())
  batch = make_batch([1, 2, 3])
  with pytest.raises(ValueError, match="reward: batch of 2"):
    rb.add(state, batch._replace(reward=np.zeros(2, np.float32)))
  with pytest.raises(ValueError, match="reward: single"):
    rb.add(state, batch._replace(reward=np.float32(0)))


@pytest.mark.parametrize("field", Transition._fields)
def test_wrong_dtype_names_field(field):
  state = rb.init(4, example())
  batch = make_batch([1, 2])
  bad = getattr(batch, field).astype(np.int32)
  with pytest.raises(ValueError,
                     match=f"'{field}'.*int32.*float32") as e:
    rb.add(state, batch._replace(**{field: bad}))
  assert "dtype" in str(e.value)


def test_dtype_policy_images_and_flags():
  img_example = example()._replace(obs=np.zeros((64, 64, 3), np.uint8),
                                   next_obs=np.zeros((64, 64, 3), np.uint8),
                                   action=np.int32(0))
  state = rb.init(4, img_example)
  good = img_example._replace(action=np.int64(3))
  rb.add(state, good)  # int64 -> int32 is same kind: accepted.
  with pytest.raises(ValueError, match="'obs'.*float32.*uint8"):
    rb.add(state, good._replace(obs=np.zeros((64, 64, 3), np.float32)))
  with pytest.raises(ValueError, match="'action'.*Python float"):
    rb.add(state, good._replace(action=1.5))
  with pytest.raises(ValueError, match="'terminated'.*bool"):
    rb.add(state, good._replace(terminated=np.bool_(True)))
  with pytest.raises(TypeError, match="Transition"):
    rb.add(state, tuple(good))


# ----------------------------------------------------------------------------
# Sampling.


def test_sample_only_filled_and_roughly_uniform():
  state = rb.init(50, example())
  state = add_jit(state, make_batch(np.arange(1, 21)))  # 20 of 50 filled.
  out = sample_jit(state, jax.random.key(0), 8000)
  assert out.obs.shape == (8000, OBS_DIM) and out.reward.shape == (8000,)
  drawn = np.asarray(out.reward)
  assert set(drawn.tolist()) == set(range(1, 21))
  counts = np.bincount(drawn.astype(int), minlength=21)[1:]
  assert counts.min() > 0.75 * 400 and counts.max() < 1.25 * 400
  # Each sample is a whole, consistent transition.
  np.testing.assert_array_equal(out.obs[:, 0], out.reward)
  np.testing.assert_array_equal(out.next_obs[:, 0], out.reward + 1)


def test_sample_after_wraparound_covers_all_slots():
  state = rb.init(16, example())
  state = add_jit(state, make_batch(np.arange(1, 41)))
  drawn = np.asarray(sample_jit(state, jax.random.key(1), 4000).reward)
  assert set(drawn.tolist()) == set(range(25, 41))


def test_sample_empty_buffer_returns_zeros():
  out = sample_jit(rb.init(8, example()), jax.random.key(0), 5)
  assert np.all(np.asarray(out.obs) == 0)


def _episode_stream(n, rng):
  """n transitions of episodes with random lengths; returns batch and ends."""
  ends = np.zeros(n, bool)
  t = 0
  while t < n:
    t += int(rng.integers(1, 9))
    if t - 1 < n:
      ends[t - 1] = True
  # Alternate terminated / truncated as the end marker.
  kind = np.cumsum(ends) % 2
  terminated = (ends & (kind == 1)).astype(np.float32)
  truncated = (ends & (kind == 0)).astype(np.float32)
  return make_batch(np.arange(n), terminated, truncated), ends


def _expected_valid_starts(step_ids, ends_by_step, length):
  """Valid start step ids over a chronological list of stored step ids."""
  valid = set()
  for i in range(len(step_ids) - length + 1):
    window = step_ids[i:i + length]
    if not any(ends_by_step[s] for s in window[:-1]):
      valid.add(window[0])
  return valid


@pytest.mark.parametrize("n_added,length", [(97, 4), (25, 3), (97, 1)])
def test_sample_sequences_respect_episodes_and_write_head(n_added, length):
  capacity = 40
  rng = np.random.default_rng(n_added + length)
  batch, ends = _episode_stream(n_added, rng)
  state = rb.init(capacity, example())
  # Add in uneven chunks so the ring wraps mid-batch.
  cuts = sorted(rng.choice(np.arange(1, n_added), 5, replace=False))
  for part in np.split(np.arange(n_added), cuts):
    state = add_jit(state, jax.tree.map(lambda x, p=part: x[p], batch))

  stored = list(range(max(0, n_added - capacity), n_added))  # step ids.
  expected = _expected_valid_starts(stored, ends, length)
  assert expected  # The scenario has valid windows.

  windows, ok = sample_seq_jit(state, jax.random.key(3), 6000, length)
  assert bool(ok)
  assert windows.obs.shape == (6000, length, OBS_DIM)
  assert windows.reward.shape == (6000, length)
  steps = np.asarray(windows.reward).astype(int)
  # Contiguous in time: never crosses the write head or unfilled slots.
  np.testing.assert_array_equal(np.diff(steps, axis=1), 1)
  assert steps.min() >= stored[0] and steps.max() <= stored[-1]
  # No episode end before the last step.
  done = np.asarray(windows.terminated + windows.truncated)
  assert not np.any(done[:, :-1])
  np.testing.assert_array_equal(done, ends[steps].astype(np.float32))
  # Every valid start is reachable, and only those; roughly uniform.
  assert set(steps[:, 0].tolist()) == expected
  counts = collections.Counter(steps[:, 0].tolist())
  mean = 6000 / len(expected)
  assert min(counts.values()) > 0.6 * mean and max(counts.values()) < 1.4 * mean

  # sequence_start_mask agrees (indexed by slot).
  mask = np.asarray(start_mask_jit(state, length))
  slot_of_step = {int(r): s for s, r in enumerate(np.asarray(
      state.data.reward)) if rb.valid_mask(state)[s]}
  assert {s for s in range(capacity) if mask[s]} == {
      slot_of_step[i] for i in expected}


def test_sample_sequences_no_episode_ends_full_ring():
  # Without any episode end the only forbidden windows are those crossing
  # the write head (newest -> oldest).
  state = rb.init(10, example())
  state = add_jit(state, make_batch(np.arange(23)))
  windows, ok = sample_seq_jit(state, jax.random.key(0), 3000, 4)
  steps = np.asarray(windows.reward).astype(int)
  assert bool(ok)
  np.testing.assert_array_equal(np.diff(steps, axis=1), 1)
  assert set(steps[:, 0].tolist()) == set(range(13, 20))
  # Length == capacity: exactly one valid window, the whole buffer in order.
  windows, ok = sample_seq_jit(state, jax.random.key(1), 5, 10)
  assert bool(ok)
  np.testing.assert_array_equal(windows.reward,
                                np.tile(np.arange(13, 23), (5, 1)))


def test_sample_sequences_no_valid_window():
  state = rb.init(8, example())
  windows, ok = sample_seq_jit(state, jax.random.key(0), 4, 3)  # Empty.
  assert not bool(ok) and windows.obs.shape == (4, 3, OBS_DIM)
  assert np.all(np.isfinite(np.asarray(windows.obs)))
  # Every transition ends an episode: no window of length 2 is valid.
  state = add_jit(state, make_batch(np.arange(5), terminated=np.ones(5)))
  windows, ok = sample_seq_jit(state, jax.random.key(0), 4, 2)
  assert not bool(ok)
  assert np.all(np.isfinite(np.asarray(windows.reward)))
  _, ok = sample_seq_jit(state, jax.random.key(0), 4, 1)
  assert bool(ok)  # A length-1 window may end an episode.
  with pytest.raises(ValueError, match="length"):
    rb.sample_sequences(state, jax.random.key(0), 4, 9)
  with pytest.raises(ValueError, match="length"):
    rb.sample_sequences(state, jax.random.key(0), 4, 0)


# ----------------------------------------------------------------------------
# Images.


def test_image_observations():
  img = lambda n, v: np.full((n, 64, 64, 3), v, np.uint8)
  ex = example()._replace(obs=img(1, 0)[0], next_obs=img(1, 0)[0])
  state = rb.init(6, ex)
  for k in range(3):
    b = make_batch(np.arange(4 * k, 4 * k + 4))
    b = b._replace(obs=img(4, 0) + np.arange(4 * k, 4 * k + 4,
                                             dtype=np.uint8)[:, None, None,
                                                             None],
                   next_obs=img(4, 255))
    state = add_jit(state, b)
  assert state.data.obs.dtype == jnp.uint8
  assert state.data.obs.shape == (6, 64, 64, 3)
  out = sample_jit(state, jax.random.key(0), 64)
  assert out.obs.shape == (64, 64, 64, 3) and out.obs.dtype == jnp.uint8
  np.testing.assert_array_equal(out.obs[:, 0, 0, 0], out.reward)
  seqs, ok = sample_seq_jit(state, jax.random.key(1), 8, 3)
  assert bool(ok) and seqs.obs.shape == (8, 3, 64, 64, 3)
  np.testing.assert_array_equal(np.diff(np.asarray(seqs.obs[:, :, 0, 0, 0],
                                                   np.int32), axis=1), 1)


# ----------------------------------------------------------------------------
# Save / load.


def _wrapped_state():
  state = rb.init(7, example())
  batch, _ = _episode_stream(11, np.random.default_rng(0))
  return add_jit(state, batch)


def test_save_load_round_trip_exact(tmp_path):
  state = _wrapped_state()
  path = tmp_path / "buf.npz"
  rb.save(path, state)
  loaded = rb.load(path)
  assert jax.tree.structure(loaded) == jax.tree.structure(state)
  jax.tree.map(lambda a, b: (np.testing.assert_array_equal(a, b),
                             np.testing.assert_equal(a.dtype, b.dtype)),
               loaded, state)
  # The file holds no pickled objects.
  with np.load(path, allow_pickle=False) as f:
    assert "data.obs" in f.files and int(f["size"]) == 7


def test_save_load_images_and_batch_of_buffers(tmp_path):
  ex = example()._replace(obs=np.zeros((64, 64, 3), np.uint8),
                          next_obs=np.zeros((64, 64, 3), np.uint8))
  states = jax.vmap(lambda _: rb.init(3, ex))(jnp.arange(2))
  b = jax.tree.map(lambda x: np.ones((2, 2) + x.shape[2:], x.dtype),
                   states.data)
  states = jax.vmap(rb.add)(states, b)
  rb.save(str(tmp_path / "b.npz"), states)
  loaded = rb.load(str(tmp_path / "b.npz"))
  assert_tree_equal(loaded, states)
  assert loaded.data.obs.dtype == jnp.uint8


def test_save_is_atomic_and_overwrites(tmp_path, monkeypatch):
  path = tmp_path / "buf.npz"
  first = _wrapped_state()
  rb.save(path, first)
  second = add_jit(first, single(99.0))
  rb.save(path, second)  # Overwrite works.
  assert_tree_equal(rb.load(path), second)

  def exploding_savez(f, **arrays):
    f.write(b"PK\x03\x04partial")
    raise KeyboardInterrupt("interrupted mid-save")

  monkeypatch.setattr(np, "savez", exploding_savez)
  with pytest.raises(KeyboardInterrupt):
    rb.save(path, first)
  monkeypatch.undo()
  assert_tree_equal(rb.load(path), second)  # Old file intact.
  assert os.listdir(tmp_path) == ["buf.npz"]  # No temp file left behind.


def test_load_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="no replay-buffer file"):
    rb.load(tmp_path / "missing.npz")

  path = tmp_path / "buf.npz"
  rb.save(path, _wrapped_state())
  raw = path.read_bytes()

  truncated = tmp_path / "truncated.npz"
  truncated.write_bytes(raw[:len(raw) // 2])
  with pytest.raises(ValueError, match="corrupt or truncated"):
    rb.load(truncated)

  # Flip bytes inside the stored data: the zip CRC check catches it.
  corrupt = bytearray(raw)
  start = raw.index(b"data.reward")
  for i in range(start + 200, start + 240):
    corrupt[i] ^= 0xFF
  bad = tmp_path / "corrupt.npz"
  bad.write_bytes(bytes(corrupt))
  with pytest.raises(ValueError, match="not a valid replay-buffer file"):
    rb.load(bad)

  garbage = tmp_path / "garbage.npz"
  garbage.write_bytes(b"hello, not a zip file")
  with pytest.raises(ValueError, match="not a valid replay-buffer file"):
    rb.load(garbage)

  with np.load(path) as f:
    arrays = dict(f)
  other = tmp_path / "other.npz"
  np.savez(other, **{k: v for k, v in arrays.items() if k != "data.action"})
  with pytest.raises(ValueError, match="missing.*data.action"):
    rb.load(other)
  np.savez(other, **{**arrays, "insert_pos": np.int32(99)})
  with pytest.raises(ValueError, match="insert_pos"):
    rb.load(other)
  np.savez(other, **{**arrays, "data.reward": np.zeros(3, np.float32)})
  with pytest.raises(ValueError, match="'reward'.*shape"):
    rb.load(other)


# ----------------------------------------------------------------------------
# Offline datasets.


def test_from_numpy():
  n = 12
  rng = np.random.default_rng(0)
  obs = rng.normal(size=(n, OBS_DIM))  # float64
  act = rng.normal(size=(n, ACT_DIM))
  rew = rng.normal(size=n)
  terminals = np.zeros(n, bool)
  terminals[4] = True
  timeouts = np.zeros(n, bool)
  timeouts[9] = True
  state = rb.from_numpy(obs, act, rew, obs + 1, terminals, timeouts)
  assert rb.capacity(state) == n and int(state.size) == n
  assert int(state.insert_pos) == 0 and int(state.total_added) == n
  assert state.data.obs.dtype == jnp.float32
  assert state.data.terminated.dtype == jnp.float32
  np.testing.assert_allclose(state.data.obs, obs.astype(np.float32))
  np.testing.assert_array_equal(state.data.terminated, terminals)
  np.testing.assert_array_equal(state.data.truncated, timeouts)

  big = rb.from_numpy(obs, act, rew, obs + 1, terminals, capacity=20)
  assert rb.capacity(big) == 20 and int(big.size) == n
  np.testing.assert_array_equal(big.data.truncated, 0)
  np.testing.assert_array_equal(rb.valid_mask(big), np.arange(20) < n)

  small = rb.from_numpy(obs, act, rew, obs + 1, terminals, capacity=5)
  np.testing.assert_allclose(
      small.data.reward[rb.chronological_slots(small)],
      rew[-5:].astype(np.float32))

  with pytest.raises(ValueError, match="same length.*reward"):
    rb.from_numpy(obs, act, rew[:-1], obs + 1, terminals)


# ----------------------------------------------------------------------------
# Transformations: jit + donation, vmap, no recompilation.


def test_jit_with_donation():
  add_donate = jax.jit(rb.add, donate_argnums=0)
  state = rb.init(8, example())
  new = add_donate(state, make_batch([1, 2, 3]))
  assert state.data.obs.is_deleted()  # Storage was donated (in place).
  assert jax.tree.structure(new) == jax.tree.structure(state)
  np.testing.assert_array_equal(new.data.reward[:3], [1, 2, 3])
  new = add_donate(new, make_batch([4, 5, 6]))
  np.testing.assert_array_equal(new.data.reward[:6], [1, 2, 3, 4, 5, 6])


def test_vmap_over_batch_of_buffers():
  n_buf, cap = 4, 6
  states = jax.vmap(lambda _: rb.init(cap, example()))(jnp.arange(n_buf))
  assert states.data.obs.shape == (n_buf, cap, OBS_DIM)
  batches = [make_batch(np.arange(5) + 100 * i) for i in range(n_buf)]
  stacked = jax.tree.map(lambda *x: np.stack(x), *batches)
  vadd = jax.jit(jax.vmap(rb.add))
  states = vadd(states, stacked)
  states = vadd(states, stacked)  # 10 per buffer: wraps.
  keys = jax.random.split(jax.random.key(0), n_buf)
  samples = jax.jit(jax.vmap(rb.sample, in_axes=(0, 0, None)),
                    static_argnums=2)(states, keys, 32)
  seqs, ok = jax.jit(jax.vmap(rb.sample_sequences, in_axes=(0, 0, None, None)),
                     static_argnums=(2, 3))(states, keys, 8, 2)
  masks = jax.vmap(rb.valid_mask)(states)
  assert samples.reward.shape == (n_buf, 32)
  assert seqs.reward.shape == (n_buf, 8, 2) and ok.shape == (n_buf,)
  assert masks.shape == (n_buf, cap) and bool(masks.all())
  for i in range(n_buf):
    one = rb.init(cap, example())
    one = rb.add(rb.add(one, batches[i]), batches[i])
    assert_tree_equal(jax.tree.map(lambda x, i=i: x[i], states), one)
    assert_tree_equal(jax.tree.map(lambda x, i=i: x[i], samples),
                      rb.sample(one, keys[i], 32))
    s, o = rb.sample_sequences(one, keys[i], 8, 2)
    assert_tree_equal(jax.tree.map(lambda x, i=i: x[i], seqs), s)
    assert bool(o) == bool(ok[i])


def test_jitted_add_does_not_recompile():
  traces = []

  def counted_add(state, t):
    traces.append(1)  # Python side effect: runs only while tracing.
    return rb.add(state, t)

  f = jax.jit(counted_add, donate_argnums=0)
  state = rb.init(8, example())
  state = f(state, make_batch([1, 2, 3]))
  state = f(state, make_batch([7, 8, 9]))  # New data, same shapes.
  state = f(state, make_batch([4, 5, 6]))
  assert len(traces) == 1
  assert f._cache_size() == 1
  np.testing.assert_array_equal(
      state.data.reward[rb.chronological_slots(state)],
      [2, 3, 7, 8, 9, 4, 5, 6])
