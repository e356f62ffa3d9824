"""experiments/mbpo.py: command line, output files, refusal of bad values and existing runs."""

import json
import pathlib
import sys

import numpy as np
import pytest

from mbrl_jax.run import read_jsonl
from tests.conftest import plain, script_help

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import mbpo as mbpo_script  # noqa: E402

TINY = ["--env-steps", "60", "--epoch-length", "20", "--init-exploration-steps", "20",
        "--model-train-every", "10", "--updates-per-step", "1", "--eval-episodes", "2",
        "--episode-length", "25", "--model.num-members", "2", "--model.num-elites", "1",
        "--model.hidden-sizes", "8", "--fit.max-epochs", "1", "--fit.batch-size", "16",
        "--rollout.rollouts-per-step", "2", "--rollout.schedule", "1", "2", "1", "2",
        "--sac.hidden-sizes", "8", "--sac.batch-size", "8"]


def test_script_writes_config_metrics_and_plot(tmp_path):
  out = tmp_path / "run"
  history = mbpo_script.main(TINY + ["--seeds", "2", "--seed", "7", "--out", str(out)])
  config = json.loads((out / "config.json").read_text())
  assert config["seeds"] == 2 and config["algorithm"] == "mbpo"
  assert config["config"]["env_steps"] == 60
  assert config["config"]["rollout"]["schedule"] == [1, 2, 1, 2]
  assert config["config"]["env"] == "pendulum"                      # the quick preset's env
  rows = read_jsonl(out / "metrics.jsonl")
  assert sorted((r["seed"], r["epoch"]) for r in rows) == [(7, 0), (7, 1), (8, 0), (8, 1)]
  for r in rows:
    assert {"seed", "env_steps", "eval/return", "rollout/length", "model/holdout_mse"} <= set(r)
    assert r["env_steps"] == 20 + 20 * (r["epoch"] + 1)
    assert r["rollout/length"] == r["epoch"] + 1
    assert -25 * 16.3 < r["eval/return"] < 0                              # pendulum, 25 steps
  by_key = {(r["seed"], r["epoch"]): r["eval/return"] for r in rows}
  np.testing.assert_allclose(history["eval/return"][1], [by_key[(7, 1)], by_key[(8, 1)]])
  assert (out / "learning_curve.png").stat().st_size > 1000


def test_presets_and_overrides():
  args = mbpo_script.parse(["--preset", "hopper", "--env-steps", "30000"])
  assert args.config.env == "hopper" and args.config.env_steps == 30000
  assert args.config.rollout.schedule == (20, 150, 1, 15)
  assert args.config.epochs == 25
  args = mbpo_script.parse(["--preset", "inverted_pendulum"])
  assert args.config.epoch_length == 250 and args.config.sac.target_entropy == -0.05
  assert mbpo_script.parse([]).preset == "quick"


@pytest.mark.parametrize("argv,message", [
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--env", "mountain"], "env 'mountain' is unknown"),
    (["--model-train-every", "7"], "model_train_every"),
    (["--rollout.schedule", "1", "2", "3", "1"], "config.rollout: mbpo.RolloutConfig.schedule"),
    (["--seeds", "0"], "--seeds"),
])
def test_bad_values_stop_with_a_message(tmp_path, capsys, argv, message):
  with pytest.raises(SystemExit) as exit_info:
    mbpo_script.main(argv + ["--out", str(tmp_path / "x")])
  said = plain(str(exit_info.value) + capsys.readouterr().err)
  assert message in said
  assert not (tmp_path / "x" / "metrics.jsonl").exists()


def test_existing_run_is_not_overwritten(tmp_path):
  (tmp_path / "metrics.jsonl").write_text('{"seed": 0}\n')
  with pytest.raises(SystemExit, match="exists"):
    mbpo_script.main(TINY + ["--out", str(tmp_path)])
  assert (tmp_path / "metrics.jsonl").read_text() == '{"seed": 0}\n'


def test_help_shows_defaults_and_nothing_before_usage():
  out = script_help("mbpo.py")
  for flag in ("--env", "--seed", "--seeds", "--env-steps", "--out", "--preset",
               "--rollout.schedule", "--real-ratio", "--sac.batch-size"):
    assert flag in out
