"""Benchmark: per-action planning latency of PETS' MPC (CEM over a TSinf ensemble rollout).

One MPC `act` on cartpole_continuous (obs 4, action 1) with the PETS ensemble (5 members x 3
hidden layers of 200, silu, probabilistic), TSinf propagation and the known reward and
termination functions, from a fixed observation. The model parameters are randomly
initialised but carry fitted-looking normalisers (small predicted deltas); the cost of a plan
does not depend on their values (nothing exits early). Every subject is jitted, and timed in
its steady state (after 2 warm-up calls, so neither compilation nor the first dispatch is
counted), interleaved round-robin with reference matrix multiplies measured in the same
window (see `benchlib`), so the ratios are stable on a noisy machine.

  python experiments/bench_planning.py --out results/bench_planning.json

Rows:
  cem/notebook          population 350, 20 particles, horizon 15, 5 iterations (mbrl-lib's
                        PETS notebook), elite ratio 0.1, alpha 0.1
  cem/small             population 100, 5 particles, horizon 15, 5 iterations
  cem/small/seedsN      jax.vmap of `act` over N seeds (keys, observations and params stacked
                        on a seed axis); `latency_per_seed_s` is the call's latency / N
  cem/notebook/seedsN   the same at the notebook config (only with --seeds-notebook)
  OPT/small             other optimizers at the small config (--optimizers cem icem mppi)
  cem/CONFIG/VARIANT    (--xla-variants, on by default) the same plan compiled with other
                        per-jit XLA:CPU options (see XLA_VARIANTS); the main rows use the
                        library's (`mbrl_jax.compile`)
  breakdown/CONFIG/...  (--breakdown, on by default) where a plan's time goes (numbers for the
                        notebook config; the small config's rows are the same at its sizes):
    evaluate            one trajectory evaluation of 350 sequences (one CEM iteration's
                        objective); x iterations it is the model's share of a plan
    forward_x75         the bare ensemble forward pass (normalise, member MLPs, denormalise;
                        no sample, no reward, no termination) on 7000 rows, 75 times in a
                        `lax.scan` (horizon 15 x 5 iterations, unrolled by 15 as the evaluator
                        unrolls a rollout): the plan's FLOPs with nothing else
    predict_x75         the same with `predict`'s Gaussian sample (soft-bounded variance,
                        sqrt, scaled noise), its noise drawn as in a plan: one [75, 7000, 4]
                        standard-normal draw per call (the evaluator draws a horizon's noise
                        at once; every CEM iteration has its own evaluation key)

FLOPs per plan = sequences evaluated x particles x horizon x `spec.flops_per_row()` (2 per
multiply-add, every dense layer including the first (5 -> 200) and the last (200 -> 8, mean
and log-variance); activations, sampling, reward and termination are not counted). TSinf
sends each row through ONE member (rows are regrouped over the members), so no factor of the
ensemble size: the notebook config is 5 x 350 x 20 x 15 x 165,200 = 8.67e10, which is the
issue's ~8.7e10. (Counting every member on every row would be 5x that; dropping the first and
last layers would give 8.4e10.)
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import tyro

import benchlib

from mbrl_jax import compile as compile_lib
from mbrl_jax import planning
from mbrl_jax.algorithms import pets
from mbrl_jax.models import Normalizer
from mbrl_jax.planning import icem_population_sizes
from mbrl_jax.planning.mpc import make_mpc
from mbrl_jax.planning.trajectory import make_trajectory_evaluator

ENV = "cartpole_continuous"
# A cart-pole observation near upright: [x, x_dot, theta, theta_dot].
OBS = np.array([0.02, -0.1, 0.03, 0.05], np.float32)


@dataclasses.dataclass(frozen=True)
class PlanConfig:
  """The planner settings one row is measured at."""

  population: int
  particles: int
  horizon: int = 15
  iterations: int = 5
  elite_ratio: float = 0.1
  alpha: float = 0.1


# The main rows are compiled as PETS compiles its trials (`mbrl_jax.compile.jit` with the
# config's rows per member: on CPU, Eigen dots instead of YNNPACK and 512-bit vectors for large
# products, XLA's defaults for small ones). The variants compare per-jit XLA:CPU options:
# "xla-default" is plain `jax.jit`; "eigen" only turns off the YNNPACK dot fusions.
XLA_VARIANTS = {
    "xla-default": {},
    "eigen": {"xla_cpu_experimental_ynn_fusion_type": ""},
}

CONFIGS = {
    "notebook": PlanConfig(population=350, particles=20),
    "small": PlanConfig(population=100, particles=5),
}


@dataclasses.dataclass(frozen=True)
class Args:
  out: pathlib.Path | None = None
  """Write the rows as a JSON list to this file."""
  repeats: int = 15
  """Timed repetitions per subject (the median is reported)."""
  seeds: tuple[int, ...] = (1, 4, 16)
  """Seed counts vmapped at the small config."""
  seeds_notebook: bool = False
  """Also time the vmapped seeds at the notebook config (16 seeds ~ 16 plans per call)."""
  optimizers: tuple[str, ...] = ("cem",)
  """Optimizers timed at the small config (cem, icem, mppi, random); cem also at notebook."""
  breakdown: bool = True
  """Time the notebook plan's parts: one trajectory evaluation and the bare forward passes."""
  xla_variants: bool = True
  """Also time cem/notebook and cem/small compiled with the XLA:CPU options in XLA_VARIANTS."""


def _optimizer_config(optimizer: str, cfg: PlanConfig) -> planning.OptimizerConfig:
  if optimizer in ("cem", "icem"):
    return planning.OPTIMIZERS[optimizer](
        population=cfg.population, iterations=cfg.iterations, elite_ratio=cfg.elite_ratio,
        alpha=cfg.alpha, return_mean_elites=True)
  if optimizer == "mppi":
    return planning.MPPIConfig(population=cfg.population, iterations=cfg.iterations)
  if optimizer == "random":
    return planning.RandomShootingConfig(population=cfg.population)
  raise ValueError(f"bench_planning: no config for optimizer {optimizer!r}")


def _pets_config(optimizer: str, cfg: PlanConfig) -> pets.Config:
  planner = pets.PlannerConfig(
      optimizer=_optimizer_config(optimizer, cfg), horizon=cfg.horizon,
      num_particles=cfg.particles, propagation="tsinf")
  return pets.Config(env=ENV, planner=planner)


def _sequences_per_plan(optimizer: str, cfg: PlanConfig) -> int:
  """Action sequences `optimize` evaluates in one plan (cold start, as MPC calls it)."""
  if optimizer in ("cem", "mppi"):
    return cfg.iterations * cfg.population
  if optimizer == "random":
    return cfg.population
  if optimizer == "icem":
    # ICEMConfig's defaults (population_decay 1.25, keep_elite_frac 0.3), as PETS builds it.
    c = _optimizer_config(optimizer, cfg)
    num_elites = int(np.ceil(cfg.elite_ratio * cfg.population - 1e-9))
    sizes = icem_population_sizes(cfg.population, cfg.iterations, c.population_decay,
                                  num_elites)
    kept = c.num_carried * cfg.iterations           # carried elites, re-evaluated every iteration
    return sum(sizes) + kept + int(cfg.iterations > 1)      # + the mean in the last iteration
  raise ValueError(f"bench_planning: no FLOP count for optimizer {optimizer!r}")


def _fitted_like(params):
  """Random weights, but normalisers as a fitted cart-pole model has (small deltas)."""
  in_std = jnp.array([0.5, 1.0, 0.1, 1.0, 0.6], jnp.float32)
  out_std = jnp.array([0.02, 0.03, 0.005, 0.05], jnp.float32)
  return params._replace(
      input_norm=Normalizer(jnp.zeros_like(in_std), in_std),
      output_norm=Normalizer(jnp.zeros_like(out_std), out_std))


class Subject:
  """One timed function with its FLOPs and what its row records."""

  def __init__(self, name, fn, args, flops_per_plan, plans, **extra):
    self.name, self.fn, self.args = name, fn, args
    self.flops_per_plan, self.plans, self.extra = flops_per_plan, plans, extra


def plan_subject(name: str, optimizer: str, cfg: PlanConfig, seeds: int | None,
                 compiler_options: dict | None = None) -> Subject:
  """A jitted MPC `act` (one plan per seed) at `cfg`; vmapped over `seeds` if not None."""
  config = _pets_config(optimizer, cfg)
  if compiler_options is None:
    compiler_options = compile_lib.compiler_options(pets.planner_rows_per_member(config))
  parts = pets.make_parts(config)
  ens = parts.ensemble
  evaluate = make_trajectory_evaluator(
      functools.partial(ens.predict, mode="tsinf"), noise_size=ens.noise_size,
      reward_fn=parts.reward_fn, termination_fn=parts.termination_fn,
      num_particles=cfg.particles)
  mpc = make_mpc(parts.optimizer, evaluate)
  init = lambda k: (mpc.init(k), _fitted_like(ens.init(jax.random.fold_in(k, 1))))
  key = jax.random.key(0)
  if seeds is None:
    state, params = init(key)
    obs = jnp.asarray(OBS)
    act = jax.jit(mpc.act, compiler_options=compiler_options)
  else:
    keys = jax.random.split(key, seeds)
    state, params = jax.vmap(init)(keys)
    obs = jnp.asarray(OBS) + 0.01 * jax.random.normal(jax.random.key(1), (seeds, OBS.size))
    act = jax.jit(jax.vmap(mpc.act), compiler_options=compiler_options)
  seqs = _sequences_per_plan(optimizer, cfg)
  flops = seqs * cfg.particles * cfg.horizon * ens.spec.flops_per_row()
  return Subject(name, act, (state, params, obs), flops, seeds or 1, optimizer=optimizer,
                 seeds=seeds or 1, vmapped=seeds is not None, sequences_per_plan=seqs,
                 compiler_options=compiler_options or {}, **dataclasses.asdict(cfg))


def breakdown_subjects(cfg: PlanConfig, config_name: str = "notebook") -> list[Subject]:
  """The parts of the plan at `cfg` (see the module docstring)."""
  parts = pets.make_parts(_pets_config("cem", cfg))
  ens = parts.ensemble
  params = _fitted_like(ens.init(jax.random.key(1)))
  evaluate = make_trajectory_evaluator(
      functools.partial(ens.predict, mode="tsinf"), noise_size=ens.noise_size,
      reward_fn=parts.reward_fn, termination_fn=parts.termination_fn,
      num_particles=cfg.particles)
  key = jax.random.key(2)
  obs = jnp.asarray(OBS)
  seqs = jax.random.uniform(key, (cfg.population, cfg.horizon, 1), minval=-1, maxval=1)
  rows = cfg.population * cfg.particles
  steps = cfg.horizon * cfg.iterations
  row_flops = ens.spec.flops_per_row()
  eval_fn = compile_lib.jit(lambda p, k, o, a: evaluate(p, k, o, a).returns)

  def repeated(sample: bool):
    def run(p, k, x, a):
      if not sample:
        body = lambda x, t: (ens.predict(p, k, x, a, mode="tsinf", sample=False).next_obs, None)
        return jax.lax.scan(body, x, jnp.arange(steps), unroll=cfg.horizon)[0]
      # As a plan draws it: the evaluator draws a horizon's noise [H, rows, D] in one call, and
      # every CEM iteration has its own evaluation key, so [iterations * H, rows, D] per plan.
      noise = jax.random.normal(k, (steps, rows, ens.spec.target_size))
      body = lambda x, t: (ens.predict(p, k, x, a, mode="tsinf", noise=noise[t]).next_obs, None)
      return jax.lax.scan(body, x, jnp.arange(steps), unroll=cfg.horizon)[0]
    return compile_lib.jit(run)

  x = jnp.broadcast_to(obs, (rows, obs.size)) + 0.01 * jax.random.normal(key, (rows, obs.size))
  a = jax.random.uniform(key, (rows, 1), minval=-1, maxval=1)
  per_plan = cfg.iterations * rows * cfg.horizon * row_flops
  common = dict(optimizer="cem", seeds=1, vmapped=False, **dataclasses.asdict(cfg))
  return [
      Subject(f"breakdown/{config_name}/evaluate", eval_fn, (params, key, obs, seqs),
              rows * cfg.horizon * row_flops, 1, plan_fraction=1 / cfg.iterations, **common),
      Subject(f"breakdown/{config_name}/forward_x{steps}", repeated(False), (params, key, x, a),
              per_plan, 1, plan_fraction=1.0, **common),
      Subject(f"breakdown/{config_name}/predict_x{steps}", repeated(True), (params, key, x, a),
              per_plan, 1, plan_fraction=1.0, **common),
  ]


def main(args: Args) -> list[dict]:
  t_start = time.perf_counter()
  load_start = os.getloadavg()[0]
  nb, sm = CONFIGS["notebook"], CONFIGS["small"]
  subjects = [plan_subject("cem/notebook", "cem", nb, None),
              plan_subject("cem/small", "cem", sm, None)]
  subjects += [plan_subject(f"cem/small/seeds{n}", "cem", sm, n) for n in args.seeds]
  if args.seeds_notebook:
    subjects += [plan_subject(f"cem/notebook/seeds{n}", "cem", nb, n) for n in args.seeds]
  subjects += [plan_subject(f"{opt}/small", opt, sm, None)
               for opt in args.optimizers if opt != "cem"]
  if args.xla_variants:
    subjects += [plan_subject(f"cem/{c}/{v}", "cem", CONFIGS[c], None, opts)
                 for v, opts in XLA_VARIANTS.items() for c in ("notebook", "small")]
  if args.breakdown:
    subjects += breakdown_subjects(nb) + breakdown_subjects(sm, "small")

  # Compile (and run once) outside the timed window so the log shows what compiling costs.
  for s in subjects:
    t = time.perf_counter()
    jax.block_until_ready(s.fn(*s.args))
    s.extra["first_call_s"] = time.perf_counter() - t
  print(f"compiled {len(subjects)} subjects in {time.perf_counter() - t_start:.1f} s",
        flush=True)

  # Member-batched references at the shapes the ensemble's layers run: rows / members each.
  members = 5
  batched = [(members, nb.population * nb.particles // members),
             (members, sm.population * sm.particles // members)]
  # The references are compiled as the notebook plan they are compared with (the library's
  # options for its rows per member).
  ref_options = compile_lib.compiler_options(pets.planner_rows_per_member(_pets_config("cem", nb)))
  times, ceiling = benchlib.time_against_matmul(
      {s.name: (s.fn, s.args) for s in subjects}, rows=nb.population * nb.particles,
      width=200, repeats=args.repeats, batched=batched, compiler_options=ref_options)

  results = []
  print(f"{'name':<32} {'median':>11} {'per seed':>11} {'GFLOP/plan':>11} {'achieved':>15} "
        f"{'of matmul':>9}")
  for s in subjects:
    latency = times[s.name]
    gflops = s.flops_per_plan * s.plans / latency / 1e9
    results.append(dict(
        name=s.name, latency_s=latency, latency_per_seed_s=latency / s.plans,
        gflop_per_plan=s.flops_per_plan / 1e9, gflops=gflops, matmul_gflops=float(ceiling),
        fraction_of_matmul=gflops / ceiling, matmul_reference_gflops=ceiling.rates,
        actions_per_s=s.plans / latency, **s.extra))
    print(f"{s.name:<32} {latency * 1e3:8.2f} ms {latency / s.plans * 1e3:8.2f} ms "
          f"{s.flops_per_plan / 1e9:11.3f} {gflops:8.1f} GFLOP/s {100 * gflops / ceiling:8.1f}%",
          flush=True)
  print(f"matmul references (GFLOP/s, compiled with {ref_options or 'XLA defaults'}): "
        + ", ".join(f"{k} {v:.0f}" for k, v in ceiling.rates.items())
        + f"; ceiling {ceiling:.0f}")

  by_name = {r["name"]: r for r in results}
  speedup = by_name["cem/notebook"]["latency_s"] / by_name["cem/small"]["latency_s"]
  nb_frac = by_name["cem/notebook"]["fraction_of_matmul"]
  by_name["cem/small"]["speedup_vs_notebook"] = speedup
  by_name["cem/notebook"]["small_speedup"] = speedup
  print(f"small config is {speedup:.1f}x faster per action than notebook (target >= 10x: "
        f"{'met' if speedup >= 10 else 'NOT met'})")
  print(f"notebook config runs at {100 * nb_frac:.1f}% of the matmul rate (target >= 70%: "
        f"{'met' if nb_frac >= 0.7 else 'NOT met'})")
  for n in args.seeds:
    r = by_name[f"cem/small/seeds{n}"]
    print(f"small, {n:>2} seeds vmapped: {r['latency_per_seed_s'] * 1e3:.2f} ms per seed "
          f"({by_name['cem/small']['latency_s'] / r['latency_per_seed_s']:.2f}x the "
          f"throughput of one unbatched plan)")
  if args.breakdown:
    for name, cfg in (("notebook", nb), ("small", sm)):
      plan = by_name[f"cem/{name}"]["latency_s"]
      ev = by_name[f"breakdown/{name}/evaluate"]["latency_s"] * cfg.iterations
      steps = cfg.horizon * cfg.iterations
      fwd = by_name[f"breakdown/{name}/forward_x{steps}"]["latency_s"]
      pred = by_name[f"breakdown/{name}/predict_x{steps}"]["latency_s"]
      print(f"{name} plan {plan * 1e3:.1f} ms = {cfg.iterations} x evaluate "
            f"{ev * 1e3:.1f} ms ({100 * ev / plan:.0f}%) + CEM sampling/top-k/update "
            f"{(plan - ev) * 1e3:.1f} ms; within the evaluations: bare forward {fwd * 1e3:.1f} "
            f"ms ({100 * fwd / plan:.0f}% of the plan), aleatoric sample "
            f"{(pred - fwd) * 1e3:.1f} ms, reward/termination/scan bookkeeping "
            f"{(ev - pred) * 1e3:.1f} ms")
  if args.xla_variants:
    for v in XLA_VARIANTS:
      ratio = by_name[f"cem/notebook/{v}"]["latency_s"] / by_name[f"cem/small/{v}"]["latency_s"]
      by_name[f"cem/small/{v}"]["speedup_vs_notebook"] = ratio
      print(f"compiled with {v} ({XLA_VARIANTS[v]}): notebook "
            f"{100 * by_name[f'cem/notebook/{v}']['fraction_of_matmul']:.1f}% of matmul, "
            f"{by_name['cem/notebook']['latency_s'] / by_name[f'cem/notebook/{v}']['latency_s']:.2f}x"
            f" faster; small {by_name['cem/small']['latency_s'] / by_name[f'cem/small/{v}']['latency_s']:.2f}x"
            f" faster; small is {ratio:.1f}x faster per action than notebook")
  # The machine is shared: the load average (other processes) changes the ratios, so record it.
  print(f"total {time.perf_counter() - t_start:.0f} s")
  return benchlib.finish(args.out, results, loadavg_1m_start=load_start,
                         loadavg_1m_end=os.getloadavg()[0], cpu_count=os.cpu_count())


if __name__ == "__main__":
  main(tyro.cli(Args))
