"""Benchmark: dynamics-ensemble forward and fitting throughput at mbrl-lib's PETS sizes.

Prints a table and writes JSON rows. FLOPs are counted from the layer sizes (2 per
multiply-add, dense layers only); subjects are compiled as the library compiles its loops
(`mbrl_jax.compile.jit`); the ceiling is the machine's float32 matrix-multiply rate,
measured in the same run on the shape the hidden layers use, because shared machines are noisy.

  python experiments/bench_models.py --out results/bench_models.json

Rows:
  forward/tsinf   7,000 rows, each through one member (how a planner propagates particles):
                  normalisation, the member MLPs, denormalisation; no aleatoric sample
  predict+sample  the same plus the Gaussian sample (soft log-variance bounds, exp, noise)
  forward/all     7,000 rows through every member (uncertainty, 'all' mode)
  fit/batchB      one epoch of `trainer.fit` on 7,000 rows (holdout off), minibatch B per member;
                  training FLOPs counted as 3x the forward FLOPs of the rows trained on
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import tyro

import benchlib

from mbrl_jax.compile import jit
from mbrl_jax.models import FitConfig, make_ensemble, make_trainer
from mbrl_jax.types import Transition


@dataclasses.dataclass(frozen=True)
class Args:
  out: pathlib.Path | None = None
  """Write the rows as a JSON list to this file."""
  rows: int = 7000
  """Rows per forward pass (mbrl-lib's PETS notebook: population 350 x 20 particles)."""
  obs_size: int = 4
  """Observation size (cartpole_continuous)."""
  action_size: int = 1
  repeats: int = 30
  """Timed repetitions per row (the median is reported)."""
  members: tuple[int, ...] = (5, 7)
  layers: tuple[int, ...] = (3, 4)
  width: int = 200
  fit_batch_sizes: tuple[int, ...] = (32, 256)
  fit_epochs: int = 3


def main(args: Args) -> list[dict]:
  key = jax.random.key(0)
  k_obs, k_act = jax.random.split(key)
  obs = jax.random.normal(k_obs, (args.rows, args.obs_size))
  action = jax.random.uniform(k_act, (args.rows, args.action_size), minval=-1, maxval=1)
  results = []

  def row(name, seconds, flops, ceiling, **extra):
    gflops = flops / seconds / 1e9
    results.append(dict(name=name, latency_s=seconds, gflop=flops / 1e9, gflops=gflops,
                        matmul_gflops=float(ceiling), fraction_of_matmul=gflops / ceiling,
                        matmul_reference_gflops=ceiling.rates, **extra))
    print(f"{name:<34} {seconds * 1e3:10.3f} ms {gflops:9.1f} GFLOP/s "
          f"{ceiling:8.1f} matmul {100 * gflops / ceiling:6.1f}%   (references: "
          + ", ".join(f"{k} {v:.0f}" for k, v in ceiling.rates.items()) + ")", flush=True)

  print(f"{'name':<34} {'median':>13} {'achieved':>17} {'ceiling':>15} {'ratio':>7}")
  for members in args.members:
    for layers in args.layers:
      ens = make_ensemble(args.obs_size, args.action_size, num_members=members,
                          hidden_sizes=(args.width,) * layers)
      params = ens.init(key)
      tag = f"E{members}xL{layers}x{args.width}"
      forward = jit(lambda p, k, o, a: ens.predict(p, k, o, a, mode="tsinf",
                                                   sample=False).next_obs)
      predict = jit(lambda p, k, o, a: ens.predict(p, k, o, a, mode="tsinf").next_obs)
      apply = jit(lambda p, o, a: ens.apply(p, o, a).mean)
      times, ceiling = benchlib.time_against_matmul(
          {"forward": (forward, (params, key, obs, action)),
           "predict": (predict, (params, key, obs, action)),
           "all": (apply, (params, obs, action))},
          rows=args.rows, width=args.width, repeats=args.repeats)
      flops = ens.spec.flops_per_row() * args.rows
      row(f"forward/tsinf/{tag}", times["forward"], flops, ceiling,
          rows_per_s=args.rows / times["forward"], members=members, layers=layers)
      row(f"predict+sample/tsinf/{tag}", times["predict"], flops, ceiling,
          rows_per_s=args.rows / times["predict"], members=members, layers=layers)
      row(f"forward/all/{tag}", times["all"], flops * members, ceiling,
          rows_per_s=args.rows * members / times["all"], members=members, layers=layers)
      z = jnp.zeros((args.rows,))
      data = Transition(obs, action, z, obs + 0.1 * action, z, z)
      mask = jnp.ones((args.rows,), bool)
      for batch in args.fit_batch_sizes:
        trainer = make_trainer(ens, FitConfig(batch_size=batch, max_epochs=args.fit_epochs,
                                              holdout_ratio=0.0, patience=None))
        fit = jit(trainer.fit)
        times, ceiling = benchlib.time_against_matmul(
            {"fit": (fit, (key, trainer.init(params), data, mask))},
            rows=args.rows, width=args.width, repeats=3)
        t = times["fit"] / args.fit_epochs
        trained_rows = -(-args.rows // batch) * batch * members
        row(f"fit/batch{batch}/{tag}", t, 3 * ens.spec.flops_per_row() * trained_rows, ceiling,
            epoch_s=t, rows_per_s=args.rows / t, members=members, layers=layers, batch=batch)
  return benchlib.finish(args.out, results)


if __name__ == "__main__":
  main(tyro.cli(Args))
