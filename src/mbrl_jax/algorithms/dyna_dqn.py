"""Deep Dyna: DQN on a discrete-action env, with or without imagined transitions from a
learned ensemble, one compiled call per epoch. `model_rollouts=False` is plain DQN on the
same loop, so the two share every env step, update and evaluation and differ only in where
part of each batch comes from.

The name says what it is: the Dyna architecture (Sutton 1990; the tabular version is
`mbrl_jax.algorithms.dyna`) with DQN (`mbrl_jax.policies.dqn`) as its learner, and MBPO's
deep-model machinery (`mbrl_jax.algorithms.mbpo`: ensemble fits, k-step branched rollouts
into a model buffer, `real_ratio` batches) as its planner.

An epoch is `epoch_length` (E) env steps, in blocks of `model_train_every` (F) steps. With
`model_rollouts`, each block starts by refitting the probabilistic ensemble (inputs: the
observation and the one-hot action; targets: the change in observation and the reward) on
every real transition until its holdout patience runs out, warm-started from the previous
fit, then starts M * F branched rollouts of k steps from real observations, acting with the
current epsilon-greedy DQN policy (a random elite per row and step, `mode="ts1"`), each row
stopped by the env's known termination function (`envs.get_task_fns`); the rollouts go to a
ring model buffer of `retain_refits` refits' worth of rollouts. Then F env steps with the
epsilon-greedy policy (epsilon falling linearly with the env step, exploration included),
each followed by G DQN gradient steps on batches of `real_ratio` real transitions and the
rest from the model buffer (every batch real without the model). After the E steps, the
greedy policy is evaluated on `eval_episodes` complete episodes (`envs.acting.evaluate`).

Only termination stops the bootstrap: CartPole-v1's 500-step time limit is a truncation and
DQN bootstraps through it; a model rollout cut after k steps is neither (its last row is an
ordinary transition). Nothing depends on the step count through Python control flow, so
seeds vmap (`mbrl_jax.run.train`).

Example (a minute of CPU, so skipped here):
  >>> from mbrl_jax import run
  >>> keys = jnp.stack([jax.random.key(s) for s in range(3)])
  >>> state, history = run.train(make(PRESETS["cartpole_dyna"]), keys)   # doctest: +SKIP
  >>> history["eval/return"].shape                                       # doctest: +SKIP
  (29, 3)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from brax.envs.base import Env

from mbrl_jax import checks
from mbrl_jax import data as buffer_lib
from mbrl_jax import envs
from mbrl_jax import models
from mbrl_jax import tree
from mbrl_jax.algorithms import mbpo
from mbrl_jax.algorithms.base import Algorithm
from mbrl_jax.envs import acting
from mbrl_jax.policies import dqn as dqn_lib
from mbrl_jax.types import PRNGKey, Transition


@dataclasses.dataclass(frozen=True)
class ModelConfig(mbpo.ModelConfig):
  """The dynamics ensemble: MBPO's config and checks with CartPole-sized defaults (5 members
  of 2 x 64, 4 elites).

  Attributes:
    num_members: ensemble members.
    num_elites: members the rollouts use (the best on holdout).
    hidden_sizes: hidden layer widths of each member.
    activation: hidden activation (see `mbrl_jax.models.ACTIVATIONS`).
    learn_logvar_bounds: learn the soft log-variance bounds.
  """

  num_members: int = 5
  num_elites: int = 4
  hidden_sizes: tuple[int, ...] = (64, 64)


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
  """Branched model rollouts.

  Attributes:
    length: k, model steps per rollout (fewer where the termination function fires).
    rollouts_per_step: M; each refit starts M * model_train_every rollouts.
    retain_refits: the model buffer holds this many refits' rollouts at full length.
  """

  length: int = 1
  rollouts_per_step: int = 20
  retain_refits: int = 4

  def __post_init__(self):
    checks.positive_int(self, "length", "rollouts_per_step", "retain_refits")


# A fit that stops on holdout patience, capped for a CPU: the ensemble is warm-started, so
# later fits stop after a few epochs. (With 2 x 200 members and a 20-epoch cap, three seeds
# vmapped took 43 s per 1000-step epoch at 3000 real transitions on our shared 2-core CPU,
# and a fit's cost grows with the data; CartPole's 4-dimensional dynamics need no more than
# 2 x 64.)
FIT = models.FitConfig(learning_rate=1e-3, weight_decay=5e-5, batch_size=256, max_epochs=10,
                       holdout_ratio=0.2, max_holdout=2000, patience=3)


@dataclasses.dataclass(frozen=True)
class Config:
  """A DQN or Deep Dyna run.

  Attributes:
    env: a discrete-action environment (`mbrl_jax.envs.DISCRETE_ENVS`).
    env_steps: env-step budget, exploration included; the run does
      (env_steps - init_exploration_steps) // epoch_length epochs.
    epoch_length: E, env steps per epoch (one compiled call, then an evaluation).
    init_exploration_steps: env steps with uniformly random actions before the first epoch
      (no updates during them).
    model_rollouts: fit the ensemble and train on its rollouts too (Deep Dyna); False is
      plain DQN, and the model, fit, rollout and real_ratio settings are then unused.
    model_train_every: F, env steps between model refits (and rollout batches); divides E.
    updates_per_step: G, DQN gradient steps after every env step.
    real_ratio: fraction of each DQN batch drawn from real transitions (with the model).
    episode_length: time limit of training and evaluation episodes (None: the env's own,
      500 for cartpole_v1).
    eval_episodes: greedy evaluation episodes after each epoch.
    model: the dynamics ensemble.
    fit: how the ensemble is refitted (on all real data, each time).
    rollout: branched rollouts.
    dqn: the DQN learner and its batch size.
  """

  env: str = "cartpole_v1"
  env_steps: int = 30_000
  epoch_length: int = 1000
  init_exploration_steps: int = 1000
  model_rollouts: bool = False
  model_train_every: int = 250
  updates_per_step: int = 1
  real_ratio: float = 0.5
  episode_length: int | None = None
  eval_episodes: int = 5
  model: ModelConfig = ModelConfig()
  fit: models.FitConfig = FIT
  rollout: RolloutConfig = RolloutConfig()
  dqn: dqn_lib.DQNConfig = dqn_lib.DQNConfig()

  def __post_init__(self):
    if not envs.discrete.is_discrete(self.env):
      why = ("has continuous actions" if self.env in envs.registered_names() else "is unknown")
      checks.fail(self, "env", f"{self.env!r} {why}; DQN needs a discrete-action env: "
                  f"{', '.join(envs.DISCRETE_ENVS)}")
    checks.positive_int(self, "env_steps", "epoch_length", "model_train_every",
                        "updates_per_step", "eval_episodes")
    checks.int_at_least(self, "init_exploration_steps", 0)
    if not isinstance(self.model_rollouts, bool):
      checks.fail(self, "model_rollouts", f"must be True or False, got {self.model_rollouts!r}")
    if self.epochs < 1:
      checks.fail(self, "env_steps", f"({self.env_steps}) leaves no epoch after "
                  f"init_exploration_steps={self.init_exploration_steps} with epoch_length="
                  f"{self.epoch_length}")
    if self.epoch_length % self.model_train_every:
      checks.fail(self, "model_train_every", f"({self.model_train_every}) must divide "
                  f"epoch_length ({self.epoch_length})")
    if self.episode_length is not None:
      checks.positive_int(self, "episode_length")
    checks.in_range(self, "real_ratio", 0.0, 1.0)
    if self.model_rollouts:
      if self.init_exploration_steps < 1:
        checks.fail(self, "init_exploration_steps", "must be >= 1 with model_rollouts: the "
                    "first model fit needs real data")
      if self.real_batch < 1:
        checks.fail(self, "real_ratio", f"({self.real_ratio}) leaves no real transition in a "
                    f"batch of {self.dqn.batch_size}")
      if self.model.num_elites > self.rollout_batch:
        checks.fail(self, "rollout", f"gives fewer rollouts ({self.rollout_batch}) than "
                    f"elites ({self.model.num_elites})")

  @property
  def epochs(self) -> int:
    return (self.env_steps - self.init_exploration_steps) // self.epoch_length

  @property
  def real_capacity(self) -> int:
    return self.init_exploration_steps + self.epochs * self.epoch_length

  @property
  def rollout_batch(self) -> int:
    """Rollouts started at each refit, M * F."""
    return self.rollout.rollouts_per_step * self.model_train_every

  @property
  def model_capacity(self) -> int:
    """Model-buffer slots: `retain_refits` refits of full-length rollouts."""
    return self.rollout_batch * self.rollout.length * self.rollout.retain_refits

  @property
  def real_batch(self) -> int:
    """Real transitions in each DQN batch (all of it without the model)."""
    if not self.model_rollouts:
      return self.dqn.batch_size
    return int(round(self.real_ratio * self.dqn.batch_size))


# Sizes for a 2-core CPU. DQN: Double DQN, 2 x 128 ReLU, Adam 1e-3, batch 64, a hard target
# copy every 250 gradient steps, epsilon 1 -> 0.05 over the first 5000 env steps, 1000 random
# steps first, one gradient step per env step (our choices for a short CartPole budget; the
# Atari paper's are 1M-step schedules). Deep Dyna keeps all of that, adds a 5-member 2 x 64
# ensemble refitted every 250 env steps and 20 rollouts of k = 1 per env step, and doubles G
# with half of each batch imagined, so that it sees as many real transitions per env step as
# DQN and as many imagined ones on top (Dyna-Q's "n planning updates per real step"; the
# control for the extra updates alone is cartpole_dqn with updates_per_step=2).
PRESETS: dict[str, Config] = {
    "cartpole_dqn": Config(env="cartpole_v1", env_steps=30_000, model_rollouts=False),
    "cartpole_dyna": Config(env="cartpole_v1", env_steps=30_000, model_rollouts=True,
                            updates_per_step=2, real_ratio=0.5),
    # Seconds on a CPU: a few epochs of Deep Dyna with small networks (for trying the loop).
    "quick": Config(
        env="cartpole_v1", env_steps=2000, epoch_length=500, init_exploration_steps=500,
        model_rollouts=True, model_train_every=250, updates_per_step=2, real_ratio=0.5,
        eval_episodes=3, model=ModelConfig(num_members=3, num_elites=2, hidden_sizes=(32, 32)),
        fit=models.FitConfig(batch_size=64, max_epochs=5, patience=2),
        rollout=RolloutConfig(length=2, rollouts_per_step=2, retain_refits=2),
        dqn=dqn_lib.DQNConfig(hidden_sizes=(64, 64), epsilon_decay_steps=1000,
                              target_update_every=100)),
}


class State(NamedTuple):
  """What a run carries from epoch to epoch (one seed; vmapped runs add a seed axis).

  Attributes:
    actor: the training env mid-episode, with its running return (`envs.acting.Actor`).
    real: every real transition (int32 actions).
    model_buffer: model rollouts (None without the model).
    fit_state: ensemble parameters and optimizer state (None without the model).
    dqn: the DQN learner.
    key: the run's random key.
    epoch: epochs completed.                                     # [] int32
    env_steps: env steps taken, exploration included.             # [] int32
  """

  actor: acting.Actor
  real: buffer_lib.BufferState
  model_buffer: buffer_lib.BufferState | None
  fit_state: models.FitState | None
  dqn: dqn_lib.DQNState
  key: PRNGKey
  epoch: jax.Array
  env_steps: jax.Array


class Parts(NamedTuple):
  """The pieces a run is built from (the model ones are None without the model)."""

  env: Env
  num_actions: int
  dqn: dqn_lib.DQN
  ensemble: models.Ensemble | None
  trainer: models.Trainer | None
  termination_fn: Callable | None


def make_parts(config: Config) -> Parts:
  env = envs.make(config.env, **({} if config.episode_length is None
                                  else dict(episode_length=config.episode_length)))
  n = envs.num_actions(config.env)
  dqn = dqn_lib.make_dqn(env.observation_size, n, config.dqn)
  if not config.model_rollouts:
    return Parts(env=env, num_actions=n, dqn=dqn, ensemble=None, trainer=None,
                 termination_fn=None)
  m = config.model
  ens = models.make_ensemble(
      env.observation_size, n, num_members=m.num_members, num_elites=m.num_elites,
      hidden_sizes=m.hidden_sizes, activation=m.activation, probabilistic=True,
      predict_reward=True, learn_logvar_bounds=m.learn_logvar_bounds)
  return Parts(env=env, num_actions=n, dqn=dqn, ensemble=ens,
               trainer=models.make_trainer(ens, config.fit),
               termination_fn=envs.get_task_fns(config.env).termination_fn)


def example_transition(obs_size: int) -> Transition:
  """One empty transition with an int32 [] action: the buffers' item."""
  obs = jnp.zeros((obs_size,), jnp.float32)
  scalar = jnp.zeros((), jnp.float32)
  return Transition(obs=obs, action=jnp.zeros((), jnp.int32), reward=scalar, next_obs=obs,
                    terminated=scalar, truncated=scalar)


def uniform_random(num_actions: int) -> acting.Policy:
  """Uniformly random int32 [] actions in [0, num_actions)."""
  return acting.stateless(lambda key, obs: jax.random.randint(key, (), 0, num_actions,
                                                              jnp.int32))


def one_hot_actions(data: Transition, num_actions: int) -> Transition:
  """`data` with its int actions [...] as float32 one-hot vectors [..., num_actions] (the
  ensemble's action input)."""
  return data._replace(action=jax.nn.one_hot(data.action, num_actions, dtype=jnp.float32))


def _init(parts: Parts, config: Config, key: PRNGKey) -> State:
  env = parts.env
  key, reset_key, explore_key, dqn_key, model_key = jax.random.split(key, 5)
  example = example_transition(env.observation_size)
  real = buffer_lib.init(config.real_capacity, example)
  explore = uniform_random(parts.num_actions)
  actor = acting.reset(env, explore, reset_key)
  n = config.init_exploration_steps
  if n:
    actor, tr, _, _ = acting.collect(env, explore, actor, explore_key, n)
    real = buffer_lib.add(real, tr)
  model_buffer = fit_state = None
  if parts.ensemble is not None:
    model_buffer = buffer_lib.init(config.model_capacity, example)
    fit_state = parts.trainer.init(parts.ensemble.init(model_key))
  return State(actor=actor, real=real, model_buffer=model_buffer, fit_state=fit_state,
               dqn=parts.dqn.init(dqn_key), key=key, epoch=jnp.zeros((), jnp.int32),
               env_steps=jnp.asarray(n, jnp.int32))


def init(key: PRNGKey, config: Config) -> State:
  """Fresh learner, model and buffers, after `init_exploration_steps` random env steps."""
  return _init(make_parts(config), config, key)


def evaluate(parts: Parts, config: Config, params: dqn_lib.DQNParams,
             key: PRNGKey) -> acting.EvalResult:
  """`eval_episodes` complete episodes with the greedy policy (epsilon 0): returns and
  lengths [eval_episodes]."""
  length = config.episode_length or envs.default_episode_length(config.env)
  policy = acting.stateless(lambda k, obs: parts.dqn.act(params, k, obs, 0.0))
  return acting.evaluate(parts.env, policy, key, config.eval_episodes, length)


def make_step(config: Config, parts: Parts | None = None
              ) -> Callable[[State], tuple[State, dict]]:
  """Returns `step(state) -> (state, metrics)`: one epoch (E env steps with their refits,
  rollouts and DQN updates, then a greedy evaluation). Pure and unjitted; jit it (donating
  the state) or vmap it over seeds."""
  parts = parts or make_parts(config)
  use_model = parts.ensemble is not None
  env, dqn, n_act = parts.env, parts.dqn, parts.num_actions
  n_real = config.real_batch
  n_model = config.dqn.batch_size - n_real
  refits = config.epoch_length // config.model_train_every

  def env_step(carry, _):
    state, episodes = carry
    key, k_act, k_upd = jax.random.split(state.key, 3)
    eps = dqn.epsilon(state.env_steps)
    policy = acting.stateless(lambda k, obs: dqn.act(state.dqn.params, k, obs, eps))
    actor, tr, _, ended = acting.step(env, policy, state.actor, k_act)
    episodes = jax.tree.map(jnp.add, episodes, ended)
    state = state._replace(actor=actor, real=buffer_lib.add(state.real, tr), key=key,
                           env_steps=state.env_steps + 1)
    window = buffer_lib.capacity(state.model_buffer) if use_model else 0
    sample = lambda k: mbpo.sac_batch(state.real, state.model_buffer, k, n_real, n_model,
                                      window)
    dqn_state, metrics = dqn.update(state.dqn, k_upd, sample, config.updates_per_step)
    return (state._replace(dqn=dqn_state), episodes), {**metrics, "epsilon": eps}

  def block(carry, _):
    """Refit and roll out (with the model), then F env steps."""
    state, episodes = carry
    model_metrics = {}
    if use_model:
      key, fit_key, start_key, roll_key = jax.random.split(state.key, 4)
      fit_state, fit_metrics = parts.trainer.fit(
          fit_key, state.fit_state, one_hot_actions(state.real.data, n_act),
          buffer_lib.valid_mask(state.real))
      params = fit_state.params
      start = buffer_lib.sample(state.real, start_key, config.rollout_batch).obs
      predict = lambda k, obs, a: parts.ensemble.predict(
          params, k, obs, jax.nn.one_hot(a, n_act, dtype=jnp.float32), mode="ts1")
      eps = dqn.epsilon(state.env_steps)
      policy = lambda k, obs: dqn.act(state.dqn.params, k, obs, eps)
      model_buffer, stats = mbpo.branched_rollout(
          predict, policy, parts.termination_fn, roll_key, start, config.rollout.length,
          state.model_buffer)
      state = state._replace(fit_state=fit_state, model_buffer=model_buffer, key=key)
      last = jnp.maximum(fit_metrics.epochs, 1) - 1
      model_metrics = {
          "model/holdout_mse": jnp.mean(fit_metrics.best_holdout_mse),
          "model/train_loss": jnp.nanmean(fit_metrics.train_loss[last]),
          "model/epochs": fit_metrics.epochs,
          "nonfinite/model_fit": fit_metrics.nonfinite_data | fit_metrics.nonfinite_loss,
          "rollout/transitions": stats.transitions,
          "rollout/mean_length": stats.transitions / config.rollout_batch,
          "rollout/reward": stats.reward_sum / jnp.maximum(stats.transitions, 1)}
    (state, episodes), dqn_metrics = jax.lax.scan(
        env_step, (state, episodes), None, length=config.model_train_every)
    dqn_metrics = {f"dqn/{k}": jnp.mean(v) for k, v in dqn_metrics.items()}
    return (state, episodes), {**model_metrics, **dqn_metrics}

  def step(state: State) -> tuple[State, dict]:
    (state, episodes), metrics = jax.lax.scan(block, (state, acting.Episodes.none()), None,
                                              length=refits)
    key, eval_key = jax.random.split(state.key)
    result = evaluate(parts, config, state.dqn.params, eval_key)
    out = {name: (jnp.any(v) if name.startswith("nonfinite/") else jnp.mean(v))
           for name, v in metrics.items()}
    out["dqn/epsilon"] = dqn.epsilon(state.env_steps)      # at the epoch's end
    if use_model:
      out["rollout/buffer_size"] = state.model_buffer.size
      out["nonfinite/model_params"] = tree.nonfinite(state.fit_state.params)
    out.update({
        "eval/return": result.returns.mean(), "eval/return_min": result.returns.min(),
        "eval/return_max": result.returns.max(), "eval/episode_length": result.lengths.mean(),
        "env_steps": state.env_steps,
        "train/return": episodes.mean_return(),
        "train/episode_length": episodes.mean_length(),
        "train/episodes": episodes.count,
        "nonfinite/dqn": tree.nonfinite(state.dqn.params) | ~jnp.isfinite(out["dqn/loss"])})
    return state._replace(key=key, epoch=state.epoch + 1), out

  return step


def nonfinite_flags(use_model: bool) -> dict[str, str]:
  """The step's `nonfinite/...` metrics and the component each covers."""
  flags = {"nonfinite/dqn": "the Q-network parameters or the DQN loss"}
  if use_model:
    flags = {"nonfinite/model_fit": "a model fit's data or loss",
             "nonfinite/model_params": "the model parameters", **flags}
  return flags


@functools.lru_cache(maxsize=16)
def make(config: Config) -> Algorithm:
  """Deep Dyna (or, with `model_rollouts=False`, plain DQN on the same loop) as an
  `Algorithm` for `mbrl_jax.run.train`: random exploration in init, then `config.epochs`
  epochs, each one compiled call.

  The history holds, per epoch [epochs, (S)]: "env_steps", "eval/return" (mean greedy
  return of complete episodes; "eval/return_min", "eval/return_max",
  "eval/episode_length"), "train/return", "train/episode_length", "train/episodes",
  "dqn/loss", "dqn/q_mean" (epoch means), "dqn/epsilon" (at the epoch's end), and with the
  model "model/holdout_mse", "model/train_loss", "model/epochs", "rollout/transitions",
  "rollout/mean_length", "rollout/reward", "rollout/buffer_size"; "nonfinite/..." flags.
  Validated when the config is built, before anything compiles.
  """
  parts = make_parts(config)
  return Algorithm(
      name="dyna_dqn" if config.model_rollouts else "dqn", unit="epoch", config=config,
      init=lambda k: (_init(parts, config, k), {}), step=make_step(config, parts),
      num_chunks=config.epochs, nonfinite=nonfinite_flags(config.model_rollouts))
