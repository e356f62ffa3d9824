"""experiments/world_models.py: a tiny run end to end (random episodes, V and M fits, two
generations, the final real-env evaluation), --help, and bad values refused before anything
compiles."""

import json
import pathlib
import sys

import pytest

from mbrl_jax.run import read_jsonl
from tests.conftest import plain, script_help

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import world_models as wm_script  # noqa: E402

TINY = ["--image-size", "8", "--episode-length", "6", "--random-episodes", "2",
        "--vae.latent", "2", "--vae.depth", "2", "--vae-steps", "2", "--vae-batch", "2",
        "--mdn.hidden", "3", "--mdn.mixtures", "2", "--mdn-steps", "2", "--mdn-batch", "2",
        "--mdn-seq-len", "4", "--generations", "2", "--population", "4", "--rollouts", "1",
        "--eval-episodes", "1"]


def test_script_runs_and_writes_metrics(tmp_path):
  out = tmp_path / "run"
  history = wm_script.main(["--preset", "dream", "--temperature", "1.15", "--out", str(out),
                            "--final-episodes", "3"] + TINY)
  config = json.loads((out / "config.json").read_text())
  assert config["config"]["train_in"] == "dream" and config["config"]["temperature"] == 1.15
  rows = read_jsonl(out / "metrics.jsonl")
  assert [r["generation"] for r in rows] == [0, 1]
  assert all(r["env_steps"] == 2 * 6 for r in rows)     # the random episodes only
  assert history["eval/return"].shape == (2, 1)
  final = json.loads((out / "final_eval.json").read_text())
  assert final["episodes"] == 3 and len(final["per_seed_mean"]) == 1
  assert final["min"] <= final["mean_return"] <= final["max"] <= 0.0


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
