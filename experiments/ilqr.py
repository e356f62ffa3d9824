"""MPC on the true model of a pure-JAX env: iLQR (or CEM, iCEM, MPPI, ...), one episode per
chunk, N seeds vmapped in one compiled call.

  python experiments/ilqr.py --preset ilqr-swingup --seeds 3 --out runs/ilqr_swingup
  python experiments/ilqr.py --preset ilqr-pendulum --seeds 3
  python experiments/ilqr.py --preset cem-swingup --seeds 3
  python experiments/ilqr.py --env pendulum --horizon 30 planner:ilqr-config --planner.iterations 3

  python experiments/ilqr.py --resume runs/ilqr_swingup        # after a crash or a kill

Writes DIR/config.json, DIR/metrics.jsonl and DIR/metrics.csv (one row per seed and episode:
train/return, planner/... statistics, wall time), DIR/learning_curve.png and
DIR/checkpoints/. For iLQR with a LEARNED ensemble see experiments/pets.py --preset
ilqr-swingup.
"""

from __future__ import annotations

import sys

import numpy as np

from mbrl_jax.algorithms import mpc_control
from mbrl_jax.run import cli as run_cli


def parse(argv: list[str]) -> run_cli.RunArgs[mpc_control.Config]:
  return run_cli.parse(argv, config_cls=mpc_control.Config, presets=mpc_control.PRESETS,
                       default_preset="ilqr-swingup", description=__doc__)


def main(argv: list[str] | None = None) -> dict[str, np.ndarray]:
  args = parse(sys.argv[1:] if argv is None else argv)
  config = args.config
  run = run_cli.start(args, name="mpc_control")
  planner = type(config.planner).__name__

  def line(episode: int, metrics: dict, wall: float) -> str:
    r = metrics["train/return"]
    return (f"episode {episode}/{config.episodes - 1}: return mean {r.mean():.1f} min "
            f"{r.min():.1f} max {r.max():.1f} | predicted "
            f"{metrics['planner/predicted_return'].mean():.1f} | {wall:.1f} s")

  history = run.execute(
      mpc_control.make(config), title=f"{planner} MPC {config.env}", line_fn=line,
      x="chunk",
      header=f"{planner} MPC on the true {config.env}: preset {args.preset}, seeds "
             f"{run.seeds}, {config.episodes} episodes of {config.episode_length} steps, "
             f"horizon {config.horizon}")
  print("returns per episode (rows: episodes, columns: seeds):")
  for t, r in enumerate(history["train/return"]):
    print(f"  episode {t}: " + " ".join(f"{v:6.1f}" for v in np.atleast_1d(r)))
  return history


if __name__ == "__main__":
  main()
