"""Tabular Dyna on Sutton & Barto's chapter-8 mazes: the book's Figures 8.2, 8.4 and 8.5 from
one command each, or one configuration on the shared driver.

Figure mode (all runs of all curves vmapped, one compiled call per curve; writes
DIR/figure_8_X.png and DIR/results.json, and prints the book's statements with PASS/FAIL):

  python experiments/dyna.py --figure 8.2 --out runs/dyna_8_2    # Dyna maze, n = 0, 5, 50
  python experiments/dyna.py --figure 8.4 --out runs/dyna_8_4    # blocking maze, Q vs Q+
  python experiments/dyna.py --figure 8.5 --out runs/dyna_8_5    # shortcut maze, Q vs Q+
  python experiments/dyna.py --figure 8.2 --runs 10 --episodes 30

Driver mode (seeds vmapped, checkpoints, resume, metrics; a chunk = chunk_steps real steps):

  python experiments/dyna.py --preset figure_8_4 --seeds 4 --out runs/dyna_blocking
  python experiments/dyna.py --preset quick --variant prioritized_sweeping --planning-steps 5
  python experiments/dyna.py --resume runs/dyna_blocking

Writes DIR/config.json, DIR/metrics.jsonl, DIR/metrics.csv (per seed and chunk: env_steps,
train/episodes, train/return, dyna/steps_per_episode, dyna/cumulative_reward,
dyna/greedy_path_length), DIR/learning_curve.png (cumulative reward against env steps; the
mean return of an episode is always 1 here) and DIR/checkpoints/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time
from typing import Literal

import jax
import numpy as np
import tyro

from mbrl_jax.algorithms import dyna
from mbrl_jax.envs import maze as maze_lib
from mbrl_jax.run import cli as run_cli

# Steps per episode at or under this count as "near the 14-step path": epsilon-greedy's
# detours keep the curves at 16-17 steps once learned.
NEAR_OPTIMAL = 20


@dataclasses.dataclass(frozen=True)
class FigureArgs:
  """Reproduce one of the book's chapter-8 figures."""

  figure: Literal["8.2", "8.4", "8.5"]
  """Figure 8.2 (Dyna maze, steps per episode for n = 0, 5, 50), 8.4 (blocking maze) or 8.5
  (shortcut maze): cumulative reward of Dyna-Q and Dyna-Q+."""
  out: pathlib.Path = pathlib.Path("runs/dyna_figure")
  """Directory for figure_8_X.png and results.json."""
  runs: int = 30
  """Independent runs averaged, vmapped."""
  episodes: int = 50
  """Episodes per run (Figure 8.2)."""
  seed: int = 0
  """Runs use keys split from this seed (the same keys for every curve)."""


def _first(mask: np.ndarray) -> int | None:
  """1-based index of the first True, None if none."""
  hits = np.flatnonzero(mask)
  return int(hits[0]) + 1 if len(hits) else None


def _check(claims: list[dict], statement: str, ok: bool, measured: str) -> None:
  claims.append({"statement": statement, "pass": bool(ok), "measured": measured})
  print(f"  [{'PASS' if ok else 'FAIL'}] {statement}: {measured}")


def figure_8_2(args: FigureArgs, keys: jax.Array) -> tuple[dict, list[dict]]:
  base = dyna.PRESETS["figure_8_2"]
  curves, greedy, seconds = {}, {}, {}
  for n in (0, 5, 50):
    fn = dyna.batched_episodes(dataclasses.replace(base, planning_steps=n), args.episodes)
    compiled = fn.lower(keys).compile()                    # compile only, then one timed run
    start = time.perf_counter()
    stats = jax.block_until_ready(compiled(keys))
    seconds[n] = time.perf_counter() - start
    curves[n] = np.asarray(stats.steps).mean(0)             # [E]
    greedy[n] = np.asarray(stats.greedy_length)             # [R, E]
    print(f"n = {n:2d}: mean steps per episode " + " ".join(f"{v:.0f}" for v in curves[n][:10])
          + f" ... {curves[n][-1]:.1f} ({seconds[n]:.2f} s for {args.runs} runs)")
  near = {n: _first(c <= NEAR_OPTIMAL) for n, c in curves.items()}
  claims: list[dict] = []
  print(f"Book (Example 8.1): n = 50 is near the 14-step path within a few episodes, n = 0 "
        f"needs about 25 (near: {args.runs}-run mean <= {NEAR_OPTIMAL} steps):")
  _check(claims, "n = 50 near-optimal within 5 episodes",
         near[50] is not None and near[50] <= 5, f"first at episode {near[50]}")
  _check(claims, "n = 0 needs about 25 episodes (15 to 40)",
         near[0] is not None and 15 <= near[0] <= 40, f"first at episode {near[0]}")
  _check(claims, "n = 5 in between", near[5] is not None and near[50] is not None
         and near[50] <= near[5] <= (near[0] or args.episodes + 1),
         f"first at episode {near[5]}")
  arrive = {n: _first((g < maze_lib.maze("dyna").num_cells).all(0)) for n, g in greedy.items()}
  print("  greedy policy reaches the goal from the start in every run after episode: "
        + ", ".join(f"n = {n}: {e}" for n, e in arrive.items()))

  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  episodes = np.arange(1, args.episodes + 1)
  for n, c in curves.items():
    ax.plot(episodes[1:], c[1:], label=f"{n} planning steps")
  ax.axhline(14, color="gray", lw=0.5, ls="--")
  ax.set(xlabel="episodes", ylabel="steps per episode",
         title=f"Dyna-Q, Dyna maze (Figure 8.2), {args.runs} runs", ylim=(0, 800))
  ax.legend()
  fig.tight_layout()
  png = args.out / "figure_8_2.png"
  fig.savefig(png, dpi=120)
  plt.close(fig)
  results = {"figure": "8.2", "runs": args.runs, "episodes": args.episodes,
             "steps_per_episode": {str(n): c.tolist() for n, c in curves.items()},
             "first_near_optimal_episode": {str(n): e for n, e in near.items()},
             "greedy_arrives_in_all_runs_after": {str(n): e for n, e in arrive.items()},
             "seconds_after_compile": {str(n): s for n, s in seconds.items()}, "png": str(png)}
  return results, claims


def figure_changing(args: FigureArgs, keys: jax.Array) -> tuple[dict, list[dict]]:
  preset = dyna.PRESETS["figure_8_4" if args.figure == "8.4" else "figure_8_5"]
  spec = maze_lib.maze(preset.maze)
  T, change = preset.num_steps, spec.change_step
  curves, per_run, greedy, seconds = {}, {}, {}, {}
  for variant in ("dyna_q", "dyna_q_plus"):
    fn = dyna.batched_steps(dataclasses.replace(preset, variant=variant), T)
    compiled = fn.lower(keys).compile()                    # compile only, then one timed run
    start = time.perf_counter()
    stats = jax.block_until_ready(compiled(keys))
    seconds[variant] = time.perf_counter() - start
    per_run[variant] = np.asarray(stats.cumulative_reward)             # [R, T]
    curves[variant] = per_run[variant].mean(0)                         # [T]
    greedy[variant] = np.asarray(stats.greedy_length)                  # [R]
    print(f"{variant}: mean cumulative reward {curves[variant][change - 1]:.1f} at the change "
          f"(step {change}), {curves[variant][-1]:.1f} at step {T}; greedy path at the end "
          f"{np.bincount(greedy[variant]).nonzero()[0].tolist()} "
          f"({seconds[variant]:.2f} s for {args.runs} runs)")
  before = maze_lib.shortest_path_length(spec, maze_lib.walls_at(spec, 0))
  after = maze_lib.shortest_path_length(spec, maze_lib.walls_at(spec, change))
  q, plus = curves["dyna_q"], curves["dyna_q_plus"]
  claims: list[dict] = []
  name = "blocking" if args.figure == "8.4" else "shortcut"
  print(f"Book (Example 8.{2 if name == 'blocking' else 3}), {name} maze, {args.runs} runs, "
        f"shortest path {before} steps before step {change}, {after} after:")
  _check(claims, f"Dyna-Q+ ahead of Dyna-Q at step {T}", plus[-1] > q[-1],
         f"{plus[-1]:.1f} vs {q[-1]:.1f}")
  gained = {v: c[-1] - c[change - 1] for v, c in curves.items()}
  _check(claims, "Dyna-Q+ gains more reward after the change", gained["dyna_q_plus"]
         > gained["dyna_q"], f"{gained['dyna_q_plus']:.1f} vs {gained['dyna_q']:.1f}")
  # Per run, real reward in the last 1000 steps (one per episode that reached the goal).
  last = {v: r[:, -1] - r[:, -1001] for v, r in per_run.items()}     # T is 3000 or 6000
  found = {v: float(np.mean(g == after)) for v, g in greedy.items()}
  print(f"  greedy path of {after} steps at the end: Dyna-Q {found['dyna_q']:.0%}, Dyna-Q+ "
        f"{found['dyna_q_plus']:.0%} of runs (Dyna-Q+'s bonus can draw its greedy policy to "
        "a long-untried action instead)")
  if name == "blocking":
    recovered = {v: float(np.mean(x > 0)) for v, x in last.items()}
    _check(claims, "Dyna-Q+ finds the new opening (reward in the last 1000 steps) in every "
           "run", recovered["dyna_q_plus"] == 1.0, f"{recovered['dyna_q_plus']:.0%} of runs")
    _check(claims, "Dyna-Q finds it more slowly (fewer runs have by the end)",
           recovered["dyna_q"] < recovered["dyna_q_plus"],
           f"{recovered['dyna_q']:.0%} of runs")
  else:
    # The shortcut takes 10 steps, the old way 16; epsilon-greedy adds ~1-2 to either.
    rate = 1000 / 14
    uses = {v: float(np.mean(x >= rate)) for v, x in last.items()}
    _check(claims, "Dyna-Q+ finds the shortcut (<= 14 steps per episode over the last 1000 "
           "steps) in >= 90% of runs", uses["dyna_q_plus"] >= 0.9,
           f"{uses['dyna_q_plus']:.0%} of runs, rewards {int(last['dyna_q_plus'].min())}-"
           f"{int(last['dyna_q_plus'].max())}")
    _check(claims, f"Dyna-Q does not within {T} steps (<= 10% of runs)",
           uses["dyna_q"] <= 0.1, f"{uses['dyna_q']:.0%} of runs, rewards "
           f"{int(last['dyna_q'].min())}-{int(last['dyna_q'].max())}")

  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  steps = np.arange(1, T + 1)
  for variant, label in (("dyna_q", "Dyna-Q"), ("dyna_q_plus", "Dyna-Q+")):
    ax.plot(steps, curves[variant], label=label)
  ax.axvline(change, color="gray", lw=0.5, ls="--")
  ax.set(xlabel="time steps", ylabel="cumulative reward",
         title=f"{name} maze (Figure {args.figure}), n = {preset.planning_steps}, "
               f"{args.runs} runs")
  ax.legend()
  fig.tight_layout()
  png = args.out / f"figure_{args.figure.replace('.', '_')}.png"
  fig.savefig(png, dpi=120)
  plt.close(fig)
  every = max(T // 300, 1)
  results = {"figure": args.figure, "runs": args.runs, "config": dataclasses.asdict(preset),
             "step_every": every,
             "cumulative_reward": {v: c[every - 1::every].tolist() for v, c in curves.items()},
             "at_change": {v: float(c[change - 1]) for v, c in curves.items()},
             "final": {v: float(c[-1]) for v, c in curves.items()},
             "fraction_greedy_path_after": found,
             "reward_last_1000_steps": {v: x.tolist() for v, x in last.items()},
             "seconds_after_compile": seconds, "png": str(png)}
  return results, claims


def figure_main(argv: list[str]) -> dict:
  args = tyro.cli(FigureArgs, args=argv, description=FigureArgs.__doc__)
  if args.runs < 1 or args.episodes < 1:
    raise SystemExit(f"error: --runs and --episodes must be >= 1, got {args.runs}, "
                     f"{args.episodes}")
  args.out.mkdir(parents=True, exist_ok=True)
  keys = jax.random.split(jax.random.key(args.seed), args.runs)
  start = time.perf_counter()
  fn = figure_8_2 if args.figure == "8.2" else figure_changing
  results, claims = fn(args, keys)
  results["claims"] = claims
  results["wall_s"] = time.perf_counter() - start
  (args.out / "results.json").write_text(json.dumps(results, indent=1))
  passed = sum(c["pass"] for c in claims)
  print(f"{passed}/{len(claims)} statements PASS; wrote {results['png']}, "
        f"{args.out / 'results.json'} ({results['wall_s']:.1f} s with compiling)")
  return results


def parse(argv: list[str]) -> run_cli.RunArgs[dyna.Config]:
  return run_cli.parse(argv, config_cls=dyna.Config, presets=dyna.PRESETS,
                       default_preset="quick", description=__doc__)


def driver_main(argv: list[str]) -> dict[str, np.ndarray]:
  args = parse(argv)
  config = args.config
  run = run_cli.start(args, name="dyna", run_name=f"dyna-{config.maze}-{args.preset}-"
                      f"{time.strftime('%Y%m%d-%H%M%S')}")

  def line(chunk: int, metrics: dict, wall: float) -> str:
    return (f"chunk {chunk}/{config.num_steps // config.chunk_steps - 1}: env steps "
            f"{int(np.max(metrics['env_steps']))} | cumulative reward mean "
            f"{np.mean(metrics['dyna/cumulative_reward']):.1f} | greedy path "
            f"{np.mean(metrics['dyna/greedy_path_length']):.1f} | {wall:.2f} s")

  history = run.execute(
      dyna.make(config), title=f"{config.variant} {config.maze}", line_fn=line,
      y="dyna/cumulative_reward",
      header=f"{config.variant} on the {config.maze} maze: preset {args.preset}, seeds "
             f"{run.seeds}, n = {config.planning_steps}, {config.num_steps} steps in chunks "
             f"of {config.chunk_steps}")
  final = history["dyna/cumulative_reward"][-1]
  print("cumulative reward at the end per seed: " + " ".join(f"{v:.0f}"
                                                           for v in np.atleast_1d(final)))
  return history


def main(argv: list[str] | None = None):
  argv = sys.argv[1:] if argv is None else argv
  pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  pre.add_argument("--figure")
  known, _ = pre.parse_known_args(argv)
  if known.figure is not None:
    return figure_main(argv)
  return driver_main(argv)


if __name__ == "__main__":
  main()
