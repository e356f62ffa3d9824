"""Shared test helpers."""

import atexit
import contextlib
import os
import pathlib
import shutil
import tempfile

# One XLA compilation cache per test run, shared by the xdist workers and every subprocess they
# start (scripts, notebook kernels: they inherit the environment), so a program compiled once
# in the run is read back instead of compiled again; the scripts' tests run the same presets in
# several processes. It starts empty each run (the suite's time is always a cold one) and the
# process that made it removes it at exit. A user's own JAX_COMPILATION_CACHE_DIR is respected.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache_dir = tempfile.mkdtemp(prefix="mbrl_jax_tests_xla_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache_dir
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
  atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)

import jax  # noqa: E402  (after the cache settings, which jax reads at import)
import pytest  # noqa: E402


class CompileCount:
  def __init__(self):
    self.count = 0


_active: list[CompileCount] = []


def _on_event(event: str, duration: float, **kwargs) -> None:
  del duration, kwargs
  # Emitted around every compile request, also one the run's cache answers (so a program read
  # back from the cache still counts: the tests ask whether a call needed a new program).
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


# Every script's `--help` (experiments/*.py but the benchmarks' shared module). One child
# process prints all of them (each run as `__main__` with `--help`, its stdout and stderr
# captured apart), once per test process: a script's start is mostly imports (about 6 s of CPU
# each), which the scripts share; the 30 took 11 s in one process.
_EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"
HELP_SCRIPTS = tuple(sorted(p.name for p in _EXPERIMENTS.glob("*.py") if p.name != "benchlib.py"))
_HELP_CHILD = """
import contextlib, io, json, runpy, sys
out = {}
for script in sys.argv[1:]:
  stdout, stderr, code = io.StringIO(), io.StringIO(), None
  sys.argv = [script, "--help"]
  with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
    try:
      runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
      code = e.code
  out[script] = [stdout.getvalue(), stderr.getvalue(), code]
sys.__stdout__.write("HELP_JSON " + json.dumps(out) + "\\n")
"""
_help_texts: dict[str, tuple[str, str, object]] = {}


def script_help(script: str) -> str:
  """`python experiments/<script> --help` at 80 columns; checks that it exits 0 and that
  nothing (no "Failed to import warp" from mujoco-mjx, no warning) comes before the usage
  line, returns stdout. Output printed while a module is first imported lands in the first
  script that imports it, so it is still seen (by that script's check)."""
  import json
  import subprocess
  import sys
  assert script in HELP_SCRIPTS, f"{script} is not a script under experiments/"
  if not _help_texts:
    experiments = _EXPERIMENTS
    paths = [str(experiments / s) for s in HELP_SCRIPTS]
    done = subprocess.run([sys.executable, "-c", _HELP_CHILD, *paths], capture_output=True,
                          text=True, check=True, cwd=experiments,
                          env={**os.environ, "COLUMNS": "80",
                               "PYTHONPATH": os.pathsep.join(
                                   filter(None, [str(experiments),
                                                 os.environ.get("PYTHONPATH")]))})
    assert done.stderr == "", done.stderr[-2000:]
    line, = [l for l in done.stdout.splitlines() if l.startswith("HELP_JSON ")]
    for path, (out, err, code) in json.loads(line[len("HELP_JSON "):]).items():
      _help_texts[pathlib.Path(path).name] = (out, err, code)
  out, err, code = _help_texts[script]
  assert code in (0, None) and out.startswith("usage: ") and err == "", (code, out[:200],
                                                                         err[:200])
  return out


# Most test files spend most of their wall time in JAX's compile events (tracing, lowering, the
# backend compile; measured per test with jax.monitoring), so the suite compiles with XLA's
# cheap pipeline (`jax_disable_most_optimizations`: the backend at optimization level 0 without
# LLVM's expensive passes) unless a module is marked `pytestmark = pytest.mark.full_compile`.
# Programs mean the same thing, run slower and may differ in the last bits where fusion differs.
# The setting reaches the scripts and notebook kernels a module starts through the environment
# (where most of the gain is: a notebook compiles dozens of programs and runs them for
# milliseconds). Marked full_compile: the runtime-bound learning tests (PETS's took 3.3x under
# the cheap pipeline). (MuZero's min-max latent scaling once gave NaN gradients under the cheap
# pipeline only: a real fragility, fixed in `muzero._min_max`, which the cheap default found.)
# MBRL_JAX_TESTS_OPTIMIZED=1 compiles every module with the full pipeline.
_CHEAP_ENV = "JAX_DISABLE_MOST_OPTIMIZATIONS"
_ALL_OPTIMIZED = os.environ.get("MBRL_JAX_TESTS_OPTIMIZED") == "1"


@contextlib.contextmanager
def _pipeline(cheap: bool):
  old_flag = jax.config._read("jax_disable_most_optimizations")
  old_env = os.environ.get(_CHEAP_ENV)
  jax.config.update("jax_disable_most_optimizations", cheap)
  os.environ[_CHEAP_ENV] = "1" if cheap else "0"
  try:
    yield cheap
  finally:
    jax.config.update("jax_disable_most_optimizations", old_flag)
    if old_env is None:
      os.environ.pop(_CHEAP_ENV, None)
    else:
      os.environ[_CHEAP_ENV] = old_env


@pytest.fixture(scope="module", autouse=True)
def _xla_pipeline(request):
  cheap = request.node.get_closest_marker("full_compile") is None and not _ALL_OPTIMIZED
  with _pipeline(cheap) as c:
    yield c


@pytest.fixture(autouse=True)
def _xla_pipeline_of_the_test(request, _xla_pipeline):
  """A compile-bound test in a full_compile module, marked `@pytest.mark.cheap_compile`,
  compiles cheaply in its own body (the module's fixtures keep the module's pipeline)."""
  cheap = (any(m.name == "cheap_compile" for m in request.node.own_markers)
           and not _ALL_OPTIMIZED)
  if not cheap or _xla_pipeline:
    yield _xla_pipeline
    return
  with _pipeline(True) as c:
    yield c
