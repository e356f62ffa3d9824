"""experiments/bench_search.py runs end to end at a tiny size and writes its JSON rows."""

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import bench_search  # noqa: E402


def test_bench_search_quick(tmp_path):
  out = tmp_path / "bench.json"
  rows = bench_search.main(bench_search.Args(out=out, quick=True, batches=(2,)))
  saved = json.loads(out.read_text())
  assert [r["name"] for r in saved] == ["cartpole_v1/true/B2", "cartpole_v1/mlp/B2",
                                          "cartpole_v1/muzero/B2"]
  assert [r["name"] for r in rows] == [r["name"] for r in saved]
  for r in saved:
    assert {"model", "batch", "num_simulations", "ms_per_plan", "sims_per_s", "hidden",
            "matmul_gflops", "device"} <= set(r)
    assert r["sims_per_s"] > 0 and r["num_simulations"] == 4
  assert saved[1]["gflops"] > 0 and saved[2]["model"] == "muzero"


def test_bench_search_refuses_bad_sizes_before_compiling():
  import dataclasses
  import pytest
  for field, value, message in [("batches", (), "--batches must be root batch sizes >= 1"),
                                ("num_simulations", 0, "--num-simulations must be >= 1, got 0")]:
    with pytest.raises(SystemExit, match=message):
      bench_search.main(dataclasses.replace(bench_search.Args(), **{field: value}))
