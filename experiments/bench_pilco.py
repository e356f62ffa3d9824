"""Benchmark: what one PILCO policy-improvement evaluation costs as the data grow.

PILCO's policy improvement evaluates the predicted cost (the horizon's moment-matched
rollout through the GP) and its exact gradient, a few hundred times per trial; each GP
moment match builds E (E + 1) / 2 matrices of N x N exponentials (N: the GP's rows, E: the
state dimensions), which is most of the work. For N rows of random-action cart-pole data
(the `cartpole_swingup` preset's env, float64) this times, per N, in one interleaved window:

- `forward`: the predicted cost alone (one jitted call);
- `value_and_grad`: the cost and its gradient with respect to the policy (what L-BFGS
  calls);
- `exp_floor`: only the exponentials a forward pass cannot avoid, horizon x E (E + 1) / 2 x
  N x N float64 `exp`s of outer sums of the same sizes, summed (the reference:
  `forward / exp_floor` says how far the rollout is from that floor, `value_and_grad /
  forward` what the gradient adds).

  python experiments/bench_pilco.py --out results/bench_pilco.json
  python experiments/bench_pilco.py --quick            # tiny sizes (the test)

Rows: {name, rows, horizon, pairs, forward_ms, value_and_grad_ms, exp_floor_ms,
forward_over_exp_floor, grad_over_forward}.
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import tyro

import benchlib
from mbrl_jax.algorithms import pilco
from mbrl_jax.envs import acting
from mbrl_jax.models import gp


@dataclasses.dataclass(frozen=True)
class Args:
  out: pathlib.Path | None = None
  """Write the rows as a JSON list to this file."""
  preset: str = "cartpole_swingup"
  """The PILCO preset whose env, policy and horizon are timed."""
  rows: tuple[int, ...] = (40, 120, 200, 280, 360, 440)
  """GP rows timed (random-action episodes, cut to this many transitions)."""
  repeats: int = 5
  """Timed calls per subject (median)."""
  quick: bool = False
  """Tiny sizes for the test (8 rows, a 5-step horizon, 2 repeats)."""


def posterior(config: pilco.Config, parts: pilco.Parts, rows: int, key: jax.Array
              ) -> gp.Posterior:
  """The exact GP posterior on `rows` transitions of uniformly random actions (hyperparameters
  from `gp.init_params`: the timing does not depend on their values)."""
  length = config.episode_length
  episodes = -(-rows // length)
  eps = jax.vmap(lambda k: acting.episode(parts.env, acting.uniform_random(
      parts.env.action_size), k, length))(jax.random.split(key, episodes))
  data = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:])[:rows], eps.transitions)
  inputs, targets = pilco.gp_data(parts.layout, data, jnp.float64)
  return gp.posterior(gp.init_params(inputs, targets), inputs, targets)


def main(args: Args) -> list[dict]:
  with jax.enable_x64(True):              # PILCO computes in float64 (only inside this call)
    return _main(args)


def _main(args: Args) -> list[dict]:
  config = pilco.PRESETS[args.preset]
  sizes, repeats = args.rows, args.repeats
  if args.quick:
    config = dataclasses.replace(config, episode_length=5, success_steps=1)
    sizes, repeats = (8,), 2
  parts = pilco.make_parts(config)
  layout, horizon = parts.layout, config.episode_length
  params = pilco.init_policy(config, layout, jax.random.key(1), parts.env.action_size)
  num_out = layout.state_size
  pairs = num_out * (num_out + 1) // 2
  forward = jax.jit(lambda p, post: pilco.predicted_cost(config, layout, p, post, horizon)[0])
  value_and_grad = jax.jit(jax.value_and_grad(
      lambda p, post: pilco.predicted_cost(config, layout, p, post, horizon)[0]))

  @jax.jit
  def exp_floor(a, b):
    # Per step and pair, the N x N exponentials of an outer sum (built on the fly, as the
    # moment match does), summed: [H, P, N] x 2 -> a scalar.
    step = lambda c, ab: (c + jnp.sum(jnp.exp(ab[0][:, :, None] + ab[1][:, None, :])), None)
    return jax.lax.scan(step, jnp.zeros((), a.dtype), (a, b))[0]

  rows = []
  for n in sizes:
    post = posterior(config, parts, n, jax.random.key(n))
    ka, kb = jax.random.split(jax.random.key(2))
    a, b = (-jnp.abs(jax.random.normal(k, (horizon, pairs, n), jnp.float64)) for k in (ka, kb))
    med = benchlib.interleaved_medians({"forward": (forward, (params, post)),
                                        "value_and_grad": (value_and_grad, (params, post)),
                                        "exp_floor": (exp_floor, (a, b))}, repeats)
    row = dict(name=f"{config.env}/rows={n}", rows=n, horizon=horizon, pairs=pairs,
               forward_ms=1e3 * med["forward"], value_and_grad_ms=1e3 * med["value_and_grad"],
               exp_floor_ms=1e3 * med["exp_floor"],
               forward_over_exp_floor=med["forward"] / med["exp_floor"],
               grad_over_forward=med["value_and_grad"] / med["forward"])
    rows.append(row)
  print(f"PILCO predicted cost, {args.preset} preset, horizon {horizon}, {pairs} output pairs, "
        "float64 (medians, ms)")
  print(f"{'rows':>6} {'forward':>10} {'value+grad':>11} {'exp floor':>10} "
        f"{'fwd/floor':>10} {'grad/fwd':>9}")
  for r in rows:
    print(f"{r['rows']:>6} {r['forward_ms']:>10.2f} {r['value_and_grad_ms']:>11.2f} "
          f"{r['exp_floor_ms']:>10.2f} {r['forward_over_exp_floor']:>10.2f} "
          f"{r['grad_over_forward']:>9.2f}")
  if len(rows) > 1:
    slope = np.polyfit(np.log([r["rows"] for r in rows]),
                       np.log([r["value_and_grad_ms"] for r in rows]), 1)[0]
    print(f"value+grad grows as rows^{slope:.2f}")
  return benchlib.finish(args.out, rows, preset=args.preset, quick=args.quick)


if __name__ == "__main__":
  main(tyro.cli(Args, description=__doc__))
