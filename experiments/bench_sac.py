"""Our SAC alone (no model) on an env: evaluation return against env steps, and wall time.

  python experiments/bench_sac.py                                  # pendulum, 20k steps
  python experiments/bench_sac.py --seeds 3 --out runs/sac_pendulum
  python experiments/bench_sac.py --config.env inverted_pendulum --config.env-steps 10000

The acceptance target for pendulum is a mean evaluation return >= -250 within 20k env steps.
Brax's own SAC (`brax.training.agents.sac.train`) does not run on this jax (see NOTES.md); it
is compared in `bench_mbpo_vs_sac.py`, which runs it in its own environment. Writes DIR/metrics.jsonl (seed, epoch, env_steps, return, SAC
statistics), DIR/config.json and DIR/learning_curve.png when --out is given.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import tyro

from mbrl_jax import run as run_lib
from mbrl_jax.algorithms import sac
from mbrl_jax.run import write_jsonl_rows
from mbrl_jax.run.plot import plot_learning_curves


@dataclasses.dataclass(frozen=True)
class Args:
  config: sac.Config = sac.Config()
  """The SAC run."""
  seed: int = 0
  """First seed."""
  seeds: int = 1
  """Seeds, vmapped."""
  target: float = -250.0
  """Return the run should reach (reported, not enforced)."""
  out: pathlib.Path | None = None
  """Output directory (optional; an existing metrics.jsonl is refused)."""


def main(argv: list[str] | None = None) -> dict[str, np.ndarray]:
  args = tyro.cli(Args, args=sys.argv[1:] if argv is None else argv, description=__doc__)
  config = args.config               # validated when built (tyro reports a bad value)
  metrics_path = None
  if args.out is not None:
    metrics_path = args.out / "metrics.jsonl"
    if metrics_path.exists():
      raise SystemExit(f"error: {metrics_path} exists; choose another --out")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "config.json").write_text(json.dumps(
        {"seed": args.seed, "seeds": args.seeds, "config": dataclasses.asdict(config)},
        indent=1))
  seeds = list(range(args.seed, args.seed + args.seeds))
  keys = jnp.stack([jax.random.key(s) for s in seeds])
  clock = {"t": time.perf_counter(), "start": time.perf_counter()}
  walls = []

  def progress(epoch: int, metrics: dict) -> None:
    now = time.perf_counter()
    wall, clock["t"] = now - clock["t"], now
    walls.append(wall)
    r = metrics["eval/return"]
    print(f"epoch {epoch}: env steps {int(metrics['env_steps'].mean())} | eval return mean "
          f"{r.mean():.1f} min {r.min():.1f} max {r.max():.1f} | alpha "
          f"{metrics['sac/alpha'].mean():.3f} | {wall:.1f} s", flush=True)
    if metrics_path is not None:
      write_jsonl_rows(metrics_path, [
          {"seed": s, "epoch": epoch, "trial": epoch, "wall_s": wall,
           **{k: v[i] for k, v in metrics.items()}} for i, s in enumerate(seeds)])

  print(f"SAC on {config.env}: seeds {seeds}, {config.env_steps} env steps "
        f"({config.init_exploration_steps} random), {config.updates_per_step} update(s) per "
        f"step, batch {config.sac.batch_size}", flush=True)
  _, history = run_lib.train(sac.make(config), keys, progress_fn=progress)
  mean = history["eval/return"].mean(-1)
  reached = np.nonzero(mean >= args.target)[0]
  first = int(history["env_steps"][reached[0]].mean()) if len(reached) else None
  steady = walls[1:] if len(walls) > 1 else walls
  print(f"final mean eval return {mean[-1]:.1f} (per seed {history['eval/return'][-1].round(1)}); "
        f"best epoch mean {mean.max():.1f}")
  print(f"target {args.target}: " + (f"first reached at {first} env steps" if first is not None
                                     else "not reached"))
  print(f"wall: {sum(walls):.1f} s total, {np.mean(steady) / config.epoch_length * 1e3:.2f} ms "
        f"per env step after the first (compiling) epoch, {len(seeds)} seed(s) vmapped")
  if args.out is not None:
    print(plot_learning_curves([args.out], args.out / "learning_curve.png", x="env_steps",
                               title=f"SAC {config.env}"))
  return history


if __name__ == "__main__":
  main()
