"""Checkpointer: exact round trips (typed keys included), refusal of other runs' or corrupt
checkpoints, and a kill during a write leaving the previous checkpoint loadable."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax.run import Checkpointer, CheckpointError


class State(NamedTuple):      # fields deliberately not in alphabetical order
  params: dict
  key: jax.Array
  count: jax.Array


def make_state(n=3, seed=0):
  return State(params={"w": jnp.arange(n, dtype=jnp.float32) * seed, "b": [jnp.ones((2, 2))]},
               key=jax.random.split(jax.random.key(seed), 4), count=jnp.int32(seed))


def assert_same(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      assert jax.random.key_impl(x) == jax.random.key_impl(y)
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_keeps_latest_and_restores_exactly(tmp_path):
  ckpt = Checkpointer(tmp_path, meta={"config": {"lr": 1e-3, "sizes": (2, 3)}}, max_to_keep=2)
  assert ckpt.latest_step() is None
  for step in (1, 2, 3):
    ckpt.save(step, make_state(seed=step), extra={"history": [step, float("nan")]})
  assert ckpt.all_steps() == [2, 3]
  template = jax.eval_shape(make_state)
  state, extra = ckpt.restore(template)
  assert_same(state, make_state(seed=3))
  assert extra["history"][0] == 3 and np.isnan(extra["history"][1])
  # A fresh Checkpointer (a new process) sees the same checkpoints; the key stays usable.
  again = Checkpointer(tmp_path, meta={"config": {"lr": 1e-3, "sizes": [2, 3]}})
  state2, _ = again.restore(make_state(), step=2)
  assert_same(state2, make_state(seed=2))
  np.testing.assert_array_equal(jax.random.uniform(state2.key[0], (3,)),
                                jax.random.uniform(make_state(seed=2).key[0], (3,)))


def test_other_run_other_shapes_and_corruption_are_refused(tmp_path):
  Checkpointer(tmp_path, meta={"config": {"lr": 1e-3}}).save(1, make_state(seed=1))
  with pytest.raises(CheckpointError, match=r"config\.lr: checkpoint has 0\.001, this run has "
                                            r"0\.01"):
    Checkpointer(tmp_path, meta={"config": {"lr": 1e-2}}).restore(make_state())
  ckpt = Checkpointer(tmp_path, meta={"config": {"lr": 1e-3}})
  with pytest.raises(CheckpointError, match=r"params\.w is float32\[3\], this run expects "
                                            r"float32\[4\]"):
    ckpt.restore(make_state(n=4))
  with pytest.raises(CheckpointError, match="other arrays"):
    ckpt.restore(State(params={"w": jnp.zeros(3)}, key=make_state().key, count=jnp.int32(0)))
  with pytest.raises(FileNotFoundError):
    ckpt.restore(make_state(), step=7)
  # Corrupt every data file of the state; the restore names the checkpoint.
  for path in (tmp_path / "1" / "state").rglob("*"):
    if path.is_file():
      path.write_bytes(b"garbage")
  with pytest.raises(CheckpointError, match=r"unreadable \(corrupt\?\)"):
    ckpt.restore(make_state())


WRITER = textwrap.dedent("""
    import sys
    import jax.numpy as jnp
    from mbrl_jax.run import Checkpointer
    ckpt = Checkpointer(sys.argv[1], meta={})
    ckpt.save(1, {"x": jnp.ones((8,))})
    print("saved 1", flush=True)
    big = {"x": jnp.ones((8,)), "y": jnp.ones((64, 1024, 1024))}       # 256 MB
    while True:
      for step in range(2, 1000):
        ckpt.save(step, big)
""")


def test_kill_during_a_write_leaves_the_previous_checkpoint_loadable(tmp_path):
  proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)],
                          stdout=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline().strip() == "saved 1"
    deadline = time.time() + 120
    while not any("tmp" in p.name for p in tmp_path.iterdir()):   # a write in progress
      assert time.time() < deadline and proc.poll() is None
      time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
  finally:
    proc.kill()
    proc.wait()
  ckpt = Checkpointer(tmp_path, meta={})
  step = ckpt.latest_step()
  assert step is not None
  state, _ = ckpt.restore({"x": jnp.zeros((8,))} if step == 1 else
                          {"x": jnp.zeros((8,)), "y": jnp.zeros((64, 1024, 1024))})
  np.testing.assert_array_equal(state["x"], np.ones(8))
