"""Benchmark: open-loop prediction error of the RSSM world model against true rollouts.

For each environment (vector observations) the world model is trained from scratch on
random-policy episodes, then predicts held-out episodes open loop: it filters `context`
observations up to a start state, then imagines `horizon` steps with the actions the env
really took. The error is the MSE in the env's original observation units, averaged over the
held-out start states, the horizon and the observation dims, next to the "no change" baseline
that predicts obs_t = obs_0 (the start observation) for every step; the model must beat it.

  python experiments/bench_world_model.py --out results/bench_world_model.json
  python experiments/bench_world_model.py --envs pendulum --train-steps 300 --deter 64

Rows (one per env): model_mse, no_change_mse, their ratio, the MSE at a few horizons, the
final training loss terms and the training time; plus the machine info.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tyro

import benchlib

from mbrl_jax import envs
from mbrl_jax.compile import jit
from mbrl_jax.models import rssm
from mbrl_jax.types import Transition


@dataclasses.dataclass(frozen=True)
class Args:
  out: pathlib.Path | None = None
  """Write the rows as a JSON list to this file."""
  envs: tuple[str, ...] = ("pendulum", "cartpole_swingup")
  """Environments (vector observations)."""
  preset: str = "cpu"
  """World-model size preset (`mbrl_jax.models.rssm.PRESETS`); the size flags override it."""
  deter: int | None = None
  stoch: int | None = None
  classes: int | None = None
  hidden: int | None = None
  mlp_layers: int | None = None
  train_episodes: int = 50
  """Random-policy episodes to train on (200 steps each)."""
  test_episodes: int = 20
  """Held-out random-policy episodes to predict."""
  episode_length: int = 200
  train_steps: int = 3000
  """World-model updates (Adam)."""
  steps_per_call: int = 100
  """Updates per compiled call (a `lax.scan`); train_steps is rounded up to a multiple."""
  batch_size: int = 16
  seq_len: int = 64
  lr: float = 3e-4
  grad_clip: float = 1000.0
  context: int = 5
  """Observations filtered before the start state (the start state is the last of them)."""
  horizon: int = 15
  """Open-loop steps predicted from each start state."""
  starts_per_episode: int = 8
  """Held-out start states per test episode (evenly spaced)."""
  seed: int = 0


def world_model_config(args: Args) -> rssm.WorldModelConfig:
  if args.preset not in rssm.PRESETS:
    raise ValueError(f"--preset must be one of {sorted(rssm.PRESETS)}, got {args.preset!r}")
  sizes = {k: getattr(args, k) for k in ("deter", "stoch", "classes", "hidden", "mlp_layers")
           if getattr(args, k) is not None}
  return dataclasses.replace(rssm.PRESETS[args.preset], **sizes)


def validate(args: Args) -> None:
  """Raises ValueError naming the flag, before anything compiles."""
  for name in ("train_episodes", "test_episodes", "train_steps", "steps_per_call",
               "batch_size", "seq_len", "context", "horizon", "starts_per_episode"):
    if getattr(args, name) < 1:
      raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
  if args.seq_len > args.episode_length:
    raise ValueError(f"--seq-len must be <= --episode-length={args.episode_length}, got "
                     f"{args.seq_len}")
  if args.context + args.horizon > args.episode_length + 1:
    raise ValueError(f"--context + --horizon must be <= episode length + 1 = "
                     f"{args.episode_length + 1}, got {args.context + args.horizon}")
  for name in args.envs:
    if name not in envs.registered_names():
      raise ValueError(f"--envs: unknown environment {name!r}")
  rssm.validate_config(world_model_config(args), "--preset/size flags")


def collect(env, key, episodes: int, length: int) -> Transition:
  """Random-policy episodes, fields [E, T, ...] (each row is one whole episode)."""
  return jax.jit(functools.partial(envs.batch_rollout, env, envs.random_policy(env.action_size)),
                 static_argnums=(1, 2))(key, episodes, length)[0]


def make_update_chunk(wm: rssm.WorldModel, opt: optax.GradientTransformation, data: Transition,
                      batch_size: int, seq_len: int, steps: int):
  """`chunk(params, opt_state, key) -> (params, opt_state, metrics [steps])`: `steps` Adam
  updates on windows of `seq_len` transitions drawn uniformly from the episodes `data`
  ([E, T, ...], no episode end inside an episode except its last step)."""
  E, T = data.reward.shape

  def sample(key):
    ep_key, t_key = jax.random.split(key)
    ep = jax.random.randint(ep_key, (batch_size,), 0, E)
    t0 = jax.random.randint(t_key, (batch_size,), 0, T - seq_len + 1)
    idx = t0[:, None] + jnp.arange(seq_len)                                 # [B, L]
    return jax.tree.map(lambda x: x[ep[:, None], idx], data)                 # [B, L, ...]

  def update(carry, key):
    params, opt_state = carry
    sample_key, loss_key = jax.random.split(key)
    (_, aux), grad = jax.value_and_grad(wm.loss, has_aux=True)(
        params, loss_key, sample(sample_key))
    updates, opt_state = opt.update(grad, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), aux.metrics

  def chunk(params, opt_state, key):
    (params, opt_state), metrics = jax.lax.scan(update, (params, opt_state),
                                                jax.random.split(key, steps))
    return params, opt_state, metrics

  return chunk


def open_loop_windows(data: Transition, context: int, horizon: int, starts: int):
  """Held-out prediction problems from episodes [E, T, ...].

  Returns:
    (obs [N, context], prev_action [N, context, A], actions [N, horizon, A],
    true future obs [N, horizon, O]) with N = E * starts; the start state is the last
    context observation.
  """
  obs = np.concatenate([data.obs[:, :1], data.next_obs], 1)                # [E, T + 1, O]
  action = np.asarray(data.action)                                        # [E, T, A]
  T = action.shape[1]
  prev = np.concatenate([np.zeros_like(action[:, :1]), action], 1)        # [E, T + 1, A]
  firsts = np.linspace(0, T - horizon - context + 1, starts).astype(int)
  ctx, prev_a, act, future = [], [], [], []
  for s in firsts:
    start = s + context - 1                      # index of the start observation
    ctx.append(obs[:, s:start + 1])
    prev_a.append(prev[:, s:start + 1])
    act.append(action[:, start:start + horizon])
    future.append(obs[:, start + 1:start + 1 + horizon])
  cat = lambda xs: np.concatenate(xs, 0)
  return cat(ctx), cat(prev_a), cat(act), cat(future)


def evaluate(wm, params, key, data: Transition, args: Args) -> dict:
  ctx, prev_a, act, future = open_loop_windows(data, args.context, args.horizon,
                                               args.starts_per_episode)
  decoded, _ = jit(wm.open_loop)(params, key, ctx, prev_a, act)           # [N, H, O]
  model_err = (np.asarray(decoded) - future) ** 2                         # [N, H, O]
  base_err = (ctx[:, -1:] - future) ** 2
  per_step = lambda e: e.mean(axis=(0, 2))                                # [H]
  at = sorted({1, 5, 10, args.horizon} & set(range(1, args.horizon + 1)))
  # Normalised: each dim's MSE over its variance in the predicted data, then the mean over
  # dims (so a dim with a large range, like the cart's unbounded x, does not dominate).
  var = future.reshape(-1, future.shape[-1]).var(0)                       # [O]
  nmse = lambda e: float(np.mean(e.mean(axis=(0, 1)) / np.maximum(var, 1e-12)))
  return dict(
      model_mse=float(model_err.mean()), no_change_mse=float(base_err.mean()),
      ratio=float(model_err.mean() / base_err.mean()),
      model_nmse=nmse(model_err), no_change_nmse=nmse(base_err),
      model_mse_per_dim=model_err.mean(axis=(0, 1)).tolist(),
      no_change_mse_per_dim=base_err.mean(axis=(0, 1)).tolist(),
      **{f"model_mse_h{h}": float(per_step(model_err)[h - 1]) for h in at},
      **{f"no_change_mse_h{h}": float(per_step(base_err)[h - 1]) for h in at},
      starts=int(ctx.shape[0]))


def run_env(name: str, args: Args, config: rssm.WorldModelConfig) -> dict:
  key = jax.random.fold_in(jax.random.key(args.seed), sum(map(ord, name)))
  train_key, test_key, init_key, fit_key, eval_key = jax.random.split(key, 5)
  env = envs.make(name, episode_length=args.episode_length)
  train = collect(env, train_key, args.train_episodes, args.episode_length)
  test = collect(env, test_key, args.test_episodes, args.episode_length)
  wm = rssm.make_world_model((env.observation_size,), env.action_size, config=config)
  opt = optax.chain(optax.clip_by_global_norm(args.grad_clip), optax.adam(args.lr, eps=1e-8))
  params = wm.init(init_key)
  opt_state = opt.init(params)
  chunk = jit(make_update_chunk(wm, opt, train, args.batch_size, args.seq_len,
                                args.steps_per_call))
  calls = -(-args.train_steps // args.steps_per_call)
  untrained = evaluate(wm, params, eval_key, test, args)
  t0 = time.perf_counter()
  first = None
  for i, k in enumerate(jax.random.split(fit_key, calls)):
    params, opt_state, metrics = chunk(params, opt_state, k)
    metrics = jax.tree.map(np.asarray, metrics)
    if first is None:
      first = {k: float(v[:10].mean()) for k, v in metrics.items()}
      compile_and_first = time.perf_counter() - t0
    print(f"  {name}: {(i + 1) * args.steps_per_call} updates, loss "
          f"{metrics['wm_loss'][-10:].mean():.3f} (recon {metrics['wm_recon'][-10:].mean():.4f},"
          f" kl {metrics['wm_kl'][-10:].mean():.2f}), {time.perf_counter() - t0:.0f} s",
          flush=True)
  train_s = time.perf_counter() - t0
  last = {k: float(v[-10:].mean()) for k, v in metrics.items()}
  result = evaluate(wm, params, eval_key, test, args)
  if not all(np.isfinite(v) for v in (result["model_mse"], last["wm_loss"])):
    raise FloatingPointError(f"{name}: non-finite loss or prediction")
  per_update = (train_s - compile_and_first) / max(calls - 1, 1) / args.steps_per_call
  return dict(
      name=f"open_loop/{name}", env=name, obs_size=env.observation_size, **result,
      untrained_model_mse=untrained["model_mse"], horizon=args.horizon, context=args.context,
      train_steps=calls * args.steps_per_call, train_transitions=int(train.reward.size),
      test_episodes=args.test_episodes, batch_size=args.batch_size, seq_len=args.seq_len,
      lr=args.lr, world_model=dataclasses.asdict(config), train_s=train_s,
      s_per_update=per_update if calls > 1 else None,
      first_loss=first, final_loss=last, seed=args.seed)


def main(args: Args) -> list[dict]:
  validate(args)
  config = world_model_config(args)
  print(f"world model: {config}")
  print(f"data: {args.train_episodes} random-policy episodes of {args.episode_length} steps; "
        f"test: {args.test_episodes} held-out episodes x {args.starts_per_episode} starts, "
        f"context {args.context}, horizon {args.horizon}", flush=True)
  rows = []
  for name in args.envs:
    rows.append(run_env(name, args, config))
  h = args.horizon
  print(f"\n{h}-step open-loop MSE in original units (mean over starts, steps and dims); "
        f"nMSE: each dim's MSE / its variance, mean over dims")
  print(f"{'env':<18} {'updates':>7} {'model MSE':>10} {'no-change':>10} {'ratio':>6} "
        f"{'model@1':>9} {'model@' + str(h):>9} {'no-ch@' + str(h):>9} {'untrained':>10} "
        f"{'model nMSE':>10} {'no-ch nMSE':>10} {'train s':>8}")
  for r in rows:
    print(f"{r['env']:<18} {r['train_steps']:>7} {r['model_mse']:>10.4f} "
          f"{r['no_change_mse']:>10.4f} {r['ratio']:>6.3f} {r['model_mse_h1']:>9.4f} "
          f"{r[f'model_mse_h{h}']:>9.4f} {r[f'no_change_mse_h{h}']:>9.4f} "
          f"{r['untrained_model_mse']:>10.4f} {r['model_nmse']:>10.4f} "
          f"{r['no_change_nmse']:>10.4f} {r['train_s']:>8.0f}")
  for r in rows:
    print(f"{r['env']}: MSE per obs dim, model {np.round(r['model_mse_per_dim'], 4).tolist()}"
          f" | no change {np.round(r['no_change_mse_per_dim'], 4).tolist()}")
  return benchlib.finish(args.out, rows)


if __name__ == "__main__":
  main(tyro.cli(Args))
