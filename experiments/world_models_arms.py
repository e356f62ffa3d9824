"""World Models ablation arms sharing one V and M: from a `world_models.py` run's latest
checkpoint (V and M are fitted once, in init, and never change after; an iterative run's
latest M is the one refitted on every controller's data so far), evolve a fresh
controller per arm (dream training at several temperatures, V-only in the real env, ...)
and score each arm's CMA-ES mean on real episodes. Every arm then differs only in how C is
trained, not in V's or M's fit, and init (the costly part on a CPU) runs once.

  python experiments/world_models_arms.py --source runs/wm_real --out results/wm_arms.json \\
      --arms dream:0.1 dream:1.0 dream:1.15 v_only --generations 50
  python experiments/world_models_arms.py --source runs/wm_real --arms real --continue-es \\
      --generations 100 --out results/wm_real_more.json      # 100 more generations of C

Arms: "dream:TAU" (V + M + C trained inside M at temperature TAU), "real" (V + M + C in the
real env), "v_only" (C on z alone, real env), "dream_v_only:TAU". Prints each arm's
evaluation curve and final score; writes {arm: {eval_return per generation, best_fitness per
generation, final_mean_return, per_seed_mean, ...}} as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time

import jax
import numpy as np

from mbrl_jax.algorithms import world_models as wm
from mbrl_jax.run import cli as run_cli
from mbrl_jax.run.checkpoint import Checkpointer, run_meta

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import world_models as wm_script  # noqa: E402


def arm_config(config: wm.Config, arm: str, generations: int) -> wm.Config:
  name, _, tau = arm.partition(":")
  # Arms run one generation per chunk: from an iterative source (`--preset iterative`) they
  # evolve C against its last M (fitted on the controllers' data too) and collect nothing.
  changes = dict(generations=generations, iterations=0)
  if name in ("dream", "dream_v_only"):
    if not tau:
      raise SystemExit(f"error: arm {arm!r} needs a temperature, e.g. {name}:1.0")
    changes.update(train_in="dream", temperature=float(tau))
  elif name in ("real", "v_only"):
    changes.update(train_in="real")
  else:
    raise SystemExit(f"error: unknown arm {arm!r}; valid: dream:TAU, dream_v_only:TAU, real, "
                     "v_only")
  changes["controller_inputs"] = "z" if name.endswith("v_only") else "zh"
  try:
    return dataclasses.replace(config, **changes)
  except ValueError as e:
    raise SystemExit(f"error: arm {arm!r}: {e}") from None


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--source", type=pathlib.Path, required=True,
                      help="a world_models.py run directory with a checkpoint")
  parser.add_argument("--arms", nargs="+", required=True)
  parser.add_argument("--generations", type=int, default=50)
  parser.add_argument("--final-episodes", type=int, default=wm_script.FINAL_EPISODES)
  parser.add_argument("--out", type=pathlib.Path, default=None)
  parser.add_argument("--continue-es", action="store_true",
                      help="start each arm from the source's CMA-ES state (its controller must "
                           "have the same inputs) instead of a fresh one: more generations of a "
                           "finished run")
  args = parser.parse_args(argv)
  if args.generations < 1 or args.final_episodes < 1:
    raise SystemExit("error: --generations and --final-episodes must be >= 1")
  saved = run_cli.saved_args(args.source, wm.Config)
  configs = {arm: arm_config(saved.config, arm, args.generations) for arm in args.arms}
  seeds = list(range(saved.seed, saved.seed + saved.seeds))
  keys = jax.numpy.stack([jax.random.key(s) for s in seeds])
  source_alg = wm.make(saved.config)
  checkpointer = Checkpointer(args.source / "checkpoints",
                              meta=run_meta("world_models", keys, saved.config))
  template = jax.eval_shape(jax.vmap(source_alg.init), keys)[0]
  for _ in range(5):              # a running source may replace its latest checkpoint meanwhile
    step_id = checkpointer.latest_step()
    if step_id is None:
      raise SystemExit(f"error: {args.source} has no checkpoint yet (init not finished)")
    try:
      source, _ = checkpointer.restore(template, step_id)
      break
    except FileNotFoundError:
      time.sleep(2.0)
  else:
    raise SystemExit(f"error: could not restore a checkpoint of {args.source}")
  print(f"V and M from {args.source} (checkpoint {step_id}): vae loss "
        f"{np.asarray(source.models.vae_loss)}, mdn nll {np.asarray(source.models.mdn_nll)}",
        flush=True)
  results = {}
  for arm, config in configs.items():
    parts = wm.make_parts(config)
    arm_keys = jax.vmap(lambda k: jax.random.fold_in(k, 7))(keys)
    es_keys = jax.vmap(lambda k: jax.random.fold_in(k, 8))(keys)
    if args.continue_es:
      source_dims = wm.controller_num_params(saved.config.controller_size, parts.action_size,
                                             saved.config.controller_hidden)
      if parts.es.num_dims != source_dims:
        raise SystemExit(f"error: --continue-es: arm {arm!r} has {parts.es.num_dims} "
                         f"controller parameters, the source {source_dims}")
      es_state = source.es
    else:
      es_state = jax.vmap(lambda k: wm.init_es(parts, k))(es_keys)
    state = source._replace(
        es=es_state, key=arm_keys,
        generation=source.generation * 0,
        env_steps=source.env_steps * 0 + config.random_episodes * config.episode_length)
    step = jax.jit(jax.vmap(wm.make(config).step))
    curve, best = [], []
    start = time.perf_counter()
    for g in range(config.generations):
      state, m = step(state)
      curve.append(np.asarray(m["eval/return"]).tolist())
      best.append(np.asarray(m["es/best_fitness"]).tolist())
      if g % 10 == 9 or g == config.generations - 1:
        print(f"{arm} generation {g + 1}: eval return {np.mean(curve[-1]):.1f}, best candidate "
              f"{np.mean(best[-1]):.1f} | {time.perf_counter() - start:.0f} s", flush=True)
    returns = wm_script.final_eval(config, state, keys, args.final_episodes)
    results[arm] = dict(eval_return=curve, best_fitness=best, final_episodes=args.final_episodes,
                        final_mean_return=float(returns.mean()),
                        per_seed_mean=returns.mean(1).tolist(),
                        per_seed_std=returns.std(1).tolist(), seeds=seeds,
                        source=str(args.source), source_checkpoint=step_id,
                        generations=config.generations)
    print(f"{arm}: final CMA-ES mean on {args.final_episodes} real episodes per seed: "
          f"{returns.mean():.1f} (per seed {', '.join(f'{v:.1f}' for v in returns.mean(1))})",
          flush=True)
    if args.out is not None:
      args.out.parent.mkdir(parents=True, exist_ok=True)
      args.out.write_text(json.dumps(results, indent=1))
  return results


if __name__ == "__main__":
  main()
