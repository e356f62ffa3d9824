"""Benchmark: seconds per env step of the DM Control tasks (MuJoCo Playground) per MJX backend.

For each task and backend (``impl="jax"``, pure-JAX MJX; ``impl="warp"``, Warp kernels called
from JAX, Playground's default), B envs (vmapped) take T steps with uniformly random actions in
one jitted `lax.scan` of the bare env's `step` (action repeat 1, no time limit, no resets), so
the figure is the physics and reward of one control step (the task's substeps included) and
nothing else. The first call (compile, and on a CPU Warp's kernel compile, which its kernel
cache in ~/.cache/warp makes shorter in later processes) is reported apart. Subjects are timed
round-robin in one window (`benchlib.interleaved_medians`). `envs.dmc.CPU_IMPL` is set from
this table.

  python experiments/bench_dmc.py --out results/bench_dmc.json
  python experiments/bench_dmc.py --tasks cartpole_swingup --impls jax --quick

Rows: {name, task, impl, batch, steps, first_call_s, ms_per_call, ms_per_step, steps_per_s,
reset_ms, machine, device, jax}; ms_per_step is per env step of one env (call time / (B * T));
reset_ms is one env's `reset`, timed likewise (T resets in one scan; `--reset-impls`, jax only
by default, else None). A reset matters beyond episode starts:
`envs.acting.step` computes one on every step and selects it where an episode ended, and
cheetah_run's reset runs 200 physics steps to let the model settle, as dm_control's does.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time

import jax
import tyro

import benchlib
from mbrl_jax import envs
from mbrl_jax.envs import dmc

TASKS = ("cartpole_swingup", "pendulum_swingup", "cheetah_run", "walker_walk", "reacher_easy")


@dataclasses.dataclass(frozen=True)
class Args:
  out: pathlib.Path | None = None
  """Write the rows as a JSON list to this file."""
  tasks: tuple[str, ...] = TASKS
  """dmc tasks (names of envs.dmc.TASKS)."""
  impls: tuple[str, ...] = dmc.IMPLS
  """MJX backends."""
  batch: int = 1
  """Envs stepped per call (vmapped)."""
  steps: int = 20
  """Env steps per call, T (Warp on a CPU takes up to ~0.5 s per step on walker_walk)."""
  repeats: int = 3
  """Timed calls per subject (median)."""
  reset_impls: tuple[str, ...] = ("jax",)
  """Backends whose reset is timed too (Warp's cheetah_run reset, 200 physics steps, takes
  about a minute on a CPU)."""
  quick: bool = False
  """Tiny sizes: 5 steps, 1 repeat."""


def _scan_fn(env, steps: int):
  def run(keys):
    def one(key):
      k_reset, k_act = jax.random.split(key)
      actions = jax.random.uniform(k_act, (steps, env.action_size), minval=-1.0, maxval=1.0)

      def body(state, action):
        state = env.step(state, action)
        return state, state.reward
      _, rewards = jax.lax.scan(body, env.reset(k_reset), actions)
      return rewards.sum()
    return jax.vmap(one)(keys)
  return jax.jit(run)


def _reset_fn(env, steps: int):
  """T resets in one jitted `lax.scan` (B vmapped), what `acting.step` adds to every step."""
  def run(keys):
    def one(key):
      def body(total, k):
        return total + env.reset(k).obs.sum(), None
      return jax.lax.scan(body, 0.0, jax.random.split(key, steps))[0]
    return jax.vmap(one)(keys)
  return jax.jit(run)


def main(args: Args) -> list[dict]:
  if args.quick:
    args = dataclasses.replace(args, steps=5, repeats=1)
  for name in ("batch", "steps", "repeats"):
    if getattr(args, name) < 1:
      raise SystemExit(f"error: --{name} must be >= 1, got {getattr(args, name)}")
  for task in args.tasks:
    dmc.parse(dmc.PREFIX + task)
  for impl in args.impls:
    if impl not in dmc.IMPLS:
      raise SystemExit(f"error: --impls takes {', '.join(dmc.IMPLS)}, got {impl!r}")
  keys = jax.random.split(jax.random.key(0), args.batch)
  subjects, resets, first = {}, {}, {}
  for task in args.tasks:
    for impl in args.impls:
      name = f"{task}/{impl}"
      env = envs.make(f"{dmc.PREFIX}{task}?impl={impl}", episode_length=None)
      fn = _scan_fn(env, args.steps)
      start = time.perf_counter()
      jax.block_until_ready(fn(keys))
      first[name] = time.perf_counter() - start
      print(f"{name}: first call {first[name]:.1f} s", flush=True)
      subjects[name] = (fn, (keys,))
      if impl in args.reset_impls:
        resets[name] = (_reset_fn(env, args.steps), (keys,))
  seconds = benchlib.interleaved_medians(subjects, args.repeats, warmup=0)
  reset_seconds = benchlib.interleaved_medians(resets, args.repeats, warmup=1)
  rows = []
  for name, sec in seconds.items():
    task, impl = name.split("/")
    rows.append(dict(name=f"dmc/{name}/B{args.batch}", task=task, impl=impl, batch=args.batch,
                     steps=args.steps, first_call_s=first[name], ms_per_call=1e3 * sec,
                     ms_per_step=1e3 * sec / (args.batch * args.steps),
                     steps_per_s=args.batch * args.steps / sec,
                     reset_ms=(1e3 * reset_seconds[name] / (args.batch * args.steps)
                               if name in reset_seconds else None)))
  print(f"{'task':18s} {'impl':5s} {'batch':>5s} {'first call s':>12s} {'ms/step':>9s} "
        f"{'steps/s':>9s} {'reset ms':>9s}")
  for r in rows:
    print(f"{r['task']:18s} {r['impl']:5s} {r['batch']:5d} {r['first_call_s']:12.1f} "
          f"{r['ms_per_step']:9.2f} {r['steps_per_s']:9.1f} "
          f"{'-' if r['reset_ms'] is None else format(r['reset_ms'], '.2f'):>9s}")
  for task in args.tasks:
    by_impl = {r["impl"]: r["ms_per_step"] for r in rows if r["task"] == task}
    if len(by_impl) > 1:
      print(f"{task}: fastest {min(by_impl, key=by_impl.get)} "
            f"(warp / jax = {by_impl.get('warp', float('nan')) / by_impl.get('jax', 1):.1f})")
  return benchlib.finish(args.out, rows)


if __name__ == "__main__":
  main(tyro.cli(Args))
