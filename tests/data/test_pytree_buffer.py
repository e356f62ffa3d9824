"""Tests for mbrl_jax.data on experience trees other than Transition: generic
leaves, the is_first episode rule, cross-episode windows, add_masked,
sample_newest and the save/load format versions."""

from __future__ import annotations

import json
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax import data as rb
from mbrl_jax.types import Transition

HERE = os.path.dirname(__file__)

add_jit = jax.jit(rb.add)
add_masked_jit = jax.jit(rb.add_masked)
sample_seq_jit = jax.jit(rb.sample_sequences, static_argnums=(2, 3),
                         static_argnames="cross_episodes")
start_mask_jit = jax.jit(rb.sequence_start_mask, static_argnums=1,
                         static_argnames="cross_episodes")


class Step(NamedTuple):
  """A Dreamer-style step: what was seen and whether it starts an episode."""
  obs: jax.Array        # [2]
  action: jax.Array     # [1]
  reward: jax.Array     # []
  is_first: jax.Array   # [] bool


def step_example() -> Step:
  return Step(obs=np.zeros(2, np.float32), action=np.zeros(1, np.float32),
              reward=np.float32(0), is_first=np.bool_(False))


def steps(ids, is_first=None) -> Step:
  """Steps whose leaves encode float ids; is_first [N] bool (default none)."""
  ids = np.asarray(ids, np.float32)
  first = (np.zeros(ids.shape, bool) if is_first is None
           else np.asarray(is_first, bool))
  return Step(obs=np.stack([ids, ids + 0.5], -1), action=-ids[:, None],
              reward=ids, is_first=first)


def dict_example():
  return dict(obs=np.zeros(3, np.float32),
              extras=dict(log_prob=np.float32(0), mode=np.int32(0)))


def dict_rows(ids):
  ids = np.asarray(ids, np.float32)
  return dict(obs=np.stack([ids, ids, ids], -1),
              extras=dict(log_prob=-ids, mode=ids.astype(np.int32)))


def assert_tree_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def chron_ids(state):
  """Stored reward ids, oldest first."""
  order = np.asarray(rb.chronological_slots(state))[:int(state.size)]
  return np.asarray(state.data.reward)[order]


# ----------------------------------------------------------------------------
# Any pytree.


def test_dict_and_named_tuple_trees():
  state = rb.init(4, dict_example())
  assert state.data["obs"].shape == (4, 3)
  assert state.data["extras"]["log_prob"].shape == (4,)
  assert state.data["extras"]["mode"].dtype == jnp.int32
  assert rb.capacity(state) == 4
  state = add_jit(state, dict_rows([1, 2, 3, 4, 5, 6]))
  np.testing.assert_array_equal(state.data["extras"]["mode"], [5, 6, 3, 4])
  out = jax.jit(rb.sample, static_argnums=2)(state, jax.random.key(0), 50)
  assert set(np.asarray(out["extras"]["mode"]).tolist()) == {3, 4, 5, 6}
  np.testing.assert_array_equal(out["extras"]["log_prob"],
                                -out["obs"][:, 0])

  state = rb.init(5, step_example())
  state = add_jit(state, jax.tree.map(lambda x: x[0], steps([7])))
  assert isinstance(state.data, Step) and int(state.size) == 1
  assert state.data.is_first.dtype == jnp.bool_


def test_single_array_tree():
  state = rb.init(3, np.zeros((2,), np.float32))
  state = add_jit(state, np.arange(8, dtype=np.float32).reshape(4, 2))
  np.testing.assert_array_equal(state.data, [[6, 7], [2, 3], [4, 5]])
  with pytest.raises(ValueError, match="'<root>'.*shape"):
    rb.add(state, np.zeros(3, np.float32))


def test_errors_name_the_tree_path():
  state = rb.init(4, dict_example())
  rows = dict_rows([1, 2])
  bad = dict(rows, extras=dict(rows["extras"], log_prob=np.zeros((2, 5),
                                                                 np.float32)))
  with pytest.raises(ValueError, match=r"'extras.log_prob' has shape \(2, 5\)"):
    rb.add(state, bad)
  bad = dict(rows, extras=dict(rows["extras"], mode=np.zeros(2, np.float32)))
  with pytest.raises(ValueError, match="'extras.mode' has dtype float32.*int32"):
    jax.jit(rb.add)(state, bad)
  bad = dict(rows, obs=rows["obs"][:1])
  with pytest.raises(ValueError, match="extras.log_prob: batch of 2, .*obs: batch of 1"):
    rb.add(state, bad)
  with pytest.raises(TypeError, match="structure.*'extras.mode'.*got dict"):
    rb.add(state, dict(obs=rows["obs"], extras=dict(log_prob=rows["extras"][
        "log_prob"])))
  with pytest.raises(TypeError, match="expected Step"):
    rb.add(rb.init(4, step_example()), tuple(steps([1])))
  with pytest.raises(ValueError, match="'is_first' must be a \\[\\] bool"):
    rb.init(4, step_example()._replace(is_first=np.float32(0)))


# ----------------------------------------------------------------------------
# Episode boundaries.


def _episodes(n, rng):
  """is_first [n] bool of episodes with random lengths 1..8 (step 0 first)."""
  first = np.zeros(n, bool)
  t = 0
  while t < n:
    first[t] = True
    t += int(rng.integers(1, 9))
  return first


def _reference_starts(stored, first, length, rule):
  """Valid start ids over the stored ids (oldest first) -- the slow way."""
  out = set()
  for i in range(len(stored) - length + 1):
    w = stored[i:i + length]
    if rule == "is_first" and any(first[s] for s in w[1:]):
      continue
    if rule == "ends" and any(first[s + 1] for s in w[:-1]):
      continue
    out.add(w[0])
  return out


def _sampled_starts(state, length, cross_episodes=False):
  windows, ok = sample_seq_jit(state, jax.random.key(length), 4000, length,
                               cross_episodes=cross_episodes)
  ids = np.asarray(windows.reward).astype(int)
  np.testing.assert_array_equal(np.diff(ids, axis=1), 1)  # Contiguous.
  mask = np.asarray(start_mask_jit(state, length,
                                   cross_episodes=cross_episodes))
  by_mask = set(np.asarray(state.data.reward)[mask].astype(int).tolist())
  starts = set(ids[:, 0].tolist())
  assert starts == by_mask  # Sampling reaches every valid start, only those.
  return bool(ok), starts, ids, windows


@pytest.mark.parametrize("length", [1, 4])
def test_is_first_rule_matches_transition_rule(length):
  """Both rules give the same windows for the same episodes, and each
  matches the reference; cross_episodes keeps every write-head-safe window."""
  n, cap = 61, 25
  first = _episodes(n + 1, np.random.default_rng(length))
  state = rb.init(cap, step_example())
  for part in np.split(np.arange(n), [9, 10, 40]):  # Wraps mid-batch.
    state = add_jit(state, steps(part, first[part]))
  # The same stream as Transitions: step t ends an episode iff t+1 is first.
  ends = first[1:n + 1].astype(np.float32)
  ids = np.arange(n, dtype=np.float32)
  tr = Transition(obs=ids[:, None], action=ids[:, None], reward=ids,
                  next_obs=ids[:, None], terminated=ends * (ids % 2),
                  truncated=ends * (1 - ids % 2))
  tstate = add_jit(rb.init(cap, jax.tree.map(lambda x: x[0], tr)), tr)

  stored = list(range(n - cap, n))
  want = _reference_starts(stored, first, length, "is_first")
  assert want == _reference_starts(stored, first, length, "ends")
  ok, got, _, windows = _sampled_starts(state, length)
  assert ok and got == want
  # Inside a window only the first step may start an episode.
  assert not np.any(np.asarray(windows.is_first)[:, 1:])
  ok, got, _, _ = _sampled_starts(tstate, length)
  assert ok and got == want

  every = set(stored[:cap - length + 1])
  for s in (state, tstate):
    ok, got, _, _ = _sampled_starts(s, length, cross_episodes=True)
    assert ok and got == every


def test_is_first_takes_precedence_and_crossing_windows_keep_flags():
  class Both(NamedTuple):
    reward: jax.Array
    terminated: jax.Array
    is_first: jax.Array

  ex = Both(np.float32(0), np.float32(0), np.bool_(False))
  ids = np.arange(8, dtype=np.float32)
  first = np.array([1, 0, 0, 0, 1, 0, 0, 0], bool)
  # terminated marks step 1 as an end; is_first must win (episodes 0-3, 4-7).
  term = np.array([0, 1, 0, 0, 0, 0, 0, 0], np.float32)
  state = add_jit(rb.init(8, ex), Both(ids, term, first))
  _, starts, _, _ = _sampled_starts(state, 4)
  assert starts == {0, 4}
  ok, starts, ids_w, windows = _sampled_starts(state, 4, cross_episodes=True)
  assert ok and starts == {0, 1, 2, 3, 4}
  # A crossing window carries is_first where the next episode begins.
  np.testing.assert_array_equal(np.asarray(windows.is_first),
                                first[ids_w])


def test_tree_without_episode_flags_needs_cross_episodes():
  state = add_jit(rb.init(6, dict_example()), dict_rows(np.arange(4)))
  with pytest.raises(ValueError, match="no 'is_first'.*cross_episodes=True"):
    rb.sample_sequences(state, jax.random.key(0), 3, 2)
  with pytest.raises(ValueError, match="sequence_start_mask: .*no 'is_first'"):
    rb.sequence_start_mask(state, 2)
  windows, ok = sample_seq_jit(state, jax.random.key(0), 200, 2,
                               cross_episodes=True)
  assert bool(ok)
  assert set(np.asarray(windows["extras"]["mode"][:, 0]).tolist()) == {0, 1, 2}


def test_is_first_window_validity_edge_cases():
  state = rb.init(6, step_example())
  _, ok = sample_seq_jit(state, jax.random.key(0), 4, 2)
  assert not bool(ok)  # Empty.
  state = add_jit(state, steps(np.arange(5), np.ones(5)))  # 1-step episodes.
  windows, ok = sample_seq_jit(state, jax.random.key(0), 4, 2)
  assert not bool(ok) and np.all(np.isfinite(np.asarray(windows.obs)))
  _, ok = sample_seq_jit(state, jax.random.key(0), 4, 1)
  assert bool(ok)
  _, ok = sample_seq_jit(state, jax.random.key(0), 4, 2, cross_episodes=True)
  assert bool(ok)


# ----------------------------------------------------------------------------
# add_masked and sample_newest against NumPy.


class NumpyRing:
  """The slow reference: a Python list of item ids, capacity-bounded."""

  def __init__(self, capacity):
    self.c, self.slots, self.pos, self.size, self.total = (
        capacity, [0.0] * capacity, 0, 0, 0)

  def add(self, ids):
    for i in ids:
      self.slots[self.pos] = float(i)
      self.pos = (self.pos + 1) % self.c
      self.size = min(self.size + 1, self.c)
      self.total += 1

  def newest(self, window):
    n = max(min(window, self.size), 1)
    return [self.slots[(self.pos - 1 - b) % self.c] for b in range(n)]


@pytest.mark.parametrize("capacity", [1, 5, 8])
def test_add_masked_matches_numpy_reference(capacity):
  rng = np.random.default_rng(capacity)
  state = rb.init(capacity, step_example())
  ref = NumpyRing(capacity)
  next_id = 1
  for it in range(10):
    r = 12  # Static R: one compilation; up to 12 > capacity valid rows.
    p = [0.0, 0.2, 0.7, 1.0][it % 4]
    valid = rng.random(r) < p
    ids = np.arange(next_id, next_id + r)
    next_id += r
    state = add_masked_jit(state, steps(ids, ids % 3 == 0), valid)
    ref.add(ids[valid])
    assert (int(state.size), int(state.insert_pos), int(state.total_added)) == (
        ref.size, ref.pos, ref.total)
    np.testing.assert_array_equal(state.data.reward, ref.slots)
    stored = np.asarray(state.data.reward).astype(int)
    np.testing.assert_array_equal(state.data.is_first[:ref.size],
                                  stored[:ref.size] % 3 == 0)
    np.testing.assert_array_equal(state.data.obs[:, 1], state.data.reward
                                  + 0.5 * (np.asarray(ref.slots) != 0))
  # Equal to add(rows[valid]) in every leaf and counter.
  valid = np.array([1, 0, 1, 1, 0, 1, 1, 0, 0, 1, 1, 1], bool)
  rows = steps(np.arange(100, 112))
  assert_tree_equal(add_masked_jit(state, rows, valid),
                    rb.add(state, jax.tree.map(lambda x: x[valid], rows)))


def test_add_masked_checks_rows_and_valid():
  state = rb.init(4, dict_example())
  rows = dict_rows([1, 2, 3])
  with pytest.raises(ValueError, match=r"valid must be \[R=3\] bool"):
    rb.add_masked(state, rows, np.ones(3, np.float32))
  with pytest.raises(ValueError, match=r"valid must be \[R=3\] bool"):
    rb.add_masked(state, rows, np.ones(2, bool))
  with pytest.raises(ValueError, match="add_masked: leaf 'extras.mode'"):
    rb.add_masked(state, dict(rows, extras=dict(
        rows["extras"], mode=rows["extras"]["log_prob"])), np.ones(3, bool))
  with pytest.raises(ValueError, match="leading row axis"):
    rb.add_masked(state, jax.tree.map(lambda x: x[0], rows), np.ones(1, bool))


@pytest.mark.parametrize("capacity,n_added", [(8, 5), (8, 21), (3, 3)])
def test_sample_newest_matches_numpy_reference(capacity, n_added):
  state = add_jit(rb.init(capacity, step_example()),
                  steps(np.arange(1, n_added + 1)))
  ref = NumpyRing(capacity)
  ref.add(np.arange(1, n_added + 1))
  draw = jax.jit(lambda s, k, w: rb.sample_newest(s, k, 3000, w))
  for window in (0, 1, 2, capacity - 1, capacity, capacity + 4, 1000):
    out = draw(state, jax.random.key(window), window)  # Traced: no retrace.
    drawn = np.asarray(out.reward)
    want = ref.newest(window)
    assert set(drawn.tolist()) == set(want), window
    counts = np.unique(drawn, return_counts=True)[1]
    mean = 3000 / len(want)
    assert counts.min() > 0.7 * mean and counts.max() < 1.3 * mean
    np.testing.assert_array_equal(out.obs[:, 0], out.reward)  # Whole items.
  assert draw._cache_size() == 1
  # A Python int window works too; an empty buffer gives zeros.
  out = rb.sample_newest(rb.init(4, step_example()), jax.random.key(0), 5, 3)
  np.testing.assert_array_equal(out.reward, 0)


# ----------------------------------------------------------------------------
# Save / load.


def test_save_load_any_tree(tmp_path):
  path = tmp_path / "b.npz"
  state = add_jit(rb.init(5, dict_example()), dict_rows(np.arange(7)))
  rb.save(path, state)
  with np.load(path, allow_pickle=False) as f:
    assert "data.extras.log_prob" in f.files and int(f["version"]) == 2
  loaded = rb.load(path)  # Without `like`: nested dicts.
  assert_tree_equal(loaded, state)
  assert loaded.data["extras"]["mode"].dtype == jnp.int32

  state = add_jit(rb.init(5, step_example()), steps(np.arange(7),
                                                    np.arange(7) % 2 == 0))
  rb.save(path, state)
  assert isinstance(rb.load(path).data, dict)
  loaded = rb.load(path, like=step_example())
  assert_tree_equal(loaded, state)
  assert loaded.data.is_first.dtype == jnp.bool_
  with pytest.raises(ValueError, match="differ from like's"):
    rb.load(path, like=dict_example())

  arr = add_jit(rb.init(3, np.zeros(2, np.float32)), np.ones((2, 2), np.float32))
  rb.save(path, arr)
  assert_tree_equal(rb.load(path), arr)


def test_load_reads_version_1_files(tmp_path):
  # tests/data/buffer_v1.npz was written by the Transition-only save (format
  # version 1, before the buffer took any pytree): capacity 7, 11 steps added.
  loaded = rb.load(os.path.join(HERE, "buffer_v1.npz"))
  assert isinstance(loaded.data, Transition)
  assert (int(loaded.size), int(loaded.insert_pos), int(loaded.total_added)) == (
      7, 4, 11)
  np.testing.assert_array_equal(chron_ids(loaded), np.arange(4, 11))
  np.testing.assert_array_equal(loaded.data.obs[:, 1], loaded.data.reward + 0.25)
  np.testing.assert_array_equal(loaded.data.terminated,
                                loaded.data.reward == 4)
  np.testing.assert_array_equal(loaded.data.truncated, loaded.data.reward == 8)
  # Round trip through today's format gives the same state.
  rb.save(tmp_path / "v2.npz", loaded)
  assert_tree_equal(rb.load(tmp_path / "v2.npz"), loaded)


def test_load_rejects_bad_tree_entries(tmp_path):
  path = tmp_path / "b.npz"
  rb.save(path, add_jit(rb.init(3, step_example()), steps([1, 2])))
  with np.load(path) as f:
    arrays = dict(f)
  other = tmp_path / "other.npz"
  np.savez(other, **{**arrays, "version": np.int32(3)})
  with pytest.raises(ValueError, match="unsupported format version 3"):
    rb.load(other)
  np.savez(other, **{**arrays, "tree": np.asarray("not json")})
  with pytest.raises(ValueError, match="'tree' entry"):
    rb.load(other)
  tree = json.loads(str(arrays["tree"]))
  tree["paths"].append(["extra"])
  np.savez(other, **{**arrays, "tree": np.asarray(json.dumps(tree))})
  with pytest.raises(ValueError, match=r"missing entries \['data.extra'\]"):
    rb.load(other)
  np.savez(other, **{**arrays, "data.is_first": np.zeros(2, bool)})
  with pytest.raises(ValueError, match="'is_first' has shape"):
    rb.load(other)
