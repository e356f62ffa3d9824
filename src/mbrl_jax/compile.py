"""Compiling the library's loops: `jax.jit` plus XLA:CPU options measured to pay off here.

On the CPU backend, `jit` adds two per-computation XLA options (nothing global changes, and
other backends get none):

- ``xla_cpu_experimental_ynn_fusion_type=""``: leave dots to Eigen rather than YNNPACK, which
  runs the small per-member products of an ensemble ([100 x 200] x [200 x 200]) at a third
  of the machine's matmul rate;
- ``xla_cpu_prefer_vector_width=512``: let loop fusions (bias + activation, sampling) use
  512-bit vectors where the CPU has them.

Measured by experiments/bench_planning.py (the ``/eigen+vw512`` rows) on a 2-core AVX-512
CPU: a PETS notebook-config plan 1.15x faster, the small config 1.4x. Set
``MBRL_JAX_XLA_DEFAULTS=1`` to compile with XLA's defaults instead.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax

CPU_OPTIONS: dict[str, Any] = {
    "xla_cpu_experimental_ynn_fusion_type": "",
    "xla_cpu_prefer_vector_width": 512,
}


def compiler_options() -> dict[str, Any]:
  """The options `jit` adds: CPU_OPTIONS on the CPU backend, else none."""
  if os.environ.get("MBRL_JAX_XLA_DEFAULTS") == "1" or jax.default_backend() != "cpu":
    return {}
  return dict(CPU_OPTIONS)


def jit(fn: Callable[..., Any], **kwargs: Any) -> Callable[..., Any]:
  """`jax.jit(fn, **kwargs)` with `compiler_options()`."""
  return jax.jit(fn, compiler_options=compiler_options(), **kwargs)
