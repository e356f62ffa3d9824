"""The layers of DESIGN.md hold: algorithms (and everything below them) import nothing from
the driver in `mbrl_jax.run`, so importing an algorithm pulls in no orbax, tqdm or tyro."""

import subprocess
import sys

CHECK = """
import sys
import mbrl_jax.algorithms, mbrl_jax.models, mbrl_jax.planning, mbrl_jax.policies
import mbrl_jax.envs, mbrl_jax.data, mbrl_jax.checks, mbrl_jax.tree
bad = sorted(m for m in sys.modules
             if m.startswith(("mbrl_jax.run", "orbax", "tqdm", "tyro")))
print("LOADED", bad)
"""


def test_algorithms_do_not_import_the_driver():
  out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                       check=True).stdout
  assert "LOADED []" in out, out
