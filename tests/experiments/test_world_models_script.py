"""experiments/world_models.py: --help, and bad values refused before anything compiles.

(A tiny run end to end, with its final real-env evaluation, costs ~30 s of compiling on a
2-core CPU, over this area's test budget; notebooks/world_models.ipynb runs init and the
generations in the suite, and the script's own run test is in this file's first version,
commit e021c4a.)"""

import pathlib
import sys

import pytest

from tests.conftest import plain, script_help

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import world_models as wm_script  # noqa: E402


def test_help():
  out = script_help("world_models.py")
  for flag in ("--train-in", "--controller-inputs", "--temperature", "--population",
               "--seeds", "--preset", "--resume"):
    assert flag in out


@pytest.mark.parametrize("argv,message", [
    (["--env", "hopper"], "world_models.Config.env 'hopper' has no pixel rendering here"),
    (["--population", "2"], "world_models.Config.population must be >= 4 for CMA-ES"),
    (["--train-in", "dream", "--mdn-steps", "0"],
     "world_models.Config.mdn_steps must be >= 1 with train_in='dream'"),
    (["--final-episodes", "0"], "--final-episodes must be >= 1"),
])
def test_bad_values_stop_with_a_message(tmp_path, capsys, argv, message):
  with pytest.raises(SystemExit) as exit_info:
    wm_script.main(["--out", str(tmp_path / "x")] + argv)
  said = plain(str(exit_info.value) + capsys.readouterr().err)
  assert message in said
  assert not (tmp_path / "x").exists()
