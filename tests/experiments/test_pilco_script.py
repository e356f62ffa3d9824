"""experiments/pilco.py: --help, presets, refusal of bad values before anything compiles."""

import pathlib
import sys

import numpy as np
import pytest

from tests.conftest import count_compilations, plain, script_help

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import pilco as pilco_script  # noqa: E402


def test_help_lists_the_options():
  out = script_help("pilco.py")
  for flag in ("--env", "--trials", "--episode-length", "--cost-width", "--success-distance",
               "--policy.kind", "--policy.num-basis", "--optimiser.steps",
               "--model.sparse-inducing", "--model.fit.steps", "--preset", "--seeds"):
    assert flag in out, flag


def test_presets_and_overrides():
  args = pilco_script.parse(["--preset", "quick", "--policy.num-basis", "7"])
  assert args.config.policy.num_basis == 7 and args.config.episode_length == 20
  assert pilco_script.parse([]).preset == "cartpole_swingup"


@pytest.mark.parametrize("argv,message", [
    (["--env", "cartpole_continuous"], "valid: cartpole_swingup, pendulum"),
    (["--policy.kind", "mlp"], "pilco.PolicyConfig.kind 'mlp' is unknown"),
    (["--success-steps", "0"], "pilco.Config.success_steps must be a positive int"),
    (["--preset", "nope"], "unknown preset 'nope'"),
])
def test_bad_values_stop_with_a_message(tmp_path, capsys, argv, message):
  with count_compilations() as c:
    with pytest.raises(SystemExit) as exit_info:
      pilco_script.main(["--out", str(tmp_path / "x")] + argv)
  said = plain(str(exit_info.value) + capsys.readouterr().err)
  assert message in said
  assert not (tmp_path / "x" / "metrics.jsonl").exists()
  assert c.count == 0


def test_first_success_counts_seconds_of_interaction():
  config = pilco_script.pilco.PRESETS["cartpole_swingup"]
  history = {"train/success": np.array([[0, 0], [0, 1], [1, 1]], np.float32),
             "env_steps": np.array([[40, 40], [80, 80], [120, 120]])}
  hits = pilco_script.first_success(history, config)
  assert hits == [{"trial": 2, "seconds": 12.0}, {"trial": 1, "seconds": 8.0}]
