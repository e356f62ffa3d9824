"""Metric rows as JSON Lines: one JSON object per line, appended as a run goes."""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any, Iterable

import numpy as np


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
  """All rows of a JSON Lines file (blank lines skipped)."""
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
