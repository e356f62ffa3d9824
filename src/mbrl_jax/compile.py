"""Compiling the library's loops: `jax.jit` plus XLA:CPU options measured to pay off here.

On the CPU backend, `jit` adds two per-computation XLA options (nothing global changes, and
other backends get none):

- ``xla_cpu_experimental_ynn_fusion_type=""``: leave dots to Eigen rather than YNNPACK, which
  runs the small per-member products of an ensemble ([100 x 200] x [200 x 200]) at a third
  of the machine's matmul rate;
- ``xla_cpu_prefer_vector_width=512``: let loop fusions (bias + activation, sampling) use
  512-bit vectors where the CPU has them.

Both pay off for large products only. Given `dot_rows`, the rows each ensemble member's
products see (a planner's population x particles / members), `jit` keeps XLA's defaults below
`SMALL_DOT_ROWS`: measured by experiments/bench_planning.py (the ``xla-default`` and ``eigen``
rows) on a 2-core AVX-512 CPU, the notebook-config plan (1,400 rows per member) is 1.15-1.2x
faster with these options, and the small config (100 rows per member) 1.1-1.2x faster without
them. Set ``MBRL_JAX_XLA_DEFAULTS=1`` to compile everything with XLA's defaults.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax

CPU_OPTIONS: dict[str, Any] = {
    "xla_cpu_experimental_ynn_fusion_type": "",
    "xla_cpu_prefer_vector_width": 512,
}


# Below this many rows per member product, XLA's default dots (YNNPACK) were faster here.
SMALL_DOT_ROWS = 512


def compiler_options(dot_rows: int | None = None) -> dict[str, Any]:
  """The options `jit` adds: CPU_OPTIONS on the CPU backend (unless `dot_rows` says the
  products are small, see the module docstring), else none."""
  if os.environ.get("MBRL_JAX_XLA_DEFAULTS") == "1" or jax.default_backend() != "cpu":
    return {}
  if dot_rows is not None and dot_rows < SMALL_DOT_ROWS:
    return {}
  return dict(CPU_OPTIONS)


def jit(fn: Callable[..., Any], *, dot_rows: int | None = None, **kwargs: Any
        ) -> Callable[..., Any]:
  """`jax.jit(fn, **kwargs)` with `compiler_options(dot_rows)`."""
  return jax.jit(fn, compiler_options=compiler_options(dot_rows), **kwargs)
