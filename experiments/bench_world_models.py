"""Benchmark: World Models' costs on pixel pendulum: seconds per CMA-ES generation (population
x rollouts episodes in one vmapped call, in the real env and in M's dream) and V's and M's
training steps per second.

Subjects, each one jitted call timed round-robin in one window (`benchlib`), beside the
matrix-multiply ceiling measured in the same window:

* "generation/real": `world_models.make(config).step` with train_in="real": P x R episodes of
  T steps, each step rendering a frame, encoding it with V and stepping M, then the CMA-ES
  update and the real-env evaluation of the mean (`eval_episodes` episodes);
* "generation/dream": the same with train_in="dream" (M alone inside the episodes; the
  evaluation is still real);
* "vae_fit": `vae_fit_steps` Adam steps of V on batches of `vae_batch` frames;
* "mdn_fit": `mdn_fit_steps` Adam steps of M on batches of `mdn_batch` windows of
  `mdn_seq_len` steps.

Generations start from untrained V and M (`world_models.untrained_state`); the cost does not
depend on the weights. env steps/s counts the real-env steps of a generation (training
episodes, plus the evaluation episodes).

  python experiments/bench_world_models.py --out results/bench_world_models.json
  python experiments/bench_world_models.py --quick          # tiny sizes (the test)

Rows: {name, seconds, per_s (generations, or fit steps, per second), env_steps_per_s
(generations), population, rollouts, episode_length, image_size, latent, hidden,
matmul_gflops, machine, device, jax}.
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import tyro

import benchlib
from mbrl_jax.algorithms import world_models as wm
from mbrl_jax.models import mdn_rnn as mdn_lib
from mbrl_jax.models import vae as vae_lib


@dataclasses.dataclass(frozen=True)
class Args:
  out: pathlib.Path | None = None
  """Write the rows as a JSON list to this file."""
  preset: str = "pendulum"
  """The world_models preset whose sizes are timed."""
  population: int = 0
  """CMA-ES population (0: the preset's)."""
  rollouts: int = 0
  """Episodes per candidate (0: the preset's)."""
  vae_fit_steps: int = 20
  """V's Adam steps per timed call."""
  mdn_fit_steps: int = 20
  """M's Adam steps per timed call."""
  repeats: int = 3
  """Timed calls per subject (median)."""
  quick: bool = False
  """Tiny sizes: 8 x 8 frames, 10-step episodes, population 4 x 1 rollout, tiny V and M,
  2 fit steps, 1 repeat."""


def main(args: Args) -> list[dict]:
  if args.preset not in wm.PRESETS:
    raise SystemExit(f"error: unknown --preset {args.preset!r}; valid: {', '.join(wm.PRESETS)}")
  for name in ("population", "rollouts"):
    if getattr(args, name) < 0:
      raise SystemExit(f"error: --{name} must be >= 0, got {getattr(args, name)}")
  for name in ("vae_fit_steps", "mdn_fit_steps", "repeats"):
    if getattr(args, name) < 1:
      raise SystemExit(f"error: --{name.replace('_', '-')} must be >= 1, got "
                       f"{getattr(args, name)}")
  config = wm.PRESETS[args.preset]
  if args.quick:
    config = dataclasses.replace(
        config, image_size=8, episode_length=10, random_episodes=2,
        vae=vae_lib.VAEConfig(latent=2, depth=2), vae_batch=2,
        mdn=mdn_lib.MDNConfig(hidden=4, mixtures=2), mdn_batch=2, mdn_seq_len=4,
        population=4, rollouts=1, eval_episodes=1)
    args = dataclasses.replace(args, vae_fit_steps=2, mdn_fit_steps=2, repeats=1)
  try:
    config = dataclasses.replace(config, population=args.population or config.population,
                                 rollouts=args.rollouts or config.rollouts,
                                 vae_steps=args.vae_fit_steps, mdn_steps=args.mdn_fit_steps)
  except ValueError as e:
    raise SystemExit(f"error: {e}") from None
  subjects, meta = {}, {}
  for where in ("real", "dream"):
    c = dataclasses.replace(config, train_in=where)
    parts = wm.make_parts(c)
    state = wm.untrained_state(parts, jax.random.key(0))
    step = jax.jit(lambda s, step=wm.make(c).step: step(s)[1]["eval/return"])
    subjects[f"generation/{where}"] = (step, (state,))
    steps = c.eval_episodes * c.episode_length
    if where == "real":
      steps += c.population * c.rollouts * c.episode_length
    meta[f"generation/{where}"] = steps

  parts = wm.make_parts(config)
  n, T, S = 4, config.episode_length, config.image_size
  frames = jax.random.randint(jax.random.key(1), (n * (T + 1), S, S, 3), 0, 256
                              ).astype(jnp.uint8)
  subjects["vae_fit"] = (jax.jit(lambda f: wm.fit_vae(parts, config, jax.random.key(2), f)[1]),
                         (frames,))
  Z, A = config.vae.latent, parts.action_size
  episodes = wm.Episodes(frames=frames.reshape(n, T + 1, S, S, 3),
                         action=jnp.zeros((n, T, A)), reward=jnp.zeros((n, T)),
                         done=jnp.zeros((n, T)))
  lat = jax.random.normal(jax.random.key(3), (n, T + 1, Z))
  subjects["mdn_fit"] = (jax.jit(lambda m, e: wm.fit_mdn(parts, config, jax.random.key(4), m,
                                                         m * 0 - 1.0, e, 0.0, 1.0)[1]),
                         (lat, episodes))
  seconds, ceiling = benchlib.time_against_matmul(subjects, rows=4096, width=256,
                                                  repeats=args.repeats)
  common = dict(population=config.population, rollouts=config.rollouts,
                episode_length=config.episode_length, image_size=config.image_size,
                latent=config.vae.latent, hidden=config.mdn.hidden,
                matmul_gflops=float(ceiling))
  rows = []
  for name, sec in seconds.items():
    row = dict(name=f"{config.env}/{name}", seconds=sec, **common)
    if name.startswith("generation"):
      row.update(per_s=1.0 / sec, env_steps_per_s=meta[name] / sec)
    else:
      fit_steps = args.vae_fit_steps if name == "vae_fit" else args.mdn_fit_steps
      row.update(per_s=fit_steps / sec, fit_steps=fit_steps,
                 batch=config.vae_batch if name == "vae_fit" else config.mdn_batch)
    rows.append(row)
  print(f"{'name':28s} {'seconds':>9s} {'per s':>10s} {'env steps/s':>12s}  (population "
        f"{config.population} x {config.rollouts} rollouts x {config.episode_length} steps; "
        f"matmul ceiling {float(ceiling):.0f} GFLOP/s)")
  for r in rows:
    env_rate = f"{r['env_steps_per_s']:12.0f}" if "env_steps_per_s" in r else f"{'-':>12s}"
    unit = "gen" if r["name"].split("/")[1] == "generation" else "steps"
    print(f"{r['name']:28s} {r['seconds']:9.3f} {r['per_s']:7.2f} {unit:>5s} {env_rate}")
  return benchlib.finish(args.out, rows)


if __name__ == "__main__":
  main(tyro.cli(Args))
