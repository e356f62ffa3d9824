"""Tree search over discrete actions through `mctx`: MCTS (MuZero's PUCT) and Gumbel MuZero.

The tree is mctx's; this module builds what mctx needs from a model and hands back a pure,
batched `plan`:

  search = make_mcts(env.model_step, num_actions=3, num_simulations=32, discount=1.0)
  actions, info = jax.jit(search.plan)(None, key, root_embeddings)   # [B], SearchInfo

Two kinds of model:

* a known (true) model, ``model_step(embedding, action) -> (reward [], discount [],
  next_embedding)``, unbatched (``envs.discrete`` envs' ``env.model_step``, a maze's
  ``recurrent_model``): vmapped over the batch here. Leaves are valued by ``value_fn(params,
  embedding) -> []`` (default 0), optionally after ``rollout_steps`` uniformly random actions
  through the model (a random-rollout value); the prior over actions is ``prior_fn(params,
  embedding) -> logits [A]`` (default uniform).
* a learned model in mctx's own form: ``recurrent_fn(params, key, action [B], embedding
  [B, ...]) -> (mctx.RecurrentFnOutput, next_embedding)`` with ``root_fn(params, key,
  observation [B, ...]) -> mctx.RootFnOutput`` (a MuZero representation + prediction net).

`discount` multiplies the model's own discount on every edge (a known model says 0 once the
episode has ended; a learned one whatever it predicts). Every size (actions, simulations,
depth, rollout length) is a Python int in the closure, so `plan` compiles once per batch
shape; it vmaps over seeds (a leading key axis with the roots) like any JAX function.

Acting: MuZero search takes the most visited root action (ties broken by the root's
Q-values), or with ``temperature > 0`` samples from the visit counts as mctx does; Gumbel
MuZero takes mctx's action (the best of the most visited by Gumbel + logits + Q; pass
``gumbel_scale=0`` for deterministic planning on a known model).

References: Schrittwieser et al. 2020 (MuZero, PUCT with pb_c_init / pb_c_base); Danihelka et
al. 2022 (Gumbel MuZero: sequential halving at the root, an improved policy from completed
Q-values, policy improvement with few simulations).

Example (a two-armed bandit: arm 1 pays 1, arm 0 pays 0):
  >>> step = lambda emb, a: (a.astype(jnp.float32), jnp.float32(0.0), emb)
  >>> search = make_mcts(step, num_actions=2, num_simulations=8, discount=1.0)
  >>> actions, info = search.plan(None, jax.random.key(0), jnp.zeros((3, 1)))
  >>> actions.tolist(), info.visit_counts.shape
  ([1, 1, 1], (3, 2))
"""

from __future__ import annotations

import functools
import numbers
from typing import Any, Callable, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import mctx

from mbrl_jax.types import Params, PRNGKey

SEARCHES = ("muzero", "gumbel")
"""The search algorithms `make_mcts` builds (mctx.muzero_policy, mctx.gumbel_muzero_policy)."""


class ModelStep(Protocol):
  """A known model, unbatched: ``(embedding, action int32 []) -> (reward [], discount [],
  next_embedding)``; discount 0 on the step that ends the episode and after it."""

  def __call__(self, embedding: Any, action: jax.Array
               ) -> tuple[jax.Array, jax.Array, Any]:
    ...


class RootFn(Protocol):
  """A learned model's root: ``(params, key, observation [B, ...]) -> mctx.RootFnOutput``
  (prior_logits [B, A], value [B], embedding [B, ...])."""

  def __call__(self, params: Params, key: PRNGKey, observation: Any) -> mctx.RootFnOutput:
    ...


class SearchInfo(NamedTuple):
  """What one `plan` call found, per root.

  Attributes:
    visit_counts: visits of each root action.                                   # [B, A]
    action_weights: the search policy: visit frequencies (muzero) or the improved # [B, A]
      policy softmax(logits + completed Q) (gumbel); the targets a policy net trains on.
    root_value: the search's value of the root (mean backed-up return).          # [B]
    q_values: the root actions' Q = r + discount * value (0 where unvisited).     # [B, A]
    prior_logits: the root's prior (with Dirichlet noise if configured).          # [B, A]
    prior_value: the root's value estimate before searching.                      # [B]
  """

  visit_counts: jax.Array
  action_weights: jax.Array
  root_value: jax.Array
  q_values: jax.Array
  prior_logits: jax.Array
  prior_value: jax.Array


class Search(NamedTuple):
  """A tree search with its sizes fixed (`make_mcts`).

  Attributes:
    plan: ``plan(params, key, root [B, ...]) -> (actions int32 [B], SearchInfo)``; params
      are passed to the model's functions (None for a true model without a value net).
    recurrent_fn: the mctx recurrent_fn searched with (batched).
    root_fn: ``root_fn(params, key, root [B, ...]) -> mctx.RootFnOutput``.
    num_actions: A.
    num_simulations: simulations per plan.
  """

  plan: Callable[[Params, PRNGKey, Any], tuple[jax.Array, SearchInfo]]
  recurrent_fn: mctx.RecurrentFn
  root_fn: RootFn
  num_actions: int
  num_simulations: int


def _bad(name: str, why: str, value: Any) -> ValueError:
  return ValueError(f"make_mcts: {name} {why}, got {value!r}")


def _int_at_least(name: str, value: Any, low: int) -> None:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
    raise _bad(name, f"must be an int >= {low}", value)


def _real_in(name: str, value: Any, low: float, high: float | None = None) -> None:
  ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value
  if not ok or value < low or (high is not None and value > high):
    raise _bad(name, f"must be a number in [{low:g}, {'inf' if high is None else format(high, 'g')}]",
               value)


def make_mcts(
    model_step: ModelStep | None = None,
    *,
    num_actions: int,
    num_simulations: int,
    discount: float = 1.0,
    recurrent_fn: mctx.RecurrentFn | None = None,
    root_fn: RootFn | None = None,
    search: str = "muzero",
    max_depth: int | None = None,
    value_fn: Callable[[Params, Any], jax.Array] | None = None,
    prior_fn: Callable[[Params, Any], jax.Array] | None = None,
    rollout_steps: int = 0,
    pb_c_init: float = 1.25,
    pb_c_base: float = 19652.0,
    dirichlet_fraction: float = 0.0,
    dirichlet_alpha: float = 0.3,
    temperature: float = 0.0,
    gumbel_scale: float = 1.0,
    max_num_considered_actions: int = 16,
) -> Search:
  """Builds a batched tree search over a known model or a learned recurrent_fn.

  Args:
    model_step: a known model (`ModelStep`, unbatched); give it or `recurrent_fn`.
    num_actions: A >= 2 discrete actions.
    num_simulations: simulations per plan (>= 1).
    discount: per-step discount in [0, 1], multiplied into the model's own.
    recurrent_fn: a learned model in mctx's form (batched); needs `root_fn`.
    root_fn: the learned model's root (`RootFn`); only with `recurrent_fn`.
    search: "muzero" (PUCT, mctx.muzero_policy) or "gumbel" (mctx.gumbel_muzero_policy).
    max_depth: deepest node a simulation may expand (None: num_simulations).
    value_fn: known model: leaf value ``value_fn(params, embedding) -> []`` (default 0).
    prior_fn: known model: prior logits ``prior_fn(params, embedding) -> [A]`` (default
      uniform).
    rollout_steps: known model: value a leaf by this many uniformly random actions through
      the model (discounted), plus `value_fn` after them; 0: `value_fn` alone.
    pb_c_init, pb_c_base: PUCT constants c1, c2 (muzero).
    dirichlet_fraction, dirichlet_alpha: root prior noise (muzero); 0 (default) for none,
      as when planning to act rather than to explore in training.
    temperature: muzero: 0 acts greedily on visit counts, > 0 samples visits^(1/T).
    gumbel_scale: gumbel: scale of the root's Gumbel noise (0: deterministic).
    max_num_considered_actions: gumbel: actions kept by sequential halving at the root.

  Returns:
    A `Search`.

  Raises:
    ValueError: a bad argument, in one line naming it.
  """
  if (model_step is None) == (recurrent_fn is None):
    raise ValueError("make_mcts: give exactly one of model_step (a known model) and "
                     "recurrent_fn (a learned one, with root_fn)")
  if recurrent_fn is not None:
    if root_fn is None:
      raise ValueError("make_mcts: recurrent_fn needs root_fn(params, key, observation) -> "
                       "mctx.RootFnOutput")
    for name, value in (("value_fn", value_fn), ("prior_fn", prior_fn)):
      if value is not None:
        raise ValueError(f"make_mcts: {name} is for a known model_step; a recurrent_fn "
                         "returns its own value and prior")
    if rollout_steps:
      raise ValueError("make_mcts: rollout_steps needs a known model_step")
  elif root_fn is not None:
    raise ValueError("make_mcts: root_fn is for a recurrent_fn; a model_step's root is the "
                     "embedding itself")
  _int_at_least("num_actions", num_actions, 2)
  _int_at_least("num_simulations", num_simulations, 1)
  _real_in("discount", discount, 0.0, 1.0)
  if search not in SEARCHES:
    raise _bad("search", f"must be one of {', '.join(SEARCHES)}", search)
  if max_depth is not None:
    _int_at_least("max_depth", max_depth, 1)
  _int_at_least("rollout_steps", rollout_steps, 0)
  _real_in("pb_c_init", pb_c_init, 0.0)
  _real_in("pb_c_base", pb_c_base, 0.0)
  if pb_c_base == 0:
    raise _bad("pb_c_base", "must be > 0", pb_c_base)
  _real_in("dirichlet_fraction", dirichlet_fraction, 0.0, 1.0)
  _real_in("dirichlet_alpha", dirichlet_alpha, 0.0)
  if dirichlet_alpha == 0:
    raise _bad("dirichlet_alpha", "must be > 0 (a Dirichlet's concentration)", dirichlet_alpha)
  _real_in("temperature", temperature, 0.0)
  _real_in("gumbel_scale", gumbel_scale, 0.0)
  _int_at_least("max_num_considered_actions", max_num_considered_actions, 1)

  A = num_actions
  if model_step is not None:
    recurrent_fn, root_fn = _known_model_fns(model_step, A, discount, value_fn, prior_fn,
                                             rollout_steps)
  else:
    learned = recurrent_fn

    def recurrent_fn(params, key, action, embedding):  # pylint: disable=function-redefined
      out, nxt = learned(params, key, action, embedding)
      return out.replace(discount=discount * out.discount), nxt

  if search == "muzero":
    policy = functools.partial(
        mctx.muzero_policy, num_simulations=num_simulations, max_depth=max_depth,
        dirichlet_fraction=float(dirichlet_fraction), dirichlet_alpha=float(dirichlet_alpha),
        pb_c_init=float(pb_c_init), pb_c_base=float(pb_c_base),
        temperature=float(temperature) if temperature > 0 else 1.0)
  else:
    policy = functools.partial(
        mctx.gumbel_muzero_policy, num_simulations=num_simulations, max_depth=max_depth,
        gumbel_scale=float(gumbel_scale),
        max_num_considered_actions=min(max_num_considered_actions, A))

  def plan(params: Params, key: PRNGKey, root: Any) -> tuple[jax.Array, SearchInfo]:
    """Searches from each of the B roots [B, ...]: actions int32 [B] and `SearchInfo`."""
    root_key, search_key = jax.random.split(key)
    root_out = root_fn(params, root_key, root)
    out = policy(params, search_key, root_out, recurrent_fn)
    tree = out.search_tree
    summary = tree.summary()
    action = out.action
    if search == "muzero" and temperature == 0:
      # Most visits; among equals the best Q (a tiny fraction of a visit).
      q = summary.qvalues
      span = jnp.max(q, -1, keepdims=True) - jnp.min(q, -1, keepdims=True)
      tie_break = 0.5 * (q - jnp.min(q, -1, keepdims=True)) / jnp.maximum(span, 1e-12)
      action = jnp.argmax(summary.visit_counts + tie_break, axis=-1)
    info = SearchInfo(
        visit_counts=summary.visit_counts.astype(jnp.int32),
        action_weights=out.action_weights,
        root_value=summary.value,
        q_values=summary.qvalues,
        prior_logits=tree.children_prior_logits[:, tree.ROOT_INDEX],
        prior_value=root_out.value)
    return action.astype(jnp.int32), info

  return Search(plan=plan, recurrent_fn=recurrent_fn, root_fn=root_fn, num_actions=A,
                num_simulations=num_simulations)


def _known_model_fns(model_step: ModelStep, num_actions: int, discount: float,
                     value_fn: Callable[[Params, Any], jax.Array] | None,
                     prior_fn: Callable[[Params, Any], jax.Array] | None,
                     rollout_steps: int) -> tuple[mctx.RecurrentFn, RootFn]:
  """mctx's recurrent_fn and root_fn around an unbatched known model (vmapped here)."""

  def prior(params: Params, embedding: Any) -> jax.Array:               # [A]
    if prior_fn is None:
      return jnp.zeros((num_actions,), jnp.float32)
    return jnp.asarray(prior_fn(params, embedding), jnp.float32)

  def value(params: Params, key: PRNGKey, embedding: Any) -> jax.Array:  # []
    tail = (jnp.zeros((), jnp.float32) if value_fn is None
            else jnp.asarray(value_fn(params, embedding), jnp.float32))
    if rollout_steps == 0:
      return tail

    def body(carry, k):
      emb, ret, scale = carry
      action = jax.random.randint(k, (), 0, num_actions, jnp.int32)
      reward, disc, emb = model_step(emb, action)
      return (emb, ret + scale * reward, scale * discount * disc), None

    (emb, ret, scale), _ = jax.lax.scan(
        body, (embedding, jnp.zeros((), jnp.float32), jnp.ones((), jnp.float32)),
        jax.random.split(key, rollout_steps))
    end = (jnp.zeros((), jnp.float32) if value_fn is None
           else jnp.asarray(value_fn(params, emb), jnp.float32))
    return ret + scale * end

  def recurrent_fn(params: Params, key: PRNGKey, action: jax.Array, embedding: Any
                   ) -> tuple[mctx.RecurrentFnOutput, Any]:
    reward, disc, nxt = jax.vmap(model_step)(embedding, action)
    keys = jax.random.split(key, action.shape[0])
    out = mctx.RecurrentFnOutput(
        reward=jnp.asarray(reward, jnp.float32),
        discount=discount * jnp.asarray(disc, jnp.float32),
        prior_logits=jax.vmap(prior, (None, 0))(params, nxt),
        value=jax.vmap(value, (None, 0, 0))(params, keys, nxt))
    return out, nxt

  def root_fn(params: Params, key: PRNGKey, root: Any) -> mctx.RootFnOutput:
    batch = jax.tree.leaves(root)[0].shape[0]
    keys = jax.random.split(key, batch)
    return mctx.RootFnOutput(prior_logits=jax.vmap(prior, (None, 0))(params, root),
                             value=jax.vmap(value, (None, 0, 0))(params, keys, root),
                             embedding=root)

  return recurrent_fn, root_fn
