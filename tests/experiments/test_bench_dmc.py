"""experiments/bench_dmc.py refuses bad arguments before building an env (its timed run needs
playground and minutes of compiles, so the suite does not run it)."""

import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import bench_dmc  # noqa: E402


def test_bench_dmc_refuses_bad_arguments():
  with pytest.raises(SystemExit, match="--steps must be >= 1"):
    bench_dmc.main(bench_dmc.Args(steps=0))
  with pytest.raises(SystemExit, match="--impls takes jax, warp"):
    bench_dmc.main(bench_dmc.Args(impls=("cuda",)))
  with pytest.raises(ValueError, match="Unknown DM Control task 'cartpole'"):
    bench_dmc.main(bench_dmc.Args(tasks=("cartpole",)))
