"""Brax's own SAC (`brax.training.agents.sac.train`) on one of our envs; writes a JSON curve.

Brax's training agents need jax < 0.10 (they call `jax.device_put_replicated`, removed in jax
0.10), so this script runs in its own environment with jax 0.9.2 and brax 0.14.2
(`experiments/requirements-brax-sac.txt`); `bench_mbpo_vs_sac.py` creates that environment and
runs this script in it. Only `mbrl_jax.envs` is imported from this repository (it needs nothing
but jax and brax), so the env is exactly the one MBPO trains on: `make_unwrapped(env)` with
Brax's own time-limit and auto-reset wrappers at our default episode length.

  .venv-brax-sac/bin/python experiments/brax_sac_baseline.py --env hopper --env-steps 150000 \
      --out results/brax_sac_hopper_seed0.json

Hyperparameters are the standard SAC ones the MBPO paper compares against (one env, one
update per env step, batch 256, Adam 3e-4, discount 0.99, tau 0.005, 256x256 networks,
automatic entropy tuning) with a replay prefill of `--min-replay` env steps; evaluation is
deterministic (the tanh of the policy mean), `--eval-episodes` episodes after the prefill and
then about every `--eval-every` env steps (Brax spreads the evaluations evenly over the steps
after the prefill; the JSON records the exact env step of each).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "src"))


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--env", default="hopper")
  parser.add_argument("--env-steps", type=int, default=150_000)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--eval-every", type=int, default=5000)
  parser.add_argument("--eval-episodes", type=int, default=10)
  parser.add_argument("--min-replay", type=int, default=5000)
  parser.add_argument("--out", type=pathlib.Path, required=True)
  args = parser.parse_args(argv)
  if args.env_steps <= args.min_replay:
    parser.error(f"--env-steps must exceed --min-replay ({args.min_replay}), got "
                 f"{args.env_steps}")

  import brax
  import jax
  from brax.training.agents.sac import train as sac

  from mbrl_jax.envs import registry

  env = registry.make_unwrapped(args.env)
  episode_length = registry.default_episode_length(args.env)
  steps, returns, walls = [], [], []
  start = time.perf_counter()

  def progress(step, metrics):
    if "eval/episode_reward" not in metrics:
      return
    steps.append(int(step))
    returns.append(float(metrics["eval/episode_reward"]))
    walls.append(time.perf_counter() - start)
    print(f"brax SAC {args.env} seed {args.seed}: env steps {step} | eval return "
          f"{returns[-1]:.1f} | {walls[-1]:.0f} s", flush=True)

  hyper = dict(num_timesteps=args.env_steps, episode_length=episode_length, num_envs=1,
               num_eval_envs=args.eval_episodes, learning_rate=3e-4, discounting=0.99,
               batch_size=256, num_evals=args.env_steps // args.eval_every + 1,
               normalize_observations=True, reward_scaling=1.0, tau=0.005,
               min_replay_size=args.min_replay, max_replay_size=args.env_steps,
               grad_updates_per_step=1, deterministic_eval=True, seed=args.seed)
  sac.train(environment=env, progress_fn=progress, **hyper)
  result = {"algorithm": "brax SAC", "env": args.env, "seed": args.seed, "env_steps": steps,
            "return": returns, "wall_s": walls, "hyperparameters": hyper,
            "jax": jax.__version__, "brax": brax.__version__,
            "device": jax.devices()[0].device_kind}
  args.out.parent.mkdir(parents=True, exist_ok=True)
  tmp = args.out.with_suffix(".tmp")
  tmp.write_text(json.dumps(result, indent=1))
  tmp.replace(args.out)
  print(f"wrote {args.out}", flush=True)
  return result


if __name__ == "__main__":
  main()
