"""Shared test helpers."""

import contextlib

import jax


class CompileCount:
  def __init__(self):
    self.count = 0


_active: list[CompileCount] = []


def _on_event(event: str, duration: float, **kwargs) -> None:
  del duration, kwargs
  if event == "/jax/core/compile/backend_compile_duration":
    for counter in _active:
      counter.count += 1


jax.monitoring.register_event_duration_secs_listener(_on_event)


@contextlib.contextmanager
def count_compilations():
  """Counts XLA backend compilations inside the block (build the inputs before entering it)."""
  counter = CompileCount()
  _active.append(counter)
  try:
    yield counter
  finally:
    _active.remove(counter)


def plain(text: str) -> str:
  """Text a user saw, with tyro's error-box borders removed and lines joined, so a message
  wrapped inside the box can be matched as one line."""
  for ch in "│╭╮╰╯─":
    text = text.replace(ch, " ")
  return " ".join(text.split())


def script_help(script: str) -> str:
  """`python experiments/<script> --help` at 80 columns; checks that nothing (no "Failed to
  import warp" from mujoco-mjx, no warning) comes before the usage line, returns stdout."""
  import os
  import pathlib
  import subprocess
  import sys
  root = pathlib.Path(__file__).resolve().parents[1]
  done = subprocess.run([sys.executable, str(root / "experiments" / script), "--help"],
                        capture_output=True, text=True, check=True,
                        env={**os.environ, "COLUMNS": "80"})
  assert done.stdout.startswith("usage: ") and done.stderr == "", (done.stdout[:200],
                                                                   done.stderr)
  return done.stdout
