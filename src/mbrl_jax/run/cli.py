"""What every experiment script shares: the command line (tyro over the algorithm's config
dataclasses, named presets, --resume), the run directory, seed keys on the device mesh, and a
progress callback that writes metric rows and drives a tqdm bar.

A script is then: `args = parse(argv, ...)`, `run = start(args, ...)`,
`mbrl_jax.run.train(module.make(args.config), run.keys, progress_fn=run.progress(...),
**run.train_kwargs)`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time
from typing import Annotated, Any, Callable, Generic, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
import tyro

from mbrl_jax.run import config as config_lib
from mbrl_jax.run.checkpoint import Checkpointer, run_meta
from mbrl_jax.run.devices import seed_mesh, shard_seeds
from mbrl_jax.run.metrics import MetricsWriter

C = TypeVar("C")


@dataclasses.dataclass(frozen=True)
class RunArgs(Generic[C]):
  config: Annotated[C, tyro.conf.arg(name="")]
  """The algorithm's configuration."""
  preset: str = ""
  """Named starting point for every other value (listed above)."""
  seed: int = 0
  """First seed; seeds run are seed, seed + 1, ..., seed + seeds - 1."""
  seeds: int = 1
  """Number of seeds, vmapped through one compiled call per chunk (split over the devices when
  there are several)."""
  out: pathlib.Path | None = None
  """Output directory (created; one holding a metrics.jsonl is refused, never overwritten).
  Default: runs/NAME-ENV-PRESET-TIMESTAMP."""
  checkpoint_every: int = 1
  """Checkpoint the whole training state (orbax, in OUT/checkpoints) every N chunks."""
  tensorboard: bool = False
  """Also log metrics to OUT/tensorboard (needs tensorboardX)."""
  distributed: bool = False
  """Multi-host: call jax.distributed.initialize() first (it reads JAX_COORDINATOR_ADDRESS,
  JAX_NUM_PROCESSES and JAX_PROCESS_ID, or the cluster's environment); run the same command
  on every host."""
  resume: pathlib.Path | None = None
  """Continue the run in this directory from its latest checkpoint, with its saved config
  (give no other option). The finished run equals an uninterrupted one."""


def parse(argv: list[str], *, config_cls: type[C], presets: dict[str, C], default_preset: str,
          description: str) -> RunArgs[C]:
  """Reads --preset first, then parses everything else over that preset's values; with
  --resume DIR, the arguments saved in DIR/config.json. Exits with a message on an unknown
  preset."""
  pre = argparse.ArgumentParser(add_help=False)
  pre.add_argument("--preset", default=default_preset)
  pre.add_argument("--resume", type=pathlib.Path, default=None)
  known, rest = pre.parse_known_args(argv)
  if known.resume is not None:
    if rest or "--preset" in argv:
      raise SystemExit(f"error: --resume takes the run's saved config; drop {rest or argv}")
    return saved_args(known.resume, config_cls)
  if known.preset not in presets:
    raise SystemExit(f"error: unknown preset {known.preset!r}; valid: {', '.join(presets)}")
  default = RunArgs(config=presets[known.preset], preset=known.preset)
  description = f"{description}\nPresets: {', '.join(presets)} (default {default_preset})."
  return tyro.cli(RunArgs[config_cls], default=default, args=argv, description=description)


def saved_args(run_dir: pathlib.Path, config_cls: type[C]) -> RunArgs[C]:
  """The arguments a run in `run_dir` was started with (from its config.json)."""
  path = run_dir / "config.json"
  if not path.exists():
    raise SystemExit(f"error: --resume {run_dir}: no config.json there (not a run directory?)")
  saved = json.loads(path.read_text())
  try:
    config = config_lib.from_dict(config_cls, saved["config"])
  except (KeyError, TypeError, ValueError) as e:
    raise SystemExit(f"error: --resume {run_dir}: config.json is not a {config_cls.__module__}"
                     f".{config_cls.__name__} ({e})") from None
  return RunArgs(config=config, preset=saved["preset"], seed=saved["seed"],
                 seeds=saved["seeds"], out=run_dir,
                 checkpoint_every=saved.get("checkpoint_every", 1),
                 tensorboard=saved.get("tensorboard", False), resume=run_dir)


@dataclasses.dataclass
class Run:
  """A started run: its directory, seeds, keys, metric writer and checkpoint settings."""

  args: RunArgs
  out: pathlib.Path
  seeds: list[int]
  keys: jax.Array                      # [S] typed keys, sharded over the seed mesh
  writer: MetricsWriter
  resume_from: int | None              # the checkpoint step resumed from
  bar: tqdm.tqdm | None = None         # made by `progress`

  @property
  def train_kwargs(self) -> dict[str, Any]:
    """checkpoint_dir, checkpoint_every and resume for the algorithm's `train`."""
    return dict(checkpoint_dir=str(self.out / "checkpoints"),
                checkpoint_every=self.args.checkpoint_every,
                resume=self.args.resume is not None)

  def progress(self, *, total: int, desc: str, index: str,
               line_fn: Callable[[int, dict, float], str] | None = None) -> Callable:
    """A `progress_fn(i, metrics)` for `train`: writes one row per seed ({"seed", index: i,
    "wall_s", **metrics}), updates a tqdm bar over `total` chunks (rate and ETA) and prints
    `line_fn(i, metrics, wall_s)`. On the first call of a resumed run it
    first drops the rows written after the checkpoint (they are redone)."""
    self.bar = tqdm.tqdm(total=total, initial=self.resume_from or 0, desc=desc, unit=index,
                         file=sys.stdout)
    clock = {"t": time.perf_counter(), "first": True}

    def progress_fn(i: int, metrics: dict) -> None:
      if clock["first"]:
        self.writer.keep_only(lambda row: self.resume_from is not None and
                              row[index] < self.resume_from)
        clock["first"] = False
      now = time.perf_counter()
      wall, clock["t"] = now - clock["t"], now
      self.writer.write([{"seed": s, index: i, "wall_s": wall,
                          **{k: np.asarray(v)[j] for k, v in metrics.items()}}
                         for j, s in enumerate(self.seeds)])
      self.bar.update(1)
      if line_fn is not None:
        self.bar.write(line_fn(i, metrics, wall))

    return progress_fn

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
    self.writer.close()


def start(args: RunArgs, *, name: str, validate: Callable[[Any], None],
          run_name: str | None = None) -> Run:
  """Checks the arguments (before anything compiles), creates the run directory with its
  config.json (or finds the resumed run's), and builds the seed keys.

  Args:
    args: from `parse`.
    name: the algorithm's `Algorithm.name`, for messages, checkpoints and the default
      directory ("pets").
    validate: the algorithm's config check (raises ValueError naming the field).
    run_name: the default directory's name after runs/ (default NAME-ENV-PRESET-TIMESTAMP).
  """
  if args.distributed:
    jax.distributed.initialize()
  if args.seeds < 1:
    raise SystemExit(f"error: --seeds must be >= 1, got {args.seeds}")
  if args.checkpoint_every < 1:
    raise SystemExit(f"error: --checkpoint-every must be >= 1, got {args.checkpoint_every}")
  try:
    validate(args.config)
  except ValueError as e:
    raise SystemExit(f"error: {e}") from None
  env = getattr(args.config, "env", "env")
  out = args.out or pathlib.Path("runs") / (
      run_name or f"{name}-{env}-{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}")
  if args.resume is None:
    if (out / "metrics.jsonl").exists():
      raise SystemExit(f"error: {out / 'metrics.jsonl'} exists; choose another --out or "
                       f"--resume {out} (nothing was changed)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(
        {"algorithm": name, "preset": args.preset, "seed": args.seed, "seeds": args.seeds,
         "checkpoint_every": args.checkpoint_every, "tensorboard": args.tensorboard,
         "config": dataclasses.asdict(args.config)}, indent=1))
  seeds = list(range(args.seed, args.seed + args.seeds))
  keys = jnp.stack([jax.random.key(s) for s in seeds])
  if jax.device_count() > 1:
    mesh = seed_mesh(len(seeds))
    keys = shard_seeds(keys, mesh)
    print(f"seeds split over {mesh.devices.size} of {jax.device_count()} devices", flush=True)
  resume_from = None
  if args.resume is not None:
    resume_from = Checkpointer(out / "checkpoints",
                               meta=run_meta(name, keys, args.config)).latest_step()
  return Run(args=args, out=out, seeds=seeds, keys=keys,
             writer=MetricsWriter(out, tensorboard=args.tensorboard), resume_from=resume_from)
