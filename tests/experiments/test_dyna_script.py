"""experiments/dyna.py: a tiny driver run, a tiny Figure 8.2, --help, and bad values refused
before anything compiles."""

import json
import pathlib
import sys

import pytest

from mbrl_jax.run import read_jsonl
from tests.conftest import plain, script_help

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import dyna as dyna_script  # noqa: E402


def test_driver_mode_writes_metrics(tmp_path):
  out = tmp_path / "run"
  history = dyna_script.main(["--preset", "quick", "--seeds", "2", "--num-steps", "200",
                              "--out", str(out)])
  config = json.loads((out / "config.json").read_text())
  assert config["config"]["maze"] == "dyna" and config["config"]["num_steps"] == 200
  rows = read_jsonl(out / "metrics.jsonl")
  assert sorted((r["seed"], r["chunk"]) for r in rows) == [(0, 0), (0, 1), (1, 0), (1, 1)]
  assert history["dyna/cumulative_reward"].shape == (2, 2)
  assert (out / "learning_curve.png").exists()


def test_figure_8_2_tiny(tmp_path, capsys):
  results = dyna_script.main(["--figure", "8.2", "--runs", "2", "--episodes", "3",
                              "--out", str(tmp_path)])
  said = capsys.readouterr().out
  assert "n = 50 near-optimal within 5 episodes" in said and "statements PASS" in said
  saved = json.loads((tmp_path / "results.json").read_text())
  assert len(saved["steps_per_episode"]["50"]) == 3 and len(results["claims"]) == 3
  assert (tmp_path / "figure_8_2.png").exists()


def test_help():
  out = script_help("dyna.py")
  for flag in ("--maze", "--variant", "--planning-steps", "--seeds", "--preset", "--figure"):
    assert flag in out


@pytest.mark.parametrize("argv,message", [
    (["--maze", "nope"], "dyna.Config.maze 'nope' is unknown"),
    (["--planning-steps", "-1"], "dyna.Config.planning_steps must be an int >= 0"),
    (["--alpha", "0"], "dyna.Config.alpha must be in (0, 1]"),
])
def test_bad_values_stop_with_a_message(tmp_path, capsys, argv, message):
  with pytest.raises(SystemExit) as exit_info:
    dyna_script.main(["--out", str(tmp_path / "x")] + argv)
  said = plain(str(exit_info.value) + capsys.readouterr().err)
  assert message in said
  assert not (tmp_path / "x").exists()
