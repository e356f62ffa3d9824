"""Every `>>>` example in the library's docstrings runs (examples too slow for the suite say
`# doctest: +SKIP` on their line)."""

import doctest
import importlib
import pkgutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mbrl_jax

MODULES = sorted(m.name for m in pkgutil.walk_packages(mbrl_jax.__path__, "mbrl_jax.")
                 if not m.name.endswith("__main__"))


def _with_examples(name):
  module = importlib.import_module(name)
  finder = doctest.DocTestFinder(exclude_empty=True)
  return [t for t in finder.find(module, name, globs={"jax": jax, "jnp": jnp, "np": np,
                                                       **vars(module)})
          if t.examples]


@pytest.mark.parametrize("name", [m for m in MODULES if _with_examples(m)])
def test_docstring_examples_run(name):
  runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
  for test in _with_examples(name):
    runner.run(test)
  result = runner.summarize(verbose=False)
  assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"


def test_the_examples_are_found():
  assert "mbrl_jax.envs.acting" in [m for m in MODULES if _with_examples(m)]
