"""MetricsWriter: JSON Lines, the CSV view and the TensorBoard log say the same thing."""

import csv
import struct

import numpy as np
import pytest

from mbrl_jax.run import MetricsWriter, read_jsonl


def test_jsonl_and_csv_agree_and_keep_only_forgets_rows(tmp_path):
  writer = MetricsWriter(tmp_path)
  writer.write([{"seed": 0, "trial": 0, "train/return": np.float32(12.5), "env_steps": 10}])
  writer.write([{"seed": 0, "trial": 1, "train/return": 30.0, "env_steps": 40,
                 "model_loss": float("nan")}])          # a new column, and NaN -> empty
  rows = read_jsonl(tmp_path / "metrics.jsonl")
  assert rows == [{"seed": 0, "trial": 0, "train/return": 12.5, "env_steps": 10},
                  {"seed": 0, "trial": 1, "train/return": 30.0, "env_steps": 40,
                   "model_loss": None}]
  with open(tmp_path / "metrics.csv") as f:
    table = list(csv.DictReader(f))
  assert list(table[0]) == ["seed", "trial", "env_steps", "train/return", "model_loss"]
  assert table[0]["train/return"] == "12.5" and table[0]["model_loss"] == ""
  assert table[1]["env_steps"] == "40"
  assert writer.keep_only(lambda r: r["trial"] < 1) == 1
  assert len(read_jsonl(tmp_path / "metrics.jsonl")) == 1
  with open(tmp_path / "metrics.csv") as f:
    assert len(list(csv.DictReader(f))) == 1


def test_torn_last_line_of_a_killed_write_is_dropped(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"trial": 0}\n{"trial": 1, "ret')
  assert read_jsonl(path) == [{"trial": 0}]
  path.write_text('{"trial": 0}\nnot json\n{"trial": 2}\n')
  with pytest.raises(ValueError, match="line 2 is not JSON"):
    read_jsonl(path)


def _tensorboard_scalars(directory):
  """Reads scalars back from TFRecord event files, with tensorboardX's own protobufs, as
  {"<run>:<tag>": [(step, value)]}."""
  from tensorboardX.proto import event_pb2
  out = {}
  for path in directory.rglob("events.out.tfevents.*"):
    run = path.parent.relative_to(directory).as_posix()
    data = path.read_bytes()
    i = 0
    while i < len(data):
      (length,) = struct.unpack("<Q", data[i:i + 8])
      event = event_pb2.Event.FromString(data[i + 12:i + 12 + length])
      i += 12 + length + 4
      for value in event.summary.value:
        out.setdefault(f"{run}:{value.tag}", []).append((event.step, value.simple_value))
  return out


def test_tensorboard_scalars_against_env_steps(tmp_path):
  pytest.importorskip("tensorboardX")
  writer = MetricsWriter(tmp_path, tensorboard=True)
  writer.write([{"seed": 3, "trial": 0, "env_steps": 10, "train/return": 1.5},
                {"seed": 4, "trial": 0, "env_steps": 12, "train/return": 2.5}])
  writer.write([{"seed": 3, "trial": 1, "env_steps": 30, "train/return": 7.0}])
  writer.close()
  scalars = _tensorboard_scalars(tmp_path / "tensorboard")
  assert scalars["seed3:train/return"] == [(10, 1.5), (30, 7.0)]     # the metric's own name
  assert scalars["seed4:train/return"] == [(12, 2.5)]
  assert scalars["seed3:trial"] == [(10, 0.0), (30, 1.0)]
