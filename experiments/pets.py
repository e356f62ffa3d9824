"""Run PETS: every config field on the command line, N seeds vmapped in one compiled call.

  python experiments/pets.py --preset quick --out runs/pets_quick
  python experiments/pets.py --preset mbrl-lib-notebook --seeds 5 --out runs/pets_notebook
  python experiments/pets.py --env cartpole_swingup --planner.horizon 25 --trials 15 --help
  python experiments/pets.py planner.optimizer:icem-config --planner.optimizer.population 50

  python experiments/pets.py --preset quick --env gymnasium:Pendulum-v1 --trials 9 --video

  python experiments/pets.py --resume runs/pets_notebook        # after a crash or a kill

Writes DIR/config.json (the resolved config), DIR/metrics.jsonl and DIR/metrics.csv (one row
per seed and trial: seed, trial, env_steps, train/return, model/... and planner/... statistics,
wall time),
DIR/learning_curve.png (mean and min-max over seeds), DIR/checkpoints/ (orbax) and, with --video
or --video-every N, DIR/videos/ (a GIF of one evaluation episode, see mbrl_jax.run.video).
Trial 0 is the random-action trial.
"""

from __future__ import annotations

import sys

import numpy as np

from mbrl_jax.algorithms import pets
from mbrl_jax.run import cli as run_cli


def parse(argv: list[str]) -> run_cli.RunArgs[pets.Config]:
  return run_cli.parse(argv, config_cls=pets.Config, presets=pets.PRESETS,
                       default_preset="quick", description=__doc__)


def main(argv: list[str] | None = None) -> dict[str, np.ndarray]:
  args = parse(sys.argv[1:] if argv is None else argv)
  config = args.config
  run = run_cli.start(args, name="pets")
  total = config.random_trials + config.trials

  def line(trial: int, metrics: dict, wall: float) -> str:
    r = metrics["train/return"]
    extra = ""
    if "model/holdout_mse" in metrics:
      extra = f" | model holdout mse {metrics['model/holdout_mse'].mean():.2e}"
    return (f"trial {trial}/{total - 1}: return mean {r.mean():.1f} min {r.min():.1f} "
            f"max {r.max():.1f} | env steps {int(metrics['env_steps'].mean())}{extra} | "
            f"{wall:.1f} s")

  history = run.execute(
      pets.make(config), title=f"PETS {config.env}", line_fn=line, x="trial",
      header=f"PETS on {config.env}: preset {args.preset}, seeds {run.seeds}, "
             f"{config.random_trials} random + {config.trials} planned trials of "
             f"{config.trial_length} steps")
  print("returns per trial (rows: trials, columns: seeds):")
  for t, r in enumerate(history["train/return"]):
    print(f"  trial {t}: " + " ".join(f"{v:6.1f}" for v in np.atleast_1d(r)))
  return history


if __name__ == "__main__":
  main()
