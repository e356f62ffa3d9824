"""Learning curves from runs' metrics.jsonl: mean over seeds with the min-max spread.

  python -m mbrl_jax.run.plot runs/pets_a runs/pets_b --out curves.png [--x env_steps]
"""

from __future__ import annotations

import collections
import dataclasses
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import tyro  # noqa: E402

from mbrl_jax.run.metrics import read_jsonl  # noqa: E402


# The column that numbers a run's compiled chunks, by algorithm.
INDEX_COLUMNS = ("trial", "epoch", "chunk", "generation", "iteration")


def curves(rows: list[dict], x: str, y: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Per chunk (the rows' "trial", "epoch" or "chunk" column): x (mean over seeds), and the
  mean, min and max of y over seeds."""
  by_trial = collections.defaultdict(list)
  group = next((k for k in INDEX_COLUMNS if rows and k in rows[0]), "trial")
  for row in rows:
    if row.get(y) is not None:
      by_trial[row[group]].append(row)
  trials = sorted(by_trial)
  xs = np.array([np.mean([r[x] for r in by_trial[t]]) for t in trials], float)
  ys = [np.array([r[y] for r in by_trial[t]], float) for t in trials]
  return (xs, np.array([v.mean() for v in ys]), np.array([v.min() for v in ys]),
          np.array([v.max() for v in ys]))


def default_y(rows: list[dict]) -> str:
  """"eval/return" where the rows have it, else "train/return" (PETS evaluates by training)."""
  has_eval = any(r.get("eval/return") is not None for r in rows)
  return "eval/return" if has_eval else "train/return"


def plot_learning_curves(run_dirs: list[pathlib.Path], out: pathlib.Path, *, x: str = "trial",
                         y: str | None = None, title: str | None = None) -> pathlib.Path:
  """Draws y (default: `default_y` of the first run) against x for each run directory (its
  metrics.jsonl) into the PNG `out`."""
  fig, ax = plt.subplots(figsize=(6, 4))
  for run_dir in run_dirs:
    rows = read_jsonl(pathlib.Path(run_dir) / "metrics.jsonl")
    y = y or default_y(rows)
    xs, mean, lo, hi = curves(rows, x, y)
    seeds = len({r["seed"] for r in rows})
    line, = ax.plot(xs, mean, marker="o", label=f"{pathlib.Path(run_dir).name} ({seeds} seeds)")
    ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2)
  ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
  ax.set_xlabel(x.replace("_", " "))
  ax.set_ylabel(f"{y.replace('_', ' ')} (mean, min-max over seeds)")
  if title:
    ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  out = pathlib.Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out, dpi=100)
  plt.close(fig)
  return out


@dataclasses.dataclass(frozen=True)
class Args:
  runs: tyro.conf.Positional[tuple[pathlib.Path, ...]]
  """Run directories, each with a metrics.jsonl."""
  out: pathlib.Path = pathlib.Path("learning_curves.png")
  """PNG to write."""
  x: str = "trial"
  """Column on the x axis (trial or env_steps)."""
  y: str | None = None
  """Column on the y axis (default: eval/return where the runs have it, else train/return)."""


def main() -> None:
  args = tyro.cli(Args)
  print(plot_learning_curves(list(args.runs), args.out, x=args.x, y=args.y))


if __name__ == "__main__":
  main()
