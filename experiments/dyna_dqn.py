"""Run DQN or Deep Dyna (DQN on real plus imagined transitions): every config field on the
command line, N seeds vmapped in one compiled call per epoch.

  python experiments/dyna_dqn.py --preset quick --out runs/dyna_dqn_quick
  python experiments/dyna_dqn.py --preset cartpole_dqn --seeds 3 --out runs/cartpole_dqn
  python experiments/dyna_dqn.py --preset cartpole_dyna --seeds 3 --out runs/cartpole_dyna
  python experiments/dyna_dqn.py --preset cartpole_dyna --env-steps 50000 --rollout.length 3
  python experiments/dyna_dqn.py --help

  python experiments/dyna_dqn.py --resume runs/cartpole_dyna           # after a crash or a kill

`--model-rollouts` / `--no-model-rollouts` switches the model on or off with everything else
equal. Writes DIR/config.json (the resolved config), DIR/metrics.jsonl and .csv (one row per
seed and epoch: seed, epoch, env_steps, eval/return = mean greedy return of complete
evaluation episodes, train/return, dqn/..., model/... and rollout/... statistics, wall
time), DIR/learning_curve.png (eval/return against env steps, mean and min-max over seeds)
and DIR/checkpoints/ (orbax). At the end it prints the evaluation return per epoch and,
per seed, the first env step count whose evaluation reached 475.
"""

from __future__ import annotations

import sys

import numpy as np

from mbrl_jax.algorithms import dyna_dqn
from mbrl_jax.run import cli as run_cli

SOLVED = 475.0
"""CartPole-v1's reward threshold (gym's `spec.reward_threshold`)."""


def parse(argv: list[str]) -> run_cli.RunArgs[dyna_dqn.Config]:
  return run_cli.parse(argv, config_cls=dyna_dqn.Config, presets=dyna_dqn.PRESETS,
                       default_preset="quick", description=__doc__)


def first_reaching(env_steps: np.ndarray, returns: np.ndarray, threshold: float
                   ) -> list[int | None]:
  """Per seed, the env steps of the first epoch whose eval return is >= threshold (None if
  none); env_steps and returns [epochs, seeds]."""
  out = []
  for s in range(returns.shape[1]):
    hit = np.nonzero(returns[:, s] >= threshold)[0]
    out.append(int(env_steps[hit[0], s]) if hit.size else None)
  return out


def main(argv: list[str] | None = None) -> dict[str, np.ndarray]:
  args = parse(sys.argv[1:] if argv is None else argv)
  config = args.config
  name = "dyna_dqn" if config.model_rollouts else "dqn"
  run = run_cli.start(args, name=name)
  title = "Deep Dyna (DQN + model)" if config.model_rollouts else "DQN"

  def line(epoch: int, metrics: dict, wall: float) -> str:
    r = metrics["eval/return"]
    model = (f" | model holdout mse {metrics['model/holdout_mse'].mean():.2e} | rollout "
             f"length {metrics['rollout/mean_length'].mean():.2f}"
             if config.model_rollouts else "")
    return (f"epoch {epoch + 1}/{config.epochs}: eval return mean {r.mean():.1f} "
            f"min {r.min():.1f} max {r.max():.1f} | env steps "
            f"{int(metrics['env_steps'].mean())} | epsilon {metrics['dqn/epsilon'].mean():.3f}"
            f" | loss {metrics['dqn/loss'].mean():.3f}{model} | {wall:.1f} s")

  history = run.execute(
      dyna_dqn.make(config), title=f"{title} {config.env}", line_fn=line,
      header=f"{title} on {config.env}: preset {args.preset}, seeds {run.seeds}, "
             f"{config.init_exploration_steps} random steps + {config.epochs} epochs of "
             f"{config.epoch_length} steps")
  steps = np.asarray(history["env_steps"]).reshape(config.epochs, -1)
  returns = np.asarray(history["eval/return"]).reshape(config.epochs, -1)
  print("evaluation return per epoch (rows: epochs, columns: seeds):")
  for e in range(config.epochs):
    print(f"  epoch {e} ({int(steps[e].mean())} steps): "
          + " ".join(f"{v:8.1f}" for v in returns[e]))
  reached = first_reaching(steps, returns, SOLVED)
  print(f"first env steps with eval return >= {SOLVED:g}, per seed: "
        + ", ".join("not reached" if r is None else str(r) for r in reached)
        + "; best eval return per seed: " + ", ".join(f"{v:.1f}" for v in returns.max(0)))
  return history


if __name__ == "__main__":
  main()
