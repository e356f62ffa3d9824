"""Offline benchmark: the normalised score of each algorithm on each dataset, beside the
dataset's own behaviour score, as a printed table and a JSON file.

  python experiments/bench_offline.py                                # pendulum, quick presets
  python experiments/bench_offline.py --datasets pendulum-medium pendulum-medium-replay \\
      --algos mopo mobile morel bc --epochs 20 --seeds 2 --out runs/bench_offline.json
  python experiments/bench_offline.py --algos mopo combo rambo --seeds 3   # COMBO, RAMBO
  python experiments/bench_offline.py --datasets hopper-medium-replay --paper   # paper settings
  python experiments/bench_offline.py --datasets pendulum-medium-replay --seeds 3 \
      --algos mopo morec-mopo mobile morec-mobile                 # MOREC beside its base

Each cell is one `mbrl_jax.run.train` call (seeds vmapped): the quick preset of the algorithm
(or, with --paper, OfflineRL-Kit's per-dataset setting, `offline.preset_for`) on the dataset,
scored as the mean normalised score of the last `--last` epochs' deterministic evaluations,
mean and min-max over seeds. Scores are 100 * (R - R_random) / (R_expert - R_random) with the
references the dataset's generator measured on the same env (see `mbrl_jax.run.datasets`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from mbrl_jax import run
from mbrl_jax.algorithms import offline
from mbrl_jax.run import datasets

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import benchlib  # noqa: E402


MOREC = {"morec-mopo": "mopo", "morec-mobile": "mobile"}   # MOREC's filter on the base method


def config_for(algo: str, dataset: str, a: argparse.Namespace) -> offline.Config:
  base = MOREC.get(algo, algo)
  if a.paper:
    cfg = offline.preset_for(base, dataset)
    if algo in MOREC:
      cfg = dataclasses.replace(cfg, morec=offline.dr_lib.MorecConfig(enabled=True))
  else:
    name = "quick" if base == "mopo" else f"quick_{base}"
    if algo in MOREC:
      name = "quick_morec" if base == "mopo" else "quick_morec_mobile"
    cfg = dataclasses.replace(offline.PRESETS[name], dataset=dataset)
  over = {"dataset_size": a.size, "dataset_seed": a.dataset_seed}
  if a.epochs:
    over["epochs"] = a.epochs
  if a.sac_steps:
    over["sac_steps"] = a.sac_steps
  return dataclasses.replace(cfg, **over)


def main(argv: list[str] | None = None) -> list[dict]:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--datasets", nargs="+", default=["pendulum-medium-replay", "pendulum-medium"])
  p.add_argument("--algos", nargs="+", default=["mopo", "mobile", "morel", "combo", "rambo", "bc"],
                 help="mopo, mobile, morel, combo, rambo, bc, morec-mopo, morec-mobile")
  p.add_argument("--epochs", type=int, default=None, help="epochs per run (default: preset's)")
  p.add_argument("--seeds", type=int, default=1)
  p.add_argument("--last", type=int, default=3, help="epochs averaged for the score")
  p.add_argument("--size", type=int, default=10_000, help="dataset transitions per kind")
  p.add_argument("--dataset-seed", type=int, default=0)
  p.add_argument("--sac-steps", type=int, default=None, help="generator SAC budget")
  p.add_argument("--paper", action="store_true", help="OfflineRL-Kit's settings, not quick")
  p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/bench_offline.json"))
  a = p.parse_args(sys.argv[1:] if argv is None else argv)
  rows = []
  keys = jnp.stack([jax.random.key(s) for s in range(a.seeds)])
  for dataset in a.datasets:
    for algo in a.algos:
      cfg = config_for(algo, dataset, a)
      datasets.ensure(cfg.dataset, size=cfg.dataset_size, seed=cfg.dataset_seed,
                      sac_steps=cfg.sac_steps)
      t = time.perf_counter()
      algorithm = offline.make(cfg)
      _, h = run.train(algorithm, keys if a.seeds > 1 else keys[0])
      wall = time.perf_counter() - t
      s = np.asarray(h["eval/normalized_score"]).reshape(cfg.epochs, -1)[-a.last:].mean(0)
      r = np.asarray(h["eval/return"]).reshape(cfg.epochs, -1)[-a.last:].mean(0)
      b = offline.behaviour_return(cfg)
      rows.append(dict(dataset=dataset, algo=algo, epochs=cfg.epochs,
                       updates=cfg.epochs * cfg.epoch_length, seeds=a.seeds,
                       score_mean=float(s.mean()), score_min=float(s.min()),
                       score_max=float(s.max()), score_per_seed=s.tolist(),
                       diagnostics={k: float(np.mean(h[k])) for k in h
                                    if k.startswith("morec/") or k == "rollout/mean_length"},
                       return_mean=float(r.mean()),
                       behaviour_return=b["return"], behaviour_score=b["normalized_score"],
                       wall_s=wall, preset="paper" if a.paper else "quick",
                       config=json.loads(json.dumps(dataclasses.asdict(cfg), default=repr))))
      print(f"{dataset} {algo}: normalised {s.mean():.1f} (min {s.min():.1f} max "
            f"{s.max():.1f}), return {r.mean():.1f}, {wall:.0f} s", flush=True)
  print()
  print(f"{'dataset':28s} {'behaviour':>9s} " + " ".join(f"{x:>16s}" for x in a.algos))
  for dataset in a.datasets:
    cells = {r["algo"]: r for r in rows if r["dataset"] == dataset}
    bs = cells[a.algos[0]]["behaviour_score"]
    line = f"{dataset:28s} {('%.1f' % bs) if bs is not None else 'n/a':>9s} "
    line += " ".join(f"{c['score_mean']:6.1f} [{c['score_min']:.0f},{c['score_max']:.0f}]".rjust(16)
                     for c in (cells[x] for x in a.algos))
    print(line)
  return benchlib.finish(a.out, rows)


if __name__ == "__main__":
  main()
