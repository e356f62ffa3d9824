"""Benchmark: tree-search simulations per second (mctx through `planning.make_mcts`), for root
batch sizes 1, 64 and 1024, with two models:

* "true": CartPole-v1's true model (`envs.CartpoleV1.model_step`, zero leaf value), the
  cost of mctx's tree bookkeeping with a model that costs almost nothing;
* "mlp": a MuZero-sized learned model with random parameters, through a `recurrent_fn`: a
  dynamics MLP (latent + one-hot action -> next latent, reward) and a prediction MLP
  (latent -> policy logits, value), `hidden` units per layer, two hidden layers each, a
  `latent`-wide embedding; the root's latent is a representation MLP of the obs;
* "muzero": `mbrl_jax.algorithms.muzero`'s own networks and `learned_model_fns` (the
  recurrent_fn MuZero acts with: min-max scaled latents, a separate reward head, categorical
  value and reward heads over 41 bins decoded through the h-transform), `hidden` units, two
  hidden layers, a `latent`-wide latent, random parameters.

Each subject is one jitted `plan` on B roots (MuZero search, `num_simulations` per root);
the calls are timed round-robin in one window (`benchlib.interleaved_medians`).
Simulations per second = B * num_simulations / median seconds per plan. For the MLP, the
FLOP rate of its matrix products (2 * rows * in * out per layer, one dynamics + prediction
pass per simulation) is reported against the matrix-multiply rate measured in the same run.

  python experiments/bench_search.py --out results/bench_search.json
  python experiments/bench_search.py --quick            # tiny sizes (the test)
  python experiments/bench_search.py --learning --out results/muzero_learning.json

`--learning` instead trains MuZero (`algorithms.muzero`, preset `--learning-preset`, default
catch) on `--learning-seeds` seeds vmapped and writes the eval-return curves as JSON (OUT)
and a PNG beside it (OUT with .png): {preset, env_steps [chunks], eval_return [chunks,
seeds], wall_s, machine...}.

Rows: {name, model, batch, num_simulations, ms_per_plan, sims_per_s, hidden, latent,
gflops (mlp), matmul_gflops, machine, device, jax}.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import mctx
import tyro

import benchlib
from mbrl_jax import envs, planning
from mbrl_jax.algorithms import muzero
from mbrl_jax.models.networks import ACTIVATIONS, MLP


@dataclasses.dataclass(frozen=True)
class Args:
  out: pathlib.Path | None = None
  """Write the rows as a JSON list to this file."""
  batches: tuple[int, ...] = (1, 64, 1024)
  """Root batch sizes."""
  num_simulations: int = 32
  """Simulations per root and plan."""
  hidden: int = 128
  """Hidden width of the MLP model's networks."""
  latent: int = 64
  """Width of the MLP model's embedding."""
  repeats: int = 5
  """Timed calls per subject (median)."""
  quick: bool = False
  """Tiny sizes: 4 simulations, hidden 16, latent 8, 1 repeat (batches as given, at most 4)."""
  learning: bool = False
  """Train MuZero instead and write its learning curves (see above)."""
  learning_preset: str = "catch"
  """algorithms.muzero preset for --learning."""
  learning_seeds: int = 3
  """Seeds, vmapped, for --learning."""
  learning_env_steps: int = 0
  """Env steps for --learning (0: the preset's)."""


def learning(args: Args) -> dict:
  """MuZero learning curves of `learning_seeds` seeds vmapped: JSON at args.out, PNG beside."""
  import time

  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np

  from mbrl_jax import run

  if args.learning_preset not in muzero.PRESETS:
    raise SystemExit(f"error: --learning-preset must be one of {', '.join(muzero.PRESETS)}, "
                     f"got {args.learning_preset!r}")
  if args.learning_seeds < 1:
    raise SystemExit(f"error: --learning-seeds must be >= 1, got {args.learning_seeds}")
  config = muzero.PRESETS[args.learning_preset]
  if args.learning_env_steps:
    config = dataclasses.replace(config, env_steps=args.learning_env_steps)
  keys = jnp.stack([jax.random.key(s) for s in range(args.learning_seeds)])
  start = time.perf_counter()
  _, history = run.train(muzero.make(config), keys)
  wall = time.perf_counter() - start
  steps = history["env_steps"][:, 0]
  result = dict(preset=args.learning_preset, algo=config.algo, env=config.env,
                env_steps=steps.tolist(), eval_return=history["eval/return"].tolist(),
                wall_s=wall, **benchlib.machine_info())
  print(f"{config.algo} {args.learning_preset}: {args.learning_seeds} seeds, {wall:.0f} s")
  for t, r in zip(steps, history["eval/return"]):
    print(f"  {int(t):7d} env steps: eval return " + " ".join(f"{v:7.2f}" for v in r)
          + f"  mean {np.mean(r):.2f}")
  if args.out is not None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for s in range(args.learning_seeds):
      ax.plot(steps, history["eval/return"][:, s], marker="o", label=f"seed {s}")
    ax.set(xlabel="env steps", ylabel="eval return",
           title=f"{config.algo} {args.learning_preset} ({config.num_simulations} sims)")
    ax.legend()
    fig.savefig(args.out.with_suffix(".png"), dpi=100, bbox_inches="tight")
    print(f"wrote {args.out}, {args.out.with_suffix('.png')}")
  return result


def _mlp_model(obs_size: int, num_actions: int, hidden: int, latent: int):
  """A random-parameter MuZero-style model: (params, root_fn, recurrent_fn, flops per sim)."""
  act = ACTIVATIONS["relu"]
  represent = MLP(hidden_sizes=(hidden, hidden), out_size=latent, activation=act)
  dynamics = MLP(hidden_sizes=(hidden, hidden), out_size=latent + 1, activation=act)
  predict = MLP(hidden_sizes=(hidden, hidden), out_size=num_actions + 1, activation=act)
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  params = dict(represent=represent.init(k1, jnp.zeros((1, obs_size))),
                dynamics=dynamics.init(k2, jnp.zeros((1, latent + num_actions))),
                predict=predict.init(k3, jnp.zeros((1, latent))))

  def heads(params, z):
    out = predict.apply(params["predict"], z)
    return out[:, :num_actions], out[:, num_actions]

  def root_fn(params, key, obs):
    del key
    z = represent.apply(params["represent"], obs)
    logits, value = heads(params, z)
    return mctx.RootFnOutput(prior_logits=logits, value=value, embedding=z)

  def recurrent_fn(params, key, action, z):
    del key
    out = dynamics.apply(params["dynamics"],
                         jnp.concatenate([z, jax.nn.one_hot(action, num_actions)], -1))
    nxt, reward = jnp.tanh(out[:, :latent]), out[:, latent]
    logits, value = heads(params, nxt)
    return mctx.RecurrentFnOutput(reward=reward, discount=jnp.full_like(reward, 0.997),
                                  prior_logits=logits, value=value), nxt

  layers = lambda i, o: [(i, hidden), (hidden, hidden), (hidden, o)]
  per_sim = sum(2 * a * b for a, b in layers(latent + num_actions, latent + 1)
                + layers(latent, num_actions + 1))
  return params, root_fn, recurrent_fn, per_sim


def main(args: Args) -> list[dict]:
  if args.learning:
    return [learning(args)]
  if args.quick:
    args = dataclasses.replace(args, batches=tuple(sorted({min(b, 4) for b in args.batches})),
                               num_simulations=4, hidden=16, latent=8,
                               repeats=1)
  if not args.batches or min(args.batches) < 1:
    raise SystemExit(f"error: --batches must be root batch sizes >= 1, got {args.batches}")
  for name in ("num_simulations", "hidden", "latent", "repeats"):
    if getattr(args, name) < 1:
      raise SystemExit(f"error: --{name.replace('_', '-')} must be >= 1, got "
                       f"{getattr(args, name)}")
  env = envs.CartpoleV1()
  A, S = env.num_actions, args.num_simulations
  true = planning.make_mcts(env.model_step, num_actions=A, num_simulations=S, discount=0.99)
  params, root_fn, recurrent_fn, flops_per_sim = _mlp_model(env.observation_size, A,
                                                            args.hidden, args.latent)
  learned = planning.make_mcts(recurrent_fn=recurrent_fn, root_fn=root_fn, num_actions=A,
                               num_simulations=S)
  mz_config = muzero.Config(env="cartpole_v1", num_simulations=S, latent_size=args.latent,
                            hidden_sizes=(args.hidden, args.hidden), support_max=10.0,
                            support_bins=41)
  mz_nets = muzero.make_nets(mz_config, env.observation_size, A)
  mz_recurrent, mz_root = muzero.learned_model_fns(
      mz_nets, muzero.Support(mz_config.support_max, mz_config.support_bins))
  mz_search = planning.make_mcts(recurrent_fn=mz_recurrent, root_fn=mz_root, num_actions=A,
                                 num_simulations=S, discount=0.99)
  mz_params = mz_nets.init(jax.random.key(3))
  subjects, meta = {}, {}
  for batch in args.batches:
    roots = jax.vmap(lambda k: env.reset(k).obs)(jax.random.split(jax.random.key(1), batch))
    key = jax.random.key(2)
    subjects[f"true/B{batch}"] = (jax.jit(lambda k, r: true.plan(None, k, r)[0]), (key, roots))
    subjects[f"mlp/B{batch}"] = (jax.jit(lambda p, k, r: learned.plan(p, k, r)[0]),
                                 (params, key, roots))
    subjects[f"muzero/B{batch}"] = (jax.jit(lambda p, k, r: mz_search.plan(p, k, r)[0]),
                                    (mz_params, key, roots))
    meta[f"true/B{batch}"] = ("true", batch)
    meta[f"mlp/B{batch}"] = ("mlp", batch)
    meta[f"muzero/B{batch}"] = ("muzero", batch)
  rows_for_ceiling = max(args.batches)
  seconds, ceiling = benchlib.time_against_matmul(subjects, rows=rows_for_ceiling,
                                                  width=args.hidden, repeats=args.repeats)
  rows = []
  for name, (model, batch) in meta.items():
    sec = seconds[name]
    row = dict(name=f"cartpole_v1/{name}", model=model, batch=batch, num_simulations=S,
               ms_per_plan=1e3 * sec, sims_per_s=batch * S / sec, hidden=args.hidden,
               latent=args.latent, matmul_gflops=float(ceiling))
    if model == "mlp":
      # The root's representation pass is left out (one per plan, not per simulation).
      row["gflops"] = batch * S * flops_per_sim / sec / 1e9
    rows.append(row)
  print(f"{'name':28s} {'batch':>6s} {'sims':>5s} {'ms/plan':>9s} {'sims/s':>12s} "
        f"{'GFLOP/s':>8s}  (matmul ceiling {float(ceiling):.0f} GFLOP/s)")
  for r in rows:
    gf = f"{r['gflops']:8.2f}" if "gflops" in r else f"{'-':>8s}"
    print(f"{r['name']:28s} {r['batch']:6d} {r['num_simulations']:5d} {r['ms_per_plan']:9.2f} "
          f"{r['sims_per_s']:12.0f} {gf}")
  return benchlib.finish(args.out, rows)


if __name__ == "__main__":
  main(tyro.cli(Args))
