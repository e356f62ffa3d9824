"""Benchmark: seconds per env step of an MBPO epoch, with 1 and N seeds vmapped, and where an
env step's time goes.

  python experiments/bench_mbpo.py --out results/bench_mbpo.json        # hopper, 2 epochs
  python experiments/bench_mbpo.py --preset inverted_pendulum --env-steps 1000
  python experiments/bench_mbpo.py --rollout.schedule 1 2 5 5 --epoch-length 250 \\
      --env-steps 5500 --eval-episodes 1                                # k = 5 from the start

The config is the preset's (every field can be overridden as in experiments/mbpo.py), cut to
`--env-steps` (default: its exploration and two epochs). For each seed count S in `--seeds`,
`mbpo.make(config).step` is jitted and vmapped over S seeds as `mbrl_jax.run.train` compiles
it (state donated, the library's compiler options), run once (compile and first epoch), and
the second epoch is timed: `s_per_env_step_per_seed` = its wall time / (E * S), evaluation
included.

Breakdown (one seed, the state after the first epoch; each part is its own jitted call on
that state, timed as the median of `--repeats` calls interleaved round-robin with float32
matrix multiplies measured in the same window, see `benchlib`; parts and references compiled
with the epoch's XLA options, `mbrl_jax.compile`); `s_per_env_step` = the call's time x calls
per env step:
  model_fit    one refit of the ensemble on every real transition (to its patience or cap), 1/F
  rollouts     one refit's M F branched rollouts of the epoch's k steps into the model buffer
               (`mbpo.branched_rollout`; at commit d9948f1 the masked max_len-step rollout and
               its `add_masked`), 1/F
  sac_updates  G SAC updates on batches mixing real and model rows, 1 per env step
  env_step     F env steps with the stochastic policy (`envs.acting.step`), the real-buffer
               add and the observation statistics, as one `lax.scan`, 1/F
  evaluate     `eval_episodes` deterministic evaluation episodes, 1/E
The parts add up to about the epoch's time per env step (the epoch also samples start states
and its metrics).

FLOPs: 2 per multiply-add of every dense layer, backward counted as twice the forward, no
activations, normalisation, sampling or physics. Model rows: `spec.flops_per_row()` per row
and member that computes it (ts1 sends each rollout row through one elite; the fit trains
every member on its padded minibatches, then scores the holdout rows on every member). SAC
update of B rows: actor on next obs + 2 target critics + 2 critics forward and backward + the
actor forward and backward through the 2 critics = B (4 actor + 14 critic) forwards. Policy
rows in rollouts and env steps: one actor forward. GFLOP/s = FLOPs / median seconds, and as a
fraction of the matmul ceiling (the faster of [rows x width] x [width x width] and 2048^3).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import pathlib
import sys
import time
from typing import Annotated, Any

import jax
import jax.numpy as jnp
import numpy as np
import tyro

import benchlib

from mbrl_jax import compile as compile_lib
from mbrl_jax import data as buffer_lib
from mbrl_jax.algorithms import mbpo
from mbrl_jax.envs import acting
from mbrl_jax.run import cli as run_cli


@dataclasses.dataclass(frozen=True)
class Args:
  config: Annotated[mbpo.Config, tyro.conf.arg(name="")]
  """The MBPO configuration (the preset's, `env_steps` cut to two epochs unless given)."""
  preset: str = "hopper"
  """Named starting point (see mbrl_jax.algorithms.mbpo.PRESETS)."""
  seeds: tuple[int, ...] = (1, 3)
  """Seed counts vmapped; an epoch is timed for each."""
  repeats: int = 3
  """Timed calls per breakdown part (the median is reported)."""
  breakdown: bool = True
  """Time the parts of an env step (model fit, rollouts, SAC updates, env steps, evaluation)."""
  out: pathlib.Path | None = None
  """Write the rows as a JSON list to this file."""


def parse(argv: list[str]) -> Args:
  pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  pre.add_argument("--preset", default="hopper")
  pre.add_argument("--env-steps", type=int, default=None)
  known, _ = pre.parse_known_args(argv)
  if known.preset not in mbpo.PRESETS:
    raise SystemExit(f"error: unknown preset {known.preset!r}; valid: {', '.join(mbpo.PRESETS)}")
  config = mbpo.PRESETS[known.preset]
  if known.env_steps is None:
    config = dataclasses.replace(
        config, env_steps=config.init_exploration_steps + 2 * config.epoch_length)
  try:
    registry = run_cli.HELP_REGISTRY
    args = tyro.cli(Args, default=Args(config=config, preset=known.preset), args=argv,
                    description=__doc__, registry=registry)
  except ValueError as e:
    raise SystemExit(f"error: {e}") from None
  if args.config.epochs < 2:
    raise SystemExit(f"error: --env-steps {args.config.env_steps} gives {args.config.epochs} "
                     "epoch(s); the benchmark times the second")
  return args


def _mlp_flops(sizes: tuple[int, ...]) -> int:
  return sum(2 * a * b for a, b in zip(sizes[:-1], sizes[1:]))


def _new_rollout_api() -> bool:
  return "buffer" in inspect.signature(mbpo.branched_rollout).parameters


def _parts(config: mbpo.Config, parts: mbpo.Parts, state: mbpo.State, options: dict):
  """The breakdown's calls on one seed's `state`, jitted with the epoch's compiler `options`:
  name -> (fn, args, calls per env step, FLOPs per call or a function of the call's output
  giving them)."""
  env, sac, ens, trainer = parts.env, parts.sac, parts.ensemble, parts.trainer
  O, A = env.observation_size, env.action_size
  F, E, G = config.model_train_every, config.epoch_length, config.updates_per_step
  N, B = config.rollout_batch, config.sac.batch_size
  spec = ens.spec
  actor_f = _mlp_flops((O, *config.sac.hidden_sizes, 2 * A))
  critic_f = _mlp_flops((O + A, *config.sac.hidden_sizes, 1))
  k = mbpo.rollout_length(config.rollout.schedule, state.epoch)
  key = jax.random.key(123)
  refits = E // F

  def fit(key, fit_state, real):
    return trainer.fit(key, fit_state, real.data, buffer_lib.valid_mask(real))

  def fit_flops(out):
    _, m = out
    members, b, eb = spec.num_members, config.fit.batch_size, config.fit.eval_batch_size
    train_rows = -(-int(m.num_train) // b) * b
    n_eval = int(m.num_holdout) or int(m.num_train)
    eval_rows = -(-n_eval // eb) * eb
    return int(m.epochs) * members * spec.flops_per_row() * (3 * train_rows + eval_rows)

  params = state.fit_state.params
  predict = lambda kk, obs, a: ens.predict(params, kk, obs, a, mode="ts1")
  policy = lambda kk, obs: sac.act(state.sac.params, obs, kk)
  start = buffer_lib.sample(state.real, jax.random.key(7), N).obs
  max_len = config.rollout.schedule[3]

  if _new_rollout_api():
    def rollouts(key, start, k, model_buffer):
      model_buffer, stats = mbpo.branched_rollout(predict, policy, parts.termination_fn, key,
                                                  start, k, model_buffer)
      return model_buffer, stats.transitions
    steps_run = lambda k: k                                   # rows computed: k steps of N
  else:                                                      # commit d9948f1: masked max_len
    def rollouts(key, start, k, model_buffer):
      rolls, valid = mbpo.branched_rollout(predict, policy, parts.termination_fn, key, start,
                                           k, max_len)
      flat = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), rolls)
      return buffer_lib.add_masked(model_buffer, flat, valid.reshape(-1)), valid.sum()
    steps_run = lambda k: max_len
  rollout_flops = int(steps_run(int(k))) * N * (spec.flops_per_row() + actor_f)

  n_real = config.real_batch
  n_model = B - n_real
  window = (config.rollout.retain_epochs * refits * N * k).astype(jnp.int32)

  def sac_updates(key, sac_state, real, model_buffer):
    def update(s, kk):
      k_batch, k_sac = jax.random.split(kk)
      batch = mbpo.sac_batch(real, model_buffer, k_batch, n_real, n_model, window)
      return sac.update(s, batch, k_sac)
    return jax.lax.scan(update, sac_state, jax.random.split(key, G))[0]

  def env_steps(key, actor, real, sac_state):
    def one(carry, kk):
      actor, real, sac_state = carry
      pol = acting.stateless(lambda k2, obs: sac.act(sac_state.params, obs, k2))
      actor, tr, _, _ = acting.step(env, pol, actor, kk)
      return (actor, buffer_lib.add(real, tr), sac.observe(sac_state, tr.obs[None])), None
    return jax.lax.scan(one, (actor, real, sac_state), jax.random.split(key, F))[0]

  def evaluate(key, sac_params):
    return mbpo.evaluate(parts, config, sac_params, key)

  episode = config.episode_length or 1000
  jit = lambda fn: jax.jit(fn, compiler_options=options)
  return {
      "model_fit": (jit(fit), (key, state.fit_state, state.real), 1 / F, fit_flops),
      "rollouts": (jit(rollouts), (key, start, k, state.model_buffer), 1 / F,
                   rollout_flops),
      "sac_updates": (jit(sac_updates), (key, state.sac, state.real, state.model_buffer),
                      1.0, G * B * (4 * actor_f + 14 * critic_f)),
      "env_step": (jit(env_steps), (key, state.actor, state.real, state.sac), 1 / F,
                   F * actor_f),
      "evaluate": (jit(evaluate), (key, state.sac.params), 1 / E,
                   config.eval_episodes * episode * actor_f),
  }


def _epoch_rows(config: mbpo.Config, seeds: tuple[int, ...]) -> tuple[list[dict], Any, Any]:
  algorithm = mbpo.make(config)
  options = compile_lib.compiler_options(algorithm.dot_rows)
  rows, one_seed = [], None
  for s in seeds:
    keys = jnp.stack([jax.random.key(i) for i in range(s)])
    init = jax.jit(jax.vmap(lambda k: algorithm.init(k)[0]), compiler_options=options)
    step = jax.jit(jax.vmap(algorithm.step), donate_argnums=0, compiler_options=options)
    t0 = time.perf_counter()
    state = jax.block_until_ready(init(keys))
    t1 = time.perf_counter()
    state, _ = jax.block_until_ready(step(state))
    t2 = time.perf_counter()
    state, metrics = jax.block_until_ready(step(state))
    t3 = time.perf_counter()
    epoch_s = t3 - t2
    row = dict(name=f"epoch/seeds{s}", seeds=s, epoch_s=epoch_s,
               env_steps_per_epoch=config.epoch_length,
               s_per_env_step_per_seed=epoch_s / (config.epoch_length * s),
               init_s=t1 - t0, first_epoch_s=t2 - t1,
               rollout_length=int(np.asarray(metrics["rollout/length"]).max()),
               model_fit_epochs=float(np.mean(metrics["model/epochs"])),
               eval_return=float(np.mean(metrics["eval/return"])))
    rows.append(row)
    print(f"{s} seed(s): epoch {epoch_s:.1f} s = {row['s_per_env_step_per_seed'] * 1e3:.1f} ms "
          f"per env step per seed (k {row['rollout_length']}, fit epochs "
          f"{row['model_fit_epochs']:.1f}; first epoch with compile {t2 - t1:.1f} s)",
          flush=True)
    if s == 1:
      one_seed = state
  return rows, one_seed, algorithm


def main(args: Args) -> list[dict]:
  config = args.config
  mbpo.check_model_run(config)
  t_start = time.perf_counter()
  print(f"MBPO {config.env}: preset {args.preset}, E {config.epoch_length}, F "
        f"{config.model_train_every}, G {config.updates_per_step}, M F {config.rollout_batch}, "
        f"schedule {config.rollout.schedule}, fit max_epochs {config.fit.max_epochs} patience "
        f"{config.fit.patience}; timing epoch 2 of {config.epochs}", flush=True)
  seeds = tuple(sorted(set(args.seeds) | ({1} if args.breakdown else set())))
  rows, state, algorithm = _epoch_rows(config, seeds)
  options = compile_lib.compiler_options(algorithm.dot_rows)
  rows = [r for r in rows if r["seeds"] in args.seeds or not args.breakdown]
  if args.breakdown:
    one = jax.tree.map(lambda x: x[0], state)
    parts = mbpo.make_parts(config)
    subjects = _parts(config, parts, one, options)
    width = max(config.model.hidden_sizes)
    refs = benchlib.matmul_references(config.rollout_batch // config.model.num_elites, width,
                                      compiler_options=options)
    fns = {name: (fn, a) for name, (fn, a, _, _) in subjects.items()}
    fns.update({name: (fn, a) for name, (fn, a, _) in refs.items()})
    medians = benchlib.interleaved_medians(fns, args.repeats, warmup=1)
    rates = {name: flops / medians[name] / 1e9 for name, (_, _, flops) in refs.items()}
    ceiling = max(rates.values())
    print(f"\n{'part':<12} {'per call':>10} {'calls/step':>10} {'ms/env step':>12} "
          f"{'GFLOP/call':>11} {'GFLOP/s':>8} {'of matmul':>9}")
    total = 0.0
    for name, (fn, a, per_step, flops) in subjects.items():
      if callable(flops):
        flops = flops(fn(*a))
      sec = medians[name]
      gflops = flops / sec / 1e9
      total += sec * per_step
      rows.append(dict(name=f"breakdown/{name}", seconds_per_call=sec, calls_per_env_step=per_step,
                       s_per_env_step=sec * per_step, gflop_per_call=flops / 1e9,
                       gflops=gflops, matmul_fraction=gflops / ceiling))
      print(f"{name:<12} {sec * 1e3:8.1f} ms {per_step:10.4f} {sec * per_step * 1e3:12.2f} "
            f"{flops / 1e9:11.2f} {gflops:8.1f} {100 * gflops / ceiling:8.1f}%")
    epoch1 = next(r for r in rows if r["name"] == "epoch/seeds1") if 1 in args.seeds else None
    print(f"{'sum':<12} {'':>10} {'':>10} {total * 1e3:12.2f}"
          + (f"   (epoch, 1 seed: {epoch1['s_per_env_step_per_seed'] * 1e3:.2f})" if epoch1
             else ""))
    print("matmul references (GFLOP/s): " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items()))
    rows.append(dict(name="matmul", ceiling_gflops=ceiling, rates=rates,
                     sum_parts_s_per_env_step=total))
  rows.append(dict(name="meta", **benchlib.machine_info(), preset=args.preset,
                   rollout_api="k-step while loop" if _new_rollout_api() else "masked max_len",
                   config=dataclasses.asdict(config),
                   loadavg_1m=float(open("/proc/loadavg").read().split()[0]),
                   total_s=time.perf_counter() - t_start))
  print(f"total {time.perf_counter() - t_start:.0f} s")
  benchlib.write_rows(args.out, rows)
  return rows


if __name__ == "__main__":
  main(parse(sys.argv[1:]))
