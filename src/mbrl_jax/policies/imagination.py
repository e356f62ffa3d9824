"""Actor-critic learning in imagination (Dreamer; Hafner et al. 2020, 2023).

Starting from latent states of a world model, the actor's actions are rolled forward H steps
in the model; the critic is regressed on lambda-returns of the imagined rewards (bootstrapped
with a slow EMA copy of the critic, or with the critic itself); the actor maximises the
returns, normalised by an EMA of their 5th-95th percentile range (DreamerV3), plus an entropy
bonus. Options bring in the rest of DreamerV3's learning side (danijar/dreamerv3,
`dreamerv3/agent.py` `imag_loss` / `repl_loss` and `configs.yaml`): a regulariser pulling the
critic towards the slow critic (`slow_reg`), loss weights discounted like V3's
(`weights="discounted"`), a replay-value loss (`replay_scale`: the critic also regresses
lambda-returns along the replayed posterior trajectory, bootstrapped with the imagined
returns from each replayed state; pass a `Replayed` to `update`) and V3's optimizer
(`optimizer="laprop"`, see `laprop`).

This module knows nothing about the world model: `update` takes
`imagine_fn(key, policy_fn) -> Imagined`, which the caller builds from its model (e.g.
`mbrl_jax.models.rssm.WorldModel.imagine` plus its reward and continuation heads). With
`actor_grad="dynamics"` the actor's gradient flows back through the imagined trajectory
(DreamerV1/V2's choice for continuous control); with `"reinforce"` it is a score-function
gradient with the critic as baseline (DreamerV3's choice for all action spaces).

Example (imagination of a toy model where features drift with the action):
  >>> ac = make_actor_critic(feature_size=2, action_size=1,
  ...                        config=ActorCriticConfig(hidden=16, horizon=5))
  >>> state = jax.jit(ac.init)(jax.random.key(0))        # each call jitted, as a user would
  >>> def imagine_fn(key, policy_fn):                   # N = 8 starts, H = 5 steps
  ...   feat, feats, actions = jnp.zeros((8, 2)), [jnp.zeros((8, 2))], []
  ...   for k in jax.random.split(key, 5):
  ...     a = policy_fn(k, feat)
  ...     feat = feat + jnp.concatenate([a, -a], axis=-1)
  ...     feats.append(feat), actions.append(a)
  ...   feats, actions = jnp.stack(feats, 1), jnp.stack(actions, 1)
  ...   return Imagined(feat=feats, action=actions, reward=feats[:, 1:, 0],
  ...                   cont=jnp.ones((8, 5)))
  >>> update = jax.jit(lambda s, k: ac.update(s, k, imagine_fn))
  >>> state, metrics = update(state, jax.random.key(1))
  >>> action = jax.jit(ac.act)(state.actor, jax.random.key(2), jnp.zeros((3, 2)))   # [..., A]
  >>> action.shape, bool(jnp.all(jnp.abs(action) <= 1.0))
  ((3, 1), True)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mbrl_jax.models import transforms
from mbrl_jax.models.networks import MLP
from mbrl_jax.types import PRNGKey

ACTOR_GRADS = ("dynamics", "reinforce")
RETURN_CRITICS = ("slow", "fast")
WEIGHTS = ("alive", "discounted")
OPTIMIZERS = ("adam", "laprop")


# --------------------------------------------------------------------------------------------
# Lambda-returns and the return normaliser.


def lambda_returns(r_t: jax.Array, discount_t: jax.Array, v_t: jax.Array,
                   lambda_: float | jax.Array = 0.95, stop_target_gradients: bool = False,
                   ) -> jax.Array:
  """TD(lambda) returns of one trajectory (unbatched; `jax.vmap` it over a batch).

    G_t = r_t + discount_t * ((1 - lambda) * v_t + lambda * G_{t+1}),   G_{T-1} uses v_{T-1}

  where r_t, discount_t, v_t belong to the transition t -> t + 1 (v_t is the value of the
  state reached), as in rlax's `lambda_returns`.

  Args:
    r_t: rewards [T].
    discount_t: discounts [T] (gamma times the probability of continuing).
    v_t: bootstrap values of the next states [T].
    lambda_: scalar or [T] mixing between one-step (0) and Monte-Carlo (1) returns.
    stop_target_gradients: stop gradients through the returns.

  Returns:
    [T] lambda-returns.
  """
  chex.assert_rank([r_t, discount_t, v_t], 1)
  chex.assert_equal_shape([r_t, discount_t, v_t])
  lambda_ = jnp.ones_like(discount_t) * lambda_

  def step(g_tp1, inputs):
    r, d, v, lam = inputs
    g = r + d * ((1.0 - lam) * v + lam * g_tp1)
    return g, g

  _, returns = jax.lax.scan(step, v_t[-1], (r_t, discount_t, v_t, lambda_), reverse=True)
  return jax.lax.stop_gradient(returns) if stop_target_gradients else returns


class ReturnNormState(NamedTuple):
  """EMAs of the 5th and 95th percentiles of the returns.

  Attributes:
    low: EMA of the low percentile.     # []
    high: EMA of the high percentile.   # []
  """

  low: jax.Array
  high: jax.Array


def init_return_norm() -> ReturnNormState:
  return ReturnNormState(low=jnp.zeros(()), high=jnp.zeros(()))


def update_return_norm(state: ReturnNormState, returns: jax.Array, decay: float = 0.99,
                       low_pct: float = 5.0, high_pct: float = 95.0) -> ReturnNormState:
  """Moves the EMAs towards the percentiles of `returns` (any shape; no gradient)."""
  returns = jax.lax.stop_gradient(returns).reshape(-1)
  low, high = jnp.percentile(returns, jnp.array([low_pct, high_pct]))
  return ReturnNormState(low=decay * state.low + (1.0 - decay) * low,
                         high=decay * state.high + (1.0 - decay) * high)


def return_scale(state: ReturnNormState, limit: float = 1.0) -> jax.Array:
  """max(limit, high - low): returns are divided by it (small returns are not scaled up)."""
  return jnp.maximum(limit, state.high - state.low)


# --------------------------------------------------------------------------------------------
# DreamerV3's optimizer.


def clip_by_agc(clip: float = 0.3, min_norm: float = 1e-3) -> optax.GradientTransformation:
  """Adaptive gradient clipping per parameter array, as DreamerV3 does it (`opt.agc`):

    g <- g / max(1, |g| / (clip * max(min_norm, |p|)))

  with |.| the L2 norm of the whole array (optax's `adaptive_grad_clip` clips per output unit
  instead). clip = 0 turns it off.
  """

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("clip_by_agc needs the parameters")
    if not clip:
      return updates, state

    def one(g, p):
      upper = clip * jnp.maximum(min_norm, jnp.linalg.norm(p.reshape(-1)))
      return g / jnp.maximum(1.0, jnp.linalg.norm(g.reshape(-1)) / upper)

    return jax.tree.map(one, updates, params), state

  return optax.GradientTransformation(init_fn, update_fn)


def laprop(learning_rate: float, *, agc: float = 0.3, eps: float = 1e-20, b1: float = 0.9,
           b2: float = 0.999, warmup: int = 0) -> optax.GradientTransformation:
  """DreamerV3's optimizer (`Agent._make_opt` with `configs.yaml` `opt`; LaProp, Ziyin et al.
  2020): adaptive gradient clipping (`clip_by_agc`), then each gradient divided by the root of
  a debiased EMA of its square (b2, eps outside the root), then a debiased EMA of those
  normalised gradients (momentum b1), times a learning rate ramped linearly from 0 over
  `warmup` updates. Unlike Adam, the momentum averages already-normalised gradients.

  >>> opt = laprop(1e-2, warmup=0)
  >>> params = {"w": jnp.ones(3)}
  >>> updates, _ = opt.update({"w": jnp.array([1.0, -2.0, 0.5])}, opt.init(params), params)
  >>> jnp.round(updates["w"] / 1e-2, 3)     # the first step is -lr * sign(g)
  Array([-1.,  1., -1.], dtype=float32)
  """
  if warmup:
    schedule = optax.join_schedules([optax.linear_schedule(0.0, learning_rate, warmup),
                                     optax.constant_schedule(learning_rate)], [warmup])
  else:
    schedule = optax.constant_schedule(learning_rate)
  return optax.chain(clip_by_agc(agc),
                     optax.scale_by_rms(b2, eps, eps_in_sqrt=False, bias_correction=True),
                     optax.ema(b1, debias=True),
                     optax.scale_by_learning_rate(schedule))


# --------------------------------------------------------------------------------------------
# Actor and critic.


@dataclasses.dataclass(frozen=True)
class ActorCriticConfig:
  """The imagination actor-critic.

  Attributes:
    hidden: width of the actor's and critic's hidden layers.
    layers: hidden layers of each.
    horizon: imagination horizon H.
    discount: per-step discount gamma.
    lambda_: lambda of the lambda-returns.
    actor_lr, critic_lr: step sizes of the actor's and the critic's optimizers.
    grad_clip: global-norm clip of each gradient (the "adam" optimizer).
    entropy_scale: weight of the actor's entropy bonus (the Gaussian's entropy summed over
      action dimensions, against normalised returns).
    actor_grad: "dynamics" (backpropagate through the imagined trajectory) or "reinforce"
      (score function of the executed, clipped action, baseline the bootstrap critic,
      advantage divided by the return scale).
    slow_critic_decay: EMA decay of the slow critic.
    return_norm_decay: EMA decay of the return percentiles (1 - V3's `retnorm.rate`).
    return_norm_low, return_norm_high: the percentiles (in [0, 100]) whose EMAs span the return
      scale.
    return_norm_limit: the return scale is max(return_norm_limit, high - low).
    min_std, max_std: bounds of the actor's standard deviation.
    num_bins: bins of the two-hot critic.
    return_critic: the critic whose values bootstrap the lambda-returns and are the REINFORCE
      baseline: "slow" (its EMA) or "fast" (the critic being trained, as DreamerV3's
      `slowtar: False`).
    slow_reg: weight of a second two-hot term pulling the critic towards the slow critic's
      value on the same states (V3's `slowreg`; also on the replayed states); 0 disables it.
    weights: loss weight of imagined state t: "alive" (the probability that the trajectory is
      still running, prod_{i<t} cont_i) or "discounted" (V3: prod_{i<t} discount * cont_i,
      times `Imagined.start_cont` when given, so imagination from a terminal state counts 0).
    replay_scale: weight of the replay-value loss (V3's `loss_scales.repval`); it is used when
      `update` receives a `Replayed`; 0 disables it.
    optimizer: "adam" (global-norm clip `grad_clip`, then Adam with eps 1e-5) or "laprop"
      (DreamerV3's optimizer, `laprop`, with `agc` and `warmup`; `grad_clip` unused).
    agc: adaptive gradient clipping ratio of "laprop" (0: off).
    warmup: updates over which "laprop" ramps its learning rate up from 0.
  """

  hidden: int = 128
  layers: int = 2
  horizon: int = 15
  discount: float = 0.99
  lambda_: float = 0.95
  actor_lr: float = 1e-4
  critic_lr: float = 3e-4
  grad_clip: float = 100.0
  entropy_scale: float = 3e-4
  actor_grad: str = "dynamics"
  slow_critic_decay: float = 0.98
  return_norm_decay: float = 0.99
  return_norm_low: float = 5.0
  return_norm_high: float = 95.0
  return_norm_limit: float = 1.0
  min_std: float = 0.1
  max_std: float = 1.0
  num_bins: int = transforms.NUM_BINS
  return_critic: str = "slow"
  slow_reg: float = 0.0
  weights: str = "alive"
  replay_scale: float = 0.0
  optimizer: str = "adam"
  agc: float = 0.3
  warmup: int = 0


def validate_config(config: ActorCriticConfig, prefix: str = "actor-critic config") -> None:
  """Raises ValueError naming the first invalid field."""
  for name in ("hidden", "horizon", "num_bins"):
    value = getattr(config, name)
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"{prefix}: {name} must be a positive int, got {value!r}")
  if not isinstance(config.layers, int) or config.layers < 0:
    raise ValueError(f"{prefix}: layers must be an int >= 0, got {config.layers!r}")
  if config.num_bins < 2:
    raise ValueError(f"{prefix}: num_bins must be >= 2, got {config.num_bins}")
  for name in ("discount", "lambda_", "slow_critic_decay", "return_norm_decay"):
    if not 0.0 <= getattr(config, name) <= 1.0:
      raise ValueError(f"{prefix}: {name} must be in [0, 1], got {getattr(config, name)}")
  for name in ("actor_lr", "critic_lr", "grad_clip"):
    if not getattr(config, name) > 0:
      raise ValueError(f"{prefix}: {name} must be > 0, got {getattr(config, name)}")
  for name in ("entropy_scale", "slow_reg", "replay_scale", "agc"):
    if not getattr(config, name) >= 0:
      raise ValueError(f"{prefix}: {name} must be >= 0, got {getattr(config, name)}")
  for name, options in (("actor_grad", ACTOR_GRADS), ("return_critic", RETURN_CRITICS),
                        ("weights", WEIGHTS), ("optimizer", OPTIMIZERS)):
    if getattr(config, name) not in options:
      raise ValueError(f"{prefix}: {name} must be one of {options}, got "
                       f"{getattr(config, name)!r}")
  if not 0.0 <= config.return_norm_low < config.return_norm_high <= 100.0:
    raise ValueError(f"{prefix}: need 0 <= return_norm_low < return_norm_high <= 100, got "
                     f"{config.return_norm_low}, {config.return_norm_high}")
  if not config.return_norm_limit > 0:
    raise ValueError(f"{prefix}: return_norm_limit must be > 0, got "
                     f"{config.return_norm_limit}")
  if isinstance(config.warmup, bool) or not isinstance(config.warmup, int) or config.warmup < 0:
    raise ValueError(f"{prefix}: warmup must be an int >= 0, got {config.warmup!r}")
  if not 0 < config.min_std < config.max_std:
    raise ValueError(f"{prefix}: need 0 < min_std < max_std, got {config.min_std}, "
                     f"{config.max_std}")


class Imagined(NamedTuple):
  """An imagined batch of trajectories (what `imagine_fn` returns).

  Attributes:
    feat: features of the states, the start first.                       # [N, H + 1, F]
    action: action taken in state t, leading to state t + 1.             # [N, H, A]
    reward: predicted reward of the transition into state t + 1.         # [N, H]
    cont: predicted probability of continuing after it.                  # [N, H]
    start_cont: optional predicted probability that the episode continues after the
      transition into the start state (read by `weights="discounted"`).  # [N] or None
  """

  feat: jax.Array
  action: jax.Array
  reward: jax.Array
  cont: jax.Array
  start_cont: jax.Array | None = None


class Replayed(NamedTuple):
  """Replayed posterior trajectories for the replay-value loss (DreamerV3's `repl_loss`).

  Step t of a row is the posterior state after its t-th observation; `reward`, `cont` and
  `last` of step t belong to the transition into it (step 0's reward and cont are unused).

  Attributes:
    feat: posterior features of the replayed steps.                      # [B, T, F]
    reward: reward of the transition into step t.                        # [B, T]
    cont: 1 - terminal of the transition into step t.                    # [B, T]
    last: step t is the last of its episode (terminal or truncated): its value is not
      regressed and no return runs on past it.                           # [B, T] bool
    start_index: the flat index (into B * T, row-major) of each imagination start, or None
      when the N = B * T starts are exactly the replayed steps in that order; steps that did
      not start imagination are bootstrapped with the critic's value.    # [N] int or None
  """

  feat: jax.Array
  reward: jax.Array
  cont: jax.Array
  last: jax.Array
  start_index: jax.Array | None = None


def replay_returns(boot: jax.Array, reward: jax.Array, cont: jax.Array, last: jax.Array,
                   discount: float, lambda_: float) -> jax.Array:
  """Lambda-returns along replayed trajectories, bootstrapped at every step (DreamerV3's
  `lambda_return` as `repl_loss` calls it):

    G_t = r_{t+1} + discount * cont_{t+1} * ((1 - l_{t+1}) * boot_{t+1} + l_{t+1} * G_{t+1}),
    l_{t+1} = lambda * (1 - last_{t+1}),   G_{T-1} = boot_{T-1}

  Args:
    boot: [B, T] bootstrap of each step (the imagined lambda-return from it).
    reward, cont, last: [B, T] as in `Replayed`.
    discount, lambda_: scalars.

  Returns:
    [B, T - 1] returns of steps 0..T-2.
  """
  chex.assert_rank([boot, reward, cont, last], 2)
  chex.assert_equal_shape([boot, reward, cont, last])
  lam = lambda_ * (1.0 - last[:, 1:].astype(jnp.float32))
  return jax.vmap(lambda_returns)(reward[:, 1:], discount * cont[:, 1:], boot[:, 1:], lam)


class ActorCriticState(NamedTuple):
  """Parameters, optimizer states and the return normaliser.

  Attributes:
    actor: actor parameters.
    critic: critic parameters.
    slow_critic: EMA of the critic parameters (bootstraps the returns).
    actor_opt: optax state of the actor.
    critic_opt: optax state of the critic.
    return_norm: percentile EMAs of the returns.
    updates: updates done so far.                                 # [] int32
  """

  actor: Any
  critic: Any
  slow_critic: Any
  actor_opt: Any
  critic_opt: Any
  return_norm: ReturnNormState
  updates: jax.Array


class ActorCritic(NamedTuple):
  """The actor-critic's pure functions (see `make_actor_critic`)."""

  init: Callable[[PRNGKey], ActorCriticState]
  act: Callable[..., jax.Array]
  value: Callable[..., jax.Array]
  update: Callable[..., tuple[ActorCriticState, dict[str, jax.Array]]]
  returns: Callable[..., tuple[jax.Array, jax.Array]]
  config: ActorCriticConfig


def gaussian_entropy(std: jax.Array) -> jax.Array:
  """Entropy of a diagonal Gaussian, summed over the last axis."""
  return jnp.sum(0.5 * jnp.log(2.0 * jnp.pi * jnp.e) + jnp.log(std), axis=-1)


def clipped_gaussian_log_prob(action: jax.Array, mean: jax.Array, std: jax.Array,
                              ) -> jax.Array:
  """Log-likelihood of actions drawn as clip(N(mean, std), -1, 1), summed over the last axis:
  the Gaussian's log-density inside (-1, 1), the log of its mass beyond the bound at +-1.

  This is the exact likelihood of the clipped actions the world model receives (`act`), so its
  score function is an unbiased REINFORCE gradient. DreamerV3 feeds its model the unclipped
  sample (its environment clips) and scores that one with the Gaussian's density.
  """
  z = (action - mean) / std
  inside = -0.5 * z ** 2 - jnp.log(std) - 0.5 * jnp.log(2.0 * jnp.pi)
  upper = jax.scipy.stats.norm.logcdf((mean - 1.0) / std)       # log P(sample >= 1)
  lower = jax.scipy.stats.norm.logcdf((-1.0 - mean) / std)      # log P(sample <= -1)
  logp = jnp.where(action >= 1.0, upper, jnp.where(action <= -1.0, lower, inside))
  return jnp.sum(logp, axis=-1)


def make_actor_critic(feature_size: int, action_size: int, *,
                      config: ActorCriticConfig = ActorCriticConfig()) -> ActorCritic:
  """Builds the imagination actor-critic for continuous actions in [-1, 1].

  The actor is a Gaussian with mean tanh(m) and std in [min_std, max_std]; its samples are
  clipped to [-1, 1] with a straight-through gradient. The critic is a two-hot symexp head
  (zero-initialised output, so its first predictions are 0).

  Args:
    feature_size: F, size of the latent features the actor and critic read.
    action_size: A.
    config: see `ActorCriticConfig`.

  Returns:
    An `ActorCritic`:
      init(key) -> ActorCriticState
      act(actor_params, key, feat [..., F], deterministic=False) -> action [..., A]
      value(critic_params, feat [..., F]) -> [...]
      update(state, key, imagine_fn, replay=None) -> (state, metrics), with
        imagine_fn(key, policy_fn) -> Imagined, policy_fn(key, feat [N, F]) -> [N, A] and
        replay an optional `Replayed` (the replay-value loss)
      returns(critic_params, imagined) -> (lambda-returns [N, H], weights [N, H])
  """
  for name, value in (("feature_size", feature_size), ("action_size", action_size)):
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"make_actor_critic: {name} must be a positive int, got {value!r}")
  validate_config(config, "make_actor_critic: config")
  c = config
  hidden = (c.hidden,) * c.layers
  actor_net = MLP(hidden, 2 * action_size, activation=nn.silu, layer_norm=True)
  critic_net = MLP(hidden, c.num_bins, activation=nn.silu, layer_norm=True,
                   zero_init_output=True)
  bins = transforms.symlog_bins(c.num_bins)

  def make_opt(lr: float) -> optax.GradientTransformation:
    if c.optimizer == "laprop":
      return laprop(lr, agc=c.agc, warmup=c.warmup)
    return optax.chain(optax.clip_by_global_norm(c.grad_clip), optax.adam(lr, eps=1e-5))

  actor_opt, critic_opt = make_opt(c.actor_lr), make_opt(c.critic_lr)

  def init(key: PRNGKey) -> ActorCriticState:
    actor_key, critic_key = jax.random.split(key)
    dummy = jnp.zeros((1, feature_size))
    actor = actor_net.init(actor_key, dummy)
    critic = critic_net.init(critic_key, dummy)
    return ActorCriticState(
        actor=actor, critic=critic, slow_critic=jax.tree.map(jnp.copy, critic),
        actor_opt=actor_opt.init(actor), critic_opt=critic_opt.init(critic),
        return_norm=init_return_norm(), updates=jnp.zeros((), jnp.int32))

  def _dist(actor_params, feat: jax.Array) -> tuple[jax.Array, jax.Array]:
    out = actor_net.apply(actor_params, feat)
    mean, raw_std = jnp.split(out, 2, axis=-1)
    std = (c.max_std - c.min_std) * jax.nn.sigmoid(raw_std + 2.0) + c.min_std
    return jnp.tanh(mean), std

  def act(actor_params, key: PRNGKey, feat: jax.Array, deterministic: bool = False,
          ) -> jax.Array:
    """An action in [-1, 1] for features [..., F] (gradients reach the actor's parameters)."""
    mean, std = _dist(actor_params, feat)
    if deterministic:
      return mean
    sample = mean + std * jax.random.normal(key, mean.shape)
    return sample + jax.lax.stop_gradient(jnp.clip(sample, -1.0, 1.0) - sample)

  def _logits(critic_params, feat):
    return critic_net.apply(critic_params, feat)

  def value(critic_params, feat: jax.Array) -> jax.Array:
    """The critic's value of features [..., F] -> [...]."""
    return transforms.twohot_decode(_logits(critic_params, feat), bins)

  def returns(critic_params, traj: Imagined) -> tuple[jax.Array, jax.Array]:
    """Lambda-returns of the imagined states 0..H-1 bootstrapped with `critic_params`, and
    their loss weights (see `ActorCriticConfig.weights`): ([N, H], [N, H])."""
    v = value(critic_params, traj.feat[:, 1:])                              # [N, H]
    ret = jax.vmap(lambda_returns, in_axes=(0, 0, 0, None))(
        traj.reward, c.discount * traj.cont, v, c.lambda_)
    if c.weights == "alive":
      alive = jnp.concatenate([jnp.ones_like(traj.cont[:, :1]), traj.cont[:, :-1]], axis=1)
      weight = jnp.cumprod(alive, axis=1)
    else:
      disc = c.discount * traj.cont
      weight = jnp.cumprod(jnp.concatenate([jnp.ones_like(disc[:, :1]), disc[:, :-1]], 1), 1)
      if traj.start_cont is not None:
        weight = weight * traj.start_cont[:, None]
    return ret, jax.lax.stop_gradient(weight)

  def _replay_boot(boot_critic, replay: Replayed, start_return: jax.Array) -> jax.Array:
    """[B, T] bootstraps of the replayed steps: the imagined return from each (the critic's
    value where a step started no imagination)."""
    B, T = replay.reward.shape
    if replay.start_index is None:
      chex.assert_shape(start_return, (B * T,))
      return start_return.reshape(B, T)
    boot = value(boot_critic, replay.feat).reshape(-1)
    return boot.at[replay.start_index].set(start_return).reshape(B, T)

  def update(state: ActorCriticState, key: PRNGKey,
             imagine_fn: Callable[[PRNGKey, Callable], Imagined],
             replay: Replayed | None = None,
             ) -> tuple[ActorCriticState, dict[str, jax.Array]]:
    """One actor and one critic update on a fresh imagined batch.

    With `replay` (and `replay_scale > 0`) the critic's loss adds `replay_scale` times the
    replay-value loss: two-hot regression of the critic on `replay.feat` towards
    `replay_returns` bootstrapped with the imagined lambda-return from each replayed step
    (`Imagined` start n is replayed step `start_index[n]`), weighted by 1 - last, plus
    `slow_reg` times the pull towards the slow critic there (V3's `repl_loss`).
    """
    sg = jax.lax.stop_gradient
    boot_critic = state.critic if c.return_critic == "fast" else state.slow_critic
    rollout = lambda actor_params: imagine_fn(key, lambda k, f: act(actor_params, k, f))
    # REINFORCE needs no gradient through the rollout: imagine outside the differentiated
    # function (the same key and parameters, so the same trajectory).
    fixed_traj = sg(rollout(state.actor)) if c.actor_grad == "reinforce" else None

    def actor_loss(actor_params):
      traj = rollout(actor_params) if fixed_traj is None else fixed_traj
      ret, weight = returns(boot_critic, traj)                              # [N, H]
      norm = update_return_norm(state.return_norm, ret, c.return_norm_decay,
                                c.return_norm_low, c.return_norm_high)
      scale = return_scale(norm, c.return_norm_limit)
      feat = sg(traj.feat[:, :-1])
      mean, std = _dist(actor_params, feat)
      if c.actor_grad == "dynamics":
        objective = ret / scale
      else:
        baseline = value(boot_critic, feat)
        adv = sg((ret - baseline) / scale)
        objective = clipped_gaussian_log_prob(sg(traj.action), mean, std) * adv
      entropy = gaussian_entropy(std)                                       # [N, H]
      loss = -jnp.mean(weight * (objective + c.entropy_scale * entropy))
      aux = (sg(traj), sg(ret), weight, norm, entropy.mean(), std.mean())
      return loss, aux

    (a_loss, (traj, ret, weight, norm, entropy, std)), a_grad = jax.value_and_grad(
        actor_loss, has_aux=True)(state.actor)
    a_updates, a_opt = actor_opt.update(a_grad, state.actor_opt, state.actor)
    actor = optax.apply_updates(state.actor, a_updates)

    use_replay = replay is not None and c.replay_scale > 0
    if use_replay:
      boot = _replay_boot(boot_critic, replay, ret[:, 0])
      rep_ret = replay_returns(boot, replay.reward, replay.cont, replay.last, c.discount,
                               c.lambda_)                                   # [B, T - 1]
      rep_feat = sg(replay.feat[:, :-1])
      rep_weight = 1.0 - replay.last[:, :-1].astype(jnp.float32)

    def critic_loss(critic_params):
      feat = traj.feat[:, :-1]
      logits = _logits(critic_params, feat)                                 # [N, H, K]
      loss = jnp.mean(weight * transforms.twohot_loss(logits, ret, bins))
      terms = {}
      if c.slow_reg:
        slow_nll = transforms.twohot_loss(logits, value(state.slow_critic, feat), bins)
        terms["critic_slow_reg"] = jnp.mean(weight * slow_nll)
        loss = loss + c.slow_reg * terms["critic_slow_reg"]
      if use_replay:
        rep_logits = _logits(critic_params, rep_feat)                       # [B, T - 1, K]
        nll = transforms.twohot_loss(rep_logits, rep_ret, bins)
        if c.slow_reg:
          nll = nll + c.slow_reg * transforms.twohot_loss(
              rep_logits, value(state.slow_critic, rep_feat), bins)
        terms["replay_value_loss"] = jnp.mean(rep_weight * nll)
        loss = loss + c.replay_scale * terms["replay_value_loss"]
      return loss, terms

    (c_loss, c_terms), c_grad = jax.value_and_grad(critic_loss, has_aux=True)(state.critic)
    c_updates, c_opt = critic_opt.update(c_grad, state.critic_opt, state.critic)
    critic = optax.apply_updates(state.critic, c_updates)
    slow = jax.tree.map(lambda s, p: c.slow_critic_decay * s + (1.0 - c.slow_critic_decay) * p,
                        state.slow_critic, critic)
    if use_replay:
      c_terms["replay_return"] = rep_ret.mean()
    metrics = {
        **c_terms,
        "actor_loss": a_loss,
        "critic_loss": c_loss,
        "actor_entropy": entropy,
        "actor_std": std,
        "imag_return": ret.mean(),
        "imag_reward": traj.reward.mean(),
        "imag_value": value(state.critic, traj.feat[:, :-1]).mean(),
        "return_scale": return_scale(norm, c.return_norm_limit),
        "actor_grad_norm": optax.tree.norm(a_grad),
        "critic_grad_norm": optax.tree.norm(c_grad),
    }
    new_state = ActorCriticState(actor=actor, critic=critic, slow_critic=slow, actor_opt=a_opt,
                                 critic_opt=c_opt, return_norm=norm,
                                 updates=state.updates + 1)
    return new_state, metrics

  return ActorCritic(init=init, act=act, value=value, update=update, returns=returns,
                     config=c)
