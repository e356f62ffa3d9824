"""experiments/bench_mbpo.py runs end to end at a tiny size, writes its JSON rows, and its
breakdown's parts are positive; --help works."""

import json
import pathlib
import sys

import pytest

from tests.conftest import script_help

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import bench_mbpo  # noqa: E402

TINY = ["--preset", "quick", "--env-steps", "440", "--epoch-length", "20",
        "--init-exploration-steps", "400", "--model-train-every", "10", "--updates-per-step", "2",
        "--eval-episodes", "1", "--episode-length", "20", "--model.hidden-sizes", "8",
        "--model.num-members", "2", "--model.num-elites", "1", "--fit.max-epochs", "2",
        "--rollout.rollouts-per-step", "2", "--rollout.schedule", "1", "2", "2", "3",
        "--sac.hidden-sizes", "8", "--sac.batch-size", "8", "--seeds", "1", "--repeats", "1"]


def test_bench_mbpo_tiny(tmp_path):
  out = tmp_path / "bench.json"
  args = bench_mbpo.parse(TINY + ["--out", str(out)])
  assert args.config.epochs == 2 and args.config.env == "pendulum"
  rows = bench_mbpo.main(args)
  saved = json.loads(out.read_text())
  assert [r["name"] for r in saved] == [r["name"] for r in rows]
  by_name = {r["name"]: r for r in saved}
  parts = ["model_fit", "rollouts", "sac_updates", "env_step", "evaluate"]
  assert set(by_name) == {"epoch/seeds1", "matmul", "meta", *(f"breakdown/{p}" for p in parts)}
  epoch = by_name["epoch/seeds1"]
  assert epoch["s_per_env_step_per_seed"] > 0 and epoch["rollout_length"] == 3   # epoch 2: k 3
  assert epoch["s_per_env_step_per_seed"] * 20 == pytest.approx(epoch["epoch_s"])
  for p in parts:
    r = by_name[f"breakdown/{p}"]
    for key in ("seconds_per_call", "s_per_env_step", "gflop_per_call", "gflops",
                "matmul_fraction"):
      assert r[key] > 0, (p, key, r)
    assert r["s_per_env_step"] == r["seconds_per_call"] * r["calls_per_env_step"]
  assert by_name["breakdown/rollouts"]["calls_per_env_step"] == 1 / 10
  assert by_name["matmul"]["ceiling_gflops"] > 0
  assert by_name["meta"]["rollout_api"] == "k-step while loop"


def test_help():
  out = script_help("bench_mbpo.py")
  for flag in ("--preset", "--seeds", "--env-steps", "--out", "--rollout.schedule", "--repeats"):
    assert flag in out
