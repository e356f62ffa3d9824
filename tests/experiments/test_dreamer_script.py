"""experiments/dreamer.py: a tiny run writes its files, resumes, and refuses bad values."""

import json
import pathlib
import sys

import numpy as np
import pytest

from mbrl_jax.run import read_jsonl
from tests.conftest import plain

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import dreamer as dreamer_script  # noqa: E402

# The same sizes as tests/algorithms/test_dreamer.py's TINY (compiled functions are shared).
TINY = ["--env", "pendulum", "--env-steps", "100", "--prefill", "40", "--chunk-steps", "20",
        "--train-every", "10", "--batch-size", "2", "--seq-len", "8", "--imag-starts", "12",
        "--eval-episodes", "2", "--world-model.deter", "16", "--world-model.stoch", "4",
        "--world-model.classes", "4", "--world-model.hidden", "16",
        "--world-model.mlp-layers", "1", "--world-model.cnn-depth", "4",
        "--actor-critic.hidden", "16", "--actor-critic.layers", "1",
        "--actor-critic.horizon", "4"]


def test_tiny_run_writes_its_files_and_resume_of_a_finished_run_changes_nothing(tmp_path):
  out = tmp_path / "run"
  history = dreamer_script.main(TINY + ["--seed", "5", "--out", str(out)])
  saved = json.loads((out / "config.json").read_text())
  assert saved["algorithm"] == "dreamer" and saved["config"]["chunk_steps"] == 20
  rows = read_jsonl(out / "metrics.jsonl")
  assert [(r["seed"], r["chunk"]) for r in rows] == [(5, 0), (5, 1), (5, 2)]
  assert [r["env_steps"] for r in rows] == [60, 80, 100]
  np.testing.assert_allclose([r["eval/return"] for r in rows], history["eval/return"][:, 0],
                             rtol=1e-6)
  assert (out / "metrics.csv").exists() and (out / "learning_curve.png").stat().st_size > 1000
  assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["2", "3"]
  before = (out / "metrics.jsonl").read_text()
  dreamer_script.main(["--resume", str(out)])       # nothing left to do
  assert (out / "metrics.jsonl").read_text() == before


@pytest.mark.parametrize("argv,message", [
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--env", "mountain"], "mountain"),
    (["--chunk-steps", "25"], "chunk_steps"),
    (["--seeds", "0"], "--seeds"),
])
def test_bad_values_stop_with_a_message(tmp_path, capsys, argv, message):
  with pytest.raises(SystemExit) as info:
    dreamer_script.main(TINY + argv + ["--out", str(tmp_path / "x")])
  assert message in plain(str(info.value) + capsys.readouterr().err)
  assert not (tmp_path / "x" / "metrics.jsonl").exists()
