"""Run PETS: every config field on the command line, N seeds vmapped in one compiled call.

  python experiments/pets.py --preset quick --out runs/pets_quick
  python experiments/pets.py --preset mbrl-lib-notebook --seeds 5 --out runs/pets_notebook
  python experiments/pets.py --env cartpole_swingup --planner.horizon 25 --trials 15 --help

Writes DIR/config.json (the resolved config), DIR/metrics.jsonl (one row per seed and trial:
seed, trial, env_steps, return, model and planner statistics, wall time) and
DIR/learning_curve.png (mean and min-max over seeds). Trial 0 is the random-action trial.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time
from typing import Annotated, Literal

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
import tyro

from mbrl_jax import models
from mbrl_jax.algorithms import pets
from mbrl_jax.run import write_jsonl_rows
from mbrl_jax.run.plot import plot_learning_curves

PRESETS: dict[str, pets.Config] = {
    # A few minutes on a 2-core CPU: the PETS model, a smaller planner.
    "quick": pets.Config(
        env="cartpole_continuous", trials=5, random_trials=1, trial_length=200,
        planner=pets.PlannerConfig(optimizer="cem", horizon=15, population=100, iterations=5,
                                   elite_ratio=0.1, alpha=0.1, num_particles=10)),
    # mbrl-lib's PETS example notebook (cartpole_continuous).
    "mbrl-lib-notebook": pets.Config(
        env="cartpole_continuous", trials=5, random_trials=1, trial_length=200,
        model=pets.ModelConfig(num_members=5, hidden_sizes=(200, 200, 200), activation="silu"),
        fit=models.FitConfig(learning_rate=1e-3, weight_decay=5e-5, batch_size=32,
                             max_epochs=50, holdout_ratio=0.05, patience=None),
        planner=pets.PlannerConfig(optimizer="cem", horizon=15, population=350, iterations=5,
                                   elite_ratio=0.1, alpha=0.1, return_mean_elites=True,
                                   num_particles=20, propagation="tsinf")),
}
PresetName = Literal["quick", "mbrl-lib-notebook"]


@dataclasses.dataclass(frozen=True)
class Args:
  config: Annotated[pets.Config, tyro.conf.arg(name="")]
  """The PETS configuration."""
  preset: PresetName = "quick"
  """Named starting point for every other value (`quick` or `mbrl-lib-notebook`)."""
  seed: int = 0
  """First seed; seeds run are seed, seed + 1, ..., seed + seeds - 1."""
  seeds: int = 1
  """Number of seeds, vmapped through one compiled call per trial."""
  out: pathlib.Path | None = None
  """Output directory (created; one holding a metrics.jsonl is refused, never overwritten).
  Default: runs/pets-ENV-PRESET-TIMESTAMP."""


def parse(argv: list[str]) -> Args:
  """Reads --preset first, then parses everything else over that preset's values."""
  pre = argparse.ArgumentParser(add_help=False)
  pre.add_argument("--preset", default="quick")
  known, _ = pre.parse_known_args(argv)
  if known.preset not in PRESETS:
    raise SystemExit(f"error: unknown preset {known.preset!r}; valid: {', '.join(PRESETS)}")
  default = Args(config=PRESETS[known.preset], preset=known.preset)
  return tyro.cli(Args, default=default, args=argv, description=__doc__)


def main(argv: list[str] | None = None) -> dict[str, np.ndarray]:
  args = parse(sys.argv[1:] if argv is None else argv)
  config = args.config
  if args.seeds < 1:
    raise SystemExit(f"error: --seeds must be >= 1, got {args.seeds}")
  try:
    pets.validate(config)
  except ValueError as e:
    raise SystemExit(f"error: {e}") from None
  out = args.out or pathlib.Path("runs") / (
      f"pets-{config.env}-{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}")
  metrics_path = out / "metrics.jsonl"
  if metrics_path.exists():
    raise SystemExit(f"error: {metrics_path} exists; choose another --out (nothing was changed)")
  out.mkdir(parents=True, exist_ok=True)
  (out / "config.json").write_text(json.dumps(
      {"preset": args.preset, "seed": args.seed, "seeds": args.seeds,
       "config": dataclasses.asdict(config)}, indent=1))

  seeds = list(range(args.seed, args.seed + args.seeds))
  keys = jnp.stack([jax.random.key(s) for s in seeds])
  total = config.random_trials + config.trials
  bar = tqdm.tqdm(total=config.trials, desc=f"PETS {config.env}", unit="trial", file=sys.stdout)
  clock = {"t": time.perf_counter()}

  def progress(trial: int, metrics: dict) -> None:
    now = time.perf_counter()
    wall, clock["t"] = now - clock["t"], now
    rows = [{"seed": s, "trial": trial, "wall_s": wall,
             **{k: v[i] for k, v in metrics.items()}} for i, s in enumerate(seeds)]
    write_jsonl_rows(metrics_path, rows)
    r = metrics["return"]
    bar.update(1)
    bar.set_postfix(ret=f"{r.mean():.1f}")
    bar.write(f"trial {trial}/{total - 1}: return mean {r.mean():.1f} min {r.min():.1f} "
              f"max {r.max():.1f} | env steps {int(metrics['env_steps'].mean())} | "
              f"model holdout mse {metrics['model_holdout_mse'].mean():.2e} | {wall:.1f} s")

  print(f"PETS on {config.env}: preset {args.preset}, seeds {seeds}, "
        f"{config.random_trials} random + {config.trials} planned trials of "
        f"{config.trial_length} steps -> {out}", flush=True)
  _, history = pets.train(keys, config, progress_fn=progress)
  bar.close()
  # The random trials are known only at the end of init; write them too.
  random_rows = [{"seed": s, "trial": t, "return": history["return"][t, i],
                  "episode_length": history["episode_length"][t, i],
                  "env_steps": history["env_steps"][t, i]}
                 for t in range(config.random_trials) for i, s in enumerate(seeds)]
  write_jsonl_rows(metrics_path, random_rows)
  png = plot_learning_curves([out], out / "learning_curve.png",
                             title=f"PETS {config.env} ({args.preset})")
  print("returns per trial (rows: trials, columns: seeds):")
  for t, r in enumerate(history["return"]):
    print(f"  trial {t}: " + " ".join(f"{v:6.1f}" for v in np.atleast_1d(r)))
  print(f"wrote {metrics_path}, {out / 'config.json'}, {png}")
  return history


if __name__ == "__main__":
  main()
