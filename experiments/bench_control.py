"""Benchmark: iLQR-MPC against CEM-MPC on the TRUE model, at equal wall time per plan.

For each env (cartpole_swingup, pendulum): iLQR-MPC with `mbrl_jax.algorithms.mpc_control`'s
preset (`ilqr-<task>`); its cost per plan is measured as one whole jitted episode's wall time
(steady state, median of `repeats`) over its steps: iLQR's iterations vary with the state
(its `lax.while_loop` stops at convergence), so a single plan from one state would mislead.
Then every CEM size in the grid (population x iterations, the same horizon) is timed on one
plan from the env's reset state (CEM's cost does not depend on the state), the one closest to
iLQR's ms per plan (in log ratio) is picked. A "cem/preset" row (population 100 x 5
iterations) is added for reference. The rows' episode timings are then taken again, the
planners' episodes alternated round-robin in one window (`benchlib.interleaved_medians`), so
they compare on a machine whose speed drifts. Episodes for the returns are vmapped over
`seeds` start states.

  python experiments/bench_control.py --out results/bench_control.json
  python experiments/bench_control.py --quick            # tiny sizes (the test)

Rows: {env, planner, population, iterations, horizon, ms_per_plan (episode time / steps,
one seed), ms_per_plan_single (one plan from the reset state), return_mean, returns, seeds}.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import time

import jax
import numpy as np
import tyro

import benchlib
from mbrl_jax.algorithms import mpc_control
from mbrl_jax.envs import acting
from mbrl_jax.planning import CEMConfig, ILQRConfig

TASKS = {"cartpole_swingup": "swingup", "pendulum": "pendulum"}


@dataclasses.dataclass(frozen=True)
class Args:
  out: pathlib.Path | None = None
  """Write the rows as a JSON list to this file."""
  envs: tuple[str, ...] = ("cartpole_swingup", "pendulum")
  """Envs compared (each needs an ilqr-<task> preset)."""
  seeds: int = 3
  """Episodes (start states) per planner, vmapped."""
  episode_length: int = 200
  """Env steps per episode."""
  horizon: int = 0
  """Planning horizon of both planners (0: the iLQR preset's)."""
  ilqr_iterations: int = 0
  """iLQR iterations per plan (0: the preset's)."""
  populations: tuple[int, ...] = (25, 50, 100, 200, 400, 800)
  """CEM populations scanned."""
  iterations: tuple[int, ...] = (2, 3, 5)
  """CEM iterations scanned."""
  repeats: int = 3
  """Timed calls per subject (median)."""
  quick: bool = False
  """Tiny sizes: 1 seed, 20-step episodes, horizon 5, two CEM sizes, 1 repeat, no
  cem/preset row."""


def _timed(fn, *args, repeats: int) -> float:
  """Median seconds per call after one warm-up (compile) call."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def _row(config: mpc_control.Config, args: Args, steps: int, seeds: int):
  """The row of one planner (all but its episode timing) and its jitted one-seed episode."""
  parts = mpc_control.make_parts(config)
  env, policy = parts.env, mpc_control.make_policy(parts)
  one = jax.jit(lambda k: acting.episode(env, policy, k, steps).ret)
  many = jax.jit(jax.vmap(one)) if seeds > 1 else (lambda keys: one(keys[0])[None])
  obs = env.reset(jax.random.key(0)).obs
  act = jax.jit(lambda s: parts.mpc.act(s, None, obs)[0])
  state = parts.mpc.init(jax.random.key(1))
  returns = np.asarray(many(jax.random.split(jax.random.key(3), seeds)))
  p = config.planner
  row = dict(env=config.env, planner="ilqr" if isinstance(p, ILQRConfig) else "cem",
             population=getattr(p, "population", None),
             iterations=p.iterations, horizon=config.horizon,
             ms_per_plan_single=1e3 * _timed(act, state, repeats=args.repeats),
             return_mean=float(returns.mean()), returns=returns.tolist(), seeds=seeds)
  return row, one


def _plan_ms(config: mpc_control.Config, repeats: int) -> float:
  parts = mpc_control.make_parts(config)
  obs = parts.env.reset(jax.random.key(0)).obs
  act = jax.jit(lambda s: parts.mpc.act(s, None, obs)[0])
  return 1e3 * _timed(act, parts.mpc.init(jax.random.key(1)), repeats=repeats)


def main(args: Args) -> list[dict]:
  if args.quick:
    args = dataclasses.replace(args, seeds=1, episode_length=20, horizon=args.horizon or 5,
                               populations=args.populations[:2], iterations=args.iterations[:1],
                               repeats=1, ilqr_iterations=args.ilqr_iterations or 2)
  rows = []
  for env_name in args.envs:
    base = mpc_control.PRESETS[f"ilqr-{TASKS[env_name]}"]
    horizon = args.horizon or base.horizon
    ilqr = dataclasses.replace(
        base, horizon=horizon, episode_length=args.episode_length,
        planner=dataclasses.replace(base.planner,
                                    iterations=args.ilqr_iterations or base.planner.iterations))
    subjects = {f"{env_name}/ilqr": _row(ilqr, args, args.episode_length, args.seeds)}
    ilqr_episode = subjects[f"{env_name}/ilqr"][1]
    target = 1e3 * _timed(ilqr_episode, jax.random.key(2), repeats=args.repeats)
    target /= args.episode_length
    scanned = []
    for pop in args.populations:
      for it in args.iterations:
        cem = dataclasses.replace(ilqr, planner=CEMConfig(population=pop, iterations=it,
                                                          return_mean_elites=True))
        scanned.append((abs(math.log(_plan_ms(cem, args.repeats) / target)), pop, it, cem))
    _, pop, it, cem = min(scanned, key=lambda s: s[0])
    subjects[f"{env_name}/cem/equal-time"] = _row(cem, args, args.episode_length, args.seeds)
    if not args.quick:
      ref = dataclasses.replace(ilqr, planner=CEMConfig(population=100, iterations=5,
                                                        return_mean_elites=True))
      subjects[f"{env_name}/cem/preset"] = _row(ref, args, args.episode_length, args.seeds)
    # The final episode timings in one window, round-robin (the machine's speed drifts).
    seconds = benchlib.interleaved_medians(
        {name: (episode, (jax.random.key(2),)) for name, (_, episode) in subjects.items()},
        repeats=args.repeats, warmup=1)
    for name, (row, _) in subjects.items():
      rows.append(dict(name=name, ms_per_plan=1e3 * seconds[name] / args.episode_length,
                       **row))
  print(f"{'name':34s} {'pop x it':>10s} {'H':>3s} {'ms/plan':>8s} {'ms(reset)':>9s} "
        f"{'return':>8s}  returns")
  for r in rows:
    size = "-" if r["population"] is None else f"{r['population']}x{r['iterations']}"
    if r["planner"] == "ilqr":
      size = f"it<={r['iterations']}"
    print(f"{r['name']:34s} {size:>10s} {r['horizon']:3d} {r['ms_per_plan']:8.2f} "
          f"{r['ms_per_plan_single']:9.2f} {r['return_mean']:8.1f}  "
          + " ".join(f"{v:.1f}" for v in r["returns"]))
  return benchlib.finish(args.out, rows)


if __name__ == "__main__":
  main(tyro.cli(Args))
