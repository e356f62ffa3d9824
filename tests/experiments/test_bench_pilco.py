"""experiments/bench_pilco.py runs end to end at a tiny size and writes its JSON rows."""

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import bench_pilco  # noqa: E402


def test_bench_pilco_quick(tmp_path):
  out = tmp_path / "bench.json"
  rows = bench_pilco.main(bench_pilco.Args(out=out, quick=True))
  saved = json.loads(out.read_text())
  assert [r["name"] for r in saved] == ["cartpole_swingup/rows=8"]
  assert [r["name"] for r in rows] == [r["name"] for r in saved]
  for r in saved:
    assert r["horizon"] == 5 and r["pairs"] == 10        # 4 state dims: 4 * 5 / 2 pairs
    for k in ("forward_ms", "value_and_grad_ms", "exp_floor_ms"):
      assert r[k] > 0, (k, r)
    assert r["grad_over_forward"] == r["value_and_grad_ms"] / r["forward_ms"]
