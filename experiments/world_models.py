"""World Models (Ha & Schmidhuber 2018) on pixel pendulum: V (a conv VAE of 32 x 32 frames), M
(an MDN-RNN), C (a linear or MLP controller evolved with CMA-ES), trained in the real env or inside
M's dream, seeds vmapped, one compiled call per CMA-ES generation.

  python experiments/world_models.py --preset pendulum --seeds 2 --out runs/wm_real
  python experiments/world_models.py --preset dream --temperature 1.15 --out runs/wm_dream
  python experiments/world_models.py --preset v_only --out runs/wm_v_only
  python experiments/world_models.py --preset iterative --out runs/wm_it      # tau 0.1
  python experiments/world_models.py --preset iterative_mlp --out runs/wm_mlp  # C: an MLP
  python experiments/world_models.py --preset quick                   # seconds: the loop
  python experiments/world_models.py --resume runs/wm_real             # after a crash or a kill

The random-policy episodes, V's and M's fits happen in the first compiled call (init), then
one call per generation (per iteration with --iterations N > 0, e.g. the `iterative` preset:
collect with the controller, refit M, `generations` generations); after the last one the CMA-ES mean of every seed is scored on
--final-episodes real episodes (default 100) and written to DIR/final_eval.json. Writes
DIR/config.json, DIR/metrics.jsonl and DIR/metrics.csv (per seed and generation: eval/return,
es/best_fitness, es/mean_fitness, es/sigma, env_steps, model/vae_loss, model/mdn_nll, ...),
DIR/learning_curve.png and DIR/checkpoints/.
"""

from __future__ import annotations

import json
import sys

import jax
import numpy as np

from mbrl_jax import run as run_lib
from mbrl_jax.algorithms import world_models
from mbrl_jax.run import cli as run_cli

FINAL_EPISODES = 100


def parse(argv: list[str]) -> run_cli.RunArgs[world_models.Config]:
  return run_cli.parse(argv, config_cls=world_models.Config, presets=world_models.PRESETS,
                       default_preset="quick", description=__doc__)


def final_eval(config: world_models.Config, state, keys: jax.Array, episodes: int
               ) -> np.ndarray:
  """Real-env returns [S, episodes] of each seed's CMA-ES mean (one vmapped call)."""
  eval_keys = jax.vmap(lambda k: jax.random.fold_in(k, 10_000))(keys)
  fn = jax.jit(jax.vmap(lambda s, k: world_models.evaluate(config, s, k, episodes)))
  return np.asarray(fn(state, eval_keys))


def main(argv: list[str] | None = None) -> dict[str, np.ndarray]:
  argv = sys.argv[1:] if argv is None else list(argv)
  episodes = FINAL_EPISODES
  if "--final-episodes" in argv:
    i = argv.index("--final-episodes")
    try:
      episodes = int(argv[i + 1])
    except (IndexError, ValueError):
      raise SystemExit("error: --final-episodes needs an int") from None
    if episodes < 1:
      raise SystemExit(f"error: --final-episodes must be >= 1, got {episodes}")
    del argv[i:i + 2]
  args = parse(argv)
  config = args.config
  run = run_cli.start(args, name="world_models")
  what = ("V-only" if config.controller_inputs == "z" else "V+M+C") + (
      f", dream at tau {config.temperature:g}" if config.train_in == "dream" else ", real env")

  iterative = config.iterations > 0
  unit, total = ("iteration", config.iterations) if iterative else ("generation",
                                                                   config.generations)

  def line(gen: int, metrics: dict, wall: float) -> str:
    r = metrics["eval/return"]
    extra = ""
    if iterative:
      extra = (f" | collected return {metrics['train/return'].mean():.1f} dream return of "
               f"the mean {metrics['es/dream_return'].mean():.1f} | mdn nll on the new data "
               f"{metrics['model/mdn_nll_collected'].mean():.3f} -> refit "
               f"{metrics['model/mdn_nll'].mean():.3f} | vae recon new "
               f"{metrics['model/vae_recon_collected'].mean():.1f} random "
               f"{metrics['model/vae_recon_random'].mean():.1f}")
    return (f"{unit} {gen + 1}/{total}: eval return mean {r.mean():.1f} "
            f"(per seed {' '.join(f'{v:.1f}' for v in np.atleast_1d(r))}) | candidates mean "
            f"{metrics['es/mean_fitness'].mean():.1f} best so far "
            f"{metrics['es/best_fitness'].mean():.1f} | sigma {metrics['es/sigma'].mean():.3f}"
            f" | vae {metrics['model/vae_loss'].mean():.1f} mdn nll "
            f"{metrics['model/mdn_nll'].mean():.3f}{extra} | {wall:.1f} s")

  algorithm = world_models.make(config)
  history = run.execute(
      algorithm, title=f"World Models {config.env}", line_fn=line,
      x="env_steps" if iterative else "generation",
      y="eval/return",
      header=f"World Models ({what}) on pixel {config.env}: preset {args.preset}, seeds "
             f"{run.seeds}, {config.random_episodes} random episodes, "
             + (f"{config.iterations} iterations of {config.collect_episodes} episodes "
                f"(noise {config.collect_noise:g}), M refit {config.refit_steps} steps, "
                if iterative else "")
             + f"{config.generations} generations of {config.population} x "
             f"{config.rollouts} rollouts")
  # The finished run's checkpoint holds the final state: a resume there runs no chunk.
  state, _ = run_lib.train(algorithm, run.keys, checkpoint_dir=str(run.out / "checkpoints"),
                           resume=True)
  returns = final_eval(config, state, run.keys, episodes)
  record = {"episodes": episodes, "seeds": run.seeds,
            "mean_return": float(returns.mean()),
            "per_seed_mean": returns.mean(axis=1).tolist(),
            "per_seed_std": returns.std(axis=1).tolist(),
            "min": float(returns.min()), "max": float(returns.max())}
  (run.out / "final_eval.json").write_text(json.dumps(record, indent=1))
  print(f"final: CMA-ES mean on {episodes} real episodes per seed: mean return "
        f"{record['mean_return']:.1f} (per seed "
        + ", ".join(f"{m:.1f} +- {s:.1f}" for m, s in zip(record["per_seed_mean"],
                                                          record["per_seed_std"]))
        + f"); wrote {run.out / 'final_eval.json'}")
  return history


if __name__ == "__main__":
  main()
