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
  assert saved[0]["speedup"] > 0


def test_numpy_reference_learns_like_the_book():
  """The reference itself: with n = 50 the third episode is already short."""
  from mbrl_jax.algorithms import dyna
  steps, updates = bench_dyna.numpy_dyna_q(dyna.PRESETS["figure_8_2"], 0, 5)
  assert len(steps) == 5 and max(steps[2:]) <= 40 and updates == 51 * sum(steps)
