"""experiments/ilqr.py: a tiny true-model iLQR run, --help, and bad values refused before
anything compiles."""

import json
import pathlib
import sys

import pytest

from mbrl_jax.run import read_jsonl
from tests.conftest import plain, script_help

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import ilqr as ilqr_script  # noqa: E402

TINY = ["--env", "pendulum", "--horizon", "4", "--episodes", "2", "--episode-length", "10",
        "planner:ilqr-config", "--planner.iterations", "2"]


def test_script_runs_and_writes_metrics(tmp_path):
  out = tmp_path / "run"
  history = ilqr_script.main(["--seeds", "2", "--out", str(out)] + TINY)
  config = json.loads((out / "config.json").read_text())
  assert config["config"]["planner"]["name"] == "ilqr" and config["config"]["horizon"] == 4
  rows = read_jsonl(out / "metrics.jsonl")
  assert sorted((r["seed"], r["chunk"]) for r in rows) == [(s, c) for s in (0, 1)
                                                           for c in range(2)]
  assert history["train/return"].shape == (2, 2)
  assert all(r["train/episode_length"] == 10 and r["planner/iterations"] >= 1 for r in rows)


def test_help():
  out = script_help("ilqr.py")
  for flag in ("--env", "--horizon", "--seeds", "--preset", "planner:ilqr-config",
               "planner:cem-config"):
    assert flag in out


@pytest.mark.parametrize("argv,message", [
    (["--env", "cartpole_continuous"],
     "mpc_control.Config.env 'cartpole_continuous': iLQR needs differentiable true dynamics "
     "and a reward with a gradient; envs that have them: cartpole_swingup, pendulum"),
    (["--env", "hopper", "planner:cem-config"], "envs that have one: cartpole_swingup"),
    (["--horizon", "0"], "mpc_control.Config.horizon must be a positive int"),
    (["planner:ilqr-config", "--planner.mu-factor", "0.5"], "ILQRConfig.mu_factor"),
])
def test_bad_values_stop_with_a_message(tmp_path, capsys, argv, message):
  with pytest.raises(SystemExit) as exit_info:
    ilqr_script.main(["--out", str(tmp_path / "x")] + argv)
  said = plain(str(exit_info.value) + capsys.readouterr().err)
  assert message in said
  assert not (tmp_path / "x").exists()
