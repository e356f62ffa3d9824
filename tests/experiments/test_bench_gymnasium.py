"""experiments/bench_gymnasium.py runs end to end at a tiny size and writes its JSON rows."""

import json
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import bench_gymnasium  # noqa: E402


def test_bench_gymnasium_quick(tmp_path):
  out = tmp_path / "bench.json"
  rows = bench_gymnasium.main(bench_gymnasium.Args(out=out, quick=True, batches=(2,)))
  saved = json.loads(out.read_text())
  assert [r["name"] for r in saved] == ["pendulum/jax/B2", "pendulum/gymnasium/B2",
                                        "pendulum/python/B2"]
  assert [r["name"] for r in rows] == [r["name"] for r in saved]
  for r in saved:
    assert {"path", "batch", "steps", "ms_per_call", "steps_per_s", "us_per_step",
            "device"} <= set(r)
    assert r["steps_per_s"] > 0 and r["steps"] == 20
  assert saved[1]["slowdown_vs_jax"] > 0 and "roundtrip_us_per_step" in saved[1]


def test_bench_gymnasium_refuses_bad_sizes():
  with pytest.raises(SystemExit, match="--steps must be >= 1"):
    bench_gymnasium.main(bench_gymnasium.Args(steps=0))
