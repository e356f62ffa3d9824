import subprocess
import sys

import numpy as np

from mbrl_jax.run import read_jsonl, write_jsonl_rows
from mbrl_jax.run.plot import curves


def test_jsonl_round_trip_and_nan_as_null(tmp_path):
  path = tmp_path / "m.jsonl"
  write_jsonl_rows(path, [{"seed": 0, "trial": 0, "train/return": np.float32(2.5),
                           "x": float("nan")}])
  write_jsonl_rows(path, [{"seed": 1, "trial": 0, "train/return": np.int32(3), "x": np.inf}])
  rows = read_jsonl(path)
  assert rows == [{"seed": 0, "trial": 0, "train/return": 2.5, "x": None},
                  {"seed": 1, "trial": 0, "train/return": 3, "x": None}]


def test_curves_aggregate_over_seeds():
  rows = [{"seed": s, "trial": t, "train/return": 10 * t + s, "env_steps": 100 * t}
          for s in range(3) for t in range(4)]
  xs, mean, lo, hi = curves(rows, "trial", "train/return")
  np.testing.assert_array_equal(xs, [0, 1, 2, 3])
  np.testing.assert_array_equal(mean, [1, 11, 21, 31])
  np.testing.assert_array_equal(lo, [0, 10, 20, 30])
  np.testing.assert_array_equal(hi, [2, 12, 22, 32])


def test_plot_command_writes_png(tmp_path):
  run = tmp_path / "run_a"
  run.mkdir()
  write_jsonl_rows(run / "metrics.jsonl", [{"seed": s, "trial": t, "train/return": float(t + s)}
                                           for s in range(2) for t in range(3)])
  out = tmp_path / "curve.png"
  subprocess.run([sys.executable, "-m", "mbrl_jax.run.plot", str(run), "--out", str(out)],
                 check=True, capture_output=True)
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
