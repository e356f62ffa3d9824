"""Run Dreamer: every config field on the command line, N seeds vmapped in one compiled call
per chunk.

  python experiments/dreamer.py --preset quick --out runs/dreamer_quick
  python experiments/dreamer.py --preset pendulum --seeds 3 --out runs/dreamer_pendulum
  python experiments/dreamer.py --preset pixels --out runs/dreamer_pixels
  python experiments/dreamer.py --preset pendulum --pixels --image-size 64 --help
  python experiments/dreamer.py --preset quick --env gymnasium:Pendulum-v1 --video

Writes DIR/config.json (the resolved config), DIR/metrics.jsonl (one row per seed and chunk:
seed, chunk, env_steps, eval/return, train/return, model/... and actor_critic/... statistics,
wall time), DIR/checkpoints/ (orbax), DIR/learning_curve.png (evaluation return against env
steps, mean and min-max over seeds) and, with --video or --video-every N, DIR/videos/ (a GIF
of one evaluation episode, see mbrl_jax.run.video).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from mbrl_jax.algorithms import dreamer
from mbrl_jax.run import cli as run_cli


def parse(argv: list[str]) -> run_cli.RunArgs[dreamer.Config]:
  return run_cli.parse(argv, config_cls=dreamer.Config, presets=dreamer.PRESETS,
                       default_preset="quick", description=__doc__)


def main(argv: list[str] | None = None) -> dict[str, np.ndarray]:
  args = parse(sys.argv[1:] if argv is None else argv)
  config = args.config
  kind = "pixels" if config.pixels else "vector"
  run = run_cli.start(args, name="dreamer",
                      run_name=f"dreamer-{config.env}-{kind}-{args.preset}-"
                               f"{time.strftime('%Y%m%d-%H%M%S')}")

  def line(chunk: int, metrics: dict, wall: float) -> str:
    r = metrics["eval/return"]
    return (f"chunk {chunk}: env steps {int(metrics['env_steps'].mean())} | eval return "
            f"mean {r.mean():.1f} min {r.min():.1f} max {r.max():.1f} | train return "
            f"{np.nanmean(metrics['train/return']):.1f} | wm loss "
            f"{metrics['model/loss'].mean():.3f} | {wall:.1f} s "
            f"({1e3 * wall / config.chunk_steps:.1f} ms per env step)")

  return run.execute(
      dreamer.make(config), title=f"Dreamer {config.env} ({kind})", line_fn=line,
      header=f"Dreamer on {config.env} ({kind}): preset {args.preset}, seeds {run.seeds}, "
             f"{config.env_steps} env steps in {config.num_chunks} chunks of "
             f"{config.chunk_steps} after a prefill of {config.prefill}")


if __name__ == "__main__":
  main()
