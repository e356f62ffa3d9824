"""MuZero (a learned model) or AlphaZero (the env's true model) with mctx search on the
discrete-action envs, N seeds vmapped in one compiled call per chunk of env steps.

  python experiments/muzero.py --preset catch --seeds 3 --out runs/muzero_catch
  python experiments/muzero.py --preset cartpole_v1 --seeds 3 --out runs/muzero_cartpole
  python experiments/muzero.py --preset alphazero_cartpole_v1 --seeds 3
  python experiments/muzero.py --preset catch --search gumbel --num-simulations 8
  python experiments/muzero.py --preset catch --algo alphazero

  python experiments/muzero.py --resume runs/muzero_catch      # after a crash or a kill

Envs: cartpole_v1, catch (mbrl_jax.envs.discrete). Writes DIR/config.json,
DIR/metrics.jsonl and DIR/metrics.csv (one row per seed and chunk: env_steps, eval/return,
train/return, loss/..., search/root_value, wall time), DIR/learning_curve.png and
DIR/checkpoints/ (every chunk by default, so a killed run resumes where it was).
"""

from __future__ import annotations

import sys

import numpy as np

from mbrl_jax.algorithms import muzero
from mbrl_jax.run import cli as run_cli


def parse(argv: list[str]) -> run_cli.RunArgs[muzero.Config]:
  return run_cli.parse(argv, config_cls=muzero.Config, presets=muzero.PRESETS,
                       default_preset="catch", description=__doc__)


def main(argv: list[str] | None = None) -> dict[str, np.ndarray]:
  args = parse(sys.argv[1:] if argv is None else argv)
  config = args.config
  run = run_cli.start(args, name=config.algo)

  def line(chunk: int, metrics: dict, wall: float) -> str:
    r = metrics["eval/return"]
    return (f"chunk {chunk}/{config.chunks - 1}: {int(np.max(metrics['env_steps']))} env "
            f"steps | eval return mean {np.mean(r):.2f} min {np.min(r):.2f} max "
            f"{np.max(r):.2f} | train return {np.nanmean(metrics['train/return']):.2f} | "
            f"loss {np.mean(metrics['loss/total']):.3f} | {wall:.1f} s")

  history = run.execute(
      muzero.make(config), title=f"{config.algo} ({config.search} search) {config.env}",
      line_fn=line, x="env_steps",
      header=f"{config.algo} on {config.env}: preset {args.preset}, seeds {run.seeds}, "
             f"{config.env_steps} env steps in {config.chunks} chunks, "
             f"{config.num_simulations} {config.search} simulations per step")
  print("eval return per chunk (rows: chunks, columns: seeds):")
  for t, r in enumerate(history["eval/return"]):
    steps = int(np.max(history["env_steps"][t]))
    print(f"  {steps:7d} steps: " + " ".join(f"{v:7.2f}" for v in np.atleast_1d(r)))
  return history


if __name__ == "__main__":
  main()
