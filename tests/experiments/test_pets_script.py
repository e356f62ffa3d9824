"""experiments/pets.py: command line, output files, refusal of bad values and existing runs."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mbrl_jax import planning
from mbrl_jax.run import cli as run_cli
from mbrl_jax.run import read_jsonl
from tests.conftest import plain, script_help

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import pets as pets_script  # noqa: E402

TINY = ["--trials", "1", "--trial-length", "30", "--model.hidden-sizes", "16", "16",
        "--fit.max-epochs", "2", "--planner.num-particles", "5", "--planner.horizon", "5"]
# The optimizer is a subcommand; its options follow it, after every other option.
TINY_CEM = ["planner.optimizer:cem-config", "--planner.optimizer.population", "20",
            "--planner.optimizer.iterations", "2", "--planner.optimizer.return-mean-elites"]
# TINY with 4 planned trials of 60 steps: long enough to SIGKILL a run part way. The script
# test runs the same config and seed count, so the file compiles this PETS step once (run's
# compile cache is keyed by config; the sigkill test's own run and resume reuse it).
FOUR = TINY[:]
FOUR[FOUR.index("--trials") + 1] = "4"
FOUR[FOUR.index("--trial-length") + 1] = "60"


def test_script_writes_config_metrics_and_plot(tmp_path):
  out = tmp_path / "run"
  history = pets_script.main(FOUR + ["--seeds", "2", "--seed", "7", "--out", str(out)]
                             + TINY_CEM)
  config = json.loads((out / "config.json").read_text())
  assert config["seeds"] == 2 and config["config"]["trial_length"] == 60
  assert config["config"]["trials"] == 4
  assert config["config"]["planner"]["optimizer"]["population"] == 20
  assert config["config"]["planner"]["optimizer"]["name"] == "cem"
  rows = read_jsonl(out / "metrics.jsonl")
  assert sorted((r["seed"], r["trial"]) for r in rows) == [(s, t) for s in (7, 8)
                                                           for t in range(5)]
  for r in rows:
    assert {"seed", "trial", "env_steps", "train/return"} <= set(r)
    assert 0 < r["train/return"] <= 60
  by_key = {(r["seed"], r["trial"]): r["train/return"] for r in rows}
  np.testing.assert_array_equal(history["train/return"][1], [by_key[(7, 1)], by_key[(8, 1)]])
  assert (out / "learning_curve.png").stat().st_size > 1000


def test_presets_and_overrides():
  args = pets_script.parse(["--preset", "mbrl-lib-notebook", "--planner.horizon", "20"])
  assert args.config.planner.optimizer.population == 350
  assert args.config.planner.num_particles == 20 and args.config.planner.horizon == 20
  assert pets_script.parse([]).preset == "quick"
  icem = pets_script.parse(["--planner.horizon", "10", "planner.optimizer:icem-config",
                            "--planner.optimizer.population", "50",
                            "--planner.optimizer.noise-beta", "3"]).config.planner
  assert isinstance(icem.optimizer, planning.ICEMConfig) and icem.horizon == 10
  assert (icem.optimizer.population, icem.optimizer.noise_beta) == (50, 3.0)


@pytest.mark.parametrize("argv,message", [
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--env", "mountain"], "env 'mountain' is unknown"),
    (["--planner.horizon", "0"], "pets.PlannerConfig.horizon must be a positive int"),
    (["--planner.propagation", "ts9"], "pets.PlannerConfig.propagation 'ts9' is unknown"),
    (["--fit.holdout-ratio", "1.5"], "holdout_ratio"),
    (["planner.optimizer:cem-config", "--planner.optimizer.elite-ratio", "1.5"],
     "elite_ratio must be in (0, 1]"),
    (["planner.optimizer:icem-config", "--planner.optimizer.alpha", "-0.1"],
     "alpha must be in [0, 1)"),
    (["--planner.discount", "2"], "pets.PlannerConfig: discount must be in (0, 1]"),
    (["--model.num-members", "-2"], "pets.ModelConfig.num_members"),
    (["--seeds", "0"], "--seeds"),
])
def test_bad_values_stop_with_a_message(tmp_path, capsys, argv, message):
  with pytest.raises(SystemExit) as exit_info:
    pets_script.main(["--out", str(tmp_path / "x")] + argv)
  # Our own checks put the message in the exit; tyro prints its parse errors to stderr.
  said = plain(str(exit_info.value) + capsys.readouterr().err)
  assert message in said
  assert not (tmp_path / "x" / "metrics.jsonl").exists()


def test_existing_run_is_not_overwritten(tmp_path):
  (tmp_path / "metrics.jsonl").write_text('{"seed": 0}\n')
  with pytest.raises(SystemExit, match="exists"):
    pets_script.main(TINY + ["--out", str(tmp_path)] + TINY_CEM)
  assert (tmp_path / "metrics.jsonl").read_text() == '{"seed": 0}\n'


def test_help_shows_defaults_and_nothing_before_usage():
  out = script_help("pets.py")
  for flag in ("--env", "--seed", "--seeds", "--trials", "--out", "--preset",
               "--planner.horizon", "--fit.batch-size", "--model.num-members",
               "planner.optimizer:cem-config", "planner.optimizer:icem-config",
               "planner.optimizer:mppi-config"):
    assert flag in out
  out = subprocess.run([sys.executable, str(ROOT / "experiments" / "pets.py"),
                        "planner.optimizer:cem-config", "--help"],
                       capture_output=True, text=True, check=True,
                       env={**os.environ, "COLUMNS": "80"}).stdout
  flat = " ".join(out.replace("│", " ").split())
  after = flat[flat.index("--planner.optimizer.population"):][:150]
  assert "(default: 100)" in after, after       # the quick preset's value


def _rows_without_wall_time(path):
  return sorted(({k: v for k, v in r.items() if k != "wall_s"} for r in read_jsonl(path)),
                key=lambda r: (r["seed"], r["trial"]))


def test_sigkill_then_resume_ends_like_an_uninterrupted_run(tmp_path):
  argv = FOUR
  full = tmp_path / "full"
  pets_script.main(argv + ["--seeds", "2", "--out", str(full)] + TINY_CEM)

  killed = tmp_path / "killed"
  proc = subprocess.Popen([sys.executable, str(ROOT / "experiments" / "pets.py"), *argv,
                           "--seeds", "2", "--out", str(killed), *TINY_CEM],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
  metrics = killed / "metrics.jsonl"
  try:
    # Kill as soon as trial 2's rows are written (its checkpoint may or may not exist yet).
    while proc.poll() is None and not (
        metrics.exists() and any(r["trial"] >= 2 for r in read_jsonl(metrics))):
      time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
  finally:
    proc.wait()
  assert max(r["trial"] for r in read_jsonl(metrics)) < 5
  # The original command with --resume added (plain --resume DIR: tests/run/test_cli.py).
  pets_script.main(argv + ["--seeds", "2", "--out", str(killed), "--resume", str(killed)])
  assert _rows_without_wall_time(metrics) == _rows_without_wall_time(full / "metrics.jsonl")
  assert (killed / "metrics.csv").read_text().count("\n") == 2 * 5 + 1


def test_resume_names_options_that_differ_and_refuses_missing_runs(tmp_path):
  out = tmp_path / "run"
  args = pets_script.parse(TINY + ["--out", str(out)])
  out.mkdir()
  (out / "config.json").write_text(json.dumps(run_cli.saved_record(args, "pets")))
  assert pets_script.parse(TINY + ["--resume", str(out)]).config == args.config
  with pytest.raises(SystemExit, match=f"error: --resume {out}: --planner.horizon is 20 here "
                                       "but 5 in the saved run"):
    pets_script.main(TINY + ["--planner.horizon", "20", "--resume", str(out)])
  with pytest.raises(SystemExit, match="no config.json"):
    pets_script.main(["--resume", str(tmp_path), "--trials", "3"])


def test_out_naming_a_file_is_refused(tmp_path):
  path = tmp_path / "notes.txt"
  path.write_text("mine")
  with pytest.raises(SystemExit, match="is a file; give a directory"):
    pets_script.main(TINY + ["--out", str(path)])
  assert path.read_text() == "mine"
