"""Metric rows: JSON Lines as the record, a CSV view of it, and an optional TensorBoard log.

`MetricsWriter(dir)` appends rows to `dir/metrics.jsonl` (one JSON object per line, flushed, so
a killed run keeps every finished row), keeps `dir/metrics.csv` equal to it (one column per key
seen so far; the CSV is rewritten from the JSON Lines, so new keys never break it), and, with
`tensorboard=True`, logs every numeric field as a scalar against `env_steps` through
tensorboardX (`pip install "mbrl_jax[tensorboard]"`): one TensorBoard run per seed
(`dir/tensorboard/seed{S}/`), so each tag is the metric's own name (`train/return`) and
TensorBoard overlays the seeds.
"""

from __future__ import annotations

import csv
import json
import math
import os
import pathlib
from typing import Any, Callable, Iterable

import numpy as np

# Columns that come first in the CSV, when present.
LEADING_COLUMNS = ("seed", "trial", "epoch", "chunk", "env_steps", "train/return",
                   "eval/return")


def _plain(value: Any) -> Any:
  """NumPy scalars to Python numbers; NaN and Inf to None (JSON has neither)."""
  if isinstance(value, (np.generic, np.ndarray)):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def write_jsonl_rows(path: str | pathlib.Path, rows: Iterable[dict[str, Any]]) -> None:
  """Appends rows to `path` and flushes, so a killed run keeps every finished row."""
  with open(path, "a") as f:
    for row in rows:
      f.write(json.dumps({k: _plain(v) for k, v in row.items()}) + "\n")
    f.flush()


def read_jsonl(path: str | pathlib.Path) -> list[dict[str, Any]]:
  """All rows of a JSON Lines file (blank lines skipped; a torn last line from a killed
  write is dropped)."""
  rows = []
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  for i, line in enumerate(lines):
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      if i == len(lines) - 1:      # the process died mid-line
        break
      raise ValueError(f"{path}: line {i + 1} is not JSON: {line[:80]!r}") from None
  return rows


def write_csv(path: str | pathlib.Path, rows: list[dict[str, Any]]) -> None:
  """Writes rows as CSV (atomically), one column per key seen in any row."""
  keys: dict[str, None] = {k: None for k in LEADING_COLUMNS if any(k in r for r in rows)}
  for r in rows:
    keys.update(dict.fromkeys(r))
  tmp = pathlib.Path(f"{path}.tmp")
  with open(tmp, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(keys), restval="")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
  os.replace(tmp, path)


class MetricsWriter:
  """Appends metric rows to DIR/metrics.jsonl, DIR/metrics.csv and optionally TensorBoard.

  Args:
    directory: the run directory (must exist).
    tensorboard: also log scalars to DIR/tensorboard (needs tensorboardX).
    step_key: the row field used as the TensorBoard step.
  """

  def __init__(self, directory: str | pathlib.Path, *, tensorboard: bool = False,
               step_key: str = "env_steps"):
    self.directory = pathlib.Path(directory)
    self.jsonl = self.directory / "metrics.jsonl"
    self.csv = self.directory / "metrics.csv"
    self.step_key = step_key
    self._tb = None                  # {seed: SummaryWriter}
    if tensorboard:
      try:
        import tensorboardX
      except ImportError:
        raise ImportError('TensorBoard logging needs tensorboardX: '
                          'pip install "mbrl_jax[tensorboard]"') from None
      self._summary_writer = tensorboardX.SummaryWriter
      self._tb = {}

  def write(self, rows: list[dict[str, Any]]) -> None:
    rows = [{k: _plain(v) for k, v in r.items()} for r in rows]
    write_jsonl_rows(self.jsonl, rows)
    write_csv(self.csv, read_jsonl(self.jsonl))
    if self._tb is not None:
      for r in rows:
        step = r.get(self.step_key)
        run = f"seed{r['seed']}" if "seed" in r else "run"
        if run not in self._tb:
          self._tb[run] = self._summary_writer(str(self.directory / "tensorboard" / run))
        for k, v in r.items():
          if k not in ("seed", self.step_key) and isinstance(v, (int, float)) and \
              not isinstance(v, bool):
            self._tb[run].add_scalar(k, v, global_step=step)
      for tb in self._tb.values():
        tb.flush()

  def keep_only(self, keep: Callable[[dict[str, Any]], bool]) -> int:
    """Drops the rows for which `keep(row)` is False (used on resume to forget rows written
    after the checkpoint); returns how many rows remain. Rewrites both files atomically."""
    rows = [r for r in read_jsonl(self.jsonl) if keep(r)] if self.jsonl.exists() else []
    tmp = pathlib.Path(f"{self.jsonl}.tmp")
    tmp.unlink(missing_ok=True)
    write_jsonl_rows(tmp, rows)
    os.replace(tmp, self.jsonl)
    write_csv(self.csv, rows)
    return len(rows)

  def close(self) -> None:
    for tb in (self._tb or {}).values():
      tb.close()
