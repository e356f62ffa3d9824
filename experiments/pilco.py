"""Run PILCO: every config field on the command line, N seeds vmapped in one compiled call.

  python experiments/pilco.py --preset cartpole_swingup --seeds 3 --out runs/pilco-swingup-3s
  python experiments/pilco.py --preset quick --out runs/pilco_quick
  python experiments/pilco.py --trials 15 --model.sparse-inducing 100 --optimiser.steps 50

  python experiments/pilco.py --resume runs/pilco-swingup-3s     # after a crash or a kill

With --float64 (config.float64) the script turns on JAX's x64 mode first (process-global).

Writes DIR/config.json (the resolved config), DIR/metrics.jsonl and DIR/metrics.csv (one row
per seed and trial: seed, trial, env_steps, train/return, train/success, policy/real_cost,
policy/predicted_cost, model/..., wall time), DIR/learning_curve.png and DIR/checkpoints/
(orbax). Trial 0 is the random-action trial. At the end it prints, per seed, the first trial
that succeeded and the seconds of interaction up to and including it.
"""

from __future__ import annotations

import sys

import jax
import numpy as np

from mbrl_jax.algorithms import pilco
from mbrl_jax.run import cli as run_cli


def parse(argv: list[str]) -> run_cli.RunArgs[pilco.Config]:
  return run_cli.parse(argv, config_cls=pilco.Config, presets=pilco.PRESETS,
                       default_preset="cartpole_swingup", description=__doc__)


def first_success(history: dict[str, np.ndarray], config: pilco.Config) -> list[dict]:
  """Per seed: the first successful trial (None if none) and the seconds of interaction up
  to and including it (every trial before it, the random ones included, counted in full)."""
  success = np.atleast_2d(history["train/success"].T)            # [S, trials]
  steps = np.atleast_2d(history["env_steps"].T)
  out = []
  for s_row, n_row in zip(success, steps):
    hit = np.flatnonzero(s_row > 0.5)
    t = int(hit[0]) if hit.size else None
    out.append({"trial": t, "seconds": None if t is None else float(n_row[t]) * config.dt})
  return out


def main(argv: list[str] | None = None) -> dict[str, np.ndarray]:
  args = parse(sys.argv[1:] if argv is None else argv)
  config = args.config
  if config.float64:                 # process-global: before anything is built or compiled
    jax.config.update("jax_enable_x64", True)
  run = run_cli.start(args, name="pilco")
  total = config.random_trials + config.trials

  def line(trial: int, metrics: dict, wall: float) -> str:
    r, ok = metrics["train/return"], metrics["train/success"]
    extra = ""
    if "policy/predicted_cost" in metrics:
      extra = (f" | cost predicted {metrics['policy/predicted_cost'].mean():.2f} real "
               f"{metrics['policy/real_cost'].mean():.2f}")
    return (f"trial {trial}/{total - 1}: return mean {r.mean():.2f} min {r.min():.2f} max "
            f"{r.max():.2f} | success {int(ok.sum())}/{ok.size}{extra} | {wall:.1f} s")

  history = run.execute(
      pilco.make(config), title=f"PILCO {config.env}", line_fn=line, x="trial",
      header=f"PILCO on {config.env}: preset {args.preset}, seeds {run.seeds}, "
             f"{config.random_trials} random + {config.trials} trials of "
             f"{config.episode_length} steps ({config.episode_length * config.dt:g} s)")
  print("returns per trial (rows: trials, columns: seeds), * = success:")
  for t, (r, ok) in enumerate(zip(history["train/return"], history["train/success"])):
    print(f"  trial {t}: " + " ".join(f"{v:6.2f}{'*' if o > 0.5 else ' '}"
                                      for v, o in zip(np.atleast_1d(r), np.atleast_1d(ok))))
  for seed, hit in zip(run.seeds, first_success(history, config)):
    if hit["trial"] is None:
      print(f"seed {seed}: no successful trial")
    else:
      print(f"seed {seed}: first success at trial {hit['trial']} (random trials included), "
            f"{hit['seconds']:g} s of interaction")
  return history


if __name__ == "__main__":
  main()
