"""Benchmark: what stepping a gymnasium env on the host costs inside a compiled rollout.

Three ways to run T steps of the pendulum with uniformly random actions, for batch sizes B
(envs vmapped in one call):

* "jax": our pure-JAX `pendulum` (`envs.make("pendulum")`) in one jitted `acting.collect`
  (the time limit and auto reset included), i.e. what every algorithm here does;
* "gymnasium": gymnasium's Pendulum-v1 through `envs.make("gymnasium:Pendulum-v1")` in the
  SAME jitted `acting.collect`: each step is one `pure_callback` round trip for the whole
  batch (plus one for the reset `acting.step` computes every step), the host stepping the B
  envs one after another;
* "python": gymnasium's Pendulum-v1 stepped from a plain Python loop (B envs, one after
  another; no JAX), the host cost alone, for reference.

The three are timed round-robin in one window (`benchlib.interleaved_medians`); steps per
second count env steps (B * T per call). The host round trip per step is
(gymnasium seconds - jax seconds) / T.

  python experiments/bench_gymnasium.py --out results/bench_gymnasium.json
  python experiments/bench_gymnasium.py --quick            # tiny sizes (the test)

Rows: {name, path, batch, steps, ms_per_call, steps_per_s, us_per_step, machine, device, jax};
the gymnasium rows add roundtrip_us_per_step and slowdown_vs_jax.
"""

from __future__ import annotations

import dataclasses
import pathlib

import gymnasium as gym
import jax
import numpy as np
import tyro

import benchlib
from mbrl_jax import envs
from mbrl_jax.envs import acting


@dataclasses.dataclass(frozen=True)
class Args:
  out: pathlib.Path | None = None
  """Write the rows as a JSON list to this file."""
  batches: tuple[int, ...] = (1, 8)
  """Envs stepped per call (vmapped)."""
  steps: int = 1000
  """Env steps per call, T."""
  repeats: int = 5
  """Timed calls per subject (median)."""
  quick: bool = False
  """Tiny sizes: batches as given but at most 2, 20 steps, 1 repeat."""


def _collect_fn(env, steps: int):
  policy = acting.uniform_random(env.action_size)

  def run(keys):
    def one(key):
      k_reset, k_steps = jax.random.split(key)
      actor = acting.reset(env, policy, k_reset)
      _, tr, _, _ = acting.collect(env, policy, actor, k_steps, steps)
      return tr.reward.sum()
    return jax.vmap(one)(keys)
  return jax.jit(run)


def _python_fn(batch: int, steps: int):
  pool = [gym.make("Pendulum-v1").env for _ in range(batch)]     # no TimeLimit: we reset
  rng = np.random.default_rng(0)

  def run():
    total = 0.0
    for i, env in enumerate(pool):
      env.reset(seed=i)
      for t in range(steps):
        if t and t % 200 == 0:
          env.reset()
        _, r, _, _, _ = env.step(rng.uniform(-2.0, 2.0, (1,)).astype(np.float32))
        total += r
    return np.float32(total)
  return run


def main(args: Args) -> list[dict]:
  if args.quick:
    args = dataclasses.replace(args, batches=tuple(sorted({min(b, 2) for b in args.batches})),
                               steps=20, repeats=1)
  if not args.batches or min(args.batches) < 1:
    raise SystemExit(f"error: --batches must be batch sizes >= 1, got {args.batches}")
  for name in ("steps", "repeats"):
    if getattr(args, name) < 1:
      raise SystemExit(f"error: --{name} must be >= 1, got {getattr(args, name)}")
  pure, host = envs.make("pendulum"), envs.make("gymnasium:Pendulum-v1")
  subjects, meta = {}, {}
  for batch in args.batches:
    keys = jax.random.split(jax.random.key(0), batch)
    subjects[f"jax/B{batch}"] = (_collect_fn(pure, args.steps), (keys,))
    subjects[f"gymnasium/B{batch}"] = (_collect_fn(host, args.steps), (keys,))
    subjects[f"python/B{batch}"] = (_python_fn(batch, args.steps), ())
    for path in ("jax", "gymnasium", "python"):
      meta[f"{path}/B{batch}"] = (path, batch)
  seconds = benchlib.interleaved_medians(subjects, args.repeats, warmup=1)
  rows = []
  for name, (path, batch) in meta.items():
    sec = seconds[name]
    row = dict(name=f"pendulum/{name}", path=path, batch=batch, steps=args.steps,
               ms_per_call=1e3 * sec, steps_per_s=batch * args.steps / sec,
               us_per_step=1e6 * sec / (batch * args.steps))
    if path == "gymnasium":
      pure_sec = seconds[f"jax/B{batch}"]
      row["roundtrip_us_per_step"] = 1e6 * (sec - pure_sec) / args.steps
      row["slowdown_vs_jax"] = sec / pure_sec
    rows.append(row)
  print(f"{'name':24s} {'batch':>5s} {'ms/call':>9s} {'steps/s':>11s} {'us/step':>8s} "
        f"{'round trip us/step':>19s} {'x jax':>7s}")
  for r in rows:
    extra = (f"{r['roundtrip_us_per_step']:19.1f} {r['slowdown_vs_jax']:7.1f}"
             if "slowdown_vs_jax" in r else f"{'-':>19s} {'-':>7s}")
    print(f"{r['name']:24s} {r['batch']:5d} {r['ms_per_call']:9.2f} {r['steps_per_s']:11.0f} "
          f"{r['us_per_step']:8.2f} {extra}")
  return benchlib.finish(args.out, rows)


if __name__ == "__main__":
  main(tyro.cli(Args))
