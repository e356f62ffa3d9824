"""experiments/muzero.py: --help, and bad values refused before anything compiles (the
algorithm's tiny learning run is tests/algorithms/test_muzero.py)."""

import pathlib
import sys

import pytest

from tests.conftest import plain, script_help

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import muzero as muzero_script  # noqa: E402


def test_help():
  out = script_help("muzero.py")
  for flag in ("--algo", "--env", "--search", "--num-simulations", "--unroll-steps",
               "--td-steps", "--reanalyse", "--seeds", "--preset", "--resume"):
    assert flag in out


@pytest.mark.parametrize("argv,message", [
    (["--env", "pendulum"], "muzero.Config.env 'pendulum' has continuous actions; muzero needs "
     "a discrete-action env: cartpole_v1, catch"),
    (["--num-simulations", "0"], "muzero.Config.num_simulations must be a positive int"),
    (["--unroll-steps", "0"], "muzero.Config.unroll_steps must be a positive int"),
    (["--algo", "alphago"], "muzero.Config.algo 'alphago' is unknown"),
])
def test_bad_values_stop_with_a_message(tmp_path, capsys, argv, message):
  with pytest.raises(SystemExit) as exit_info:
    muzero_script.main(["--out", str(tmp_path / "x")] + argv)
  said = plain(str(exit_info.value) + capsys.readouterr().err)
  assert message in said
  assert not (tmp_path / "x").exists()
