"""Timing helpers shared by the benchmarks: interleaved medians against a measured ceiling.

The machines these run on are shared and their speed drifts within seconds, so a benchmark
times its subject and the reference matrix multiplies in alternation (round-robin) and
reports medians from the same window of time; ratios taken that way are stable even when
absolute figures are not.
"""

from __future__ import annotations

import json
import pathlib
import platform
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def interleaved_medians(fns: dict[str, tuple[Callable[..., Any], tuple]], repeats: int,
                        warmup: int = 2) -> dict[str, float]:
  """Median seconds per call of each `name: (fn, args)`, calls alternated round-robin."""
  for fn, args in fns.values():
    for _ in range(warmup):
      jax.block_until_ready(fn(*args))
  times: dict[str, list[float]] = {name: [] for name in fns}
  for _ in range(repeats):
    for name, (fn, args) in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times[name].append(time.perf_counter() - start)
  return {name: float(np.median(t)) for name, t in times.items()}


def matmul_references(rows: int, width: int, batched: Sequence[tuple[int, int]] = (), *,
                      compiler_options: dict[str, Any] | None = None
                      ) -> dict[str, tuple[Callable[..., Any], tuple, float]]:
  """float32 matrix multiplies that define the ceiling: name -> (fn, args, flops).

  Two shapes: the one an MLP layer of `width` on `rows` rows uses, and 2048^3 (which XLA's
  CPU backend runs at its best rate). The ceiling is the faster of the two.

  `batched` adds, for each (members, rows_per_member), the member-batched layer product
  [members, rows_per_member, width] x [members, width, width] that a vmapped ensemble layer
  runs (named "bmatmul_MxRxWxW"): reported, but not part of the ceiling.

  `compiler_options`: XLA options the references are compiled with; pass those of what they
  are compared with (e.g. `mbrl_jax.compile.compiler_options(...)`), so that the ceiling and
  the subject share a compiler. None: `jax.jit`'s defaults.
  """
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  jit = lambda f: jax.jit(f, compiler_options=compiler_options or None)
  mm = jit(jnp.matmul)
  big = jax.random.normal(k1, (2048, 2048))
  x = jax.random.normal(k2, (rows, width))
  w = jax.random.normal(k3, (width, width))
  refs = {
      "matmul_2048": (mm, (big, big), 2.0 * 2048 ** 3),
      f"matmul_{rows}x{width}x{width}": (mm, (x, w), 2.0 * rows * width * width),
  }
  if batched:
    bmm = jit(lambda a, b: jnp.einsum("mnk,mkj->mnj", a, b))
    for members, member_rows in batched:
      ka, kb = jax.random.split(jax.random.fold_in(k3, members * 100003 + member_rows))
      a = jax.random.normal(ka, (members, member_rows, width))
      b = jax.random.normal(kb, (members, width, width))
      refs[f"bmatmul_{members}x{member_rows}x{width}x{width}"] = (
          bmm, (a, b), 2.0 * members * member_rows * width * width)
  return refs


class Ceiling(float):
  """The matmul ceiling in GFLOP/s (the best reference), with every reference's rate."""
  rates: dict[str, float]


def time_against_matmul(subjects: dict[str, tuple[Callable[..., Any], tuple]], *, rows: int,
                        width: int, repeats: int, batched: Sequence[tuple[int, int]] = (),
                        compiler_options: dict[str, Any] | None = None
                        ) -> tuple[dict[str, float], Ceiling]:
  """Median seconds of each subject and the matmul ceiling (GFLOP/s) from the same window.

  `batched`: extra member-batched references; `compiler_options`: the references' XLA options
  (see `matmul_references`).
  """
  refs = matmul_references(rows, width, batched, compiler_options=compiler_options)
  fns = dict(subjects)
  fns.update({name: (fn, args) for name, (fn, args, _) in refs.items()})
  medians = interleaved_medians(fns, repeats)
  rates = {name: flops / medians[name] / 1e9 for name, (_, _, flops) in refs.items()}
  ceiling = Ceiling(max(v for name, v in rates.items() if not name.startswith("bmatmul_")))
  ceiling.rates = rates
  return {name: medians[name] for name in subjects}, ceiling


def write_rows(out: pathlib.Path | None, rows: list[dict[str, Any]]) -> None:
  """Writes benchmark rows as a JSON list to `out` (nothing when None)."""
  if out is None:
    return
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(rows, indent=1))
  print(f"wrote {out}")


def finish(out: pathlib.Path | None, rows: list[dict[str, Any]],
           **meta: Any) -> list[dict[str, Any]]:
  """The benchmarks' ending: stamps `machine_info()` and `meta` on every row (in place), writes
  them to `out` (nothing when None) and returns them."""
  stamp = dict(machine_info(), **meta)
  for r in rows:
    r.update(stamp)
  write_rows(out, rows)
  return rows


def machine_info() -> dict[str, Any]:
  return dict(machine=platform.processor() or platform.machine(), device=str(jax.devices()[0]),
              num_devices=jax.device_count(), jax=jax.__version__)
