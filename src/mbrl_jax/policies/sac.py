"""Soft actor-critic (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications") as
pure functions.

A tanh-squashed diagonal Gaussian actor, twin Q critics with Polyak-averaged target critics,
and an entropy temperature alpha that is either learned (towards a target entropy, -|A| by
default) or fixed. Actions live in [-1, 1]^A.

One update, on a batch of B transitions and with every loss taken at the parameters *before*
the update (so the three gradients are independent and one call computes them together):

  a' ~ pi(.|s'),   y = r + gamma * (1 - terminated) * (min_i Qtarg_i(s', a') - alpha * log pi(a'|s'))
  critic loss = sum_i mean_B (Q_i(s, a) - y)^2                     (y held constant)
  a~ ~ pi(.|s) (reparameterised),  actor loss = mean_B (alpha * log pi(a~|s) - min_i Q_i(s, a~))
  alpha loss  = -mean_B log_alpha * (log pi(a~|s) + target_entropy)  (log pi held constant)
  then one Adam step each, and Qtarg <- tau * Q_new + (1 - tau) * Qtarg.

With `actor_update_every = n > 1` the actor and alpha steps are taken only on updates
0, n, 2n, ... (the critic steps on every update), and with `target_update_every = m > 1` the
Polyak step only on updates 0, m, 2m, ... (counted by `SACState.steps`), as pytorch_sac's
actor_update_frequency and critic_target_update_frequency, which mbrl-lib's MBPO configs set.

With `normalize_observations=True` the actor and critics see (obs - mean) / std, with running
statistics of the observations passed to `observe` (e.g. every real env observation, as Brax's
SAC does with its `normalize_observations`); they live in `SACParams.obs_stats` and no
gradient step changes them. Off (the default, as in the MBPO paper's SAC) they stay the
identity.

Only `terminated` stops the bootstrap; a time-limit truncation still bootstraps from next_obs
(which is the true final observation in our buffers).

Example:
  >>> from mbrl_jax.types import Transition
  >>> sac = make_sac(obs_size=3, action_size=1, hidden_sizes=(16,))
  >>> state = sac.init(jax.random.key(0))
  >>> batch = Transition(obs=jnp.ones((8, 3)), action=jnp.zeros((8, 1)), reward=jnp.ones(8),
  ...                    next_obs=jnp.ones((8, 3)), terminated=jnp.zeros(8),
  ...                    truncated=jnp.zeros(8))                       # B = 8
  >>> state, metrics = jax.jit(sac.update)(state, batch, jax.random.key(1))
  >>> batches = jax.tree.map(lambda x: jnp.stack([x, x]), batch)      # G = 2 updates
  >>> state, metrics = jax.jit(sac.update_many)(state, batches, jax.random.key(2))
  >>> sac.act(state.params, jnp.ones((5, 3)), jax.random.key(3), deterministic=True).shape
  (5, 1)
  >>> state = sac.observe(state, jnp.ones((4, 3)))     # running obs statistics, rows [N, O]
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mbrl_jax.models import normalizer as normalizer_lib
from mbrl_jax.models.networks import MLP
from mbrl_jax.types import PRNGKey, Transition

LOG_2 = math.log(2.0)


class ObsStats(NamedTuple):
  """Running statistics of the observations given to `SAC.observe`.

  Attributes:
    count: observations seen.                                      # []
    mean: their per-dimension mean.                                # [O]
    var: their per-dimension (population) variance.                # [O]
  """

  count: jax.Array
  mean: jax.Array
  var: jax.Array


class SACParams(NamedTuple):
  """Everything the actor and critics compute with.

  Attributes:
    actor: flax parameters of the actor MLP (outputs [mean, raw log-std], 2A).
    critic: flax parameters of the twin critics; every leaf has a leading axis [2, ...].
    target_critic: Polyak average of `critic`, same structure.
    log_alpha: log of the entropy temperature.                     # []
    obs_stats: observation statistics the networks' inputs are standardised with (used only
      with `normalize_observations`).
  """

  actor: Any
  critic: Any
  target_critic: Any
  log_alpha: jax.Array
  obs_stats: ObsStats


class SACState(NamedTuple):
  """What persists between updates.

  Attributes:
    params: the networks and temperature.
    actor_opt: optimizer state of `params.actor`.
    critic_opt: optimizer state of `params.critic`.
    alpha_opt: optimizer state of `params.log_alpha`.
    steps: updates done so far.                                    # [] int32
  """

  params: SACParams
  actor_opt: optax.OptState
  critic_opt: optax.OptState
  alpha_opt: optax.OptState
  steps: jax.Array


class Noise(NamedTuple):
  """Standard normal draws of one update's two action samples.

  Attributes:
    next: noise of a' ~ pi(.|s') in the critic target.             # [B, A]
    now: noise of a~ ~ pi(.|s) in the actor and alpha losses.      # [B, A]
  """

  next: jax.Array
  now: jax.Array


class SAC(NamedTuple):
  """Pure functions of a SAC learner. Build with `make_sac`.

  Attributes:
    init: `init(key) -> SACState`.
    update: `update(state, batch, key, extra_loss=None) -> (state, metrics)`; batch a
      `Transition` [B]. `extra_loss(params, key) -> (loss, metrics)`, if given, is added to
      the losses before differentiating (e.g. CQL's critic regulariser; it should hold what it
      must not move constant) and its metrics join the update's.
    update_many: `update_many(state, batches, key) -> (state, metrics)`; batches [G, B], G
      updates as one `lax.scan`; metrics are means over the G updates.
    act: `act(params, obs, key, deterministic=False) -> action`; obs [..., O] -> [..., A] in
      [-1, 1]; `deterministic` (a Python bool) gives tanh(mean).
    observe: `observe(state, obs) -> state`, merges the rows of obs [N, O] into
      `params.obs_stats` (a no-op without `normalize_observations`).
    normalize: `normalize(params, obs) -> obs`, what the networks see (identity without
      `normalize_observations`).
    sample_noise: `sample_noise(key, batch_size) -> Noise`, the draws `update` makes from its key.
    losses: `losses(params, batch, noise) -> (total, aux)`: the three losses and their
      diagnostics at `params` (what `update` differentiates).
    actor_dist: `actor_dist(actor_params, obs) -> (mean, log_std)`, each [..., A], for obs
      already passed through `normalize`.
    critic_apply: `critic_apply(critic_params, obs, action) -> q`, [2, ...], the same.
  """

  init: Callable[[PRNGKey], SACState]
  update: Callable[..., tuple[SACState, dict]]
  update_many: Callable[..., tuple[SACState, dict]]
  act: Callable[..., jax.Array]
  observe: Callable[..., SACState]
  normalize: Callable[..., jax.Array]
  sample_noise: Callable[[PRNGKey, int], Noise]
  losses: Callable[..., tuple[jax.Array, dict]]
  actor_dist: Callable[..., tuple[jax.Array, jax.Array]]
  critic_apply: Callable[..., jax.Array]


def tanh_gaussian_sample(mean: jax.Array, log_std: jax.Array,
                         noise: jax.Array) -> tuple[jax.Array, jax.Array]:
  """a = tanh(mean + std * noise) and log pi(a), summed over the last (action) axis.

  log pi(a) = sum_i [log N(u_i; mean_i, std_i) - log(1 - tanh(u_i)^2)] with u the pre-tanh
  sample, and log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)) computed stably.

  Args:
    mean, log_std, noise: [..., A].

  Returns:
    (action [..., A], log_prob [...]).
  """
  u = mean + jnp.exp(log_std) * noise
  gauss = -0.5 * jnp.square(noise) - log_std - 0.5 * math.log(2 * math.pi)
  log_det = 2.0 * (LOG_2 - u - jax.nn.softplus(-2.0 * u))
  return jnp.tanh(u), jnp.sum(gauss - log_det, axis=-1)


def make_sac(
    obs_size: int,
    action_size: int,
    *,
    hidden_sizes: Sequence[int] = (256, 256),
    actor_lr: float = 3e-4,
    critic_lr: float = 3e-4,
    alpha_lr: float = 3e-4,
    gamma: float = 0.99,
    tau: float = 0.005,
    init_alpha: float = 1.0,
    target_entropy: float | None = None,
    learn_alpha: bool = True,
    log_std_min: float = -5.0,
    log_std_max: float = 2.0,
    actor_update_every: int = 1,
    target_update_every: int = 1,
    normalize_observations: bool = False,
    min_obs_std: float = 1e-3,
) -> SAC:
  """Builds a SAC learner for observations [O] and actions [A] in [-1, 1].

  Args:
    obs_size: O.
    action_size: A.
    hidden_sizes: hidden widths of the actor and of each critic (ReLU).
    actor_lr, critic_lr, alpha_lr: Adam step sizes.
    gamma: discount.
    tau: Polyak rate of the target critics (1 copies the critics each update).
    init_alpha: initial entropy temperature (> 0).
    target_entropy: entropy alpha is tuned towards; default -A.
    learn_alpha: tune alpha (True) or keep it at init_alpha.
    log_std_min, log_std_max: the actor's log-std is squashed into this range by a tanh (as in
      pytorch_sac, which mbrl-lib's MBPO uses).
    actor_update_every: take the actor and alpha steps on every n-th update only.
    target_update_every: take the Polyak step on every m-th update only.
    normalize_observations: standardise the networks' inputs with the running statistics of
      the observations given to `observe`.
    min_obs_std: floor on the standard deviation used to standardise (a dimension that barely
      moved in the data is not blown up).

  Returns:
    A `SAC` of pure functions.
  """
  for name, value in (("obs_size", obs_size), ("action_size", action_size)):
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"make_sac: {name} must be a positive int, got {value!r}")
  if not hidden_sizes or any(h < 1 for h in hidden_sizes):
    raise ValueError(f"make_sac: hidden_sizes must be positive widths, got {hidden_sizes!r}")
  for name, value in (("actor_lr", actor_lr), ("critic_lr", critic_lr), ("alpha_lr", alpha_lr),
                      ("init_alpha", init_alpha)):
    if not value > 0:
      raise ValueError(f"make_sac: {name} must be > 0, got {value!r}")
  if not 0.0 <= gamma <= 1.0:
    raise ValueError(f"make_sac: gamma must be in [0, 1], got {gamma!r}")
  if not 0.0 < tau <= 1.0:
    raise ValueError(f"make_sac: tau must be in (0, 1], got {tau!r}")
  for name, value in (("actor_update_every", actor_update_every),
                      ("target_update_every", target_update_every)):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ValueError(f"make_sac: {name} must be a positive int, got {value!r}")
  if not min_obs_std > 0:
    raise ValueError(f"make_sac: min_obs_std must be > 0, got {min_obs_std!r}")
  if not log_std_min < log_std_max:
    raise ValueError(f"make_sac: log_std_min ({log_std_min}) must be below log_std_max "
                     f"({log_std_max})")
  target_entropy = -float(action_size) if target_entropy is None else float(target_entropy)
  A = action_size
  actor_net = MLP(hidden_sizes=tuple(hidden_sizes), out_size=2 * A, activation=nn.relu)
  critic_net = MLP(hidden_sizes=tuple(hidden_sizes), out_size=1, activation=nn.relu)
  actor_opt = optax.adam(actor_lr)
  critic_opt = optax.adam(critic_lr)
  alpha_opt = optax.adam(alpha_lr)

  def actor_dist(actor_params: Any, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
    out = actor_net.apply(actor_params, obs.astype(jnp.float32))
    mean, raw = out[..., :A], out[..., A:]
    log_std = log_std_min + 0.5 * (log_std_max - log_std_min) * (jnp.tanh(raw) + 1.0)
    return mean, log_std

  def critic_apply(critic_params: Any, obs: jax.Array, action: jax.Array) -> jax.Array:
    x = jnp.concatenate([obs.astype(jnp.float32), action.astype(jnp.float32)], axis=-1)
    return jax.vmap(critic_net.apply, in_axes=(0, None))(critic_params, x)[..., 0]   # [2, ...]

  def normalize(params: SACParams, obs: jax.Array) -> jax.Array:
    obs = obs.astype(jnp.float32)
    if not normalize_observations:
      return obs
    st = jax.lax.stop_gradient(params.obs_stats)
    return normalizer_lib.normalize(
        normalizer_lib.Normalizer(mean=st.mean, std=jnp.maximum(jnp.sqrt(st.var), min_obs_std)),
        obs)

  def observe(state: SACState, obs: jax.Array) -> SACState:
    if obs.ndim != 2 or obs.shape[-1] != obs_size:
      raise ValueError(f"observe: obs must be [N, {obs_size}], got {obs.shape}")
    if not normalize_observations:
      return state
    st = state.params.obs_stats
    obs = obs.astype(jnp.float32)
    n_new = jnp.asarray(obs.shape[0], jnp.float32)
    mean_new, var_new = obs.mean(0), obs.var(0)
    count = st.count + n_new
    delta = mean_new - st.mean
    mean = st.mean + delta * n_new / count
    m2 = st.var * st.count + var_new * n_new + jnp.square(delta) * st.count * n_new / count
    stats = ObsStats(count=count, mean=mean, var=m2 / count)
    return state._replace(params=state.params._replace(obs_stats=stats))

  def init(key: PRNGKey) -> SACState:
    actor_key, critic_key = jax.random.split(key)
    actor = actor_net.init(actor_key, jnp.zeros((1, obs_size), jnp.float32))
    critic = jax.vmap(critic_net.init, in_axes=(0, None))(
        jax.random.split(critic_key, 2), jnp.zeros((1, obs_size + A), jnp.float32))
    log_alpha = jnp.asarray(math.log(init_alpha), jnp.float32)
    stats = ObsStats(count=jnp.zeros((), jnp.float32), mean=jnp.zeros((obs_size,), jnp.float32),
                     var=jnp.ones((obs_size,), jnp.float32))
    params = SACParams(actor=actor, critic=critic,
                       target_critic=jax.tree.map(jnp.copy, critic), log_alpha=log_alpha,
                       obs_stats=stats)
    return SACState(params=params, actor_opt=actor_opt.init(actor),
                    critic_opt=critic_opt.init(critic), alpha_opt=alpha_opt.init(log_alpha),
                    steps=jnp.zeros((), jnp.int32))

  def act(params: SACParams, obs: jax.Array, key: PRNGKey,
          deterministic: bool = False) -> jax.Array:
    mean, log_std = actor_dist(params.actor, normalize(params, obs))
    if deterministic:
      return jnp.tanh(mean)
    return jnp.tanh(mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape))

  def sample_noise(key: PRNGKey, batch_size: int) -> Noise:
    k_next, k_now = jax.random.split(key)
    return Noise(next=jax.random.normal(k_next, (batch_size, A)),
                 now=jax.random.normal(k_now, (batch_size, A)))

  def losses(params: SACParams, batch: Transition, noise: Noise) -> tuple[jax.Array, dict]:
    """Sum of the three losses; each depends on its own parameters only (the others held
    constant), so the gradient of the sum is the three gradients."""
    sg = jax.lax.stop_gradient
    alpha = jnp.exp(sg(params.log_alpha))
    batch = batch._replace(obs=normalize(params, batch.obs),
                           next_obs=normalize(params, batch.next_obs))
    # Critic target.
    next_mean, next_log_std = actor_dist(sg(params.actor), batch.next_obs)
    next_action, next_logp = tanh_gaussian_sample(next_mean, next_log_std, noise.next)
    q_next = critic_apply(params.target_critic, batch.next_obs, next_action).min(0)    # [B]
    soft_v = q_next - alpha * next_logp
    target = sg(batch.reward + gamma * (1.0 - batch.terminated) * soft_v)              # [B]
    q = critic_apply(params.critic, batch.obs, batch.action)                           # [2, B]
    critic_loss = jnp.square(q - target).mean(-1).sum()
    # Actor, through the current critics (held constant).
    mean, log_std = actor_dist(params.actor, batch.obs)
    action, logp = tanh_gaussian_sample(mean, log_std, noise.now)
    q_pi = critic_apply(sg(params.critic), batch.obs, action).min(0)
    actor_loss = jnp.mean(alpha * logp - q_pi)
    # Temperature.
    alpha_loss = -jnp.mean(params.log_alpha * sg(logp + target_entropy))
    total = critic_loss + actor_loss + (alpha_loss if learn_alpha else 0.0)
    aux = dict(critic_loss=critic_loss, actor_loss=actor_loss, alpha_loss=alpha_loss,
               alpha=alpha, entropy=-logp.mean(), q=q.mean(), target_q=target.mean())
    return total, aux

  def update(state: SACState, batch: Transition, key: PRNGKey,
             extra_loss: Callable[[SACParams, PRNGKey], tuple[jax.Array, dict]] | None = None
             ) -> tuple[SACState, dict]:
    if batch.obs.ndim != 2 or batch.obs.shape[-1] != obs_size:
      raise ValueError(f"update: batch.obs must be [B, {obs_size}], got {batch.obs.shape}")
    params = state.params
    if extra_loss is None:
      noise = sample_noise(key, batch.obs.shape[0])
      grads, aux = jax.grad(losses, has_aux=True)(params, batch, noise)
    else:
      key, extra_key = jax.random.split(key)
      noise = sample_noise(key, batch.obs.shape[0])

      def total(p):
        l, a = losses(p, batch, noise)
        e, ea = extra_loss(p, extra_key)
        return l + e, {**a, **ea}

      grads, aux = jax.grad(total, has_aux=True)(params)
    c_upd, critic_state = critic_opt.update(grads.critic, state.critic_opt, params.critic)
    critic = optax.apply_updates(params.critic, c_upd)
    a_upd, actor_state = actor_opt.update(grads.actor, state.actor_opt, params.actor)
    actor = optax.apply_updates(params.actor, a_upd)
    if learn_alpha:
      l_upd, alpha_state = alpha_opt.update(grads.log_alpha, state.alpha_opt, params.log_alpha)
      log_alpha = optax.apply_updates(params.log_alpha, l_upd)
    else:
      alpha_state, log_alpha = state.alpha_opt, params.log_alpha
    if actor_update_every > 1:
      keep = lambda new, old: jax.tree.map(
          lambda n, o: jnp.where(state.steps % actor_update_every == 0, n, o), new, old)
      actor, actor_state = keep((actor, actor_state), (params.actor, state.actor_opt))
      log_alpha, alpha_state = keep((log_alpha, alpha_state), (params.log_alpha, state.alpha_opt))
    rate = tau if target_update_every == 1 else jnp.where(
        state.steps % target_update_every == 0, tau, 0.0)
    target = jax.tree.map(lambda t, c: rate * c + (1.0 - rate) * t, params.target_critic, critic)
    new = SACState(params=SACParams(actor=actor, critic=critic, target_critic=target,
                                    log_alpha=log_alpha, obs_stats=params.obs_stats),
                   actor_opt=actor_state, critic_opt=critic_state, alpha_opt=alpha_state,
                   steps=state.steps + 1)
    return new, aux

  def update_many(state: SACState, batches: Transition,
                  key: PRNGKey) -> tuple[SACState, dict]:
    g = batches.obs.shape[0]
    state, aux = jax.lax.scan(lambda s, xs: update(s, *xs), state,
                              (batches, jax.random.split(key, g)))
    return state, jax.tree.map(lambda x: x.mean(0), aux)

  return SAC(init=init, update=update, update_many=update_many, act=act, observe=observe,
             normalize=normalize, sample_noise=sample_noise, losses=losses, actor_dist=actor_dist,
             critic_apply=critic_apply)
