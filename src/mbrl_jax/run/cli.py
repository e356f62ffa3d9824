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
import re
import sys
import time
from typing import Annotated, Any, Callable, Generic, TypeVar

import docstring_parser
import jax
import jax.numpy as jnp
import numpy as np
import tqdm
import tyro

from mbrl_jax.run import config as config_lib
from mbrl_jax.run.checkpoint import Checkpointer, CheckpointError, run_meta
from mbrl_jax.run.devices import seed_mesh, shard_seeds
from mbrl_jax.run.loop import train
from mbrl_jax.run.metrics import MetricsWriter
from mbrl_jax.run.plot import plot_learning_curves
from mbrl_jax.run import video as video_lib

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
  """Continue the run in this directory from its latest checkpoint, with its saved options.
  Other options may be given too (the original command with --resume DIR added), but must match
  the saved run; --distributed is the one that may differ. The finished run equals an
  uninterrupted one."""
  video: bool = False
  """After the run, film one evaluation episode of the final policy (seed 0) into
  OUT/videos/ (rendered after the compiled chunks, see mbrl_jax.run.video)."""
  video_every: int = 0
  """Also film the policy after every N-th chunk (0: never)."""
  video_format: str = "gif"
  """gif, or mp4 (needs imageio-ffmpeg)."""


# Options that are not part of a run's identity: a resumed run may give them differently.
_PER_LAUNCH = ("distributed", "resume", "out", "video", "video-every", "video-format")


def parse(argv: list[str], *, config_cls: type[C], presets: dict[str, C], default_preset: str,
          description: str) -> RunArgs[C]:
  """Reads --preset first, then parses everything else over that preset's values. With
  --resume DIR, parses the other options over the arguments saved in DIR/config.json and exits
  with a message naming each option that differs from the saved run. Exits with a message on
  an unknown preset."""
  pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  pre.add_argument("--preset", default=default_preset)
  pre.add_argument("--resume", type=pathlib.Path, default=None)
  known, _ = pre.parse_known_args(argv)
  description = f"{description}\nPresets: {', '.join(presets)} (default {default_preset})."
  if known.resume is not None:
    saved = saved_args(known.resume, config_cls)
    here = _cli(config_cls, saved, argv, description)
    _check_same_run(here, saved)
    return dataclasses.replace(saved, distributed=here.distributed, video=here.video,
                               video_every=here.video_every, video_format=here.video_format)
  if known.preset not in presets:
    raise SystemExit(f"error: unknown preset {known.preset!r}; valid: {', '.join(presets)}")
  default = RunArgs(config=presets[known.preset], preset=known.preset)
  return _cli(config_cls, default, argv, description)


def _cli(config_cls: type, default: RunArgs, argv: list[str], description: str) -> RunArgs:
  """tyro over RunArgs; a config that refuses its values (its `__post_init__`) is one line."""
  try:
    return tyro.cli(RunArgs[config_cls], default=default, args=argv, description=description,
                    registry=HELP_REGISTRY)
  except ValueError as e:
    raise SystemExit(f"error: {e}") from None


def _check_same_run(here: RunArgs, saved: RunArgs) -> None:
  """Exits naming every option of `here` (parsed over `saved`) that differs from the saved
  run's, and an --out that is not the resumed directory."""
  run_dir = saved.resume
  if here.out is not None and here.out.resolve() != run_dir.resolve():
    raise SystemExit(f"error: --resume {run_dir}: --out is {here.out} here; a resumed run "
                     f"stays in {run_dir} (drop --out or make it {run_dir})")
  diffs = [f"{flag} is {_shown(a)} here but {_shown(b)} in the saved run"
           for flag, a, b in _differences(here, saved, "") if flag.strip("-") not in _PER_LAUNCH]
  if diffs:
    raise SystemExit(f"error: --resume {run_dir}: " + "; ".join(diffs)
                     + " (drop those options, or start a new run with another --out)")


def _differences(a: Any, b: Any, prefix: str) -> list[tuple[str, Any, Any]]:
  """(flag, value in a, value in b) for each leaf where two dataclass trees differ."""
  out = []
  for field in dataclasses.fields(a):
    x, y = getattr(a, field.name), getattr(b, field.name)
    # RunArgs.config has no name of its own on the command line; tyro writes a field
    # `num_particles` as --num-particles (inner underscores only: `lambda_` stays).
    core = field.name.strip("_")
    part = field.name.replace(core, core.replace("_", "-"), 1)
    name = "" if field.name == "config" and not prefix else prefix + part
    if dataclasses.is_dataclass(x) and type(x) is type(y):
      out += _differences(x, y, f"{name}." if name else "")
    elif x != y:
      out.append((f"--{name}", x, y))
  return out


def _shown(value: Any) -> str:
  """A value as it is written on the command line."""
  if isinstance(value, (tuple, list)):
    return " ".join(map(str, value)) or "()"
  if dataclasses.is_dataclass(value):
    return type(value).__name__
  return str(value)


def _one_paragraph(text: str | None) -> str | None:
  """Joins a docstring's hard-wrapped lines: each blank-line-separated block becomes one
  paragraph (lines starting a list item, "- " or "* ", stay on their own line)."""
  if text is None:
    return None
  paragraphs = []
  for block in re.split(r"\n\s*\n", text.strip()):
    lines = [line.strip() for line in block.splitlines()]
    paragraphs.append(lines[0] + "".join(
        ("\n" if line[:2] in ("- ", "* ") else " ") + line for line in lines[1:]))
  return "\n\n".join(paragraphs)


def _grouped_attributes(cls: type) -> dict[str, str]:
  """Field name -> description for the entries of `cls`'s "Attributes:" section that document
  several fields at once ("actor_lr, critic_lr: Adam step sizes."), which tyro skips."""
  out = {}
  for klass in cls.__mro__:
    for param in docstring_parser.parse(klass.__doc__ or "").params:
      if "," in param.arg_name and param.description:
        for name in param.arg_name.split(","):
          out.setdefault(name.strip(), param.description)
  return out


def _help_registry() -> tyro.constructors.ConstructorRegistry:
  """A tyro registry that shows every dataclass field's docstring (from a docstring under the
  field or from the class's "Attributes:" section, grouped entries included) as paragraphs
  that tyro wraps to the terminal, instead of keeping the source's line breaks."""
  registry = tyro.constructors.ConstructorRegistry()
  inside = []

  @registry.struct_rule
  def unwrap_helptext(info):
    if inside or not dataclasses.is_dataclass(info.type):
      return None
    inside.append(True)
    try:  # tyro's own rule for this dataclass; ours steps aside while it runs
      spec = tyro.constructors.ConstructorRegistry.get_struct_spec(info)
    finally:
      inside.pop()
    if not isinstance(spec, tyro.constructors.StructConstructorSpec):
      return spec

    def unwrapped(name, helptext):
      def text():
        found = helptext() if callable(helptext) else helptext
        return _one_paragraph(found or _grouped_attributes(info.type).get(name))
      return text

    return dataclasses.replace(spec, fields=tuple(
        dataclasses.replace(f, helptext=unwrapped(f.name, f.helptext)) for f in spec.fields))

  return registry


# The scripts' tyro registry: help as one paragraph per field (benchmarks parse with it too).
HELP_REGISTRY = _help_registry()


def saved_record(args: RunArgs, name: str) -> dict:
  """What a run saves in its config.json: the algorithm's name and the arguments that make the
  run (`saved_args` reads them back)."""
  return {"algorithm": name, "preset": args.preset, "seed": args.seed, "seeds": args.seeds,
          "checkpoint_every": args.checkpoint_every, "tensorboard": args.tensorboard,
          "config": dataclasses.asdict(args.config)}


def saved_args(run_dir: pathlib.Path, config_cls: type[C]) -> RunArgs[C]:
  """The arguments a run in `run_dir` was started with (from its config.json)."""
  if not run_dir.exists():
    raise SystemExit(f"error: --resume {run_dir}: no such directory")
  if not run_dir.is_dir():
    raise SystemExit(f"error: --resume {run_dir}: not a directory (give a run's directory)")
  path = run_dir / "config.json"
  if not path.exists():
    raise SystemExit(f"error: --resume {run_dir}: no config.json there (not a run directory?)")
  what = f"{config_cls.__module__}.{config_cls.__name__}"
  try:
    saved = json.loads(path.read_text())
  except ValueError as e:
    raise SystemExit(f"error: --resume {run_dir}: config.json is not JSON ({e})") from None
  try:
    config = config_lib.from_dict(config_cls, saved["config"])
    return RunArgs(config=config, preset=saved["preset"], seed=saved["seed"],
                   seeds=saved["seeds"], out=run_dir,
                   checkpoint_every=saved.get("checkpoint_every", 1),
                   tensorboard=saved.get("tensorboard", False), resume=run_dir)
  except (KeyError, TypeError, ValueError) as e:
    algorithm = saved.get("algorithm") if isinstance(saved, dict) else None
    if isinstance(algorithm, str) and algorithm not in config_cls.__module__.split("."):
      raise SystemExit(f"error: --resume {run_dir}: that is a {algorithm} run, not a {what} "
                       f"run (resume it with experiments/{algorithm}.py)") from None
    raise SystemExit(f"error: --resume {run_dir}: config.json is not a {what} "
                     f"({type(e).__name__}: {e})") from None


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

  def execute(self, algorithm: Any, *, title: str, header: str,
              line_fn: Callable[[int, dict, float], str], x: str = "env_steps",
              y: str | None = None) -> dict[str, np.ndarray]:
    """What every script does with its algorithm: print `header` (and where the run goes or
    what it resumes), drive `mbrl_jax.run.train` with progress rows and a bar, turn a
    checkpoint or NaN stop into a one-line exit, then draw DIR/learning_curve.png, `y`
    (default: `plot.default_y`) against `x`. Returns the history."""
    unit = algorithm.unit
    if self.resume_from is None:
      what = f"-> {self.out}"
    elif self.resume_from == 0:                   # the checkpoint written after init
      what = f"resuming {self.out} from its start (after init)"
    else:
      what = f"resuming {self.out} after {unit} {self.resume_from - 1}"
    print(f"{header} {what}", flush=True)
    progress = self.progress(total=algorithm.num_chunks, desc=title, index=unit,
                             line_fn=line_fn)
    videos: list[str] = []
    every = self.args.video_every

    def film(i: int, state: Any) -> None:
      path = self.out / "videos" / f"{algorithm.name}_{unit}{i}.{self.args.video_format}"
      path, ret = video_lib.film(algorithm.name, algorithm.config, state, path, seed_index=0)
      videos.append(str(path))
      if self.bar is not None:
        self.bar.write(f"{unit} {i}: filmed an evaluation episode (seed {self.seeds[0]}, "
                       f"return {ret:.1f}) -> {path}")

    state_fn = None
    if every:
      state_fn = lambda i, state: film(i, state) if (i + 1) % every == 0 else None
    try:
      state, history = train(algorithm, self.keys, progress_fn=progress, state_fn=state_fn,
                             **self.train_kwargs)
      last = algorithm.num_chunks - 1
      if self.args.video and not (every and (last + 1) % every == 0):
        film(last, state)
    except (CheckpointError, FloatingPointError) as e:
      raise SystemExit(f"error: {e}") from None
    finally:
      self.close()
    png = plot_learning_curves([self.out], self.out / "learning_curve.png", x=x, y=y,
                               title=f"{title} ({self.args.preset})")
    print(f"wrote {self.writer.jsonl}, {self.writer.csv}, {self.out / 'config.json'}, {png}")
    if videos:
      print("videos: " + ", ".join(videos))
    return history

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
    self.writer.close()


def start(args: RunArgs, *, name: str, validate: Callable[[Any], None] | None = None,
          run_name: str | None = None) -> Run:
  """Checks the arguments (before anything compiles), creates the run directory with its
  config.json (or finds the resumed run's), and builds the seed keys.

  Args:
    args: from `parse`.
    name: the algorithm's `Algorithm.name`, for messages, checkpoints and the default
      directory ("pets").
    validate: what the algorithm checks beyond the config's own `__post_init__` (raises
      ValueError naming the field), e.g. `mbpo.check_model_run`.
    run_name: the default directory's name after runs/ (default NAME-ENV-PRESET-TIMESTAMP).
  """
  if args.distributed:
    jax.distributed.initialize()
  if args.seeds < 1:
    raise SystemExit(f"error: --seeds must be >= 1, got {args.seeds}")
  if not 0 <= args.seed <= 2**32 - args.seeds:
    # jax.random.key keeps 32 bits: a larger or negative seed would repeat another one.
    raise SystemExit(f"error: --seed must be in [0, 2**32 - seeds] (seeds are 32-bit), got "
                     f"{args.seed}")
  if args.checkpoint_every < 1:
    raise SystemExit(f"error: --checkpoint-every must be >= 1, got {args.checkpoint_every}")
  if args.video_every < 0:
    raise SystemExit(f"error: --video-every must be >= 0, got {args.video_every}")
  if args.video_format not in video_lib.FORMATS:
    raise SystemExit(f"error: --video-format must be one of {', '.join(video_lib.FORMATS)}, "
                     f"got {args.video_format!r}")
  if args.video_format == "mp4" and not video_lib.can_write_mp4():
    raise SystemExit("error: --video-format mp4 needs imageio-ffmpeg (pip install "
                     "imageio-ffmpeg); --video-format gif needs nothing more")
  if (args.video or args.video_every) and name not in video_lib.POLICIES:
    raise SystemExit(f"error: --video: no video for {name} yet (available: "
                     f"{', '.join(video_lib.POLICIES)})")
  try:
    if validate is not None:
      validate(args.config)
  except ValueError as e:
    raise SystemExit(f"error: {e}") from None
  env = getattr(args.config, "env", "env")
  out = args.out or pathlib.Path("runs") / (
      run_name or f"{name}-{env}-{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}")
  if args.resume is None:
    if out.exists() and not out.is_dir():
      raise SystemExit(f"error: --out {out} is a file; give a directory (nothing was written)")
    if (out / "metrics.jsonl").exists():
      raise SystemExit(f"error: {out / 'metrics.jsonl'} exists; choose another --out or "
                       f"--resume {out} (nothing was changed)")
    try:
      out.mkdir(parents=True, exist_ok=True)
      (out / "config.json").write_text(json.dumps(saved_record(args, name), indent=1))
    except OSError as e:
      raise SystemExit(f"error: --out {out}: cannot create it ({e.strerror or e})") from None
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
    if resume_from is None:
      print(f"--resume {out}: no checkpoint there yet, so the run starts over", flush=True)
  return Run(args=args, out=out, seeds=seeds, keys=keys,
             writer=MetricsWriter(out, tensorboard=args.tensorboard), resume_from=resume_from)
