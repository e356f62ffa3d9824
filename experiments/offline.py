"""Run an offline algorithm (MOPO, MOBILE, MOReL, COMBO, RAMBO, BC, and MOREC's filter on MOPO
or MOBILE) on a dataset: every config field on the command line, N seeds vmapped in one
compiled call per epoch.

  python experiments/offline.py --preset quick --out runs/offline_quick              # MOPO
  python experiments/offline.py --preset quick --algo mobile --penalty-coef 0.5
  python experiments/offline.py --preset quick_bc --seeds 3
  python experiments/offline.py --preset quick_morec --seeds 3                     # MOREC-MOPO
  python experiments/offline.py --preset quick_morec_mobile --seeds 3            # MOREC-MOBILE
  python experiments/offline.py --preset quick --morec.enabled --morec.num-candidates 20
  python experiments/offline.py --preset quick_combo --seeds 3            # --algo combo|rambo
  python experiments/offline.py --preset quick_rambo --penalty-coef 0    # RAMBO, lambda = 0
  python experiments/offline.py --preset mopo_hopper-medium-replay --epochs 100
  python experiments/offline.py --algo mopo --dataset ~/d4rl/hopper_medium_replay-v2.hdf5 \\
      --env hopper                                # a user's own D4RL file (or a Minari folder)
  python experiments/offline.py --help

  python experiments/offline.py --resume runs/offline_quick              # after a crash or kill

A "<env>-<kind>" dataset is made by `mbrl_jax.run.datasets.generate` on first use (see
experiments/make_dataset.py) and cached under $MBRL_JAX_DATA or ~/.cache/mbrl_jax/datasets.
Writes DIR/config.json, DIR/metrics.jsonl and .csv (one row per seed and epoch: eval/return,
eval/normalized_score, updates, model/, rollout/ and sac/ statistics, wall time),
DIR/learning_curve.png (normalised score against updates) and DIR/checkpoints/ (orbax), and
prints the dataset's own behaviour return beside the result.
"""

from __future__ import annotations

import sys

import numpy as np

from mbrl_jax.algorithms import offline
from mbrl_jax.run import cli as run_cli
from mbrl_jax.run import datasets


def parse(argv: list[str]) -> run_cli.RunArgs[offline.Config]:
  return run_cli.parse(argv, config_cls=offline.Config, presets=offline.PRESETS,
                       default_preset="quick", description=__doc__)


def main(argv: list[str] | None = None) -> dict[str, np.ndarray]:
  args = parse(sys.argv[1:] if argv is None else argv)
  config = args.config
  label = ("MOREC-" if config.morec.enabled else "") + config.algo.upper()
  name = f"offline_{'morec_' if config.morec.enabled else ''}{config.algo}"
  ds_name = config.dataset.rstrip("/").split("/")[-1]
  datasets.ensure(config.dataset, size=config.dataset_size, seed=config.dataset_seed,
                  sac_steps=config.sac_steps)   # the algorithm only reads it
  run = run_cli.start(args, name=name, validate=lambda c: offline.load_dataset(c),
                      run_name=None if args.out else f"{name}-{ds_name}-{args.preset}")
  behaviour = offline.behaviour_return(config)

  def line(epoch: int, metrics: dict, wall: float) -> str:
    r, s = metrics["eval/return"], metrics["eval/normalized_score"]
    extra = ""
    if "rollout/reward" in metrics:
      extra = (f" | model reward {metrics['rollout/reward'].mean():.2f} | rollout length "
               f"{metrics['rollout/mean_length'].mean():.2f}")
    return (f"epoch {epoch + 1}/{config.epochs}: eval return mean {r.mean():.1f} min "
            f"{r.min():.1f} max {r.max():.1f} | normalised {np.mean(s):.1f}{extra} | "
            f"{wall:.1f} s")

  history = run.execute(
      offline.make(config), title=f"{label} {ds_name}", line_fn=line,
      x="updates", y="eval/normalized_score",
      header=f"{label} on {config.dataset}: preset {args.preset}, seeds "
             f"{run.seeds}, {config.epochs} epochs of {config.epoch_length} updates")
  last = history["eval/return"][-1]
  print(f"final eval return per seed: {np.round(np.atleast_1d(last), 1).tolist()}; normalised "
        f"{np.round(np.atleast_1d(history['eval/normalized_score'][-1]), 1).tolist()}")
  b = behaviour
  print(f"dataset behaviour return {b['return']}"
        + (f" (normalised {b['normalized_score']:.1f})" if b["normalized_score"] is not None
           else ""))
  return history


if __name__ == "__main__":
  main()
