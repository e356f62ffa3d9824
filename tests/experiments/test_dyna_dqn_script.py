"""experiments/dyna_dqn.py: a tiny DQN run's output files and its 475 summary, --help, and bad
values refused before anything compiles."""

import json
import pathlib
import sys

import numpy as np
import pytest

from mbrl_jax.run import read_jsonl
from tests.conftest import plain, script_help

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import dyna_dqn as dyna_dqn_script  # noqa: E402

TINY = ["--no-model-rollouts", "--env-steps", "300", "--epoch-length", "100",
        "--init-exploration-steps", "100", "--model-train-every", "50", "--eval-episodes", "2",
        "--episode-length", "50", "--dqn.hidden-sizes", "8", "--dqn.batch-size", "8"]


def test_script_writes_config_metrics_and_plot(tmp_path, capsys):
  out = tmp_path / "run"
  history = dyna_dqn_script.main(TINY + ["--seeds", "2", "--out", str(out)])
  config = json.loads((out / "config.json").read_text())
  assert config["seeds"] == 2 and config["algorithm"] == "dqn"
  assert config["config"]["env"] == "cartpole_v1" and not config["config"]["model_rollouts"]
  rows = read_jsonl(out / "metrics.jsonl")
  assert sorted((r["seed"], r["epoch"]) for r in rows) == [(s, e) for s in (0, 1)
                                                           for e in (0, 1)]
  for r in rows:
    assert {"env_steps", "eval/return", "dqn/loss", "dqn/epsilon", "train/return"} <= set(r)
    assert r["env_steps"] == 100 * (r["epoch"] + 2) and 1 <= r["eval/return"] <= 50
  assert history["eval/return"].shape == (2, 2)
  assert (out / "learning_curve.png").exists()
  said = capsys.readouterr().out
  assert "first env steps with eval return >= 475, per seed: not reached, not reached" in said


def test_first_reaching():
  steps = np.array([[100, 100], [200, 200], [300, 300]])
  returns = np.array([[10.0, 480.0], [475.0, 20.0], [500.0, 500.0]])
  assert dyna_dqn_script.first_reaching(steps, returns, 475.0) == [200, 100]
  assert dyna_dqn_script.first_reaching(steps, returns * 0, 475.0) == [None, None]


def test_help():
  out = script_help("dyna_dqn.py")
  for flag in ("--model-rollouts", "--real-ratio", "--rollout.length", "--dqn.double",
               "--dqn.target-update-every", "--seeds", "--preset", "--resume"):
    assert flag in out


@pytest.mark.parametrize("argv,message", [
    (["--env", "pendulum"], "dyna_dqn.Config.env 'pendulum' has continuous actions"),
    (["--rollout.length", "0"], "dyna_dqn.RolloutConfig.length must be a positive int"),
    (["--dqn.gamma", "2"], "dqn.DQNConfig.gamma must be in [0, 1]"),
])
def test_bad_values_stop_with_a_message(tmp_path, capsys, argv, message):
  with pytest.raises(SystemExit) as exit_info:
    dyna_dqn_script.main(["--out", str(tmp_path / "x")] + argv)
  said = plain(str(exit_info.value) + capsys.readouterr().err)
  assert message in said
  assert not (tmp_path / "x").exists()
