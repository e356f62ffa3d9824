"""Dreamer (Hafner et al. 2020, 2023): an RSSM world model learnt from replayed sequences and
an actor-critic learnt in its imagination, one compiled call per training chunk.

A chunk is `chunk_steps` env steps split into `chunk_steps // train_every` rounds of (collect
`train_every` env steps with the actor on the filtered posterior state, then one train step:
a world-model update on `batch_size` windows of `seq_len` transitions, imagination of
`horizon` steps from (up to `imag_starts` of) the batch's posterior states, one actor and one
critic update), followed by `eval_episodes` deterministic evaluation episodes. The chunk is a
single `jax.jit`-compiled function with fixed shapes, so the second chunk reuses the first
one's program, and N seeds are `jax.vmap` of it.

Replay stores each observation once, as DreamerV3's does: one `Step` row per env step (the
observation, the action taken from it, the reward of arriving at it, is_first / is_last /
is_terminal), plus one row for each episode's final observation (`replay_rows`, added with
`mbrl_jax.data.add_masked`, so shapes stay fixed). A window of seq_len + 1 consecutive rows
holds the seq_len transitions the world model learns from (`window_transitions`); by default
windows run on from one episode into the next and the RSSM resets its state at `is_first`.

`make(config)` returns the `Algorithm` that `mbrl_jax.run.train` drives.

Example (minutes of CPU, so skipped here):
  >>> from mbrl_jax import run
  >>> keys = jnp.stack([jax.random.key(s) for s in range(3)])
  >>> state, history = run.train(make(PRESETS["quick"]), keys)        # doctest: +SKIP
  >>> history["eval/return"].shape                                     # doctest: +SKIP
  (5, 3)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from brax.envs.base import Env

from mbrl_jax import data as buffer_lib
from mbrl_jax import checks
from mbrl_jax import envs
from mbrl_jax import tree
from mbrl_jax.algorithms.base import Algorithm
from mbrl_jax.envs import acting
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
    seq_len: transitions per window (a window is seq_len + 1 replay rows).
    cross_episodes: replay windows may run from one episode into the next, the RSSM
      resetting at the new episode's first step (DreamerV3). False: each window lies within
      one episode (ending at most at its final observation), so an episode shorter than
      seq_len is never replayed and the steps near episode starts and ends are sampled less.
    buffer_capacity: replay capacity in rows (None: `capacity`, enough for env_steps).
    imag_starts: at most this many posterior states of the batch start imagination, drawn
      without replacement (None: all batch_size * (seq_len + 1), as in DreamerV3; the actor-critic
      update's cost is proportional to it, and dominates a train step on a CPU).
    eval_episodes: deterministic evaluation episodes after each chunk (vmapped).
    model_lr: step size of the world model's optimizer.
    model_grad_clip: global-norm clip of the world model's gradient ("adam").
    model_optimizer: "adam" (global-norm clip, then Adam with eps 1e-8) or "laprop"
      (DreamerV3's optimizer, `imagination.laprop`, with the actor-critic's `agc` and
      `warmup`: V3 trains every network with one optimizer).
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
  cross_episodes: bool = True
  buffer_capacity: int | None = None
  imag_starts: int | None = 256
  eval_episodes: int = 5
  model_lr: float = 3e-4
  model_grad_clip: float = 1000.0
  model_optimizer: str = "adam"
  world_model: rssm.WorldModelConfig = rssm.PRESETS["cpu"]
  actor_critic: im.ActorCriticConfig = im.ActorCriticConfig()

  def __post_init__(self):
    envs.check_continuous_env(self)
    checks.positive_int(self, "env_steps", "chunk_steps", "train_every", "batch_size",
                        "seq_len", "image_size", "eval_episodes")
    checks.int_at_least(self, "prefill", self.seq_len,
                        " (seq_len: the first update needs a window)")
    if self.chunk_steps % self.train_every:
      checks.fail(self, "chunk_steps", f"must be a multiple of train_every="
                  f"{self.train_every}, got {self.chunk_steps}")
    if self.num_chunks < 1:
      checks.fail(self, "env_steps", f"must leave at least one chunk of {self.chunk_steps} "
                  f"steps after the prefill of {self.prefill}, got {self.env_steps}")
    if self.capacity < max(self.prefill, self.seq_len + 1):
      checks.fail(self, "buffer_capacity", f"must hold the prefill ({self.prefill}) and a "
                  f"window of seq_len + 1 = {self.seq_len + 1} rows, got {self.capacity}")
    if self.imag_starts is not None:
      checks.positive_int(self, "imag_starts")
    checks.in_range(self, "model_lr", 0.0, low_open=True)
    checks.in_range(self, "model_grad_clip", 0.0, low_open=True)
    checks.one_of(self, "model_optimizer", im.OPTIMIZERS)
    if self.pixels:
      try:
        rssm.cnn_stages(self.image_size)
      except ValueError as e:
        checks.fail(self, "image_size", str(e))
    rssm.validate_config(self.world_model, f"{checks.name(self)}.world_model")
    im.validate_config(self.actor_critic, f"{checks.name(self)}.actor_critic")

  @property
  def capacity(self) -> int:
    """Replay rows: `buffer_capacity`, or by default env_steps + env_steps // episode_length:
    one row per env step and one per episode end (its final observation), which holds the
    whole run when episodes run to the time limit; episodes that terminate earlier add more
    rows, and the ring then drops the oldest."""
    if self.buffer_capacity:
      return self.buffer_capacity
    return self.env_steps + self.env_steps // envs.default_episode_length(self.env)

  @property
  def num_chunks(self) -> int:
    return (self.env_steps - self.prefill) // self.chunk_steps


PRESETS: dict[str, Config] = {
    # Minutes on a 2-core CPU: a short pendulum run with the CPU-sized model.
    "quick": Config(env="pendulum", env_steps=6000, prefill=1000, chunk_steps=1000,
                    train_every=5),
    # The pendulum acceptance run (vector observations, 50k env steps).
    "pendulum": Config(env="pendulum", env_steps=50_000, prefill=1000, chunk_steps=1000,
                       train_every=5),
    # Pendulum from 32 x 32 pixels, sized for a 2-core CPU (the pixel acceptance run): shorter
    # replay windows than the vector run, the same 5 env steps per train step.
    "pixels": Config(env="pendulum", pixels=True, image_size=32, env_steps=100_000,
                     prefill=1000, chunk_steps=1000, train_every=5, batch_size=16, seq_len=32),
    # DreamerV3's learning side as its current defaults have it (danijar/dreamerv3 main,
    # dreamerv3/configs.yaml `agent:` keys named per value) with the CPU-sized networks of
    # "pendulum" (V3's smallest, size1m for dmc_proprio, is rssm deter 512, hidden 64, stoch
    # 32, classes 4, MLPs 3 x 64 units, not in rssm.PRESETS) and its train ratio (V3:
    # dmc_proprio run.train_ratio 1024, i.e. train_every 1 here). V3's replay windows also
    # cross episode boundaries (per-step is_first); that comes with the replay branch. Not
    # taken over: the replay-value gradient into the world model (V3 `repval_grad: True`;
    # here the world model and the actor-critic are separate updates) and V3's unclipped
    # actions (its env clips; here the model sees clipped ones and REINFORCE scores those).
    "dreamerv3": Config(
        env="pendulum", env_steps=50_000, prefill=1000, chunk_steps=1000, train_every=5,
        batch_size=16,                   # batch_size: 16
        seq_len=64,                      # batch_length: 64
        imag_starts=None,                # imag_last: 0 (imagine from every replayed state)
        model_lr=4e-5,                   # opt.lr: 4e-5
        model_optimizer="laprop",        # opt (agc, eps, beta1, beta2, momentum, warmup)
        actor_critic=im.ActorCriticConfig(
            horizon=15,                  # imag_length: 15
            discount=1.0 - 1.0 / 333,    # horizon: 333 (with contdisc: True)
            lambda_=0.95,                # imag_loss.lam, repl_loss.lam: 0.95
            actor_lr=4e-5,               # opt.lr: 4e-5 (one optimizer for everything)
            critic_lr=4e-5,              # opt.lr: 4e-5
            optimizer="laprop",          # opt: eps 1e-20, beta1 0.9, beta2 0.999, momentum
            agc=0.3,                     # opt.agc: 0.3
            warmup=1000,                 # opt.warmup: 1000
            entropy_scale=3e-4,          # imag_loss.actent: 3e-4
            actor_grad="reinforce",      # V3's policy loss is REINFORCE for every action space
            return_critic="fast",        # imag_loss.slowtar: False
            slow_reg=1.0,                # imag_loss.slowreg, repl_loss.slowreg: 1.0
            slow_critic_decay=0.98,      # slowvalue.rate: 0.02, every: 1
            return_norm_decay=0.99,      # retnorm.rate: 0.01 (impl: perc, debias: False)
            return_norm_low=5.0,         # retnorm.perclo: 5.0
            return_norm_high=95.0,       # retnorm.perchi: 95.0
            return_norm_limit=1.0,       # retnorm.limit: 1.0
            weights="discounted",        # imag_loss weight = cumprod(disc * con) / disc
            replay_scale=0.3,            # loss_scales.repval: 0.3 (repval_loss: True)
            min_std=0.1, max_std=1.0)),  # policy.minstd: 0.1, policy.maxstd: 1.0
    # DreamerV3 "S"-like sizes for accelerators.
    "large": Config(env="pendulum", env_steps=100_000, prefill=2500, chunk_steps=2500,
                    train_every=2, world_model=rssm.PRESETS["large"]),
}
"""Named starting points (`experiments/dreamer.py --preset NAME`)."""


class Parts(NamedTuple):
  """The pieces a Dreamer run is built from (handy in notebooks)."""

  env: Env
  world_model: rssm.WorldModel
  actor_critic: im.ActorCritic
  model_opt: optax.GradientTransformation


def make_parts(config: Config) -> Parts:
  env = envs.make(config.env)
  if config.pixels:
    env = envs.PixelObservation(env, size=config.image_size)
    obs_shape = (config.image_size, config.image_size, 3)
  else:
    obs_shape = (env.observation_size,)
  wm = rssm.make_world_model(obs_shape, env.action_size, config=config.world_model)
  ac = im.make_actor_critic(wm.feature_size, env.action_size, config=config.actor_critic)
  if config.model_optimizer == "laprop":
    opt = im.laprop(config.model_lr, agc=config.actor_critic.agc,
                    warmup=config.actor_critic.warmup)
  else:
    opt = optax.chain(optax.clip_by_global_norm(config.model_grad_clip),
                      optax.adam(config.model_lr, eps=1e-8))
  return Parts(env=env, world_model=wm, actor_critic=ac, model_opt=opt)


class Step(NamedTuple):
  """One replay row (DreamerV3's layout): an observation and what happened around it.

  Attributes:
    obs: the observation (uint8 for images).                             # [*obs_shape]
    action: the action taken from it (zeros on an episode's last row).   # [A]
    reward: the reward of arriving at it (0 on an episode's first row).  # []
    is_first: it starts an episode (the env's reset observation).        # [] bool
    is_last: it ends an episode: the final observation, no action taken. # [] bool
    is_terminal: it ends the episode by termination (not the time limit). # [] bool
  """

  obs: jax.Array
  action: jax.Array
  reward: jax.Array
  is_first: jax.Array
  is_last: jax.Array
  is_terminal: jax.Array

  @classmethod
  def zeros(cls, obs_shape: tuple[int, ...], action_size: int, obs_dtype: Any) -> "Step":
    """One all-zero row without a batch axis (the replay buffer's example)."""
    flag = jnp.zeros((), bool)
    return cls(obs=jnp.zeros(obs_shape, obs_dtype), action=jnp.zeros((action_size,)),
               reward=jnp.zeros(()), is_first=flag, is_last=flag, is_terminal=flag)


def replay_rows(actor: acting.Actor, transitions: Transition) -> tuple[Step, jax.Array]:
  """The replay rows of T consecutive steps that `acting.collect` took from `actor`.

  Row 2t is step t's observation (with its action, the reward of arriving at it, and
  is_first where it starts an episode); row 2t + 1 is the episode's final observation
  (transition t's next_obs, is_last, is_terminal where it terminated), valid only where step
  t ended the episode. Adding the valid rows in order (`mbrl_jax.data.add_masked`) stores
  each frame once; rows of consecutive collects continue each other, because the reward of
  arriving at the first observation and whether it starts an episode come from `actor`.

  Args:
    actor: the actor before the steps (`acting.step` auto-resets, so its env state is the
      fresh episode's after an end, with reward 0 and episode_length 0).
    transitions: the steps' transitions [T, ...] (next_obs is the true final observation).

  Returns:
    (rows [2T, ...], valid [2T] bool).
  """
  done = (transitions.terminated > 0.5) | (transitions.truncated > 0.5)       # [T]
  fresh = actor.episode_length == 0
  first_reward = jnp.where(fresh, 0.0, actor.env_state.reward.astype(jnp.float32))
  is_first = jnp.concatenate([fresh[None], done[:-1]])
  reward_in = jnp.concatenate([first_reward[None], transitions.reward[:-1]])
  no = jnp.zeros_like(done)
  step_rows = Step(obs=transitions.obs, action=transitions.action,
                   reward=jnp.where(is_first, 0.0, reward_in), is_first=is_first,
                   is_last=no, is_terminal=no)
  final_rows = Step(obs=transitions.next_obs, action=jnp.zeros_like(transitions.action),
                    reward=transitions.reward, is_first=no, is_last=done,
                    is_terminal=transitions.terminated > 0.5)
  interleave = lambda a, b: jnp.stack([a, b], 1).reshape((-1,) + a.shape[1:])
  rows = jax.tree.map(interleave, step_rows, final_rows)
  return rows, interleave(jnp.ones_like(done), done)


def window_transitions(rows: Step) -> tuple[Transition, jax.Array]:
  """Windows of L + 1 consecutive rows [B, L + 1, ...] as the L transitions between them and
  the per-step `is_first` [B, L + 1] that `rssm.WorldModel.loss` takes. Where a window runs
  into a new episode, the step from the final row into the first one has action 0, reward 0
  and terminated 0, and the model resets at the first row."""
  after = lambda x: x[:, 1:]
  window = Transition(obs=rows.obs[:, :-1], action=rows.action[:, :-1],
                      reward=after(rows.reward), next_obs=after(rows.obs),
                      terminated=after(rows.is_terminal).astype(jnp.float32),
                      truncated=after(rows.is_last & ~rows.is_terminal).astype(jnp.float32))
  return window, rows.is_first


class FilterState(NamedTuple):
  """The acting policy's state: the filter over the running episode.

  Attributes:
    latent: the filtered posterior before the current observation is seen.
    prev_action: the action taken before the current observation.          # [A]
    is_first: the current observation starts an episode.                   # [] bool
  """

  latent: rssm.RSSMState
  prev_action: jax.Array
  is_first: jax.Array


class State(NamedTuple):
  """What a Dreamer run carries from chunk to chunk (one seed; vmapped runs add a seed axis).

  Attributes:
    buffer: replay rows (`Step`).
    model_params: world-model parameters.
    model_opt: the world model's optimizer state.
    ac: the actor-critic's parameters, optimizer states and return normaliser.
    actor: the acting env, its filter state (`FilterState`) and running return.
    key: the run's random key.
    env_steps: env steps taken so far.                     # [] int32
    updates: train steps done so far.                      # [] int32
  """

  buffer: buffer_lib.BufferState
  model_params: Any
  model_opt: Any
  ac: im.ActorCriticState
  actor: acting.Actor
  key: PRNGKey
  env_steps: jax.Array
  updates: jax.Array


def make_policy(parts: Parts, model_params: Any, actor_params: Any, mode: str = "eval"
                ) -> acting.Policy:
  """The actor on the filtered posterior (`wm.obs_step` on each observation) as an
  `envs.acting.Policy` with state `FilterState`. mode: "explore" samples the actor,
  "eval" takes its mean, "random" draws uniform actions (the filter still runs, so the
  policy state is the same in every mode)."""
  wm, ac, action_size = parts.world_model, parts.actor_critic, parts.env.action_size
  if mode not in ("random", "explore", "eval"):
    raise ValueError(f"mode must be 'random', 'explore' or 'eval', got {mode!r}")

  def init_fn(key: PRNGKey) -> FilterState:
    del key
    return FilterState(latent=wm.initial_state(), prev_action=jnp.zeros((action_size,)),
                       is_first=jnp.asarray(True))

  def act(state: FilterState, key: PRNGKey, obs: jax.Array):
    filter_key, act_key = jax.random.split(key)
    post, _ = wm.obs_step(model_params, filter_key, state.latent, state.prev_action, obs,
                          state.is_first)
    if mode == "random":
      action = jax.random.uniform(act_key, (action_size,), minval=-1.0, maxval=1.0)
    else:
      action = ac.act(actor_params, act_key, wm.features(post), deterministic=mode == "eval")
    return action, FilterState(latent=post, prev_action=action, is_first=jnp.asarray(False)), ()

  return acting.Policy(init=init_fn, act=act)


def init(key: PRNGKey, config: Config, parts: Parts | None = None) -> State:
  """Fresh networks and `prefill` env steps of uniformly random actions in the buffer."""
  parts = parts or make_parts(config)
  env, wm = parts.env, parts.world_model
  model_key, ac_key, env_key, collect_key, key = jax.random.split(key, 5)
  obs_dtype = jnp.uint8 if config.pixels else jnp.float32
  example = Step.zeros(wm.obs_shape, env.action_size, obs_dtype)
  model_params = wm.init(model_key)
  ac_state = parts.actor_critic.init(ac_key)
  policy = make_policy(parts, model_params, ac_state.actor, "random")
  fresh = acting.reset(env, policy, env_key)
  actor, prefill, _, _ = acting.collect(env, policy, fresh, collect_key, config.prefill)
  buffer = buffer_lib.add_masked(buffer_lib.init(config.capacity, example),
                                 *replay_rows(fresh, prefill))
  return State(buffer=buffer, model_params=model_params,
               model_opt=parts.model_opt.init(model_params), ac=ac_state, actor=actor, key=key,
               env_steps=jnp.asarray(config.prefill, jnp.int32),
               updates=jnp.zeros((), jnp.int32))


def _replayed(wm: rssm.WorldModel, post: rssm.RSSMState, rows: Step,
              start_index: jax.Array | None) -> im.Replayed:
  """The replayed posterior trajectories [B, L + 1] for the replay-value loss, straight from the
  replay rows: the reward of arriving at each row, 1 - is_terminal, and is_last (an episode's
  final observation: not regressed, and no return runs past it into the next episode when a
  window crosses one)."""
  return im.Replayed(feat=jax.lax.stop_gradient(wm.features(post)),
                     reward=rows.reward.astype(jnp.float32),
                     cont=1.0 - rows.is_terminal.astype(jnp.float32), last=rows.is_last,
                     start_index=start_index)


def make_train_step(config: Config, parts: Parts):
  """`train_step(model_params, model_opt, ac_state, buffer, key) -> (model_params, model_opt,
  ac_state, metrics)`: one world-model update and one actor-critic update in imagination."""
  wm, ac = parts.world_model, parts.actor_critic
  horizon = config.actor_critic.horizon

  def train_step(model_params, model_opt, ac_state, buffer, key):
    sample_key, model_key, imag_key, start_key = jax.random.split(key, 4)
    rows, valid = buffer_lib.sample_sequences(buffer, sample_key, config.batch_size,
                                              config.seq_len + 1,
                                              cross_episodes=config.cross_episodes)
    window, is_first = window_transitions(rows)
    (_, aux), grad = jax.value_and_grad(wm.loss, has_aux=True)(
        model_params, model_key, window, valid, is_first)
    updates, new_opt = parts.model_opt.update(grad, model_opt, model_params)
    new_params = optax.apply_updates(model_params, updates)
    frozen = jax.lax.stop_gradient(new_params)
    start = jax.tree.map(lambda x: jax.lax.stop_gradient(x.reshape((-1,) + x.shape[2:])),
                         aux.post)                                  # [B * (L + 1), ...]
    n = config.batch_size * (config.seq_len + 1)
    idx = None
    if config.imag_starts is not None and config.imag_starts < n:
      idx = jax.random.permutation(start_key, n)[:config.imag_starts]
      start = jax.tree.map(lambda x: x[idx], start)                # [imag_starts, ...]

    def imagine_fn(k, policy_fn):
      states, actions = wm.imagine(frozen, k, start, policy_fn, horizon)
      feat = wm.features(states)                                    # [N, H + 1, F]
      return im.Imagined(feat=feat, action=actions, reward=wm.reward(frozen, feat[:, 1:]),
                         cont=wm.cont(frozen, feat[:, 1:]),
                         start_cont=wm.cont(frozen, feat[:, 0]))

    replay = None
    if config.actor_critic.replay_scale > 0:
      replay = _replayed(wm, aux.post, rows, idx)
    new_ac, ac_metrics = ac.update(ac_state, imag_key, imagine_fn, replay)
    # Without a valid window (only possible without cross_episodes) nothing changes.
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(valid, n, o), new, old)
    metrics = {**{f"model/{k.removeprefix('wm_')}": v for k, v in aux.metrics.items()},
               **{f"actor_critic/{k}": v for k, v in ac_metrics.items()},
               "model/valid_batch": valid.astype(jnp.float32),
               "model/grad_norm": optax.tree.norm(grad)}
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
    policy = make_policy(parts, state.model_params, state.ac.actor, "explore")
    actor, transitions, _, ended = acting.collect(parts.env, policy, state.actor, collect_key,
                                                  config.train_every)
    buffer = buffer_lib.add_masked(state.buffer, *replay_rows(state.actor, transitions))
    model_params, model_opt, ac_state, metrics = train_step(
        state.model_params, state.model_opt, state.ac, buffer, train_key)
    state = State(buffer=buffer, model_params=model_params, model_opt=model_opt, ac=ac_state,
                  actor=actor, key=state.key, env_steps=state.env_steps + config.train_every,
                  updates=state.updates + 1)
    return state, (metrics, ended)

  def step(state: State) -> tuple[State, dict]:
    key, rounds_key, eval_key = jax.random.split(state.key, 3)
    state, (metrics, ended) = jax.lax.scan(round_, state, jax.random.split(rounds_key, rounds))
    ended = jax.tree.map(jnp.sum, ended)
    # Deterministic evaluation: complete episodes (not stored), vmapped.
    policy = make_policy(parts, state.model_params, state.ac.actor, "eval")
    evaluation = acting.evaluate(parts.env, policy, eval_key, config.eval_episodes,
                                 episode_length)
    eval_returns = evaluation.returns
    out = {name: jnp.mean(value) for name, value in metrics.items()}
    out.update({
        "eval/return": jnp.mean(eval_returns),
        "eval/return_min": jnp.min(eval_returns),
        "eval/return_max": jnp.max(eval_returns),
        "eval/episode_length": jnp.mean(evaluation.lengths),
        "train/return": ended.mean_return(),
        "train/episode_length": ended.mean_length(),
        "train/episodes": ended.count,
        "env_steps": state.env_steps,
        "updates": state.updates,
        "nonfinite/world_model": tree.nonfinite(state.model_params),
        "nonfinite/actor_critic": tree.nonfinite((state.ac.actor, state.ac.critic)),
    })
    return state._replace(key=key), out

  return step


NONFINITE = {"nonfinite/world_model": "the world-model parameters",
             "nonfinite/actor_critic": "the actor or critic parameters"}


@functools.lru_cache(maxsize=16)
def make(config: Config) -> Algorithm:
  """Dreamer as an `Algorithm` for `mbrl_jax.run.train`: the random prefill in init, then
  `config.num_chunks` chunks, each one compiled call (validated before anything compiles).

  The history holds, per chunk [num_chunks, (S)]: "eval/return" (min, max), "train/return",
  "train/episodes", "env_steps", "updates" and the chunk's mean world-model ("model/...") and
  actor-critic ("actor_critic/...") metrics.
  """
  parts = make_parts(config)
  return Algorithm(name="dreamer", unit="chunk", config=config,
                   init=lambda k: (init(k, config, parts), {}),
                   step=make_step(config, parts), num_chunks=config.num_chunks,
                   nonfinite=NONFINITE)
