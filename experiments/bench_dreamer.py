"""Dreamer's cost at each preset: seconds per train step and per env step, and what running
the train steps inside the chunk's `lax.scan` costs against a plain jitted train step.

  python experiments/bench_dreamer.py --out results/bench_dreamer.json
  python experiments/bench_dreamer.py --presets pendulum pixels large

For each preset (`mbrl_jax.algorithms.dreamer.PRESETS`), with the preset's model and batch sizes:
  * train step: one world-model + actor-critic update as its own jitted call;
  * chunk: `--chunk-steps` env steps of (collect `train_every` steps, one train step) as one
    compiled call, the way `run.train(dreamer.make(config), key)` runs them, with one
    evaluation episode;
  * per env step = chunk / chunk steps; scan / plain = (chunk / train steps in it) / train step,
    about 1 when the scan adds nothing but the collection.
Times are medians over `--repeats` calls after a compiling call, the train step and the chunk
alternated (`benchlib.interleaved_medians`); seeds are 1.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
import time

import jax
import tyro

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import benchlib  # noqa: E402

from mbrl_jax import compile as compile_lib  # noqa: E402
from mbrl_jax.algorithms import dreamer  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Args:
  presets: tuple[str, ...] = ("pendulum", "pixels")
  """Presets of experiments/dreamer.py to time."""
  chunk_steps: int = 200
  """Env steps per timed chunk."""
  repeats: int = 2
  """Timed calls per measurement (after one compiling call)."""
  out: pathlib.Path | None = None
  """JSON file for the rows."""


def time_preset(name: str, args: Args) -> dict:
  if name not in dreamer.PRESETS:
    raise SystemExit(f"error: unknown preset {name!r}; valid: "
                     f"{', '.join(dreamer.PRESETS)}")
  base = dreamer.PRESETS[name]
  config = dataclasses.replace(base, chunk_steps=args.chunk_steps, eval_episodes=1,
                               env_steps=base.prefill + args.chunk_steps)
  parts = dreamer.make_parts(config)
  state = jax.jit(lambda k: dreamer.init(k, config, parts))(jax.random.key(0))
  train_step = compile_lib.jit(dreamer.make_train_step(config, parts))
  step_args = (state.model_params, state.model_opt, state.ac, state.buffer, jax.random.key(1))
  jax.block_until_ready(train_step(*step_args))
  chunk = compile_lib.jit(dreamer.make_step(config, parts))
  start = time.perf_counter()
  jax.block_until_ready(chunk(state))
  compile_s = time.perf_counter() - start
  # Alternated in one window, so the scan / plain ratio holds on a machine whose speed drifts.
  medians = benchlib.interleaved_medians(
      {"train_step": (train_step, step_args), "chunk": (chunk, (state,))}, args.repeats,
      warmup=0)
  step_s, chunk_s = medians["train_step"], medians["chunk"]
  rounds = config.chunk_steps // config.train_every
  return dict(preset=name, pixels=config.pixels, image_size=config.image_size,
              batch_size=config.batch_size, seq_len=config.seq_len,
              train_every=config.train_every, train_step_s=step_s, chunk_s=chunk_s,
              chunk_compile_s=compile_s, per_env_step_s=chunk_s / config.chunk_steps,
              scan_over_plain=chunk_s / rounds / step_s,
              env_steps_per_hour=3600 * config.chunk_steps / chunk_s)


def main(argv: list[str] | None = None) -> list[dict]:
  args = tyro.cli(Args, args=sys.argv[1:] if argv is None else argv, description=__doc__)
  rows = []
  print(f"{'preset':<10} {'obs':<10} {'train step':>11} {'env step':>9} {'scan/plain':>10} "
        f"{'env steps/h':>11}")
  for name in args.presets:
    row = {**time_preset(name, args), **benchlib.machine_info()}
    rows.append(row)
    obs = f"{row['image_size']}px" if row["pixels"] else "vector"
    print(f"{name:<10} {obs:<10} {row['train_step_s']:>10.3f}s {row['per_env_step_s']:>8.4f}s "
          f"{row['scan_over_plain']:>10.2f} {row['env_steps_per_hour']:>11.0f}", flush=True)
  benchlib.write_rows(args.out, rows)
  return rows


if __name__ == "__main__":
  main()
