"""experiments/mcts.py: a tiny true-model Catch run, --help, and bad values refused before
anything compiles."""

import json
import pathlib
import sys

import pytest

from mbrl_jax.run import read_jsonl
from tests.conftest import plain, script_help

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import mcts as mcts_script  # noqa: E402

TINY = ["--env", "catch", "--num-simulations", "4", "--rollout-steps", "3", "--episodes", "2"]


def test_script_runs_and_writes_metrics(tmp_path):
  out = tmp_path / "run"
  history = mcts_script.main(["--seeds", "2", "--out", str(out)] + TINY)
  config = json.loads((out / "config.json").read_text())
  assert config["config"]["env"] == "catch" and config["config"]["num_simulations"] == 4
  rows = read_jsonl(out / "metrics.jsonl")
  assert sorted((r["seed"], r["chunk"]) for r in rows) == [(s, c) for s in (0, 1)
                                                           for c in range(2)]
  assert history["train/return"].shape == (2, 2)
  assert all(r["train/episode_length"] == 9 and r["train/return"] in (-1.0, 1.0)
             and "search/root_value" in r for r in rows)


def test_help():
  out = script_help("mcts.py")
  for flag in ("--env", "--search", "--num-simulations", "--value", "--seeds", "--preset"):
    assert flag in out


@pytest.mark.parametrize("argv,message", [
    (["--env", "cartpole_continuous"],
     "mcts_control.Config.env 'cartpole_continuous' is continuous here; tree search needs "
     "discrete actions and a true model, envs that have them: cartpole_v1, catch"),
    (["--num-simulations", "0"], "mcts_control.Config.num_simulations must be a positive int"),
    (["--search", "beam"], "mcts_control.Config.search 'beam' is unknown"),
])
def test_bad_values_stop_with_a_message(tmp_path, capsys, argv, message):
  with pytest.raises(SystemExit) as exit_info:
    mcts_script.main(["--out", str(tmp_path / "x")] + argv)
  said = plain(str(exit_info.value) + capsys.readouterr().err)
  assert message in said
  assert not (tmp_path / "x").exists()
