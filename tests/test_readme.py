"""The README's commands are the ones CI runs."""

import pathlib

import pytest

pytestmark = pytest.mark.full_compile   # runtime-bound (tests/conftest.py)

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _commands(text):
  return [line.strip() for line in text.splitlines()
          if line.strip() and not line.strip().startswith("#")]


def test_ci_runs_the_readme_test_command():
  readme = (ROOT / "README.md").read_text()
  block = readme.split("```bash", 1)[1].split("```", 1)[0]
  test_command = [c for c in _commands(block) if "pytest" in c]
  assert len(test_command) == 1
  ci = _commands((ROOT / ".ci" / "run").read_text())
  assert test_command[0] in ci


def test_quickstart_runs_as_written(capsys):
  readme = (ROOT / "README.md").read_text()
  section = readme.split("## Quickstart", 1)[1]
  code = section.split("```python", 1)[1].split("```", 1)[0]
  exec(compile(code, "README.md quickstart", "exec"), {"__name__": "quickstart"})
  out = capsys.readouterr().out
  first = out.splitlines()[0]
  assert first.startswith("random episodes:") and "MPC, 50 steps at most:" in first
  mpc_return = float(first.split("MPC, 50 steps at most:")[1])
  assert 0 < mpc_return <= 50                 # cart-pole: one reward per step kept upright
