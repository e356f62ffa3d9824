"""Compiling the library's loops: `jax.jit` plus XLA:CPU options measured to pay off here.

On the CPU backend, `jit` adds two per-computation XLA options (nothing global changes, and
other backends get none):

- ``xla_cpu_experimental_ynn_fusion_type=""``: leave dots to Eigen rather than YNNPACK, which
  runs the small per-member products of an ensemble ([100 x 200] x [200 x 200]) at a third
  of the machine's matmul rate;
- ``xla_cpu_prefer_vector_width=512``: let loop fusions (bias + activation, sampling) use
  512-bit vectors where the CPU has them.

Given `dot_rows`, the rows each ensemble member's products see (a planner's population x
particles / members), `jit` drops the vector-width option below `SMALL_DOT_ROWS` and keeps
Eigen's dots: in one quiet run of experiments/bench_planning.py (2-core AVX-512 CPU, issue 12)
the small config (100 rows per member) planned in 44.7 ms with Eigen's dots alone, 67.8 ms with
XLA's defaults and 68.0 ms with both options, and the notebook config (1,400 rows per member) in
402 ms with both, 428 ms with Eigen's dots alone and 454 ms with the defaults. (Earlier sessions
measured the small config 1.1-1.2x faster with the defaults; the ``xla-default`` and ``eigen``
rows of the benchmark show which holds on a machine.) Set ``MBRL_JAX_XLA_DEFAULTS=1`` to compile
everything with XLA's defaults.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax

CPU_OPTIONS: dict[str, Any] = {
    "xla_cpu_experimental_ynn_fusion_type": "",
    "xla_cpu_prefer_vector_width": 512,
}


# Below this many rows per member product, 512-bit loop fusions were slower here.
SMALL_DOT_ROWS = 512
SMALL_OPTIONS: dict[str, Any] = {"xla_cpu_experimental_ynn_fusion_type": ""}


def compiler_options(dot_rows: int | None = None) -> dict[str, Any]:
  """The options `jit` adds on the CPU backend: CPU_OPTIONS, or SMALL_OPTIONS when `dot_rows`
  says the products are small (see the module docstring); none on other backends."""
  if os.environ.get("MBRL_JAX_XLA_DEFAULTS") == "1" or jax.default_backend() != "cpu":
    return {}
  if dot_rows is not None and dot_rows < SMALL_DOT_ROWS:
    return dict(SMALL_OPTIONS)
  return dict(CPU_OPTIONS)


def jit(fn: Callable[..., Any], *, dot_rows: int | None = None, **kwargs: Any
        ) -> Callable[..., Any]:
  """`jax.jit(fn, **kwargs)` with `compiler_options(dot_rows)`."""
  return jax.jit(fn, compiler_options=compiler_options(dot_rows), **kwargs)
