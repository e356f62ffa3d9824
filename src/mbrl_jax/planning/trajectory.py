"""Scoring action sequences by rolling them out through a learned dynamics model.

`make_trajectory_evaluator` turns a model step function, a reward and a termination function
into an `Evaluator`: `evaluate(params, key, obs, actions) -> TrajectoryStats`, whose `returns`
a planner maximises. Each of the P sequences is rolled out from the same start observation with
`num_particles` particles, P * K rows, for H steps of `lax.scan`.

Which ensemble member a particle uses is the model's rule for its row (an ensemble's "tsinf":
row r -> member r % E). With `member_assignment="random"` (the default, as mbrl-lib's
per-evaluation `randperm` of the propagation indices) the rows are a random permutation of the
particles, drawn once per evaluation and fixed along the horizon, so each particle gets a random
member, every member the same number of particles; "fixed" keeps particle j of sequence p on
row p * K + j (member (p * K + j) % E: one sequence's particles spread over the members).

A model that takes its aleatoric noise as an argument (an ensemble's `predict`, with
`noise_size=ens.noise_size`) gets all H steps' noise drawn in one call before the loop.

Reference: Chua et al. 2018 (PETS), section 4 (trajectory sampling).
"""

from __future__ import annotations

from typing import Callable, Literal

import jax
import jax.numpy as jnp

from mbrl_jax.planning.base import Evaluator, ModelFn, TaskFn, TrajectoryStats
from mbrl_jax.types import Params, PRNGKey

MEMBER_ASSIGNMENTS = ("random", "fixed")

# A sequence whose return is NaN (a model that diverged) gets this instead, so that it is never
# chosen as an elite yet does not poison means.
NAN_RETURN = -1e10


def make_trajectory_evaluator(
    model_fn: ModelFn,
    *,
    reward_fn: TaskFn | None = None,
    termination_fn: TaskFn | None = None,
    num_particles: int = 20,
    discount: float = 1.0,
    terminal_value_fn: Callable[[Params, jax.Array], jax.Array] | None = None,
    risk_coef: float = 0.0,
    uncertainty_fn: Callable[[Params, jax.Array, jax.Array], jax.Array] | None = None,
    uncertainty_coef: float = 0.0,
    noise_size: int = 0,
    member_assignment: Literal["random", "fixed"] = "random",
    unroll: int | bool = True,
) -> Evaluator:
  """Builds `evaluate(params, key, obs, actions, value_params=None) -> TrajectoryStats`.

  Args:
    model_fn: one model step (see `ModelFn`); its `reward` is used when `reward_fn` is None.
    reward_fn: known reward of a transition, unbatched; None uses the model's reward.
    termination_fn: known termination (nonzero = terminated), unbatched; a terminated particle
      collects no further reward. None: particles never terminate.
    num_particles: K particles per sequence.
    discount: per-step discount of rewards.
    terminal_value_fn: optional V(value_params, obs [N, O]) -> [N] added, discounted, at step H
      for particles still alive.
    risk_coef: objective = mean - risk_coef * std over particles (0: risk-neutral).
    uncertainty_fn: optional u(params, obs [N, O], action [N, A]) -> [N], e.g. the ensemble's
      epistemic standard deviation; `uncertainty_coef` * u is subtracted at every step.
    uncertainty_coef: weight of the uncertainty penalty (>= 0).
    noise_size: D > 0 if `model_fn(params, key, obs, action, noise=eps)` takes its per-step
      standard-normal noise eps [N, D] as an argument (an ensemble's `predict`: pass
      `ens.noise_size`): the evaluator then draws all H steps' noise in one call before the
      rollout, eps_t = normal(split(k_t)[1], [N, D]) with k_t the step's key, exactly what
      `predict` draws from k_t itself (the same values), and one large draw is cheaper than H
      small ones inside the loop. 0: the model draws its own noise (if any) from the step key.
    member_assignment: "random": the particles' rows are permuted at random once per
      evaluation (fixed along the horizon), so under a row-indexed member rule (tsinf) each
      particle gets a random member; "fixed": particle j of sequence p stays on row p * K + j.
    unroll: `lax.scan`'s `unroll` for the rollout over the horizon (the same results): True
      unrolls all H steps (no loop: ~6% faster plans at a small population, e.g. 100 x 5
      particles, measured by experiments/bench_planning.py; ~1.5 s more compile time), an
      int k >= 1 runs k steps per loop iteration (1: a plain loop, the least to compile).

  Returns:
    `evaluate(params, key, obs [O], actions [P, H, A], value_params=None)`.
  """
  if not isinstance(num_particles, int) or num_particles < 1:
    raise ValueError(f"num_particles must be a positive int, got {num_particles!r}")
  if not 0.0 < discount <= 1.0:
    raise ValueError(f"discount must be in (0, 1], got {discount!r}")
  if risk_coef < 0 or uncertainty_coef < 0:
    raise ValueError(f"risk_coef and uncertainty_coef must be >= 0, got {risk_coef!r}, "
                     f"{uncertainty_coef!r}")
  if uncertainty_coef > 0 and uncertainty_fn is None:
    raise ValueError("uncertainty_coef > 0 needs an uncertainty_fn")
  if isinstance(noise_size, bool) or not isinstance(noise_size, int) or noise_size < 0:
    raise ValueError(f"noise_size must be a non-negative int, got {noise_size!r}")
  if member_assignment not in MEMBER_ASSIGNMENTS:
    raise ValueError(f"member_assignment must be one of {MEMBER_ASSIGNMENTS}, got "
                     f"{member_assignment!r}")
  if not isinstance(unroll, bool) and (not isinstance(unroll, int) or unroll < 1):
    raise ValueError(f"unroll must be True, False or a positive int, got {unroll!r}")
  K = num_particles
  batched_reward = None if reward_fn is None else jax.vmap(reward_fn)
  batched_done = None if termination_fn is None else jax.vmap(termination_fn)

  def evaluate(params: Params, key: PRNGKey, obs: jax.Array, actions: jax.Array,
               value_params: Params = None) -> TrajectoryStats:
    if actions.ndim != 3:
      raise ValueError(f"actions must be [P, H, A], got shape {actions.shape}")
    if obs.ndim != 1:
      raise ValueError(f"obs must be a single observation [O], got shape {obs.shape}")
    P, H, _ = actions.shape
    n = P * K
    obs0 = jnp.broadcast_to(obs.astype(jnp.float32), (n, obs.shape[0]))
    row_actions = jnp.repeat(actions, K, axis=0)                           # [n, H, A]
    if member_assignment == "random":
      # Row r carries particle perm[r]: one random layout per evaluation, fixed over time.
      perm_key, key = jax.random.split(key)
      perm = jax.random.permutation(perm_key, n)                           # [n]
      row_actions = row_actions[perm]
    per_step_actions = row_actions.swapaxes(0, 1)                          # [H, n, A]

    def step(carry, inputs):
      x, alive, ret = carry
      a, k, t, eps = inputs
      out = model_fn(params, k, x, a) if eps is None else model_fn(params, k, x, a, noise=eps)
      next_x = out.next_obs
      if batched_reward is not None:
        r = batched_reward(x, a, next_x)
      elif out.reward is not None:
        r = out.reward
      else:
        raise ValueError("the model predicts no reward and no reward_fn was given")
      if uncertainty_fn is not None and uncertainty_coef > 0:
        r = r - uncertainty_coef * uncertainty_fn(params, x, a)
      if discount != 1.0:                                  # (1.0 ** t is 1: skip the power)
        r = (discount ** t) * r
      ret = ret + jnp.where(alive, r, 0.0)
      if batched_done is not None:
        alive = alive & ~batched_done(x, a, next_x).astype(bool)
      # Dead particles keep their last state, so a diverging model cannot make NaNs there.
      next_x = jnp.where(alive[:, None], next_x, x)
      return (next_x, alive, ret), None

    keys = jax.random.split(key, H)
    eps = None
    if noise_size:
      # What predict would draw from each step's key (the same split), in one call: [H, n, D].
      eps = jax.vmap(lambda k: jax.random.normal(jax.random.split(k)[1], (n, noise_size)))(keys)
    init = (obs0, jnp.ones((n,), bool), jnp.zeros((n,), jnp.float32))
    (x_final, alive, ret), _ = jax.lax.scan(
        step, init, (per_step_actions, keys, jnp.arange(H, dtype=jnp.float32), eps),
        unroll=unroll)
    if terminal_value_fn is not None:
      ret = ret + jnp.where(alive, (discount ** H) * terminal_value_fn(value_params, x_final), 0.0)
    if member_assignment == "random":
      ret = jnp.zeros_like(ret).at[perm].set(ret)                          # back to [P * K]
    ret = jnp.where(jnp.isnan(ret), NAN_RETURN, ret).reshape(P, K)
    mean, std = ret.mean(1), ret.std(1)
    return TrajectoryStats(returns=mean - risk_coef * std, mean=mean, std=std)

  return evaluate
