"""Silences the one import message a user cannot act on.

mujoco-mjx, which brax imports, prints "Failed to import warp: No module named 'warp'" and
"Failed to import mujoco_warp: No module named 'warp'" (with `print`, to stdout) whenever its
optional warp backend is not installed, which is every CPU install. Imported first by
`mbrl_jax/__init__.py`, this installs an import hook that drops exactly those two lines while
`mujoco.mjx.warp` is first imported; anything else printed then (a warp that is installed but
broken, say) still shows, and warnings and logging are untouched. Nothing is imported here.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import io
import sys

_MODULE = "mujoco.mjx.warp"
_NOISE = frozenset({"Failed to import warp: No module named 'warp'",
                    "Failed to import mujoco_warp: No module named 'warp'"})


class _QuietLoader(importlib.abc.Loader):
  """Runs another loader's `exec_module` with stdout captured, then prints what was captured
  except the `_NOISE` lines."""

  def __init__(self, loader: importlib.abc.Loader):
    self._loader = loader

  def __getattr__(self, name):  # get_source, is_package, ... as the wrapped loader has them
    return getattr(self._loader, name)

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def exec_module(self, module) -> None:
    captured = io.StringIO()
    try:
      with contextlib.redirect_stdout(captured):
        self._loader.exec_module(module)
    finally:
      sys.stdout.write("".join(line for line in captured.getvalue().splitlines(keepends=True)
                               if line.rstrip("\n") not in _NOISE))


class _QuietFinder(importlib.abc.MetaPathFinder):
  """Finds `mujoco.mjx.warp` through the other finders and wraps its loader, once."""

  def find_spec(self, fullname, path, target=None):
    if fullname != _MODULE:
      return None
    sys.meta_path.remove(self)
    for finder in sys.meta_path:
      spec = getattr(finder, "find_spec", lambda *a: None)(fullname, path, target)
      if spec is not None:
        if spec.loader is not None:
          spec.loader = _QuietLoader(spec.loader)
        return spec
    return None


if _MODULE not in sys.modules and not any(isinstance(f, _QuietFinder) for f in sys.meta_path):
  sys.meta_path.insert(0, _QuietFinder())
