"""experiments/bench_dyna.py runs end to end at a tiny size and writes its JSON rows."""

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import bench_dyna  # noqa: E402


def test_bench_dyna_quick(tmp_path):
  out = tmp_path / "bench.json"
  rows = bench_dyna.main(bench_dyna.Args(out=out, quick=True))
  saved = json.loads(out.read_text())
  assert [r["name"] for r in saved] == [r["name"] for r in rows] == ["jax/vmapped",
                                                                    "numpy/loop"]
  for r in saved:
    assert r["seconds"] > 0 and r["updates_per_s"] > 0 and r["real_steps"] > 0
    assert len(r["mean_steps_per_episode"]) == r["episodes"] == 3
  jax_row, np_row = saved
  assert jax_row["speedup"] == jax_row["updates_per_s"] / np_row["updates_per_s"]
  assert jax_row["speedup_seconds"] == np_row["seconds"] / jax_row["seconds"]


def test_bench_dyna_refuses_bad_sizes_before_compiling():
  import dataclasses
  import pytest
  for field, value, message in [("numpy_runs", 0, "--numpy-runs must be >= 1, got 0"),
                                ("episodes", 0, "--episodes must be >= 1, got 0"),
                                ("planning_steps", -1, "planning_steps must be an int >= 0")]:
    with pytest.raises(SystemExit, match=message):
      bench_dyna.main(dataclasses.replace(bench_dyna.Args(), **{field: value}))


def test_numpy_reference_learns_like_the_book():
  """The reference itself: with n = 50 the third episode is already short."""
  from mbrl_jax.algorithms import dyna
  steps, updates = bench_dyna.numpy_dyna_q(dyna.PRESETS["figure_8_2"], 0, 5)
  assert len(steps) == 5 and max(steps[2:]) <= 40 and updates == 51 * sum(steps)
