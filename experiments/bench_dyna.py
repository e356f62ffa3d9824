"""Benchmark: Figure 8.2's Dyna-Q runs (Dyna maze, n = 50, 50 episodes, 30 runs) as ONE
compiled, vmapped call (`mbrl_jax.algorithms.dyna.batched_episodes`), against a
straightforward NumPy loop of the same algorithm written here (one run after another, one
step at a time, the way the book's pseudocode reads), in the same process.

The JAX call is timed after compiling (median of `repeats`); the NumPy loop once over
`numpy_runs` runs (it is slow), and its time scaled to `runs` runs for the speed-up. Both
curves (mean steps per episode) are printed, so it can be seen they measure the same thing.

  python experiments/bench_dyna.py --out results/bench_dyna.json
  python experiments/bench_dyna.py --quick              # tiny sizes (the test)

Rows: {name ("jax/vmapped" or "numpy/loop"), runs, episodes, planning_steps, seconds (for
`runs` runs; NumPy: scaled from the runs it timed), seconds_measured, runs_measured,
real_steps (over the runs measured), updates_per_s (Q updates: real + planning),
mean_steps_per_episode [E], speedup (JAX row)}.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time

import jax
import numpy as np
import tyro

import benchlib
from mbrl_jax.algorithms import dyna
from mbrl_jax.envs import maze as maze_lib


@dataclasses.dataclass(frozen=True)
class Args:
  out: pathlib.Path | None = None
  """Write the rows as a JSON list to this file."""
  runs: int = 30
  """Independent runs (Figure 8.2 averages 30)."""
  episodes: int = 50
  """Episodes per run."""
  planning_steps: int = 50
  """Dyna-Q's n."""
  numpy_runs: int = 30
  """Runs of the NumPy loop that are timed (its time is scaled to `runs`)."""
  repeats: int = 3
  """Timed calls of the JAX function (median)."""
  quick: bool = False
  """Tiny sizes: 2 runs, 3 episodes, n = 5, 1 repeat."""


def numpy_dyna_q(config: dyna.Config, seed: int, num_episodes: int) -> tuple[list[int], int]:
  """Reference Dyna-Q in NumPy and Python loops, one step at a time (not vectorised).

  The same algorithm as `dyna.real_step` for variant "dyna_q": epsilon-greedy with random
  ties, one-step Q-learning, a deterministic model, n planning updates each from a random
  observed state and a random action taken in it.

  Returns:
    (steps of each episode, Q updates made).
  """
  spec = maze_lib.maze(config.maze)
  rng = np.random.default_rng(seed)
  walls0 = maze_lib.wall_grid(spec, spec.walls)
  walls1 = None if spec.walls_after is None else maze_lib.wall_grid(spec, spec.walls_after)
  moves = ((-1, 0), (1, 0), (0, 1), (0, -1))
  A = maze_lib.NUM_ACTIONS
  q = np.zeros((spec.num_cells, A))
  model: dict[int, dict[int, tuple[float, int]]] = {}     # s -> {a: (r, s')}
  observed: list[int] = []                                  # states in insertion order
  alpha, gamma, eps, n = config.alpha, config.gamma, config.epsilon, config.planning_steps
  start, goal = spec.flat(spec.start), spec.flat(spec.goal)
  steps_per_episode, t, updates = [], 0, 0
  for _ in range(num_episodes):
    s, steps = start, 0
    while True:
      if rng.random() < eps:
        a = int(rng.integers(A))
      else:
        row = q[s]
        a = int(rng.choice(np.flatnonzero(row == row.max())))
      walls = walls1 if walls1 is not None and t >= spec.change_step else walls0
      r_, c_ = divmod(s, spec.width)
      nr = min(max(r_ + moves[a][0], 0), spec.height - 1)
      nc = min(max(c_ + moves[a][1], 0), spec.width - 1)
      s2 = s if walls[nr, nc] else nr * spec.width + nc
      r = 1.0 if s2 == goal else 0.0
      q[s, a] += alpha * (r + gamma * q[s2].max() - q[s, a])
      if s not in model:
        model[s] = {}
        observed.append(s)
      model[s][a] = (r, s2)
      for _ in range(n):
        ps = observed[int(rng.integers(len(observed)))]
        actions = list(model[ps])
        pa = actions[int(rng.integers(len(actions)))]
        pr, ps2 = model[ps][pa]
        q[ps, pa] += alpha * (pr + gamma * q[ps2].max() - q[ps, pa])
      updates += 1 + n
      t += 1
      steps += 1
      if s2 == goal:
        break
      s = s2
    steps_per_episode.append(steps)
  return steps_per_episode, updates


def main(args: Args) -> list[dict]:
  if args.quick:
    args = dataclasses.replace(args, runs=2, episodes=3, planning_steps=5, numpy_runs=2,
                               repeats=1)
  for name in ("runs", "episodes", "numpy_runs", "repeats"):
    if getattr(args, name) < 1:
      raise SystemExit(f"error: --{name.replace('_', '-')} must be >= 1, got "
                       f"{getattr(args, name)}")
  try:
    config = dataclasses.replace(dyna.PRESETS["figure_8_2"],
                                 planning_steps=args.planning_steps)
  except ValueError as e:
    raise SystemExit(f"error: {e}") from None
  keys = jax.random.split(jax.random.key(0), args.runs)
  fn = dyna.batched_episodes(config, args.episodes)
  start = time.perf_counter()
  stats = jax.block_until_ready(fn(keys))
  compile_s = time.perf_counter() - start
  seconds = benchlib.interleaved_medians({"jax": (fn, (keys,))}, repeats=args.repeats,
                                         warmup=0)["jax"]
  jax_steps = np.asarray(stats.steps)                                   # [R, E]
  jax_real = int(jax_steps.sum())

  start = time.perf_counter()
  np_steps, np_updates = [], 0
  for run in range(args.numpy_runs):
    steps, updates = numpy_dyna_q(config, run, args.episodes)
    np_steps.append(steps)
    np_updates += updates
  np_seconds = time.perf_counter() - start
  np_steps = np.asarray(np_steps)                                       # [R', E]
  np_scaled = np_seconds * args.runs / args.numpy_runs

  common = dict(runs=args.runs, episodes=args.episodes, planning_steps=args.planning_steps)
  rows = [
      dict(name="jax/vmapped", seconds=seconds, seconds_measured=seconds,
           runs_measured=args.runs, compile_and_first_run_s=compile_s, real_steps=jax_real,
           updates_per_s=jax_real * (1 + args.planning_steps) / seconds,
           mean_steps_per_episode=jax_steps.mean(0).tolist(), **common),
      dict(name="numpy/loop", seconds=np_scaled, seconds_measured=np_seconds,
           runs_measured=args.numpy_runs, real_steps=int(np_steps.sum()),
           updates_per_s=np_updates / np_seconds,
           mean_steps_per_episode=np_steps.mean(0).tolist(), **common),
  ]
  # The two sides draw different random numbers, so their runs take different numbers of
  # steps: the speed-up is per Q update (real + planning); the ratio of seconds is kept too.
  rows[0]["speedup"] = rows[0]["updates_per_s"] / rows[1]["updates_per_s"]
  rows[0]["speedup_seconds"] = np_scaled / seconds
  print(f"Dyna-Q, Dyna maze, n = {args.planning_steps}, {args.episodes} episodes, "
        f"{args.runs} runs (JAX compile + first call {compile_s:.1f} s)")
  print(f"{'name':12s} {'runs timed':>10s} {'s (timed)':>10s} {f's ({args.runs} runs)':>12s} "
        f"{'real steps':>10s} {'updates/s':>10s}  mean steps, episodes 1 2 3 5 10 last")
  for r in rows:
    m = r["mean_steps_per_episode"]
    picks = [m[i] for i in (0, 1, 2, 4, 9) if i < len(m)] + [m[-1]]
    print(f"{r['name']:12s} {r['runs_measured']:10d} {r['seconds_measured']:10.3f} "
          f"{r['seconds']:12.3f} {r['real_steps']:10d} {r['updates_per_s']:10.3g}  "
          + " ".join(f"{v:.0f}" for v in picks))
  print(f"speed-up of the compiled, vmapped call over the NumPy loop: "
        f"{rows[0]['speedup']:.1f}x per Q update ({rows[0]['speedup_seconds']:.1f}x in "
        f"seconds for {args.runs} runs)")
  return benchlib.finish(args.out, rows)


if __name__ == "__main__":
  main(tyro.cli(Args))
