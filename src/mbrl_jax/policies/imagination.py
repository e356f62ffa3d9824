"""Actor-critic learning in imagination (Dreamer; Hafner et al. 2020, 2023).

Starting from latent states of a world model, the actor's actions are rolled forward H steps
in the model; the critic is regressed on lambda-returns of the imagined rewards (bootstrapped
with a slow EMA copy of the critic); the actor maximises the returns, normalised by an EMA of
their 5th-95th percentile range (DreamerV3), plus an entropy bonus.

This module knows nothing about the world model: `update` takes
`imagine_fn(key, policy_fn) -> Imagined`, which the caller builds from its model (e.g.
`mbrl_jax.models.rssm.WorldModel.imagine` plus its reward and continuation heads). With
`actor_grad="dynamics"` the actor's gradient flows back through the imagined trajectory
(DreamerV1/V2's choice for continuous control); with `"reinforce"` it is a score-function
gradient with the critic as baseline (DreamerV3's choice for all action spaces).

Example (imagination of a toy model where features drift with the action):
  >>> ac = make_actor_critic(feature_size=2, action_size=1,
  ...                        config=ActorCriticConfig(hidden=16, horizon=5))
  >>> state = ac.init(jax.random.key(0))
  >>> def imagine_fn(key, policy_fn):                   # N = 8 starts, H = 5 steps
  ...   feat, feats, actions = jnp.zeros((8, 2)), [jnp.zeros((8, 2))], []
  ...   for k in jax.random.split(key, 5):
  ...     a = policy_fn(k, feat)
  ...     feat = feat + jnp.concatenate([a, -a], axis=-1)
  ...     feats.append(feat), actions.append(a)
  ...   feats, actions = jnp.stack(feats, 1), jnp.stack(actions, 1)
  ...   return Imagined(feat=feats, action=actions, reward=feats[:, 1:, 0],
  ...                   cont=jnp.ones((8, 5)))
  >>> state, metrics = ac.update(state, jax.random.key(1), imagine_fn)
  >>> action = ac.act(state.actor, jax.random.key(2), jnp.zeros((3, 2)))   # [..., A]
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


def return_scale(state: ReturnNormState) -> jax.Array:
  """max(1, high - low): returns are divided by it (small returns are not scaled up)."""
  return jnp.maximum(1.0, state.high - state.low)


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
    actor_lr, critic_lr: Adam step sizes.
    grad_clip: global-norm clip of each gradient.
    entropy_scale: weight of the actor's entropy bonus (per action dimension, on normalised
      returns).
    actor_grad: "dynamics" (backpropagate through the imagined trajectory) or "reinforce".
    slow_critic_decay: EMA decay of the slow critic that bootstraps the returns.
    return_norm_decay: EMA decay of the return percentiles.
    min_std, max_std: bounds of the actor's standard deviation.
    num_bins: bins of the two-hot critic.
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
  min_std: float = 0.1
  max_std: float = 1.0
  num_bins: int = transforms.NUM_BINS


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
  if config.entropy_scale < 0:
    raise ValueError(f"{prefix}: entropy_scale must be >= 0, got {config.entropy_scale}")
  if config.actor_grad not in ACTOR_GRADS:
    raise ValueError(f"{prefix}: actor_grad must be one of {ACTOR_GRADS}, got "
                     f"{config.actor_grad!r}")
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
  """

  feat: jax.Array
  action: jax.Array
  reward: jax.Array
  cont: jax.Array


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
      update(state, key, imagine_fn) -> (state, metrics), with
        imagine_fn(key, policy_fn) -> Imagined and policy_fn(key, feat [N, F]) -> [N, A]
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
  actor_opt = optax.chain(optax.clip_by_global_norm(c.grad_clip),
                          optax.adam(c.actor_lr, eps=1e-5))
  critic_opt = optax.chain(optax.clip_by_global_norm(c.grad_clip),
                           optax.adam(c.critic_lr, eps=1e-5))

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
    their weights (the probability that the trajectory is still alive): ([N, H], [N, H])."""
    v = value(critic_params, traj.feat[:, 1:])                              # [N, H]
    ret = jax.vmap(lambda_returns, in_axes=(0, 0, 0, None))(
        traj.reward, c.discount * traj.cont, v, c.lambda_)
    alive = jnp.concatenate([jnp.ones_like(traj.cont[:, :1]), traj.cont[:, :-1]], axis=1)
    return ret, jax.lax.stop_gradient(jnp.cumprod(alive, axis=1))

  def update(state: ActorCriticState, key: PRNGKey,
             imagine_fn: Callable[[PRNGKey, Callable], Imagined],
             ) -> tuple[ActorCriticState, dict[str, jax.Array]]:
    """One actor and one critic update on a fresh imagined batch."""
    sg = jax.lax.stop_gradient

    def actor_loss(actor_params):
      traj = imagine_fn(key, lambda k, f: act(actor_params, k, f))
      ret, weight = returns(state.slow_critic, traj)                        # [N, H]
      norm = update_return_norm(state.return_norm, ret, c.return_norm_decay)
      scale = return_scale(norm)
      feat = sg(traj.feat[:, :-1])
      mean, std = _dist(actor_params, feat)
      if c.actor_grad == "dynamics":
        objective = ret / scale
      else:
        baseline = value(state.slow_critic, feat)
        adv = sg((ret - baseline) / scale)
        action = sg(traj.action)
        logp = jnp.sum(-0.5 * ((action - mean) / std) ** 2 - jnp.log(std)
                       - 0.5 * jnp.log(2.0 * jnp.pi), axis=-1)
        objective = logp * adv
      entropy = gaussian_entropy(std)                                       # [N, H]
      loss = -jnp.mean(weight * (objective + c.entropy_scale * entropy))
      aux = (sg(traj), sg(ret), weight, norm, entropy.mean(), std.mean())
      return loss, aux

    (a_loss, (traj, ret, weight, norm, entropy, std)), a_grad = jax.value_and_grad(
        actor_loss, has_aux=True)(state.actor)
    a_updates, a_opt = actor_opt.update(a_grad, state.actor_opt, state.actor)
    actor = optax.apply_updates(state.actor, a_updates)

    def critic_loss(critic_params):
      logits = _logits(critic_params, traj.feat[:, :-1])                    # [N, H, K]
      return jnp.mean(weight * transforms.twohot_loss(logits, ret, bins))

    c_loss, c_grad = jax.value_and_grad(critic_loss)(state.critic)
    c_updates, c_opt = critic_opt.update(c_grad, state.critic_opt, state.critic)
    critic = optax.apply_updates(state.critic, c_updates)
    slow = jax.tree.map(lambda s, p: c.slow_critic_decay * s + (1.0 - c.slow_critic_decay) * p,
                        state.slow_critic, critic)
    metrics = {
        "actor_loss": a_loss,
        "critic_loss": c_loss,
        "actor_entropy": entropy,
        "actor_std": std,
        "imag_return": ret.mean(),
        "imag_reward": traj.reward.mean(),
        "imag_value": value(state.critic, traj.feat[:, :-1]).mean(),
        "return_scale": return_scale(norm),
        "actor_grad_norm": optax.tree.norm(a_grad),
        "critic_grad_norm": optax.tree.norm(c_grad),
    }
    new_state = ActorCriticState(actor=actor, critic=critic, slow_critic=slow, actor_opt=a_opt,
                                 critic_opt=c_opt, return_norm=norm,
                                 updates=state.updates + 1)
    return new_state, metrics

  return ActorCritic(init=init, act=act, value=value, update=update, returns=returns,
                     config=c)
