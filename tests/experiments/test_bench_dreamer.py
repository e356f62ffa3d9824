"""experiments/bench_dreamer.py: its FLOP count by hand, and a tiny preset end to end."""

import dataclasses
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax.algorithms import dreamer

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import bench_dreamer  # noqa: E402
from tests.algorithms.test_dreamer import TINY  # noqa: E402


def test_matmul_flops_count_scans_and_gradients():
  x = jnp.ones((8, 16))
  w = jnp.ones((16, 16))

  def f(x):
    return jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None, length=5)[0].sum()

  one = 2.0 * 8 * 16 * 16
  matmul, _ = bench_dreamer.flops_of(jax.jit(f), (x,))
  assert matmul == 5 * one
  # The gradient adds the transposed products (of the input only: w is a constant here).
  matmul, _ = bench_dreamer.flops_of(jax.jit(jax.grad(f)), (x,))
  assert matmul == 5 * one + 5 * one
  cond = jax.jit(lambda x, p: jax.lax.cond(p, lambda: (x @ w) @ w, lambda: x @ w))
  assert bench_dreamer.flops_of(cond, (x, True))[0] == 2 * one


def test_bench_dreamer_tiny(tmp_path, monkeypatch):
  # All parts but the chunk (the costliest compile: it holds the others; the full benchmark
  # times it), to keep the suite short.
  monkeypatch.setitem(dreamer.PRESETS, "tiny", dataclasses.replace(TINY, env_steps=100))
  out = tmp_path / "bench.json"
  parts = ("train_step", "world_model", "actor_critic", "collect")
  rows = bench_dreamer.main(["--presets", "tiny", "--chunk-steps", "10", "--repeats", "1",
                             "--parts", *parts, "--out", str(out)])
  saved = json.loads(out.read_text())
  assert [r["part"] for r in saved] == list(parts) == [r["part"] for r in rows]
  for r in saved:
    assert r["seconds"] > 0 and r["gflop"] > 0 and r["gflops"] > 0 and r["matmul_gflops"] > 0
    assert r["buffer_layout"] == "rows"
  by_part = {r["part"]: r for r in saved}
  # The train step is the world-model and actor-critic updates (its FLOPs their sum).
  step = by_part["train_step"]["gflop"]
  np.testing.assert_allclose(step, by_part["world_model"]["gflop"]
                             + by_part["actor_critic"]["gflop"], rtol=0.1)
  # The buffer of the full 100-step run: 100 rows of a 3-float obs, 1 action, a reward and
  # three flags (no episode ends in 100 pendulum steps).
  assert by_part["train_step"]["buffer_bytes_per_seed"] == 100 * (4 * 3 + 4 + 4 + 3) + 3 * 4


def test_bench_dreamer_refuses_unknown_parts():
  with pytest.raises(SystemExit, match="unknown --parts chunks; valid: train_step"):
    bench_dreamer.main(["--presets", "pendulum", "--parts", "chunks"])
