"""Every script under experiments/ answers `--help` with its usage and nothing before it (the
run scripts' own tests check what their help says)."""

import pytest

from tests.conftest import HELP_SCRIPTS, script_help


def test_the_scripts_are_found():
  assert {"pets.py", "mbpo.py", "dreamer.py", "bench_planning.py"} <= set(HELP_SCRIPTS)
  assert "benchlib.py" not in HELP_SCRIPTS


@pytest.mark.parametrize("script", HELP_SCRIPTS)
def test_help(script):
  out = script_help(script)
  assert len(out.splitlines()) > 2, out
