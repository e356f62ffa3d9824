"""The driver's per-chunk steps (`Algorithm.step_at`): each chunk runs its own program, each
distinct program compiles once, a second run compiles nothing, and a resumed run equals an
uninterrupted one."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from mbrl_jax import run as run_lib
from mbrl_jax.algorithms.base import Algorithm
from tests.conftest import count_compilations


@dataclasses.dataclass(frozen=True)
class ToyConfig:
  num_chunks: int = 5


def toy(num_chunks=5):
  """State: a running total. Chunks 0-1 add 1, chunks 2-3 add 10, chunk 4 on add 100: three
  programs, told apart by the metric "program"."""
  def adder(amount, program):
    def step(state):
      total = state + amount
      return total, {"total": total, "program": jnp.float32(program)}
    return step

  programs = [adder(1.0, 0), adder(10.0, 1), adder(100.0, 2)]
  calls = []

  def step_at(i):
    calls.append(i)
    return programs[min(i // 2, 2)]

  algorithm = Algorithm(name="toy", unit="chunk", config=ToyConfig(num_chunks),
                        init=lambda key: (jnp.float32(0.0), {}), step=programs[0],
                        num_chunks=num_chunks, nonfinite={}, step_at=step_at)
  return algorithm, calls


def test_each_chunk_runs_its_step_and_each_step_compiles_once():
  algorithm, calls = toy()
  with count_compilations() as c:
    _, history = run_lib.train(algorithm, jax.random.key(0))
  np.testing.assert_array_equal(history["program"], [0, 0, 1, 1, 2])
  np.testing.assert_array_equal(history["total"], [1, 2, 12, 22, 122])
  assert calls == [0, 1, 2, 3, 4]
  first = c.count
  assert first >= 4                     # init and the three steps
  with count_compilations() as c:       # a second run: everything cached
    _, again = run_lib.train(algorithm, jax.random.key(1))
  assert c.count == 0
  np.testing.assert_array_equal(again["total"], history["total"])


def test_per_chunk_steps_with_seeds_vmapped_and_resumed(tmp_path):
  algorithm, _ = toy()
  keys = jnp.stack([jax.random.key(s) for s in range(3)])
  _, whole = run_lib.train(algorithm, keys)
  assert whole["total"].shape == (5, 3)
  np.testing.assert_array_equal(whole["total"][:, 1], [1, 2, 12, 22, 122])
  # Stopped after chunk 2, then resumed: the same history as the uninterrupted run.
  short, _ = toy(num_chunks=5)
  directory = str(tmp_path / "ckpt")
  stop_after_three = short._replace(num_chunks=3)
  run_lib.train(stop_after_three._replace(config=short.config), keys, checkpoint_dir=directory)
  _, resumed = run_lib.train(short, keys, checkpoint_dir=directory, resume=True)
  np.testing.assert_array_equal(resumed["total"], whole["total"])
  np.testing.assert_array_equal(resumed["program"], whole["program"])


def test_one_seed_batch_runs_unbatched_so_conds_take_one_branch(tmp_path):
  """A batch of one key keeps its seed axis in the state and the history, but its programs
  are the unbatched ones: `vmap` would turn the `lax.cond` below into a `select` that runs
  the untaken branch too (counted by a host callback); two seeds still vmap (and do)."""
  untaken = []

  def step(state):
    def expensive(s):
      jax.debug.callback(lambda: untaken.append(1))
      return s * 0.0
    total = jax.lax.cond(state >= 0.0, lambda s: s + 1.0, expensive, state)
    return total, {"total": total}

  algorithm = Algorithm(name="toy_cond", unit="chunk", config=ToyConfig(3),
                        init=lambda key: (jnp.float32(0.0), {}), step=step, num_chunks=3,
                        nonfinite={})
  one = jnp.stack([jax.random.key(0)])
  state, history = run_lib.train(algorithm, one, checkpoint_dir=str(tmp_path / "one"))
  assert state.shape == (1,) and history["total"].shape == (3, 1)
  np.testing.assert_array_equal(history["total"][:, 0], [1, 2, 3])
  assert untaken == []
  _, resumed = run_lib.train(algorithm, one, checkpoint_dir=str(tmp_path / "one"),
                             resume=True)
  np.testing.assert_array_equal(resumed["total"], history["total"])
  _, two = run_lib.train(algorithm, jnp.stack([jax.random.key(0), jax.random.key(1)]))
  np.testing.assert_array_equal(two["total"][:, 1], [1, 2, 3])
  assert len(untaken) == 3              # vmapped: the select ran the untaken branch
