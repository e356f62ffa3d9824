"""Benchmark: what Deep Dyna's model costs per env step, against plain DQN on the same loop.

Times one compiled epoch (`mbrl_jax.algorithms.dyna_dqn.make_step`, jitted, seeds vmapped)
of each variant from the same state after the random exploration, calls alternated
round-robin (`benchlib.interleaved_medians`) so that the ratios come from one window of time:

  dqn        the `cartpole_dqn` preset (one DQN update per env step);
  dqn_g2     the same with two updates per env step (Deep Dyna's update count, no model);
  deep_dyna  the `cartpole_dyna` preset (the ensemble refitted every F env steps, branched
             rollouts, half of each batch imagined, two updates per env step).

Also timed alone, for Deep Dyna: one ensemble refit on the exploration data (to holdout
patience, so its epoch count is printed) and one batch of branched rollouts. Each row gives
seconds per epoch, per env step, and the ratio to dqn_g2's epoch (the cost of the model at
equal updates).

  python experiments/bench_dyna_dqn.py --out results/bench_dyna_dqn.json
  python experiments/bench_dyna_dqn.py --quick              # tiny sizes (the test)

Rows: {name, seeds, epoch_length, seconds_per_epoch, ms_per_env_step, ratio_to_dqn_g2} for
the variants, {name ("deep_dyna/fit" or "deep_dyna/rollouts"), seconds, ...} for the parts.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys

import jax
import jax.numpy as jnp
import tyro

import benchlib
from mbrl_jax import data as buffer_lib
from mbrl_jax import models
from mbrl_jax.algorithms import dyna_dqn, mbpo
from mbrl_jax.policies import dqn as dqn_lib


@dataclasses.dataclass(frozen=True)
class Args:
  out: pathlib.Path | None = None
  """Write the rows as a JSON list to this file."""
  seeds: int = 1
  """Seeds vmapped in each call."""
  repeats: int = 3
  """Timed calls per variant (median), alternated round-robin."""
  quick: bool = False
  """Tiny sizes (50-step epochs, small networks, 1 repeat): checks that the script runs."""


def variants(quick: bool) -> dict[str, dyna_dqn.Config]:
  """name -> config: the presets, or tiny versions of them with `quick`."""
  dqn_config = dyna_dqn.PRESETS["cartpole_dqn"]
  dyna_config = dyna_dqn.PRESETS["cartpole_dyna"]
  if quick:
    small = dict(env_steps=150, epoch_length=50, init_exploration_steps=100,
                 model_train_every=25, eval_episodes=1, episode_length=50,
                 dqn=dqn_lib.DQNConfig(hidden_sizes=(16,), batch_size=16))
    dqn_config = dataclasses.replace(dqn_config, **small)
    dyna_config = dataclasses.replace(
        dyna_config, **small, model=dyna_dqn.ModelConfig(num_members=2, num_elites=1,
                                                         hidden_sizes=(16,)),
        fit=models.FitConfig(batch_size=16, max_epochs=3, patience=1),
        rollout=dyna_dqn.RolloutConfig(length=1, rollouts_per_step=1, retain_refits=1))
  return {"dqn": dqn_config, "dqn_g2": dataclasses.replace(dqn_config, updates_per_step=2),
          "deep_dyna": dyna_config}


def main(args: Args) -> list[dict]:
  for name in ("seeds", "repeats"):
    if getattr(args, name) < 1:
      sys.exit(f"--{name} must be >= 1, got {getattr(args, name)}")
  repeats = 1 if args.quick else args.repeats
  keys = jnp.stack([jax.random.key(s) for s in range(args.seeds)])
  configs = variants(args.quick)
  fns, parts_of = {}, {}
  for name, config in configs.items():
    parts = dyna_dqn.make_parts(config)
    parts_of[name] = parts
    state = jax.jit(jax.vmap(lambda k, p=parts, c=config: dyna_dqn._init(p, c, k)))(keys)  # pylint: disable=protected-access
    step = jax.jit(jax.vmap(dyna_dqn.make_step(config, parts)))
    fns[name] = (step, (state,))

  # Deep Dyna's parts alone, on the exploration data (seed 0).
  config, parts = configs["deep_dyna"], parts_of["deep_dyna"]
  state0 = jax.tree.map(lambda x: x[0], fns["deep_dyna"][1][0])

  def fit(state):
    fit_state, metrics = parts.trainer.fit(
        jax.random.key(1), state.fit_state,
        dyna_dqn.one_hot_actions(state.real.data, parts.num_actions),
        buffer_lib.valid_mask(state.real))
    return fit_state.params, metrics.epochs

  def rollouts(state):
    start = buffer_lib.sample(state.real, jax.random.key(2), config.rollout_batch).obs
    n = parts.num_actions
    predict = lambda k, obs, a: parts.ensemble.predict(
        state.fit_state.params, k, obs, jax.nn.one_hot(a, n, dtype=jnp.float32), mode="ts1")
    policy = lambda k, obs: parts.dqn.act(state.dqn.params, k, obs, 0.1)
    buffer, stats = mbpo.branched_rollout(predict, policy, parts.termination_fn,
                                          jax.random.key(3), start, config.rollout.length,
                                          state.model_buffer)
    return buffer.size, stats.transitions

  fns["deep_dyna/fit"] = (jax.jit(fit), (state0,))
  fns["deep_dyna/rollouts"] = (jax.jit(rollouts), (state0,))
  seconds = benchlib.interleaved_medians(fns, repeats, warmup=1)
  fit_epochs = int(fns["deep_dyna/fit"][0](state0)[1])

  rows = []
  base = seconds["dqn_g2"]
  print(f"Deep Dyna vs DQN on {configs['dqn'].env}: one epoch, {args.seeds} seed(s) vmapped, "
        f"median of {repeats}")
  print(f"{'variant':<20}{'s / epoch':>11}{'ms / env step':>15}{'x dqn_g2':>10}")
  for name, config in configs.items():
    s = seconds[name]
    row = dict(name=name, seeds=args.seeds, epoch_length=config.epoch_length,
               updates_per_step=config.updates_per_step, model_rollouts=config.model_rollouts,
               seconds_per_epoch=s, ms_per_env_step=1e3 * s / config.epoch_length,
               ratio_to_dqn_g2=s / base)
    rows.append(row)
    print(f"{name:<20}{s:>11.3f}{row['ms_per_env_step']:>15.3f}{row['ratio_to_dqn_g2']:>10.2f}")
  dyna_config = configs["deep_dyna"]
  refits = dyna_config.epoch_length // dyna_config.model_train_every
  for name, extra in (("deep_dyna/fit", dict(fit_epochs=fit_epochs,
                                             fit_rows=int(state0.real.size))),
                      ("deep_dyna/rollouts", dict(rollouts=dyna_config.rollout_batch,
                                                  length=dyna_config.rollout.length))):
    s = seconds[name]
    rows.append(dict(name=name, seconds=s, per_epoch=refits, **extra))
    print(f"{name:<20}{s:>11.3f} s once, {refits} per epoch; {extra}")
  benchlib.write_rows(args.out, rows)
  return rows


if __name__ == "__main__":
  main(tyro.cli(Args, description=__doc__))
