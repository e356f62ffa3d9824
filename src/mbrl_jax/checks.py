"""Config checks written once (layer 0): each component's frozen config validates itself in
`__post_init__` with these, so a bad value fails when the config is built (on the command
line, in a notebook, from a saved config.json), before anything compiles, with a one-line
ValueError naming the config class and the field.

Example:
  >>> import dataclasses
  >>> @dataclasses.dataclass(frozen=True)
  ... class Toy:
  ...   horizon: int = 15
  ...   def __post_init__(self):
  ...     positive_int(self, "horizon")
  >>> Toy(horizon=0)
  Traceback (most recent call last):
  ...
  ValueError: checks.Toy.horizon must be a positive int, got 0
"""

from __future__ import annotations

import numbers
from typing import Any, Iterable, NoReturn


def name(config: Any) -> str:
  """The config's class as `<module>.<Class>`, e.g. "mbpo.ModelConfig"."""
  cls = type(config)
  return f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__qualname__}"


def fail(config: Any, field: str, why: str) -> NoReturn:
  """Raises ValueError("<module>.<ConfigClass>.<field> <why>")."""
  raise ValueError(f"{name(config)}.{field} {why}")


def positive_int(config: Any, *fields: str) -> None:
  """Each field is an int >= 1 (bools are not ints here)."""
  for field in fields:
    value = getattr(config, field)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
      fail(config, field, f"must be a positive int, got {value!r}")


def int_at_least(config: Any, field: str, minimum: int, why: str = "") -> None:
  """The field is an int >= minimum."""
  value = getattr(config, field)
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
    fail(config, field, f"must be an int >= {minimum}{why}, got {value!r}")


def in_range(config: Any, field: str, low: float | None = None, high: float | None = None, *,
             low_open: bool = False, high_open: bool = False) -> None:
  """The field is a real number in the interval (open ends as given)."""
  value = getattr(config, field)
  ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value
  if ok and low is not None:
    ok = value > low if low_open else value >= low
  if ok and high is not None:
    ok = value < high if high_open else value <= high
  if not ok:
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    fail(config, field, f"must be in {'(' if low_open else '['}{lo}, {hi}"
         f"{')' if high_open else ']'}, got {value!r}")


def one_of(config: Any, field: str, options: Iterable[str]) -> None:
  """The field is one of `options`."""
  options = list(options)
  value = getattr(config, field)
  if value not in options:
    fail(config, field, f"{value!r} is unknown; valid: {', '.join(map(str, options))}")


def widths(config: Any, field: str) -> None:
  """The field is a non-empty tuple of positive layer widths."""
  value = getattr(config, field)
  if not value or any(isinstance(h, bool) or not isinstance(h, numbers.Integral) or h < 1
                      for h in value):
    fail(config, field, f"must be positive layer widths, got {value!r}")
