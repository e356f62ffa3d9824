"""Tree search (MCTS or Gumbel MuZero, through mctx) on the TRUE model of a discrete-action
env: no learning, one episode per chunk, replanned every step, N seeds vmapped in one compiled
call.

  python experiments/mcts.py --preset catch --seeds 4 --out runs/mcts_catch
  python experiments/mcts.py --preset cartpole_v1 --seeds 4
  python experiments/mcts.py --preset maze                    # the Dyna maze: 14 steps
  python experiments/mcts.py --env catch --search gumbel --num-simulations 8

  python experiments/mcts.py --resume runs/mcts_catch         # after a crash or a kill

Envs: cartpole_v1, catch (mbrl_jax.envs.discrete) and maze_dyna, maze_blocking,
maze_shortcut (mbrl_jax.envs.maze, initial walls). Writes DIR/config.json, DIR/metrics.jsonl
and DIR/metrics.csv (one row per seed and episode: train/return, train/episode_length,
search/root_value, search/chosen_visits, wall time), DIR/learning_curve.png and
DIR/checkpoints/. Learning (AlphaZero, MuZero) is experiments/muzero.py.
"""

from __future__ import annotations

import sys

import numpy as np

from mbrl_jax.algorithms import mcts_control
from mbrl_jax.run import cli as run_cli


def parse(argv: list[str]) -> run_cli.RunArgs[mcts_control.Config]:
  return run_cli.parse(argv, config_cls=mcts_control.Config, presets=mcts_control.PRESETS,
                       default_preset="catch", description=__doc__)


def main(argv: list[str] | None = None) -> dict[str, np.ndarray]:
  args = parse(sys.argv[1:] if argv is None else argv)
  config = args.config
  run = run_cli.start(args, name="mcts_control")

  def line(episode: int, metrics: dict, wall: float) -> str:
    r = metrics["train/return"]
    return (f"episode {episode}/{config.episodes - 1}: return mean {r.mean():.2f} min "
            f"{r.min():.2f} max {r.max():.2f} | length "
            f"{metrics['train/episode_length'].mean():.1f} | root value "
            f"{metrics['search/root_value'].mean():.3f} | {wall:.1f} s")

  history = run.execute(
      mcts_control.make(config), title=f"{config.search} search {config.env}", line_fn=line,
      x="chunk",
      header=f"{config.search} search on the true {config.env}: preset {args.preset}, seeds "
             f"{run.seeds}, {config.episodes} episodes, {config.num_simulations} simulations "
             f"per step, value {config.value}")
  print("returns per episode (rows: episodes, columns: seeds):")
  for t, r in enumerate(history["train/return"]):
    print(f"  episode {t}: " + " ".join(f"{v:7.2f}" for v in np.atleast_1d(r)))
  return history


if __name__ == "__main__":
  main()
