"""Shared test helpers.

The suite compiles hundreds of small XLA programs and runs most of them a few times, so on the
CPU compile time dominates it. Before JAX starts its backend this file adds two XLA flags that
trade generated-code speed for compile time (LLVM's cheaper pipeline): on the 2-core machine
they took the user time of tests/algorithms/test_mcts_control.py + tests/models/test_rssm.py
from 2 min 0 s to 1 min 20 s. The flags reach the subprocesses the tests start (scripts,
notebook kernels) through the environment. Benchmarks and experiments run outside pytest keep
XLA's optimising defaults; set MBRL_JAX_TEST_XLA_OPT=1 to test with them too.
"""

import contextlib
import os

FAST_COMPILE_XLA_FLAGS = ("--xla_backend_optimization_level=0",
                          "--xla_llvm_disable_expensive_passes=true")
if os.environ.get("MBRL_JAX_TEST_XLA_OPT") != "1":
  _flags = os.environ.get("XLA_FLAGS", "").split()
  os.environ["XLA_FLAGS"] = " ".join(
      [*_flags, *(f for f in FAST_COMPILE_XLA_FLAGS
                  if f.split("=")[0] not in {g.split("=")[0] for g in _flags})])

import jax  # pylint: disable=wrong-import-position


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
