"""Run PETS: every config field on the command line, N seeds vmapped in one compiled call.

  python experiments/pets.py --preset quick --out runs/pets_quick
  python experiments/pets.py --preset mbrl-lib-notebook --seeds 5 --out runs/pets_notebook
  python experiments/pets.py --env cartpole_swingup --planner.horizon 25 --trials 15 --help

  python experiments/pets.py --resume runs/pets_notebook        # after a crash or a kill

Writes DIR/config.json (the resolved config), DIR/metrics.jsonl and DIR/metrics.csv (one row
per seed and trial: seed, trial, env_steps, return, model and planner statistics, wall time),
DIR/learning_curve.png (mean and min-max over seeds) and DIR/checkpoints/ (orbax). Trial 0 is
the random-action trial.
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
from mbrl_jax import run as run_lib
from mbrl_jax.run import config as run_config
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
  """Number of seeds, vmapped through one compiled call per trial (split over the devices when
  there are several)."""
  out: pathlib.Path | None = None
  """Output directory (created; one holding a metrics.jsonl is refused, never overwritten).
  Default: runs/pets-ENV-PRESET-TIMESTAMP."""
  checkpoint_every: int = 1
  """Checkpoint the whole training state (orbax, in OUT/checkpoints) every N trials."""
  tensorboard: bool = False
  """Also log metrics to OUT/tensorboard (needs tensorboardX)."""
  distributed: bool = False
  """Multi-host: call jax.distributed.initialize() first (it reads JAX_COORDINATOR_ADDRESS,
  JAX_NUM_PROCESSES and JAX_PROCESS_ID, or the cluster's environment); run the same command
  on every host."""
  resume: pathlib.Path | None = None
  """Continue the run in this directory from its latest checkpoint, with its saved config
  (give no other option). The finished run equals an uninterrupted one."""


def parse(argv: list[str]) -> Args:
  """Reads --preset first, then parses everything else over that preset's values; with
  --resume DIR, the arguments saved in DIR/config.json."""
  pre = argparse.ArgumentParser(add_help=False)
  pre.add_argument("--preset", default="quick")
  pre.add_argument("--resume", type=pathlib.Path, default=None)
  known, rest = pre.parse_known_args(argv)
  if known.resume is not None:
    if rest or "--preset" in argv:
      raise SystemExit(f"error: --resume takes the run's saved config; drop {rest or argv}")
    return saved_args(known.resume)
  if known.preset not in PRESETS:
    raise SystemExit(f"error: unknown preset {known.preset!r}; valid: {', '.join(PRESETS)}")
  default = Args(config=PRESETS[known.preset], preset=known.preset)
  return tyro.cli(Args, default=default, args=argv, description=__doc__)


def saved_args(run_dir: pathlib.Path) -> Args:
  """The arguments a run in `run_dir` was started with (from its config.json)."""
  path = run_dir / "config.json"
  if not path.exists():
    raise SystemExit(f"error: --resume {run_dir}: no config.json there (not a run directory?)")
  saved = json.loads(path.read_text())
  try:
    config = run_config.from_dict(pets.Config, saved["config"])
  except (KeyError, TypeError, ValueError) as e:
    raise SystemExit(f"error: --resume {run_dir}: config.json is not a PETS config ({e})")
  return Args(config=config, preset=saved["preset"], seed=saved["seed"], seeds=saved["seeds"],
              out=run_dir, checkpoint_every=saved.get("checkpoint_every", 1),
              tensorboard=saved.get("tensorboard", False), resume=run_dir)


def main(argv: list[str] | None = None) -> dict[str, np.ndarray]:
  args = parse(sys.argv[1:] if argv is None else argv)
  if args.distributed:
    jax.distributed.initialize()
  config = args.config
  if args.seeds < 1:
    raise SystemExit(f"error: --seeds must be >= 1, got {args.seeds}")
  if args.checkpoint_every < 1:
    raise SystemExit(f"error: --checkpoint-every must be >= 1, got {args.checkpoint_every}")
  try:
    pets.validate(config)
  except ValueError as e:
    raise SystemExit(f"error: {e}") from None
  out = args.out or pathlib.Path("runs") / (
      f"pets-{config.env}-{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}")
  ckpt_dir = out / "checkpoints"
  if args.resume is None:
    if (out / "metrics.jsonl").exists():
      raise SystemExit(f"error: {out / 'metrics.jsonl'} exists; choose another --out or "
                       f"--resume {out} (nothing was changed)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(
        {"preset": args.preset, "seed": args.seed, "seeds": args.seeds,
         "checkpoint_every": args.checkpoint_every, "tensorboard": args.tensorboard,
         "config": dataclasses.asdict(config)}, indent=1))

  seeds = list(range(args.seed, args.seed + args.seeds))
  keys = jnp.stack([jax.random.key(s) for s in seeds])
  if jax.device_count() > 1:
    mesh = run_lib.seed_mesh(len(seeds))
    keys = run_lib.shard_seeds(keys, mesh)
    print(f"seeds split over {mesh.devices.size} of {jax.device_count()} devices", flush=True)
  total = config.random_trials + config.trials
  resume_from = None
  if args.resume is not None:
    resume_from = run_lib.Checkpointer(
        ckpt_dir, meta=pets.checkpoint_meta(keys, config)).latest_step()
  writer = run_lib.MetricsWriter(out, tensorboard=args.tensorboard)
  bar = tqdm.tqdm(total=total, initial=resume_from or 0, desc=f"PETS {config.env}",
                  unit="trial", file=sys.stdout)
  clock = {"t": time.perf_counter(), "first": True}

  def progress(trial: int, metrics: dict) -> None:
    if clock["first"]:
      # Rows written after the checkpoint we resumed from are redone, so forget them (only
      # now: a refused checkpoint leaves the files as they were).
      writer.keep_only(lambda row: resume_from is not None and row["trial"] < resume_from)
      clock["first"] = False
    now = time.perf_counter()
    wall, clock["t"] = now - clock["t"], now
    rows = [{"seed": s, "trial": trial, "wall_s": wall,
             **{k: v[i] for k, v in metrics.items()}} for i, s in enumerate(seeds)]
    writer.write(rows)
    r = metrics["return"]
    bar.update(1)
    bar.set_postfix(ret=f"{r.mean():.1f}")
    extra = ""
    if "model_holdout_mse" in metrics:
      extra = f" | model holdout mse {metrics['model_holdout_mse'].mean():.2e}"
    bar.write(f"trial {trial}/{total - 1}: return mean {r.mean():.1f} min {r.min():.1f} "
              f"max {r.max():.1f} | env steps {int(metrics['env_steps'].mean())}{extra} | "
              f"{wall:.1f} s")

  what = (f"resuming {out} after trial {resume_from - 1}" if resume_from is not None else
          f"-> {out}")
  print(f"PETS on {config.env}: preset {args.preset}, seeds {seeds}, "
        f"{config.random_trials} random + {config.trials} planned trials of "
        f"{config.trial_length} steps {what}", flush=True)
  try:
    _, history = pets.train(keys, config, progress_fn=progress, checkpoint_dir=ckpt_dir,
                            checkpoint_every=args.checkpoint_every,
                            resume=args.resume is not None)
  except (run_lib.CheckpointError, FloatingPointError) as e:
    raise SystemExit(f"error: {e}") from None
  finally:
    bar.close()
    writer.close()
  png = plot_learning_curves([out], out / "learning_curve.png",
                             title=f"PETS {config.env} ({args.preset})")
  print("returns per trial (rows: trials, columns: seeds):")
  for t, r in enumerate(history["return"]):
    print(f"  trial {t}: " + " ".join(f"{v:6.1f}" for v in np.atleast_1d(r)))
  print(f"wrote {writer.jsonl}, {writer.csv}, {out / 'config.json'}, {png}")
  return history


if __name__ == "__main__":
  main()
