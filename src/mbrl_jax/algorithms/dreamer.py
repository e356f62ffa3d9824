"""Dreamer (Hafner et al. 2020, 2023): an RSSM world model learnt from replayed sequences and
an actor-critic learnt in its imagination, one compiled call per training chunk.

A chunk is `chunk_steps` env steps split into `chunk_steps // train_every` rounds of (collect
`train_every` env steps with the actor on the filtered posterior state, then one train step:
a world-model update on `batch_size` windows of `seq_len` transitions, imagination of
`horizon` steps from (up to `imag_starts` of) the batch's posterior states, one actor and one
critic update), followed by `eval_episodes` deterministic evaluation episodes. The chunk is a
single `jax.jit`-compiled function with fixed shapes, so the second chunk reuses the first
one's program, and N seeds are `jax.vmap` of it.

Example:
  >>> config = Config(env="pendulum", env_steps=50_000)
  >>> state, history = train(jax.random.key(0), config)               # one seed
  >>> state, history = train(jnp.stack([jax.random.key(s) for s in range(3)]), config)
  >>> history["eval_return"]                                           # [chunks, 3]
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from brax.envs.base import Env

from mbrl_jax import compile as compile_lib
from mbrl_jax import data as buffer_lib
from mbrl_jax import envs
from mbrl_jax import run as run_lib
from mbrl_jax.models import rssm
from mbrl_jax.policies import imagination as im
from mbrl_jax.types import PRNGKey, Transition


@dataclasses.dataclass(frozen=True)
class Config:
  """A Dreamer run.

  Attributes:
    env: environment name (see `mbrl_jax.envs.registered_names`).
    pixels: learn from rendered images (`mbrl_jax.envs.PixelObservation`) instead of the
      vector observation.
    image_size: side of the square images when `pixels`.
    env_steps: total env steps of the run (prefill included).
    prefill: env steps of uniformly random actions before the first update.
    chunk_steps: env steps per compiled chunk (a multiple of train_every).
    train_every: env steps collected per train step (the train ratio is
      batch_size * seq_len / train_every replayed steps per env step).
    batch_size: windows per world-model batch.
    seq_len: transitions per window.
    buffer_capacity: replay capacity in transitions (None: env_steps).
    imag_starts: at most this many posterior states of the batch start imagination, drawn
      without replacement (None: all batch_size * (seq_len + 1), as in DreamerV3; the actor-critic
      update's cost is proportional to it, and dominates a train step on a CPU).
    eval_episodes: deterministic evaluation episodes after each chunk (vmapped).
    model_lr: Adam step size of the world model.
    model_grad_clip: global-norm clip of the world model's gradient.
    world_model: sizes and loss weights (see `mbrl_jax.models.rssm.PRESETS`).
    actor_critic: the imagination actor-critic (its `horizon` is the imagination horizon).
  """

  env: str = "pendulum"
  pixels: bool = False
  image_size: int = 64
  env_steps: int = 50_000
  prefill: int = 1000
  chunk_steps: int = 1000
  train_every: int = 5
  batch_size: int = 16
  seq_len: int = 64
  buffer_capacity: int | None = None
  imag_starts: int | None = 256
  eval_episodes: int = 5
  model_lr: float = 3e-4
  model_grad_clip: float = 1000.0
  world_model: rssm.WorldModelConfig = rssm.PRESETS["cpu"]
  actor_critic: im.ActorCriticConfig = im.ActorCriticConfig()

  @property
  def capacity(self) -> int:
    return self.buffer_capacity or self.env_steps

  @property
  def num_chunks(self) -> int:
    return (self.env_steps - self.prefill) // self.chunk_steps


def validate(config: Config) -> None:
  """Raises ValueError naming the first invalid field; runs before anything compiles."""
  def bad(field, why):
    raise ValueError(f"Dreamer config: {field} {why}")

  if config.env not in envs.registered_names():
    bad("env", f"{config.env!r} is unknown; valid names: {', '.join(envs.registered_names())}")
  for name in ("env_steps", "chunk_steps", "train_every", "batch_size", "seq_len",
               "image_size", "eval_episodes"):
    value = getattr(config, name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      bad(name, f"must be a positive int, got {value!r}")
  if not isinstance(config.prefill, int) or config.prefill < config.seq_len:
    bad("prefill", f"must be an int >= seq_len={config.seq_len} (the first update needs a "
        f"window), got {config.prefill!r}")
  if config.chunk_steps % config.train_every:
    bad("chunk_steps", f"must be a multiple of train_every={config.train_every}, got "
        f"{config.chunk_steps}")
  if config.num_chunks < 1:
    bad("env_steps", f"must leave at least one chunk of {config.chunk_steps} steps after the "
        f"prefill of {config.prefill}, got {config.env_steps}")
  if config.capacity < max(config.prefill, config.seq_len):
    bad("buffer_capacity", f"must hold the prefill ({config.prefill}), got {config.capacity}")
  if config.imag_starts is not None and not (
      isinstance(config.imag_starts, int) and config.imag_starts >= 1):
    bad("imag_starts", f"must be None or a positive int, got {config.imag_starts!r}")
  if not config.model_lr > 0 or not config.model_grad_clip > 0:
    bad("model_lr", "and model_grad_clip must be > 0")
  if config.pixels:
    try:
      rssm._cnn_stages(config.image_size)
    except ValueError as e:
      bad("image_size", str(e))
  rssm.validate_config(config.world_model, "Dreamer config: world_model")
  im.validate_config(config.actor_critic, "Dreamer config: actor_critic")


class Parts(NamedTuple):
  """The pieces a Dreamer run is built from (handy in notebooks)."""

  env: Env
  world_model: rssm.WorldModel
  actor_critic: im.ActorCritic
  model_opt: optax.GradientTransformation


def make_parts(config: Config) -> Parts:
  validate(config)
  env = envs.make(config.env)
  if config.pixels:
    env = envs.PixelObservation(env, size=config.image_size)
    obs_shape = (config.image_size, config.image_size, 3)
  else:
    obs_shape = (env.observation_size,)
  wm = rssm.make_world_model(obs_shape, env.action_size, config=config.world_model)
  ac = im.make_actor_critic(wm.feature_size, env.action_size, config=config.actor_critic)
  opt = optax.chain(optax.clip_by_global_norm(config.model_grad_clip),
                    optax.adam(config.model_lr, eps=1e-8))
  return Parts(env=env, world_model=wm, actor_critic=ac, model_opt=opt)


class Actor(NamedTuple):
  """What acting carries between env steps (one env).

  Attributes:
    env_state: the env's state (obs is the observation to act on).
    latent: the filtered posterior before the current observation is seen.
    prev_action: the action taken before the current observation.          # [A]
    is_first: the current observation starts an episode.                   # [] bool
    episode_return: return of the running episode so far.                  # []
  """

  env_state: Any
  latent: rssm.RSSMState
  prev_action: jax.Array
  is_first: jax.Array
  episode_return: jax.Array


class State(NamedTuple):
  """What a Dreamer run carries from chunk to chunk (one seed; vmapped runs add a seed axis).

  Attributes:
    buffer: replayed transitions.
    model_params: world-model parameters.
    model_opt: the world model's optimizer state.
    ac: the actor-critic's parameters, optimizer states and return normaliser.
    actor: the acting env and filter state.
    key: the run's random key.
    env_steps: env steps taken so far.                     # [] int32
    updates: train steps done so far.                      # [] int32
  """

  buffer: buffer_lib.BufferState
  model_params: Any
  model_opt: Any
  ac: im.ActorCriticState
  actor: Actor
  key: PRNGKey
  env_steps: jax.Array
  updates: jax.Array


def _reset_actor(parts: Parts, key: PRNGKey) -> Actor:
  env_state = parts.env.reset(key)
  env_state = env_state.replace(reward=jnp.zeros(()), done=jnp.zeros(()))
  return Actor(env_state=env_state, latent=parts.world_model.initial_state(),
               prev_action=jnp.zeros((parts.env.action_size,)), is_first=jnp.asarray(True),
               episode_return=jnp.zeros(()))


def _env_step(parts: Parts, model_params, actor_params, actor: Actor, key: PRNGKey,
              buffer: buffer_lib.BufferState | None, mode: str):
  """One env step. mode: "random" (uniform actions), "explore" (sampled from the actor),
  "eval" (the actor's mean). Returns (actor, buffer, finished episode return or NaN)."""
  wm, ac, env = parts.world_model, parts.actor_critic, parts.env
  filter_key, act_key, reset_key = jax.random.split(key, 3)
  obs = actor.env_state.obs
  post, _ = wm.obs_step(model_params, filter_key, actor.latent, actor.prev_action, obs,
                        actor.is_first)
  if mode == "random":
    action = jax.random.uniform(act_key, (env.action_size,), minval=-1.0, maxval=1.0)
  else:
    action = ac.act(actor_params, act_key, wm.features(post), deterministic=mode == "eval")
  nxt = env.step(actor.env_state, action)
  reward = jnp.asarray(nxt.reward, jnp.float32)
  done = jnp.asarray(nxt.done, jnp.float32)
  truncated = jnp.asarray(nxt.info.get("truncation", jnp.zeros(())), jnp.float32)
  if buffer is not None:
    buffer = buffer_lib.add(buffer, Transition(
        obs=obs, action=action, reward=reward, next_obs=nxt.obs,
        terminated=done * (1.0 - truncated), truncated=truncated))
  ret = actor.episode_return + reward
  nxt = nxt.replace(reward=reward, done=done)
  stepped = Actor(env_state=nxt, latent=post, prev_action=action, is_first=jnp.asarray(False),
                  episode_return=ret)
  actor = jax.lax.cond(done > 0.5, lambda: _reset_actor(parts, reset_key), lambda: stepped)
  return actor, buffer, jnp.where(done > 0.5, ret, jnp.nan)


def _collect(parts: Parts, model_params, actor_params, actor: Actor, key: PRNGKey,
             buffer, steps: int, mode: str):
  def body(carry, k):
    actor, buffer = carry
    actor, buffer, finished = _env_step(parts, model_params, actor_params, actor, k, buffer,
                                        mode)
    return (actor, buffer), finished

  (actor, buffer), finished = jax.lax.scan(body, (actor, buffer), jax.random.split(key, steps))
  return actor, buffer, finished


def init(key: PRNGKey, config: Config, parts: Parts | None = None) -> State:
  """Fresh networks and `prefill` env steps of uniformly random actions in the buffer."""
  parts = parts or make_parts(config)
  env, wm = parts.env, parts.world_model
  model_key, ac_key, env_key, collect_key, key = jax.random.split(key, 5)
  obs_dtype = jnp.uint8 if config.pixels else jnp.float32
  example = Transition(
      obs=jnp.zeros(wm.obs_shape, obs_dtype), action=jnp.zeros((env.action_size,)),
      reward=jnp.zeros(()), next_obs=jnp.zeros(wm.obs_shape, obs_dtype),
      terminated=jnp.zeros(()), truncated=jnp.zeros(()))
  buffer = buffer_lib.init(config.capacity, example)
  model_params = wm.init(model_key)
  ac_state = parts.actor_critic.init(ac_key)
  actor, buffer, _ = _collect(parts, model_params, ac_state.actor, _reset_actor(parts, env_key),
                              collect_key, buffer, config.prefill, "random")
  return State(buffer=buffer, model_params=model_params,
               model_opt=parts.model_opt.init(model_params), ac=ac_state, actor=actor, key=key,
               env_steps=jnp.asarray(config.prefill, jnp.int32),
               updates=jnp.zeros((), jnp.int32))


def make_train_step(config: Config, parts: Parts):
  """`train_step(model_params, model_opt, ac_state, buffer, key) -> (model_params, model_opt,
  ac_state, metrics)`: one world-model update and one actor-critic update in imagination."""
  wm, ac = parts.world_model, parts.actor_critic
  horizon = config.actor_critic.horizon

  def train_step(model_params, model_opt, ac_state, buffer, key):
    sample_key, model_key, imag_key, start_key = jax.random.split(key, 4)
    window, valid = buffer_lib.sample_sequences(buffer, sample_key, config.batch_size,
                                                config.seq_len)
    (_, aux), grad = jax.value_and_grad(wm.loss, has_aux=True)(
        model_params, model_key, window, valid)
    updates, new_opt = parts.model_opt.update(grad, model_opt, model_params)
    new_params = optax.apply_updates(model_params, updates)
    frozen = jax.lax.stop_gradient(new_params)
    start = jax.tree.map(lambda x: jax.lax.stop_gradient(x.reshape((-1,) + x.shape[2:])),
                         aux.post)                                  # [B * (L + 1), ...]
    n = config.batch_size * (config.seq_len + 1)
    if config.imag_starts is not None and config.imag_starts < n:
      idx = jax.random.permutation(start_key, n)[:config.imag_starts]
      start = jax.tree.map(lambda x: x[idx], start)                # [imag_starts, ...]

    def imagine_fn(k, policy_fn):
      states, actions = wm.imagine(frozen, k, start, policy_fn, horizon)
      feat = wm.features(states)                                    # [N, H + 1, F]
      return im.Imagined(feat=feat, action=actions, reward=wm.reward(frozen, feat[:, 1:]),
                         cont=wm.cont(frozen, feat[:, 1:]))

    new_ac, ac_metrics = ac.update(ac_state, imag_key, imagine_fn)
    # Without a valid window (cannot happen after a prefill >= seq_len) nothing changes.
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(valid, n, o), new, old)
    metrics = {**aux.metrics, **ac_metrics, "valid_batch": valid.astype(jnp.float32),
               "model_grad_norm": optax.tree.norm(grad)}
    return (keep(new_params, model_params), keep(new_opt, model_opt), keep(new_ac, ac_state),
            metrics)

  return train_step


def make_step(config: Config, parts: Parts | None = None
              ) -> Callable[[State], tuple[State, dict]]:
  """Returns `step(state) -> (state, metrics)`: one chunk (collect and train rounds, then an
  evaluation episodes). Pure and unjitted; jit it (donating the state) or vmap it."""
  parts = parts or make_parts(config)
  train_step = make_train_step(config, parts)
  rounds = config.chunk_steps // config.train_every
  episode_length = envs.default_episode_length(config.env)

  def round_(state: State, key: PRNGKey):
    collect_key, train_key = jax.random.split(key)
    actor, buffer, finished = _collect(parts, state.model_params, state.ac.actor, state.actor,
                                       collect_key, state.buffer, config.train_every,
                                       "explore")
    model_params, model_opt, ac_state, metrics = train_step(
        state.model_params, state.model_opt, state.ac, buffer, train_key)
    state = State(buffer=buffer, model_params=model_params, model_opt=model_opt, ac=ac_state,
                  actor=actor, key=state.key, env_steps=state.env_steps + config.train_every,
                  updates=state.updates + 1)
    return state, (metrics, finished)

  def step(state: State) -> tuple[State, dict]:
    key, rounds_key, eval_key, eval_reset_key = jax.random.split(state.key, 4)
    state, (metrics, finished) = jax.lax.scan(round_, state,
                                              jax.random.split(rounds_key, rounds))
    finished = finished.reshape(-1)
    n_finished = jnp.sum(~jnp.isnan(finished))
    # Deterministic evaluation episodes (not stored), vmapped.
    def evaluate(reset_key, run_key):
      _, _, finished = _collect(parts, state.model_params, state.ac.actor,
                                _reset_actor(parts, reset_key), run_key, None, episode_length,
                                "eval")
      return jnp.nansum(finished)

    eval_returns = jax.vmap(evaluate)(jax.random.split(eval_reset_key, config.eval_episodes),
                                      jax.random.split(eval_key, config.eval_episodes))
    out = {name: jnp.mean(value) for name, value in metrics.items()}
    out.update({
        "eval_return": jnp.mean(eval_returns),
        "eval_return_min": jnp.min(eval_returns),
        "train_return": jnp.where(n_finished > 0, jnp.nansum(finished) / jnp.maximum(
            n_finished, 1), jnp.nan),
        "train_episodes": n_finished,
        "env_steps": state.env_steps,
        "updates": state.updates,
        "nonfinite_model": run_lib.nonfinite_leaves(state.model_params),
        "nonfinite_actor_critic": run_lib.nonfinite_leaves(
            (state.ac.actor, state.ac.critic)),
    })
    return state._replace(key=key), out

  return step


def make_policy(state: State, config: Config, parts: Parts | None = None):
  """The trained actor on the filtered posterior, for evaluation rollouts:
  `init() -> carry` and `act(carry, key, obs, is_first) -> (action, carry)` with
  carry = (latent, prev_action); `deterministic` actions (the actor's mean)."""
  parts = parts or make_parts(config)
  wm, ac = parts.world_model, parts.actor_critic

  def init_carry():
    return wm.initial_state(), jnp.zeros((parts.env.action_size,))

  def act(carry, key, obs, is_first):
    latent, prev_action = carry
    post, _ = wm.obs_step(state.model_params, key, latent, prev_action, obs, is_first)
    action = ac.act(state.ac.actor, key, wm.features(post), deterministic=True)
    return action, (post, action)

  return init_carry, act


def checkpoint_meta(key: PRNGKey, config: Config) -> dict:
  """What a checkpoint must share with a run to be resumed by it: the config and the keys."""
  return run_lib.run_meta("dreamer", key, config)


def train(key: PRNGKey, config: Config, *,
          progress_fn: Callable[[int, dict], Any] | None = None,
          checkpoint_dir: str | None = None,
          checkpoint_every: int = 1,
          resume: bool = False,
          ) -> tuple[State, dict[str, np.ndarray]]:
  """Runs Dreamer: the random prefill, then `config.num_chunks` chunks, each one compiled call.

  Args:
    key: one key for one run, or a batch of keys [S] for S seeds vmapped through the same
      compiled calls (sharded over devices when the batch is placed with a multi-device
      sharding, see `mbrl_jax.run.shard_seeds`).
    config: the run's configuration (validated before anything compiles).
    progress_fn: called after every chunk as `progress_fn(chunk, metrics)` with NumPy arrays
      (a seed axis first when `key` is a batch).
    checkpoint_dir: where to checkpoint the whole state (buffer, world model, actor-critic and
      optimizers, keys, counters) after the prefill and every `checkpoint_every` chunks.
    checkpoint_every: chunks between checkpoints (the last chunk is always checkpointed).
    resume: continue from the latest checkpoint in `checkpoint_dir` (same config and keys);
      the result equals an uninterrupted run's.

  Returns:
    The final state and a history dict of NumPy arrays [num_chunks, (S)]: "eval_return",
    "train_return", "env_steps", "updates" and the mean world-model and actor-critic metrics
    of each chunk.

  Raises:
    FloatingPointError: NaN or Inf in the world model's or the actor-critic's parameters; the
      message names the chunk and the component, and the last good checkpoint is kept.
  """
  run_lib.check_key(key)
  parts = make_parts(config)
  flags = {"nonfinite_model": "the world-model parameters",
           "nonfinite_actor_critic": "the actor or critic parameters"}
  return run_lib.train_chunks(
      key, init_fn=lambda k: (init(k, config, parts), {}), step_fn=make_step(config, parts),
      num_chunks=config.num_chunks, name="Dreamer", unit="chunk",
      meta=checkpoint_meta(key, config),
      check_fn=lambda m: run_lib.describe_nonfinite(m, flags), progress_fn=progress_fn,
      checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, resume=resume,
      jit=compile_lib.jit, cache_key=("dreamer", config))
