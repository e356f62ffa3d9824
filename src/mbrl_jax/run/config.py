"""Configs as trees of frozen dataclasses: back from the JSON a run saved, and their fields
listed by dotted name."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
  """Rebuilds a (nested) frozen dataclass from `dataclasses.asdict` output read back from
  JSON: nested dataclasses are rebuilt (a union of dataclasses by the "name" tag each member
  carries), lists become tuples where the field is a tuple.

  Raises:
    ValueError: a key that is not a field of `cls` (named with its dotted path).
  """
  return _from_dict(cls, data, "")


def _from_dict(cls, data, prefix):
  if not isinstance(data, dict):
    raise ValueError(f"config field {prefix[:-1] or '<root>'}: expected an object, got {data!r}")
  hints = typing.get_type_hints(cls)
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(data) - set(fields))
  if unknown:
    raise ValueError(f"config: unknown field(s) {[prefix + u for u in unknown]} for "
                     f"{cls.__name__}")
  kwargs = {}
  for name, value in data.items():
    hint = hints[name]
    sub = _dataclass_in(hint, value, f"{prefix}{name}")
    if sub is not None and isinstance(value, dict):
      value = _from_dict(sub, value, f"{prefix}{name}.")
    elif isinstance(value, list) and _is_tuple(hint):
      value = tuple(value)
    kwargs[name] = value
  return cls(**kwargs)


def _dataclass_in(hint, value, path):
  """The dataclass a field's value rebuilds into: the hint itself, or the one member of a union
  of dataclasses whose `name` field's default equals the value's "name" (the tag a union of
  configs carries, e.g. the planner's optimizer)."""
  if dataclasses.is_dataclass(hint):
    return hint
  options = [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)]
  if len(options) <= 1:
    return options[0] if options else None
  tag = value.get("name") if isinstance(value, dict) else None
  for cls in options:
    field = {f.name: f for f in dataclasses.fields(cls)}.get("name")
    if field is not None and field.default == tag:
      return cls
  names = [c.__name__ for c in options]
  raise ValueError(f"config field {path}: name {tag!r} picks none of {names}")


def _is_tuple(hint) -> bool:
  if typing.get_origin(hint) is tuple or hint is tuple:
    return True
  return any(_is_tuple(a) for a in typing.get_args(hint))
