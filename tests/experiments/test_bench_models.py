"""experiments/bench_models.py runs end to end at a tiny size and writes its JSON rows."""

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import bench_models  # noqa: E402


def test_bench_models_tiny(tmp_path):
  out = tmp_path / "bench.json"
  rows = bench_models.main(bench_models.Args(
      out=out, rows=64, repeats=2, members=(2,), layers=(1,), width=16, fit_batch_sizes=(16,),
      fit_epochs=1))
  saved = json.loads(out.read_text())
  assert [r["name"] for r in saved] == [r["name"] for r in rows]
  assert {r["name"].split("/")[0] for r in saved} == {"forward", "predict+sample", "fit"}
  for r in saved:
    assert r["latency_s"] > 0 and r["gflops"] > 0 and r["matmul_gflops"] > 0
    assert r["gflop"] > 0
