"""Deep Q-networks (Mnih et al. 2015, "Human-level control through deep reinforcement
learning") with Double-DQN targets (van Hasselt et al. 2016) as pure functions.

An MLP Q-network `Q(s) -> [num_actions]` (`mbrl_jax.models.networks.MLP`), a target network
copied from it every `target_update_every` gradient steps (a hard update, as in both papers:
one integer to tune, and the target stays fixed for a whole stretch of regression instead of
drifting every step, which is what the fixed-target argument of DQN asks for; Polyak
averaging is SAC's choice here, not DQN's), Huber loss, Adam with optional global-norm
clipping, and an epsilon-greedy policy whose epsilon falls linearly with the env step.

One gradient step on a batch of B transitions (s, a, r, s', terminated):

  a* = argmax_a Q(s', a)                  (Double DQN; plain DQN: argmax of Qtarg)
  y  = r + gamma * (1 - terminated) * Qtarg(s', a*)              (y held constant)
  loss = mean_B huber(Q(s, a) - y, delta)

Only `terminated` stops the bootstrap: a time-limit truncation (CartPole-v1's 500-step cap)
still bootstraps from next_obs, which our buffers store as the true final observation.
`update` runs G such steps as one `lax.scan`, drawing each step's batch with a
caller-supplied `sample(key) -> Transition [B]` (e.g. `mbrl_jax.data.sample` on a buffer, or
a mix of real and model transitions).

Example:
  >>> from mbrl_jax.types import Transition
  >>> dqn = make_dqn(obs_size=4, num_actions=2, config=DQNConfig(hidden_sizes=(16,)))
  >>> state = dqn.init(jax.random.key(0))
  >>> batch = Transition(obs=jnp.ones((8, 4)), action=jnp.zeros((8,), jnp.int32),
  ...                    reward=jnp.ones(8), next_obs=jnp.ones((8, 4)),
  ...                    terminated=jnp.zeros(8), truncated=jnp.zeros(8))      # B = 8
  >>> state, metrics = jax.jit(dqn.update, static_argnums=(2, 3))(
  ...     state, jax.random.key(1), lambda k: batch, 3)                      # G = 3 steps
  >>> int(state.steps), sorted(metrics)
  (3, ['loss', 'q_mean'])
  >>> dqn.act(state.params, jax.random.key(2), jnp.ones((5, 4)), 0.0).shape
  (5,)
  >>> round(float(dqn.epsilon(jnp.int32(10**9))), 6)      # after the decay
  0.05
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mbrl_jax import checks
from mbrl_jax.models.networks import ACTIVATIONS, MLP
from mbrl_jax.types import PRNGKey, Transition


@dataclasses.dataclass(frozen=True)
class DQNConfig:
  """The DQN learner and its batch size.

  Attributes:
    hidden_sizes: Q-network widths.
    activation: hidden activation (`mbrl_jax.models.ACTIVATIONS`).
    learning_rate: Adam step size.
    gamma: discount.
    double: Double-DQN targets (the online network picks a*, the target network scores it).
    target_update_every: gradient steps between hard copies of the online network into the
      target network (the first copy is at init).
    huber_delta: where the Huber loss turns from quadratic to linear.
    max_grad_norm: global-norm gradient clipping; None for none.
    batch_size: transitions per gradient step.
    epsilon_start, epsilon_end: exploration rate at env step 0 and after the decay.
    epsilon_decay_steps: env steps over which epsilon falls linearly.
  """

  hidden_sizes: tuple[int, ...] = (128, 128)
  activation: str = "relu"
  learning_rate: float = 1e-3
  gamma: float = 0.99
  double: bool = True
  target_update_every: int = 250
  huber_delta: float = 1.0
  max_grad_norm: float | None = 10.0
  batch_size: int = 64
  epsilon_start: float = 1.0
  epsilon_end: float = 0.05
  epsilon_decay_steps: int = 5000

  def __post_init__(self):
    checks.widths(self, "hidden_sizes")
    checks.one_of(self, "activation", sorted(ACTIVATIONS))
    checks.in_range(self, "learning_rate", 0.0, low_open=True)
    checks.in_range(self, "gamma", 0.0, 1.0)
    checks.positive_int(self, "target_update_every", "batch_size", "epsilon_decay_steps")
    checks.in_range(self, "huber_delta", 0.0, low_open=True)
    if self.max_grad_norm is not None:
      checks.in_range(self, "max_grad_norm", 0.0, low_open=True)
    checks.in_range(self, "epsilon_start", 0.0, 1.0)
    checks.in_range(self, "epsilon_end", 0.0, 1.0)


class DQNParams(NamedTuple):
  """The networks.

  Attributes:
    online: flax parameters of the Q-network (the one trained and acted with).
    target: the copy the targets are computed with.
  """

  online: Any
  target: Any


class DQNState(NamedTuple):
  """What persists between updates.

  Attributes:
    params: online and target networks.
    opt_state: Adam's state for `params.online`.
    steps: gradient steps done so far.                             # [] int32
  """

  params: DQNParams
  opt_state: optax.OptState
  steps: jax.Array


class DQN(NamedTuple):
  """Pure functions of a DQN learner. Build with `make_dqn`.

  Attributes:
    init: `init(key) -> DQNState`.
    update: `update(state, key, sample, num_steps) -> (state, metrics)`: `num_steps` (G,
      static) gradient steps as a `lax.scan`, step i on `sample(key_i) -> Transition [B]`
      (int actions [B]); metrics {"loss", "q_mean"} averaged over the G steps.
    act: `act(params, key, obs, epsilon) -> action`: epsilon-greedy on the online network;
      obs [O] -> int32 [], obs [N, O] -> [N].
    q_values: `q_values(net_params, obs [..., O]) -> [..., num_actions]`.
    td_target: `td_target(params, batch) -> y [B]`, the regression target (no gradient).
    loss: `loss(online, target, batch) -> (loss [], q_mean [])`.
    epsilon: `epsilon(env_steps) -> []` float32, the linear schedule.
  """

  init: Callable[[PRNGKey], DQNState]
  update: Callable[..., tuple[DQNState, dict[str, jax.Array]]]
  act: Callable[..., jax.Array]
  q_values: Callable[[Any, jax.Array], jax.Array]
  td_target: Callable[[DQNParams, Transition], jax.Array]
  loss: Callable[..., tuple[jax.Array, jax.Array]]
  epsilon: Callable[[jax.Array], jax.Array]


def make_dqn(obs_size: int, num_actions: int, config: DQNConfig = DQNConfig()) -> DQN:
  """Builds a DQN learner for `obs_size`-vector observations and `num_actions` actions.

  Args:
    obs_size: O, length of an observation vector.
    num_actions: number of discrete actions (int actions in [0, num_actions)).
    config: the learner's hyperparameters.

  Returns:
    A `DQN` of pure functions.
  """
  for name, value in (("obs_size", obs_size), ("num_actions", num_actions)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"make_dqn: {name} must be a positive int, got {value!r}")
  c = config
  net = MLP(hidden_sizes=c.hidden_sizes, out_size=num_actions,
            activation=ACTIVATIONS[c.activation])
  optimizer = optax.adam(c.learning_rate)
  if c.max_grad_norm is not None:
    optimizer = optax.chain(optax.clip_by_global_norm(c.max_grad_norm), optimizer)

  def q_values(net_params: Any, obs: jax.Array) -> jax.Array:
    return net.apply(net_params, obs.astype(jnp.float32))

  def init(key: PRNGKey) -> DQNState:
    online = net.init(key, jnp.zeros((1, obs_size), jnp.float32))
    return DQNState(params=DQNParams(online=online, target=online),
                    opt_state=optimizer.init(online), steps=jnp.zeros((), jnp.int32))

  def td_target(params: DQNParams, batch: Transition) -> jax.Array:
    q_next_target = q_values(params.target, batch.next_obs)                     # [B, A]
    picker = q_values(params.online, batch.next_obs) if c.double else q_next_target
    best = jnp.argmax(picker, axis=-1)                                          # [B]
    q_next = jnp.take_along_axis(q_next_target, best[:, None], axis=-1)[:, 0]  # [B]
    not_done = 1.0 - batch.terminated.astype(jnp.float32)
    y = batch.reward.astype(jnp.float32) + c.gamma * not_done * q_next
    return jax.lax.stop_gradient(y)

  def loss(online: Any, target: Any, batch: Transition) -> tuple[jax.Array, jax.Array]:
    y = td_target(DQNParams(online=online, target=target), batch)
    q = q_values(online, batch.obs)                                             # [B, A]
    action = batch.action.astype(jnp.int32).reshape(q.shape[:-1])
    q_taken = jnp.take_along_axis(q, action[:, None], axis=-1)[:, 0]            # [B]
    return jnp.mean(optax.huber_loss(q_taken, y, delta=c.huber_delta)), jnp.mean(q_taken)

  def grad_step(state: DQNState, batch: Transition) -> tuple[DQNState, dict[str, jax.Array]]:
    p = state.params
    (value, q_mean), grads = jax.value_and_grad(loss, has_aux=True)(p.online, p.target, batch)
    updates, opt_state = optimizer.update(grads, state.opt_state, p.online)
    online = optax.apply_updates(p.online, updates)
    steps = state.steps + 1
    copy = steps % c.target_update_every == 0
    target = jax.tree.map(lambda o, t: jnp.where(copy, o, t), online, p.target)
    return (DQNState(params=DQNParams(online=online, target=target), opt_state=opt_state,
                     steps=steps), {"loss": value, "q_mean": q_mean})

  def update(state: DQNState, key: PRNGKey, sample: Callable[[PRNGKey], Transition],
             num_steps: int) -> tuple[DQNState, dict[str, jax.Array]]:
    state, metrics = jax.lax.scan(lambda s, k: grad_step(s, sample(k)), state,
                                  jax.random.split(key, num_steps))
    return state, jax.tree.map(jnp.mean, metrics)

  def act(params: DQNParams, key: PRNGKey, obs: jax.Array, epsilon: jax.Array | float
          ) -> jax.Array:
    greedy = jnp.argmax(q_values(params.online, obs), axis=-1).astype(jnp.int32)
    k_explore, k_action = jax.random.split(key)
    explore = jax.random.uniform(k_explore, greedy.shape) < epsilon
    random = jax.random.randint(k_action, greedy.shape, 0, num_actions, jnp.int32)
    return jnp.where(explore, random, greedy)

  def epsilon(env_steps: jax.Array) -> jax.Array:
    frac = jnp.clip(jnp.asarray(env_steps, jnp.float32) / c.epsilon_decay_steps, 0.0, 1.0)
    return jnp.asarray(c.epsilon_start + frac * (c.epsilon_end - c.epsilon_start), jnp.float32)

  return DQN(init=init, update=update, act=act, q_values=q_values, td_target=td_target,
             loss=loss, epsilon=epsilon)
