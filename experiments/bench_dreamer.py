"""Dreamer's cost at each preset: seconds per train step, where the time goes, each part's
achieved GFLOP/s against a float32 matmul rate measured in the same run, and the replay
buffer's bytes per seed.

  python experiments/bench_dreamer.py --out results/bench_dreamer.json
  python experiments/bench_dreamer.py --presets pendulum pixels large

For each preset (`mbrl_jax.algorithms.dreamer.PRESETS`), with the preset's model and batch
sizes, one seed, each part its own jitted call on the state after the prefill:
  * train_step: one world-model + actor-critic update (`dreamer.make_train_step`);
  * world_model: its share: sample `batch_size` replay windows, the loss's gradient, Adam;
  * actor_critic: imagination of `horizon` steps from `imag_starts` posterior states of such a
    batch and the actor and critic updates;
  * collect: `train_every` env steps with the exploring actor (the filter's `obs_step` per
    step) and their replay add, what a train step waits for;
  * chunk: `--chunk-steps` env steps of (collect, train step) as one compiled call, as
    `run.train` runs them, with one evaluation episode; per env step = chunk / chunk steps.
FLOPs are the matrix multiplies of each call (2 per multiply-add of every `dot_general` in its
jaxpr, gradients included, scan bodies times their lengths; elementwise work not counted).
XLA's cost analysis of the compiled call is written beside them (`xla_cost_analysis_gflop`)
but undercounts: XLA:CPU counts a loop body once, whatever its trip count. GFLOP/s = FLOPs /
median seconds, against the faster of two float32 matmuls timed in the same window
(`benchlib.time_against_matmul`).
buffer_bytes is the replay buffer of one seed at the preset's full `env_steps` (shapes from
`jax.eval_shape` of `dreamer.init`, nothing allocated); state_bytes the whole state, what a
checkpoint writes per seed.

The parts read the buffer through `Transition` windows when the buffer holds Transitions, so
this script also times the layout before replay rows (commit d9948f1, one Transition per env
step, each image stored as obs and next_obs): run it with that checkout's src on PYTHONPATH.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import sys

import jax
import jax.numpy as jnp
import optax
import tyro

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import benchlib  # noqa: E402

from mbrl_jax import compile as compile_lib  # noqa: E402
from mbrl_jax import data as buffer_lib  # noqa: E402
from mbrl_jax.algorithms import dreamer  # noqa: E402
from mbrl_jax.envs import acting  # noqa: E402
from mbrl_jax.policies import imagination as im  # noqa: E402
from mbrl_jax.types import Transition  # noqa: E402

PARTS = ("train_step", "world_model", "actor_critic", "collect", "chunk")


@dataclasses.dataclass(frozen=True)
class Args:
  presets: tuple[str, ...] = ("pendulum", "pixels")
  """Presets of experiments/dreamer.py to time."""
  chunk_steps: int = 50
  """Env steps per timed chunk."""
  repeats: int = 3
  """Timed calls per measurement (after the compiling call and 2 warm-up calls)."""
  parts: tuple[str, ...] = PARTS
  """Parts to time (train_step is always timed: the shares are of it)."""
  out: pathlib.Path | None = None
  """JSON file for the rows."""


def _nbytes(tree) -> int:
  """Bytes of a tree of arrays or shapes (a typed key counts its key data)."""
  def nbytes(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.eval_shape(jax.random.key_data, x).size * 4
    return x.size * jnp.dtype(x.dtype).itemsize
  return int(sum(nbytes(x) for x in jax.tree.leaves(tree)))


def _windows(config: dreamer.Config, buffer, key):
  """(Transition windows [B, L], valid, per-step is_first [B, L + 1] or None)."""
  if isinstance(buffer.data, Transition):           # d9948f1: one Transition per env step
    window, valid = buffer_lib.sample_sequences(buffer, key, config.batch_size,
                                                config.seq_len)
    return window, valid, None
  rows, valid = buffer_lib.sample_sequences(buffer, key, config.batch_size, config.seq_len + 1,
                                            cross_episodes=config.cross_episodes)
  window, is_first = dreamer.window_transitions(rows)
  return window, valid, is_first


def make_subjects(config: dreamer.Config, parts: dreamer.Parts, state: dreamer.State):
  """name -> (jitted fn, args) for each part of `PARTS`."""
  wm, ac = parts.world_model, parts.actor_critic

  def wm_loss(params, key, buffer):
    sample_key, loss_key = jax.random.split(key)
    window, valid, is_first = _windows(config, buffer, sample_key)
    extra = () if is_first is None else (is_first,)
    return wm.loss(params, loss_key, window, valid, *extra)

  def world_model(params, opt_state, buffer, key):
    (_, aux), grad = jax.value_and_grad(wm_loss, has_aux=True)(params, key, buffer)
    updates, opt_state = parts.model_opt.update(grad, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, aux.metrics

  def starts(params, buffer, key):
    post = wm_loss(params, key, buffer)[1].post
    flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), post)
    n = config.batch_size * (config.seq_len + 1)
    if config.imag_starts is not None and config.imag_starts < n:
      idx = jax.random.permutation(jax.random.fold_in(key, 1), n)[:config.imag_starts]
      flat = jax.tree.map(lambda x: x[idx], flat)
    return flat

  def actor_critic(params, ac_state, start, key):
    def imagine_fn(k, policy_fn):
      states, actions = wm.imagine(params, k, start, policy_fn, config.actor_critic.horizon)
      feat = wm.features(states)
      return im.Imagined(feat=feat, action=actions, reward=wm.reward(params, feat[:, 1:]),
                         cont=wm.cont(params, feat[:, 1:]))
    return ac.update(ac_state, key, imagine_fn)

  def collect(params, actor_params, actor, buffer, key):
    policy = dreamer.make_policy(parts, params, actor_params, "explore")
    new_actor, tr, _, _ = acting.collect(parts.env, policy, actor, key, config.train_every)
    if isinstance(buffer.data, Transition):
      return new_actor, buffer_lib.add(buffer, tr)
    return new_actor, buffer_lib.add_masked(buffer, *dreamer.replay_rows(actor, tr))

  jit = compile_lib.jit
  key = jax.random.key(1)
  start = jax.jit(starts)(state.model_params, state.buffer, key)
  return {
      "train_step": (jit(dreamer.make_train_step(config, parts)),
                     (state.model_params, state.model_opt, state.ac, state.buffer, key)),
      "world_model": (jit(world_model), (state.model_params, state.model_opt, state.buffer,
                                         key)),
      "actor_critic": (jit(actor_critic), (state.model_params, state.ac, start, key)),
      "collect": (jit(collect), (state.model_params, state.ac.actor, state.actor, state.buffer,
                                 key)),
      "chunk": (jit(dreamer.make_step(config, parts)), (state,)),
  }


def _sub_jaxprs(value):
  """The jaxprs inside an equation parameter (a closed jaxpr, a jaxpr, or a tuple of them)."""
  if isinstance(value, (tuple, list)):
    return [j for v in value for j in _sub_jaxprs(v)]
  if hasattr(value, "eqns"):
    return [value]
  if hasattr(value, "jaxpr") and hasattr(value, "consts"):
    return [value.jaxpr]
  return []


def jaxpr_matmul_flops(jaxpr) -> float:
  """2 x multiply-adds of every `dot_general` in `jaxpr`, a scan's body times its length, a
  cond's costliest branch, a while loop's body once (Dreamer's loops are scans)."""
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      (contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[i] for i in contract)
      continue
    subs = [j for v in eqn.params.values() for j in _sub_jaxprs(v)]
    if not subs:
      continue
    if name == "cond":
      total += max(jaxpr_matmul_flops(j) for j in subs)
    elif name == "scan":
      total += eqn.params["length"] * sum(jaxpr_matmul_flops(j) for j in subs)
    else:
      total += sum(jaxpr_matmul_flops(j) for j in subs)
  return total


def flops_of(fn, args) -> tuple[float, float]:
  """(matmul FLOPs counted on the jaxpr, XLA's cost-analysis FLOPs of the compiled call).

  XLA:CPU's cost analysis counts a while loop's body once, whatever its trip count (a scan
  of 10 matmuls reports the FLOPs of one), so it undercounts everything scanned here; it is
  reported beside the jaxpr count, which multiplies scan bodies by their lengths."""
  matmul = jaxpr_matmul_flops(fn.trace(*args).jaxpr.jaxpr)
  cost = fn.lower(*args).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return matmul, float((cost or {}).get("flops", 0.0))


def time_preset(name: str, args: Args) -> list[dict]:
  if name not in dreamer.PRESETS:
    raise SystemExit(f"error: unknown preset {name!r}; valid: "
                     f"{', '.join(dreamer.PRESETS)}")
  base = dreamer.PRESETS[name]
  full_state = jax.eval_shape(lambda k: dreamer.init(k, base), jax.random.key(0))
  buffer_bytes, state_bytes = _nbytes(full_state.buffer), _nbytes(full_state)
  config = dataclasses.replace(base, chunk_steps=args.chunk_steps, eval_episodes=1,
                               env_steps=base.prefill + args.chunk_steps)
  parts = dreamer.make_parts(config)
  state = jax.jit(lambda k: dreamer.init(k, config, parts))(jax.random.key(0))
  wanted = ("train_step",) + tuple(p for p in args.parts if p != "train_step")
  subjects = {p: s for p, s in make_subjects(config, parts, state).items() if p in wanted}
  counted = {part: flops_of(fn, fn_args) for part, (fn, fn_args) in subjects.items()}
  flops = {part: c[0] for part, c in counted.items()}
  medians, ceiling = benchlib.time_against_matmul(
      subjects, rows=config.batch_size * (config.seq_len + 1),
      width=config.world_model.hidden, repeats=args.repeats,
      compiler_options=compile_lib.compiler_options(None))
  rows = []
  for part in [p for p in PARTS if p in subjects]:
    seconds = medians[part]
    gflops = flops[part] / seconds / 1e9
    rows.append(dict(
        preset=name, part=part, pixels=config.pixels, image_size=config.image_size,
        batch_size=config.batch_size, seq_len=config.seq_len, train_every=config.train_every,
        imag_starts=config.imag_starts, horizon=config.actor_critic.horizon,
        chunk_steps=config.chunk_steps, seconds=seconds,
        share_of_train_step=seconds / medians["train_step"], gflop=flops[part] / 1e9,
        xla_cost_analysis_gflop=counted[part][1] / 1e9,
        gflops=gflops, matmul_gflops=float(ceiling), fraction_of_matmul=gflops / ceiling,
        matmul_reference_gflops=ceiling.rates,
        per_env_step_s=(medians["chunk"] / config.chunk_steps if "chunk" in medians
                        else float("nan")),
        buffer_bytes_per_seed=buffer_bytes, state_bytes_per_seed=state_bytes,
        buffer_layout="transitions" if isinstance(state.buffer.data, Transition) else "rows",
        full_env_steps=base.env_steps))
  return rows


def main(argv: list[str] | None = None) -> list[dict]:
  args = tyro.cli(Args, args=sys.argv[1:] if argv is None else argv, description=__doc__)
  unknown = [p for p in args.parts if p not in PARTS]
  if unknown:
    raise SystemExit(f"error: unknown --parts {', '.join(unknown)}; valid: {', '.join(PARTS)}")
  rows = []
  print(f"{'preset':<9} {'part':<13} {'seconds':>9} {'of step':>8} {'GFLOP':>8} "
        f"{'GFLOP/s':>8} {'of matmul':>9}")
  for name in args.presets:
    preset_rows = time_preset(name, args)
    for row in preset_rows:
      row.update(benchlib.machine_info())
      print(f"{name:<9} {row['part']:<13} {row['seconds']:>9.4f} "
            f"{100 * row['share_of_train_step']:>7.0f}% {row['gflop']:>8.3f} "
            f"{row['gflops']:>8.2f} {100 * row['fraction_of_matmul']:>8.2f}%")
    r = preset_rows[0]
    print(f"{name:<9} matmul {r['matmul_gflops']:.1f} GFLOP/s | per env step "
          f"{r['per_env_step_s']:.4f} s | buffer ({r['buffer_layout']}, {r['full_env_steps']} "
          f"env steps) {r['buffer_bytes_per_seed'] / 1e6:.1f} MB per seed, state "
          f"{r['state_bytes_per_seed'] / 1e6:.1f} MB", flush=True)
    rows.extend(preset_rows)
  benchlib.write_rows(args.out, rows)
  return rows


if __name__ == "__main__":
  main()
