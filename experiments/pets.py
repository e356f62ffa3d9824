"""Run PETS: every config field on the command line, N seeds vmapped in one compiled call.

  python experiments/pets.py --preset quick --out runs/pets_quick
  python experiments/pets.py --preset mbrl-lib-notebook --seeds 5 --out runs/pets_notebook
  python experiments/pets.py --env cartpole_swingup --planner.horizon 25 --trials 15 --help
  python experiments/pets.py planner.optimizer:icem-config --planner.optimizer.population 50

  python experiments/pets.py --resume runs/pets_notebook        # after a crash or a kill

Writes DIR/config.json (the resolved config), DIR/metrics.jsonl and DIR/metrics.csv (one row
per seed and trial: seed, trial, env_steps, return, model and planner statistics, wall time),
DIR/learning_curve.png (mean and min-max over seeds) and DIR/checkpoints/ (orbax). Trial 0 is
the random-action trial.
"""

from __future__ import annotations

import sys

import numpy as np

from mbrl_jax import models
from mbrl_jax import planning
from mbrl_jax import run as run_lib
from mbrl_jax.algorithms import pets
from mbrl_jax.run import cli as run_cli
from mbrl_jax.run.plot import plot_learning_curves

PRESETS: dict[str, pets.Config] = {
    # A few minutes on a 2-core CPU: the PETS model, a smaller planner.
    "quick": pets.Config(
        env="cartpole_continuous", trials=5, random_trials=1, trial_length=200,
        planner=pets.PlannerConfig(
            optimizer=planning.CEMConfig(population=100, iterations=5, elite_ratio=0.1,
                                         alpha=0.1, return_mean_elites=True),
            horizon=15, num_particles=10)),
    # mbrl-lib's PETS example notebook (cartpole_continuous).
    "mbrl-lib-notebook": pets.Config(
        env="cartpole_continuous", trials=5, random_trials=1, trial_length=200,
        model=pets.ModelConfig(num_members=5, hidden_sizes=(200, 200, 200), activation="silu"),
        fit=models.FitConfig(learning_rate=1e-3, weight_decay=5e-5, batch_size=32,
                             max_epochs=50, holdout_ratio=0.05, patience=None),
        planner=pets.PlannerConfig(
            optimizer=planning.CEMConfig(population=350, iterations=5, elite_ratio=0.1,
                                         alpha=0.1, return_mean_elites=True),
            horizon=15, num_particles=20, propagation="tsinf")),
}


def parse(argv: list[str]) -> run_cli.RunArgs[pets.Config]:
  return run_cli.parse(argv, config_cls=pets.Config, presets=PRESETS, default_preset="quick",
                       description=__doc__)


def main(argv: list[str] | None = None) -> dict[str, np.ndarray]:
  args = parse(sys.argv[1:] if argv is None else argv)
  config = args.config
  run = run_cli.start(args, name="pets", validate=pets.validate, meta_fn=pets.checkpoint_meta)
  total = config.random_trials + config.trials

  def line(trial: int, metrics: dict, wall: float) -> str:
    r = metrics["return"]
    extra = ""
    if "model_holdout_mse" in metrics:
      extra = f" | model holdout mse {metrics['model_holdout_mse'].mean():.2e}"
    return (f"trial {trial}/{total - 1}: return mean {r.mean():.1f} min {r.min():.1f} "
            f"max {r.max():.1f} | env steps {int(metrics['env_steps'].mean())}{extra} | "
            f"{wall:.1f} s")

  what = (f"resuming {run.out} after trial {run.resume_from - 1}"
          if run.resume_from is not None else f"-> {run.out}")
  print(f"PETS on {config.env}: preset {args.preset}, seeds {run.seeds}, "
        f"{config.random_trials} random + {config.trials} planned trials of "
        f"{config.trial_length} steps {what}", flush=True)
  progress = run.progress(total=total, desc=f"PETS {config.env}", index="trial", line_fn=line)
  try:
    _, history = pets.train(run.keys, config, progress_fn=progress, **run.train_kwargs)
  except (run_lib.CheckpointError, FloatingPointError) as e:
    raise SystemExit(f"error: {e}") from None
  finally:
    run.close()
  png = plot_learning_curves([run.out], run.out / "learning_curve.png",
                             title=f"PETS {config.env} ({args.preset})")
  print("returns per trial (rows: trials, columns: seeds):")
  for t, r in enumerate(history["return"]):
    print(f"  trial {t}: " + " ".join(f"{v:6.1f}" for v in np.atleast_1d(r)))
  print(f"wrote {run.writer.jsonl}, {run.writer.csv}, {run.out / 'config.json'}, {png}")
  return history


if __name__ == "__main__":
  main()
