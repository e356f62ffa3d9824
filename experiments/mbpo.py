"""Run MBPO: every config field on the command line, N seeds vmapped in one compiled call.

  python experiments/mbpo.py --preset quick --out runs/mbpo_quick
  python experiments/mbpo.py --preset inverted_pendulum --seeds 3 --out runs/mbpo_ip
  python experiments/mbpo.py --preset hopper --env-steps 30000 --rollout.rollouts-per-step 100
  python experiments/mbpo.py --help

  python experiments/mbpo.py --preset quick --env gymnasium:Pendulum-v1 --video-every 5

  python experiments/mbpo.py --resume runs/mbpo_ip                    # after a crash or a kill

Writes DIR/config.json (the resolved config), DIR/metrics.jsonl and .csv (one row per seed and
epoch: seed, epoch, env_steps, eval/return = mean deterministic evaluation return over the
evaluation episodes, train/return, model/..., rollout/... and sac/... statistics, wall time),
DIR/learning_curve.png (eval/return against env steps, mean and min-max over seeds) and
DIR/checkpoints/ (orbax) and, with --video or --video-every N, DIR/videos/ (a GIF of
one evaluation episode, see mbrl_jax.run.video).
"""

from __future__ import annotations

import sys

import numpy as np

from mbrl_jax.algorithms import mbpo
from mbrl_jax.run import cli as run_cli


def parse(argv: list[str]) -> run_cli.RunArgs[mbpo.Config]:
  return run_cli.parse(argv, config_cls=mbpo.Config, presets=mbpo.PRESETS,
                       default_preset="quick", description=__doc__)


def main(argv: list[str] | None = None) -> dict[str, np.ndarray]:
  args = parse(sys.argv[1:] if argv is None else argv)
  config = args.config
  run = run_cli.start(args, name="mbpo", validate=mbpo.check_model_run)

  def line(epoch: int, metrics: dict, wall: float) -> str:
    r = metrics["eval/return"]
    return (f"epoch {epoch + 1}/{config.epochs}: eval return mean {r.mean():.1f} "
            f"min {r.min():.1f} max {r.max():.1f} | env steps "
            f"{int(metrics['env_steps'].mean())} | k {int(metrics['rollout/length'].mean())} | "
            f"model holdout mse {metrics['model/holdout_mse'].mean():.2e} | alpha "
            f"{metrics['sac/alpha'].mean():.3f} | {wall:.1f} s "
            f"({wall / config.epoch_length * 1e3:.1f} ms/step)")

  history = run.execute(
      mbpo.make(config), title=f"MBPO {config.env}", line_fn=line,
      header=f"MBPO on {config.env}: preset {args.preset}, seeds {run.seeds}, "
             f"{config.init_exploration_steps} random steps + {config.epochs} epochs of "
             f"{config.epoch_length} steps")
  print("evaluation return per epoch (rows: epochs, columns: seeds):")
  for e, (steps, r) in enumerate(zip(history["env_steps"], history["eval/return"])):
    print(f"  epoch {e} ({int(np.mean(steps))} steps): "
          + " ".join(f"{v:8.1f}" for v in np.atleast_1d(r)))
  return history


if __name__ == "__main__":
  main()
