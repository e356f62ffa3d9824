"""experiments/bench_control.py runs end to end at a tiny size and writes its JSON rows."""

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import bench_control  # noqa: E402


def test_bench_control_quick(tmp_path):
  out = tmp_path / "bench.json"
  rows = bench_control.main(bench_control.Args(out=out, quick=True, envs=("pendulum",),
                                               episode_length=10, populations=(20,)))
  saved = json.loads(out.read_text())
  assert [r["name"] for r in saved] == ["pendulum/ilqr", "pendulum/cem/equal-time"]
  assert [r["name"] for r in rows] == [r["name"] for r in saved]
  for r in saved:
    assert {"env", "planner", "population", "iterations", "horizon", "ms_per_plan",
            "ms_per_plan_single", "return_mean", "returns", "seeds"} <= set(r)
    assert r["ms_per_plan"] > 0 and len(r["returns"]) == r["seeds"] == 1
  assert saved[1]["population"] == 20
