"""MBPO against SAC on one Brax env and env-step budget: return against env steps, and the
sample-efficiency ratio.

  python experiments/bench_mbpo_vs_sac.py --env hopper --budget 30000 \
      --mbpo-run runs/mbpo-hopper-30k --out results/bench_mbpo_vs_sac_hopper.json

It writes the JSON and a PNG of the curves (mean over seeds with the min-max band; `--plot`).

Rows:
  * MBPO: ours (`experiments/mbpo.py --preset ENV --env-steps BUDGET`), read from a finished
    run directory (`--mbpo-run`, so a long run can be checkpointed and resumed on its own), or
    run here when `--mbpo-run` is not given.
  * Brax SAC: `brax.training.agents.sac.train`, for `--sac-factor` x BUDGET env steps, run by
    `brax_sac_baseline.py` in a separate environment with jax 0.9.2 (Brax's agents do not run
    on jax 0.10, see NOTES.md). `--brax-python` names that environment's python; without it,
    `.venv-brax-sac/` is created in the repository from `requirements-brax-sac.txt`. Finished
    curves are cached in `--brax-results` (results/brax_sac/) by env, steps and seed; a cached
    longer run of the same env and seed is reused, cut at sac_factor x BUDGET.
  * our SAC: `mbrl_jax.algorithms.sac` (the MBPO loop without a model, one update per step),
    for `--our-sac-steps` env steps (default: the budget; 0 skips the row).

The sample-efficiency ratio of a SAC row is (env steps at which its mean evaluation return
first reaches R) / BUDGET, where R is MBPO's mean evaluation return at the budget (its last
evaluation). The MBPO paper reports about 5x or more on hopper and halfcheetah. When SAC never
reaches R, the ratio is reported as "> its steps / BUDGET". MBPO's single last evaluation is
noisy (on hopper it moved by a factor of 2 from one epoch to the next), so a second ratio uses
R_smooth, the mean of its last `--smooth` evaluations, with the same first-crossing rule.
Evaluations are deterministic (the policy's mean action), averaged over episodes and then
over seeds.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import subprocess
import sys
import time

import numpy as np
import tyro

from mbrl_jax.run.metrics import read_jsonl

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))    # for `import mbpo` (experiments/mbpo.py)
BRAX_VENV = REPO / ".venv-brax-sac"
REQUIREMENTS = REPO / "experiments" / "requirements-brax-sac.txt"


@dataclasses.dataclass(frozen=True)
class Args:
  env: str = "hopper"
  """A Brax env with an MBPO preset: hopper, halfcheetah, walker2d, inverted_pendulum."""
  budget: int = 30_000
  """MBPO's env-step budget."""
  seeds: int = 1
  """Seeds per row (first seed 0)."""
  mbpo_run: pathlib.Path | None = None
  """A finished `experiments/mbpo.py` run directory for this env (None: run MBPO here)."""
  sac_factor: int = 5
  """Brax SAC runs for sac_factor x budget env steps."""
  sac_eval_every: int = 5000
  """Env steps between Brax SAC evaluations (about)."""
  brax_results: pathlib.Path = REPO / "results" / "brax_sac"
  """Cache of finished Brax SAC curves (ENV_STEPS_seedN.json); an existing file is reused."""
  brax_python: pathlib.Path | None = None
  """Python of an environment with jax 0.9.2 and brax 0.14.2 (None: create .venv-brax-sac)."""
  smooth: int = 3
  """R_smooth averages MBPO's last `smooth` evaluations at or before the budget."""
  our_sac_steps: int | None = None
  """Env steps for our SAC row (None: the budget; 0: skip)."""
  our_sac_normalize_observations: bool = False
  """Our SAC row standardises its inputs with running observation statistics (as Brax's SAC)."""
  our_sac_results: pathlib.Path = REPO / "results" / "our_sac"
  """Cache of finished curves of our SAC (ENV_STEPS_seedsN.json); an existing file is reused."""
  out: pathlib.Path | None = None
  """JSON file for the curves and ratios (default results/bench_mbpo_vs_sac_ENV.json)."""
  plot: pathlib.Path | None = None
  """PNG of the curves, mean over seeds with the min-max band (default: --out with .png)."""


@dataclasses.dataclass
class Curve:
  name: str
  steps: np.ndarray            # [evaluations] env steps
  returns: np.ndarray          # [evaluations, seeds]
  seconds_per_step: float | None = None

  @property
  def mean(self) -> np.ndarray:
    return self.returns.mean(axis=1)

  def first_reaching(self, target: float) -> int | None:
    hit = np.nonzero(self.mean >= target)[0]
    return int(self.steps[hit[0]]) if len(hit) else None

  def at(self, step: int) -> float:
    """Mean return at the last evaluation at or before `step` (NaN before the first)."""
    before = np.nonzero(self.steps <= step)[0]
    return float(self.mean[before[-1]]) if len(before) else float("nan")


def mbpo_curve(run_dir: pathlib.Path, budget: int) -> Curve:
  rows = read_jsonl(run_dir / "metrics.jsonl")
  if not rows:
    raise SystemExit(f"error: {run_dir / 'metrics.jsonl'} has no rows")
  by_epoch: dict[int, dict[int, dict]] = {}
  for row in rows:
    by_epoch.setdefault(row["epoch"], {})[row["seed"]] = row
  epochs = sorted(by_epoch)
  seeds = sorted(by_epoch[epochs[0]])
  steps = np.array([by_epoch[e][seeds[0]]["env_steps"] for e in epochs])
  keep = steps <= budget
  if not keep.any():
    raise SystemExit(f"error: {run_dir} has no evaluation at or before the budget {budget} "
                     f"(its first is at {steps.min()} env steps)")
  # "return" in runs written before the metric names were namespaced.
  returns = np.array([[by_epoch[e][s].get("eval/return", by_epoch[e][s].get("return"))
                       for s in seeds] for e in epochs])
  walls = np.array([by_epoch[e][seeds[0]].get("wall_s", np.nan) for e in epochs])
  epoch_length = np.diff(steps).min() if len(steps) > 1 else np.nan
  per_step = float(np.nanmedian(walls[1:]) / epoch_length) if len(walls) > 1 else None
  return Curve("MBPO (ours)", steps[keep], returns[keep], per_step)


def run_mbpo(args: Args, out_dir: pathlib.Path) -> pathlib.Path:
  import mbpo as mbpo_script  # experiments/mbpo.py
  run_dir = out_dir / f"mbpo-{args.env}-{args.budget}"
  mbpo_script.main(["--preset", args.env, "--env-steps", str(args.budget), "--seeds",
                    str(args.seeds), "--out", str(run_dir)])
  return run_dir


def brax_python(args: Args) -> pathlib.Path:
  if args.brax_python is not None:
    return args.brax_python
  python = BRAX_VENV / "bin" / "python"
  if not python.exists():
    print(f"creating {BRAX_VENV} (jax 0.9.2, brax 0.14.2) for Brax's SAC", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(BRAX_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)],
                   check=True)
  return python


def cached_brax_run(cache: pathlib.Path, env: str, seed: int, steps: int) -> pathlib.Path:
  """The cache file of a Brax SAC run of `steps` steps, or else of the shortest longer one
  (cut at `steps` by the caller); the former's path (absent) when neither exists."""
  path = cache / f"{env}_{steps}_seed{seed}.json"
  if path.exists():
    return path
  pattern = re.compile(rf"{re.escape(env)}_(\d+)_seed{seed}\.json")
  longer = sorted((int(m.group(1)), p) for p in cache.glob(f"{env}_*_seed{seed}.json")
                  if (m := pattern.fullmatch(p.name)) and int(m.group(1)) > steps)
  return longer[0][1] if longer else path


def brax_sac_curve(args: Args, steps: int) -> Curve:
  results = []
  for seed in range(args.seeds):
    path = cached_brax_run(args.brax_results, args.env, seed, steps)
    if not path.exists():
      subprocess.run([str(brax_python(args)), str(REPO / "experiments" / "brax_sac_baseline.py"),
                      "--env", args.env, "--env-steps", str(steps), "--seed", str(seed),
                      "--eval-every", str(args.sac_eval_every), "--out", str(path)], check=True)
    result = json.loads(path.read_text())
    keep = [i for i, t in enumerate(result["env_steps"]) if t <= steps]
    results.append({k: [result[k][i] for i in keep] for k in ("env_steps", "return", "wall_s")})
  n = min(len(r["env_steps"]) for r in results)
  walls = np.array(results[0]["wall_s"][:n])
  steps_arr = np.array(results[0]["env_steps"][:n])
  # Seconds per env step between the first and last evaluation (compilation excluded).
  per_step = float((walls[-1] - walls[1]) / (steps_arr[-1] - steps_arr[1])) if n > 2 else None
  return Curve("Brax SAC", steps_arr, np.array([r["return"][:n] for r in results]).T, per_step)


def our_sac_name(args: Args) -> str:
  return "SAC+norm (ours)" if args.our_sac_normalize_observations else "SAC (ours)"


def our_sac_curve(args: Args, steps: int) -> Curve:
  norm = args.our_sac_normalize_observations
  suffix = "_norm" if norm else ""
  path = args.our_sac_results / f"{args.env}_{steps}_seeds{args.seeds}{suffix}.json"
  if path.exists():
    saved = json.loads(path.read_text())
    return Curve(our_sac_name(args), np.array(saved["env_steps"]), np.array(saved["returns"]),
                 saved["seconds_per_env_step"])
  import jax
  import jax.numpy as jnp

  from mbrl_jax import run
  from mbrl_jax.algorithms import mbpo, sac
  config = sac.Config(env=args.env, env_steps=steps, init_exploration_steps=5000,
                      updates_per_step=1, sac=mbpo.SACConfig(normalize_observations=norm))
  keys = jnp.stack([jax.random.key(s) for s in range(args.seeds)])
  walls, clock = [], [time.perf_counter()]

  def progress(epoch, metrics):
    now = time.perf_counter()
    walls.append(now - clock[0])
    clock[0] = now
    print(f"our SAC {args.env}: env steps {int(metrics['env_steps'].mean())} | eval return "
          f"{metrics['eval/return'].mean():.1f} | {walls[-1]:.1f} s", flush=True)

  _, history = run.train(sac.make(config), keys, progress_fn=progress)
  per_step = float(np.median(walls[1:]) / config.epoch_length) if len(walls) > 1 else None
  curve = Curve(our_sac_name(args), history["env_steps"][:, 0], history["eval/return"], per_step)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps({"env_steps": curve.steps.tolist(),
                              "returns": curve.returns.tolist(),
                              "seconds_per_env_step": per_step}))
  return curve


def ratio(curve: Curve, target: float, budget: int) -> tuple[int | None, float | str]:
  """(env steps at which `curve` first reaches `target`, those steps / budget); when it never
  does, (None, "> its last steps / budget")."""
  reached = curve.first_reaching(target)
  if reached is None:
    return None, f"> {curve.steps.max() / budget:.1f}"
  return reached, reached / budget


def plot_curves(curves: list[Curve], *, env: str, budget: int, target: float, seeds: int,
                path: pathlib.Path) -> pathlib.Path:
  """Draws each curve's mean over seeds with its min-max band, MBPO's return R at the budget
  (dashed) and the budget (dotted) into the PNG `path`."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(7, 4.5))
  for curve in curves:
    line, = ax.plot(curve.steps, curve.mean, marker="o", markersize=3, label=curve.name)
    if curve.returns.shape[1] > 1:
      ax.fill_between(curve.steps, curve.returns.min(axis=1), curve.returns.max(axis=1),
                      color=line.get_color(), alpha=0.2)
  ax.axhline(target, color="gray", linestyle="--", linewidth=1, label=f"R = {target:.0f}")
  ax.axvline(budget, color="gray", linestyle=":", linewidth=1)
  ax.set_xlabel("env steps")
  ax.set_ylabel("evaluation return")
  ax.set_title(f"{env}: MBPO vs SAC, {seeds} seed(s) (mean, min-max band)")
  ax.legend(loc="best", fontsize="small")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def main(argv: list[str] | None = None) -> dict:
  args = tyro.cli(Args, args=sys.argv[1:] if argv is None else argv, description=__doc__)
  if args.smooth < 1:
    raise SystemExit(f"error: --smooth must be >= 1, got {args.smooth}")
  out = args.out or REPO / "results" / f"bench_mbpo_vs_sac_{args.env}.json"
  mbpo_dir = args.mbpo_run or run_mbpo(args, out.parent)
  curves = [mbpo_curve(mbpo_dir, args.budget)]
  if curves[0].steps.max() < args.budget:
    print(f"note: the MBPO run ends at {curves[0].steps.max()} env steps, before the budget "
          f"{args.budget}; R is its last evaluation", flush=True)
  sac_steps = args.sac_factor * args.budget
  curves.append(brax_sac_curve(args, sac_steps))
  our_steps = args.budget if args.our_sac_steps is None else args.our_sac_steps
  if our_steps:
    curves.append(our_sac_curve(args, our_steps))

  mbpo = curves[0]
  target = float(mbpo.mean[-1])
  smooth = min(args.smooth, len(mbpo.mean))
  smoothed = float(mbpo.mean[-smooth:].mean())
  marks = sorted({int(s) for s in np.linspace(0, args.budget, 7)[1:]})
  header = (f"{'row':<15} " + " ".join(f"{m // 1000:>5}k" for m in marks)
            + f" {'steps to R':>11} {'ratio':>7} {'to R_smooth':>11} {'ratio':>7}"
            + f" {'s/env step':>10}")
  print(f"\n{args.env}: mean evaluation return at env steps ({args.seeds} seed(s)); "
        f"R = MBPO at {int(mbpo.steps[-1])} steps = {target:.1f}; R_smooth = mean of its last "
        f"{smooth} evaluations = {smoothed:.1f}")
  print(header)
  rows = []
  for curve in curves:
    row = dict(row=curve.name, env_steps=curve.steps.tolist(), mean_return=curve.mean.tolist(),
               returns=curve.returns.tolist(), seconds_per_env_step=curve.seconds_per_step)
    texts = []
    for suffix, r in (("", target), ("_smoothed", smoothed)):
      if curve is mbpo:
        reached, value, reach_text, ratio_text = curve.first_reaching(r), None, "-", "-"
      else:
        reached, value = ratio(curve, r, args.budget)
        reach_text = f"> {int(curve.steps.max())}" if reached is None else str(reached)
        ratio_text = value if reached is None else f"{value:.1f}x"
      row[f"steps_to_target{suffix}"], row[f"ratio{suffix}"] = reached, value
      texts.append(f" {reach_text:>11} {ratio_text:>7}")
    sps = f"{curve.seconds_per_step:.4f}" if curve.seconds_per_step else "-"
    print(f"{curve.name:<15} " + " ".join(f"{curve.at(m):>6.0f}" for m in marks)
          + "".join(texts) + f" {sps:>10}")
    rows.append(row)
  result = dict(env=args.env, budget=args.budget, seeds=args.seeds, target=target,
                target_smoothed=smoothed, smooth=smooth, mbpo_run=str(mbpo_dir), rows=rows)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=1))
  png = plot_curves(curves, env=args.env, budget=args.budget, target=target, seeds=args.seeds,
                    path=args.plot or out.with_suffix(".png"))
  print(f"wrote {out} and {png}")
  return result


if __name__ == "__main__":
  main()
