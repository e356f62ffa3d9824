"""Benchmark: what the run infrastructure costs a PETS run (target <= 3%).

The same compiled PETS trial is run for a few trials three ways, interleaved and repeated:
  bare        the compiled chunks only (state blocked on after each trial)
  progress    + a tqdm bar (rate, ETA) and metric rows to metrics.jsonl, metrics.csv
  checkpoint  + an orbax checkpoint of the whole state after every trial
Each is timed from the first model-based trial to the last (the random trial and compilation
are excluded: they happen once either way). Two overheads are reported: the median wall time
relative to bare (what a user sees, but on a shared machine it carries the machine's noise),
and the time spent in the host-side work itself (progress callback, checkpoint writes)
relative to bare, which is what the infrastructure adds.

  python experiments/bench_progress.py --out results/bench_progress.json
"""

from __future__ import annotations

import dataclasses
import io
import pathlib
import statistics
import tempfile
import time
from typing import Callable

import jax
import jax.numpy as jnp
import tqdm
import tyro

import benchlib

from mbrl_jax import compile as compile_lib
from mbrl_jax import planning
from mbrl_jax import run as run_lib
from mbrl_jax.algorithms import pets


@dataclasses.dataclass(frozen=True)
class Args:
  out: pathlib.Path | None = None
  """Write the rows as a JSON list to this file."""
  seeds: int = 2
  """Seeds vmapped in each run."""
  trials: int = 3
  """Model-based trials per timed run."""
  repeats: int = 3
  """Timed runs per mode (interleaved)."""


CONFIG = pets.Config(
    env="cartpole_continuous", trials=3, trial_length=100,
    model=pets.ModelConfig(hidden_sizes=(200, 200, 200)),
    planner=pets.PlannerConfig(
        optimizer=planning.CEMConfig(population=100, return_mean_elites=True),
        num_particles=5, horizon=15))


class TimedCheckpointer(run_lib.Checkpointer):
  """Adds the time of every save to `self.host["s"]`."""

  def save(self, step, state, *, extra=None):
    t0 = time.perf_counter()
    super().save(step, state, extra=extra)
    self.host["s"] += time.perf_counter() - t0


def main(args: Args) -> list[dict]:
  config = dataclasses.replace(CONFIG, trials=args.trials)
  parts = pets.make_parts(config)
  init = compile_lib.jit(jax.vmap(lambda k: pets._init(parts, config, k)[0]))
  step = compile_lib.jit(jax.vmap(pets.make_step(config, parts)), donate_argnums=0)
  keys = jnp.stack([jax.random.key(s) for s in range(args.seeds)])
  total = config.random_trials + config.trials

  def blocking(state):
    state, metrics = step(state)
    return jax.block_until_ready(state), metrics

  def make_progress(tmp: str, host: dict) -> Callable[[int, dict], None]:
    """The scripts' host-side work per trial: metric rows and a tqdm bar, timed into host."""
    writer = run_lib.MetricsWriter(tmp)
    bar = tqdm.tqdm(total=total, initial=config.random_trials, file=io.StringIO())

    def progress_fn(trial, metrics):
      t0 = time.perf_counter()
      writer.write([{"seed": s, "trial": trial, **{k: v[s] for k, v in metrics.items()}}
                    for s in range(args.seeds)])
      bar.update(1)
      bar.set_postfix(ret=f"{metrics['train/return'].mean():.1f}")
      host["s"] += time.perf_counter() - t0

    return progress_fn

  def run(mode: str) -> tuple[float, float]:
    state = jax.block_until_ready(init(keys))
    host = {"s": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
      checkpointer = None
      progress_fn = None if mode == "bare" else make_progress(tmp, host)
      if mode == "checkpoint":
        checkpointer = TimedCheckpointer(pathlib.Path(tmp) / "ckpt", meta={})
        checkpointer.host = host
      start = time.perf_counter()
      run_lib.run_chunks(blocking, state, start=config.random_trials, stop=total,
                         history=run_lib.History(), name="bench", progress_fn=progress_fn,
                         checkpointer=checkpointer)
      return time.perf_counter() - start, host["s"]

  run("checkpoint")                                  # compile, warm every path
  times: dict[str, list[float]] = {"bare": [], "progress": [], "checkpoint": []}
  hosts: dict[str, list[float]] = {mode: [] for mode in times}
  for _ in range(args.repeats):
    for mode in times:
      wall, host = run(mode)
      times[mode].append(wall)
      hosts[mode].append(host)
  bare = statistics.median(times["bare"])
  rows = []
  print(f"PETS {config.env}, {args.seeds} seeds, {args.trials} trials of "
        f"{config.trial_length} steps, median of {args.repeats}")
  print(f"{'mode':<12} {'median s':>9} {'per trial s':>12} {'wall overhead':>14} "
        f"{'host work s':>12} {'host overhead':>14}")
  for mode, ts in times.items():
    med, host = statistics.median(ts), statistics.median(hosts[mode])
    overhead = med / bare - 1.0
    rows.append({"name": mode, "median_s": med, "per_trial_s": med / args.trials,
                 "overhead": overhead, "host_s": host, "host_overhead": host / bare,
                 "times_s": ts, "seeds": args.seeds, "trials": args.trials,
                 **benchlib.machine_info()})
    print(f"{mode:<12} {med:9.2f} {med / args.trials:12.2f} {100 * overhead:13.1f}% "
          f"{host:12.3f} {100 * host / bare:13.2f}%")
  benchlib.write_rows(args.out, rows)
  return rows


if __name__ == "__main__":
  main(tyro.cli(Args))
