"""Make (or find in the cache) an offline dataset with the library's own SAC, D4RL's kinds.

  python experiments/make_dataset.py --env pendulum --kind medium-replay
  python experiments/make_dataset.py --env hopper --kind medium-replay          # 100k default
  python experiments/make_dataset.py --env hopper --kind medium --size 1000000
  python experiments/make_dataset.py --env halfcheetah --kind all --sac-steps 300000
  python experiments/make_dataset.py --env pendulum --kind random --out my_pendulum.hdf5

The SAC run behind medium / medium-replay / expert checkpoints every epoch under the cache
(`$MBRL_JAX_DATA` or ~/.cache/mbrl_jax/datasets, folder <env>-sac-...-work); running the same
command again after a kill resumes it. The dataset is written there as HDF5 with D4RL's keys
(observations, actions, rewards, next_observations, terminals, timeouts) and its metadata, and
copied to --out if given (this is `mbrl_jax.run.datasets.generate(env, kind, ...)`; after it,
`mbrl_jax.data.offline.load("<env>-<kind>", size=..., seed=...)` reads the set). Prints the
dataset's size, its policy return and the reference returns its normalised scores use.
"""

from __future__ import annotations

import argparse
import shutil
import sys

from mbrl_jax.data import offline
from mbrl_jax.run import datasets


def main(argv: list[str] | None = None) -> list[offline.Dataset]:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--env", default="pendulum", help="pendulum, inverted_pendulum, hopper, "
                 "halfcheetah, walker2d, ... (any registered continuous env)")
  p.add_argument("--kind", default="medium-replay",
                 help=f"one of {', '.join(offline.KINDS)}, or 'all'")
  p.add_argument("--size", type=int, default=None,
                 help="transitions per kind (default 100000; pendulum 10000)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--sac-steps", type=int, default=None,
                 help="env steps of the SAC run (default: 6000 pendulum, 300000 Brax)")
  p.add_argument("--cache-dir", default=None, help="cache root (default $MBRL_JAX_DATA or "
                 "~/.cache/mbrl_jax/datasets)")
  p.add_argument("--out", default=None, help="also copy the HDF5 file here (one kind only)")
  a = p.parse_args(sys.argv[1:] if argv is None else argv)
  kinds = offline.KINDS if a.kind == "all" else (a.kind,)
  size = a.size or (10_000 if a.env in ("pendulum", "inverted_pendulum") else 100_000)
  out = []
  for kind in kinds:
    try:
      ds = datasets.generate(a.env, kind, size=size, seed=a.seed, sac_steps=a.sac_steps,
                             cache_dir=a.cache_dir)
    except ValueError as e:
      raise SystemExit(f"error: {e}") from None
    m = ds.metadata
    score = ""
    if m.get("policy_return") is not None and m.get("ref_max_score") is not None:
      score = f" (normalised {float(offline.normalized_score(m['policy_return'], m)):.1f})"
    print(f"{a.env}-{kind}: {ds.size} transitions, {m['episodes']} complete episodes, policy "
          f"return {m['policy_return']}{score}; references random {m['ref_min_score']}, "
          f"expert {m['ref_max_score']}")
    out.append(ds)
  if a.out and len(kinds) == 1:
    path = offline.cache_path(a.env, kinds[0], size, a.seed, a.sac_steps, a.cache_dir)
    shutil.copyfile(path, a.out)
    print(f"copied {path} -> {a.out}")
  return out


if __name__ == "__main__":
  main()
