"""Tabular Dyna on the chapter-8 grid mazes (Sutton & Barto, *Reinforcement Learning: An
Introduction*, 2nd ed., 2018, section 8.2-8.4): Dyna-Q, Dyna-Q+ and prioritized sweeping, as
pure functions in `lax` loops, many independent runs one `jax.vmap`.

Every real step (the book's "Tabular Dyna-Q" box): act epsilon-greedily on Q, breaking ties
among the maximal actions at random; take the step in the maze (`mbrl_jax.envs.maze`, walls
switching at the maze's `change_step`); update Q by one-step Q-learning (direct RL); record
(r, s') for (s, a) in a deterministic table model; then `planning_steps` updates from it.

* `dyna_q`: each planning update picks a random previously observed state, then a random
  action previously taken in it (the book's box; not uniform over (s, a) pairs), and applies
  the Q-learning update to the modelled (r, s').
* `dyna_q_plus`: as Dyna-Q, with the planning reward r + kappa sqrt(tau), tau the real steps
  since (s, a) was last tried for real. As the book's footnote says, actions never tried
  from a visited state may be picked in planning: they lead back to the same state with
  reward 0 (tau counted from step 0). The bonus is in planning only, not in acting.
* `prioritized_sweeping` (the book's box in section 8.4): no direct update; the real step's
  |TD error| P enters the queue when P > theta; each planning update takes the (s, a) of
  highest priority, updates it, and puts every predecessor (s~, a~) of s whose |TD error|
  exceeds theta in the queue. In JAX the queue is a fixed array of priorities [S, A] (0: not
  queued; re-inserting a queued pair keeps the higher of its two priorities, as the book's
  text says; the reference code replaces it instead),
  the pop is its argmax (lowest index among ties), and the predecessors of s are the pairs
  the CURRENT model sends to s (`seen & model_next == s`), so a moved wall drops stale ones.
  A planning update with an empty queue does nothing.

Defaults follow Example 8.1 (Figure 8.2): alpha 0.1, gamma 0.95, epsilon 0.1, Q = 0. The
book gives no step size or kappa for Examples 8.2/8.3; the presets for Figures 8.4 and 8.5
use those of the reference code that reproduces the figures
(ShangtongZhang/reinforcement-learning-an-introduction, chapter08/maze.py): alpha 1.0 (the
mazes are deterministic), n = 10 and kappa 1e-4 for the blocking maze, n = 50 and kappa 1e-3
for the shortcut maze; theta 1e-4 as its prioritized-sweeping example.

`make(config)` is the `Algorithm` for `mbrl_jax.run.train` (a chunk = `chunk_steps` real
steps); `run_episodes` and `run_steps` are the figures' pure functions (vmap them over keys,
or take the jitted batch from `batched_episodes` / `batched_steps`).

Example:
  >>> config = Config(maze="dyna", planning_steps=50, num_steps=100, chunk_steps=100)
  >>> stats = jax.jit(lambda k: run_episodes(config, k, 10))(jax.random.key(0))
  >>> stats.steps.shape, int(stats.greedy_length[-1])      # the 14-step shortest path
  ((10,), 14)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from mbrl_jax import checks
from mbrl_jax.algorithms.base import Algorithm
from mbrl_jax.envs import maze as maze_lib
from mbrl_jax.policies import tabular
from mbrl_jax.types import PRNGKey

VARIANTS = ("dyna_q", "dyna_q_plus", "prioritized_sweeping")


@dataclasses.dataclass(frozen=True)
class Config:
  """Tabular Dyna on a chapter-8 maze.

  Attributes:
    maze: one of `mbrl_jax.envs.maze.MAZES` ("dyna", "blocking", "shortcut").
    variant: "dyna_q", "dyna_q_plus" or "prioritized_sweeping".
    planning_steps: planning updates n per real step (0: plain one-step Q-learning).
    alpha: step size, in (0, 1].
    gamma: discount, in [0, 1].
    epsilon: exploration probability of epsilon-greedy acting.
    kappa: Dyna-Q+'s bonus weight (planning reward r + kappa sqrt(tau)).
    theta: prioritized sweeping's queue threshold on |TD error|.
    num_steps: real env steps of a run on the driver (all episodes together).
    chunk_steps: real steps per compiled chunk (a driver step); divides num_steps.
    max_episode_length: an episode this long is cut and restarts from the start cell (the
      book has no limit; this only bounds a policy that never reaches the goal).
  """

  maze: str = "dyna"
  variant: str = "dyna_q"
  planning_steps: int = 50
  alpha: float = 0.1
  gamma: float = 0.95
  epsilon: float = 0.1
  kappa: float = 1e-4
  theta: float = 1e-4
  num_steps: int = 3000
  chunk_steps: int = 100
  max_episode_length: int = 100_000

  def __post_init__(self):
    checks.one_of(self, "maze", maze_lib.MAZES)
    checks.one_of(self, "variant", VARIANTS)
    checks.int_at_least(self, "planning_steps", 0)
    if self.variant == "prioritized_sweeping" and self.planning_steps == 0:
      checks.fail(self, "planning_steps", "must be >= 1 for prioritized_sweeping (it has no "
                  "direct update: with 0 it learns nothing), got 0")
    checks.in_range(self, "alpha", 0.0, 1.0, low_open=True)
    checks.in_range(self, "gamma", 0.0, 1.0)
    checks.in_range(self, "epsilon", 0.0, 1.0)
    checks.in_range(self, "kappa", 0.0)
    checks.in_range(self, "theta", 0.0)
    checks.positive_int(self, "num_steps", "chunk_steps", "max_episode_length")
    if self.num_steps % self.chunk_steps:
      checks.fail(self, "num_steps", f"must be a multiple of chunk_steps={self.chunk_steps}, "
                  f"got {self.num_steps}")


PRESETS: dict[str, Config] = {
    # Example 8.1 / Figure 8.2: the Dyna maze, n = 50 (the figure also has n = 0 and 5).
    "figure_8_2": Config(maze="dyna", variant="dyna_q", planning_steps=50, alpha=0.1,
                         num_steps=3000, chunk_steps=100),
    # Example 8.2 / Figure 8.4: the blocking maze, Dyna-Q+ (the figure also has Dyna-Q).
    "figure_8_4": Config(maze="blocking", variant="dyna_q_plus", planning_steps=10,
                         alpha=1.0, kappa=1e-4, num_steps=3000, chunk_steps=100),
    # Example 8.3 / Figure 8.5: the shortcut maze, Dyna-Q+ (the figure also has Dyna-Q).
    "figure_8_5": Config(maze="shortcut", variant="dyna_q_plus", planning_steps=50,
                         alpha=1.0, kappa=1e-3, num_steps=6000, chunk_steps=200),
    # A few seconds: Dyna-Q, n = 5, 1000 steps of the Dyna maze.
    "quick": Config(maze="dyna", variant="dyna_q", planning_steps=5, num_steps=1000,
                    chunk_steps=100),
}
"""Named starting points (`experiments/dyna.py --preset NAME`)."""


class State(NamedTuple):
  """One run of tabular Dyna (S = H * W cells, A = 4 actions).

  Attributes:
    key: the run's random key.
    q: action values.                                                 # [S, A]
    model_reward: the last real reward seen for (s, a) (0 if never).  # [S, A]
    model_next: the last real next cell for (s, a) (s if never).      # [S, A] int32
    seen: (s, a) was tried for real.                                  # [S, A] bool
    last_tried: real step count when (s, a) was last tried (0 never). # [S, A] int32
    priority: prioritized sweeping's queue (0: not queued).           # [S, A]
    cell: the agent's flat cell.                                      # [] int32
    env_steps: real steps taken so far, all episodes.                 # [] int32
    episodes: episodes ended so far.                                  # [] int32
    episode_length: steps of the running episode.                     # [] int32
    episode_return: return of the running episode.                    # []
    cumulative_reward: reward summed over all real steps.             # []
  """

  key: PRNGKey
  q: jax.Array
  model_reward: jax.Array
  model_next: jax.Array
  seen: jax.Array
  last_tried: jax.Array
  priority: jax.Array
  cell: jax.Array
  env_steps: jax.Array
  episodes: jax.Array
  episode_length: jax.Array
  episode_return: jax.Array
  cumulative_reward: jax.Array


class StepInfo(NamedTuple):
  """What one real step reports (all [] per step).

  Attributes:
    reward: the real reward.
    ended: an episode ended at this step (goal or `max_episode_length`).
    length: the ended episode's length (0 when none ended).       # int32
    ret: the ended episode's return (0 when none ended).
  """

  reward: jax.Array
  ended: jax.Array
  length: jax.Array
  ret: jax.Array


def init_state(config: Config, key: PRNGKey) -> State:
  """Q = 0, an empty model, the agent on the start cell."""
  spec = maze_lib.maze(config.maze)
  S, A = spec.num_cells, maze_lib.NUM_ACTIONS
  zeros = jnp.zeros((S, A), jnp.float32)
  zero_i = jnp.zeros((), jnp.int32)
  return State(
      key=key, q=zeros, model_reward=zeros,
      model_next=jnp.broadcast_to(jnp.arange(S, dtype=jnp.int32)[:, None], (S, A)),
      seen=jnp.zeros((S, A), bool), last_tried=jnp.zeros((S, A), jnp.int32),
      priority=zeros, cell=jnp.asarray(spec.flat(spec.start), jnp.int32),
      env_steps=zero_i, episodes=zero_i, episode_length=zero_i,
      episode_return=jnp.zeros((), jnp.float32),
      cumulative_reward=jnp.zeros((), jnp.float32))


def _nth_true(u: jax.Array, cum: jax.Array) -> jax.Array:
  """A uniformly drawn True index of a mask [N] (not all False) from its cumulative count
  `cum` [N] and u ~ U[0, 1): the (k+1)-th True entry for k = floor(u * count). [] int32."""
  k = jnp.minimum(jnp.floor(u * cum[-1]).astype(jnp.int32), cum[-1] - 1)
  return jnp.sum(cum <= k).astype(jnp.int32)


def _pair_sampler(allowed: jax.Array) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
  """`sample(u [2]) -> (s, a)`: a random state with an allowed action, then a random allowed
  action in it (the book's planning sample), for `allowed` [S, A] bool, not all False. The
  states' cumulative count is computed once, outside the planning loop."""
  state_cum = jnp.cumsum(allowed.any(axis=1).astype(jnp.int32))        # [S]
  action_cum = jnp.cumsum(allowed.astype(jnp.int32), axis=1)            # [S, A]

  def sample(u: jax.Array) -> tuple[jax.Array, jax.Array]:
    s = _nth_true(u[0], state_cum)
    return s, _nth_true(u[1], action_cum[s])
  return sample


def _plan(config: Config, state: State, key: PRNGKey) -> tuple[jax.Array, jax.Array]:
  """`planning_steps` planning updates from the model: (q [S, A], priority [S, A])."""
  n, alpha, gamma = config.planning_steps, config.alpha, config.gamma
  if n == 0:
    return state.q, state.priority

  if config.variant == "prioritized_sweeping":
    def sweep(_, carry):
      q, priority = carry
      flat = jnp.argmax(priority)
      s, a = flat // maze_lib.NUM_ACTIONS, flat % maze_lib.NUM_ACTIONS
      queued = priority[s, a] > 0.0
      new_q = tabular.q_learning_update(q, s, a, state.model_reward[s, a],
                                        state.model_next[s, a], alpha=alpha, gamma=gamma)
      new_priority = priority.at[s, a].set(0.0)
      pred = state.seen & (state.model_next == s)                        # [S, A]
      p = jnp.abs(state.model_reward + gamma * jnp.max(new_q[s]) - new_q)  # [S, A]
      new_priority = jnp.where(pred & (p > config.theta), jnp.maximum(new_priority, p),
                               new_priority)
      return (jnp.where(queued, new_q, q), jnp.where(queued, new_priority, priority))
    return jax.lax.fori_loop(0, n, sweep, (state.q, state.priority))

  plus = config.variant == "dyna_q_plus"
  allowed = (jnp.broadcast_to(state.seen.any(axis=1, keepdims=True), state.seen.shape)
             if plus else state.seen)
  tau = (state.env_steps - state.last_tried).astype(jnp.float32)        # [S, A]

  uniforms = jax.random.uniform(key, (n, 2))
  sample = _pair_sampler(allowed)

  def update(i, q):
    s, a = sample(uniforms[i])
    r = state.model_reward[s, a]
    if plus:
      r = r + config.kappa * jnp.sqrt(tau[s, a])
    return tabular.q_learning_update(q, s, a, r, state.model_next[s, a], alpha=alpha,
                                     gamma=gamma)
  return jax.lax.fori_loop(0, n, update, state.q), state.priority


def real_step(config: Config, state: State) -> tuple[State, StepInfo]:
  """One real step: act, learn, model, plan; restart from the start cell after an episode.

  Args:
    config: the algorithm's config.
    state: one run's state.

  Returns:
    (state after the step and its planning, the step's `StepInfo`).
  """
  spec = maze_lib.maze(config.maze)
  key, act_key, plan_key = jax.random.split(state.key, 3)
  s = state.cell
  a = tabular.epsilon_greedy(act_key, state.q[s], config.epsilon)
  s_next, r, done = maze_lib.transition(spec, maze_lib.walls_at(spec, state.env_steps), s, a)
  t = state.env_steps + 1
  q, priority = state.q, state.priority
  if config.variant == "prioritized_sweeping":
    p = jnp.abs(tabular.td_error(q, s, a, r, s_next, config.gamma))
    priority = jnp.where(p > config.theta, priority.at[s, a].max(p), priority)
  else:
    q = tabular.q_learning_update(q, s, a, r, s_next, alpha=config.alpha, gamma=config.gamma)
  state = state._replace(
      key=key, q=q, priority=priority, env_steps=t,
      model_reward=state.model_reward.at[s, a].set(r),
      model_next=state.model_next.at[s, a].set(s_next),
      seen=state.seen.at[s, a].set(True), last_tried=state.last_tried.at[s, a].set(t))
  q, priority = _plan(config, state, plan_key)

  length = state.episode_length + 1
  ret = state.episode_return + r
  ended = done | (length >= config.max_episode_length)
  info = StepInfo(reward=r, ended=ended, length=jnp.where(ended, length, 0),
                  ret=jnp.where(ended, ret, 0.0))
  state = state._replace(
      q=q, priority=priority,
      cell=jnp.where(ended, spec.flat(spec.start), s_next).astype(jnp.int32),
      episodes=state.episodes + ended.astype(jnp.int32),
      episode_length=jnp.where(ended, 0, length).astype(jnp.int32),
      episode_return=jnp.where(ended, 0.0, ret),
      cumulative_reward=state.cumulative_reward + r)
  return state, info


class EpisodeStats(NamedTuple):
  """What `run_episodes` measures, per episode.

  Attributes:
    steps: real steps the episode took (Figure 8.2's y axis).                # [E] int32
    greedy_length: after the episode, the greedy path length of Q from the start under the
      current walls (`greedy_path_length`; `num_cells` when it does not arrive).  # [E] int32
  """

  steps: jax.Array
  greedy_length: jax.Array


def run_episodes(config: Config, key: PRNGKey, num_episodes: int) -> EpisodeStats:
  """Figure 8.2's measurement: the first `num_episodes` episodes of one run.

  Args:
    config: the algorithm (its maze's walls switch as usual; `num_steps` is not used).
    key: one run's key.
    num_episodes: E, a Python int.

  Returns:
    `EpisodeStats` with [E] arrays; each episode is a `lax.while_loop` of real steps (one cut
    at `max_episode_length` counts with that length).
  """
  spec = maze_lib.maze(config.maze)

  def episode(state, _):
    first, start = state.episodes, state.env_steps
    state = jax.lax.while_loop(lambda st: st.episodes == first,
                               lambda st: real_step(config, st)[0], state)
    greedy = greedy_path_length(spec, maze_lib.walls_at(spec, state.env_steps), state.q)
    return state, EpisodeStats(steps=state.env_steps - start, greedy_length=greedy)
  _, stats = jax.lax.scan(episode, init_state(config, key), None, length=num_episodes)
  return stats


def run_steps_with_state(config: Config, key: PRNGKey, num_steps: int
                         ) -> tuple[jax.Array, State]:
  """`run_steps`, also returning the run's final `State`."""
  def body(state, _):
    state, _ = real_step(config, state)
    return state, state.cumulative_reward
  state, cumulative = jax.lax.scan(body, init_state(config, key), None, length=num_steps)
  return cumulative, state


def run_steps(config: Config, key: PRNGKey, num_steps: int) -> jax.Array:
  """Figures 8.4 and 8.5's measurement: the cumulative reward after each real step.

  Args:
    config: the algorithm (`num_steps` is not used).
    key: one run's key.
    num_steps: T, a Python int.

  Returns:
    [T] float32, cumulative reward after steps 1..T.
  """
  return run_steps_with_state(config, key, num_steps)[0]


class StepStats(NamedTuple):
  """What `batched_steps` measures for R runs.

  Attributes:
    cumulative_reward: after each real step (Figures 8.4 and 8.5's y axis).  # [R, T]
    greedy_length: at the end, the greedy path length of Q from the start under the walls
      then in force (`greedy_path_length`).                                   # [R] int32
  """

  cumulative_reward: jax.Array
  greedy_length: jax.Array


@functools.lru_cache(maxsize=32)
def batched_episodes(config: Config, num_episodes: int
                     ) -> Callable[[jax.Array], EpisodeStats]:
  """`run_episodes` jitted and vmapped over keys: `fn(keys [R]) -> EpisodeStats` of [R, E]
  arrays (memoised per config, so a second call compiles nothing)."""
  return jax.jit(jax.vmap(lambda key: run_episodes(config, key, num_episodes)))


@functools.lru_cache(maxsize=32)
def batched_steps(config: Config, num_steps: int) -> Callable[[jax.Array], StepStats]:
  """`run_steps` jitted and vmapped over keys, with the final greedy path length:
  `fn(keys [R]) -> StepStats` (memoised per config)."""
  spec = maze_lib.maze(config.maze)

  def one(key):
    cumulative, state = run_steps_with_state(config, key, num_steps)
    walls = maze_lib.walls_at(spec, state.env_steps)
    return StepStats(cumulative, greedy_path_length(spec, walls, state.q))
  return jax.jit(jax.vmap(one))


def greedy_path_length(spec: maze_lib.MazeSpec, walls: jax.Array, q: jax.Array) -> jax.Array:
  """Steps the greedy policy of `q` (lowest action among ties) takes from the start to the
  goal through `walls`; `spec.num_cells` when it does not arrive within that many.

  Args:
    spec: the maze.
    walls: bool [H, W].
    q: [S, A].

  Returns:
    [] int32.
  """
  S, goal = spec.num_cells, spec.flat(spec.goal)

  def body(_, carry):
    cell, steps = carry
    arrived = cell == goal
    nxt, _, _ = maze_lib.transition(spec, walls, cell, jnp.argmax(q[cell]))
    return jnp.where(arrived, cell, nxt), steps + (~arrived).astype(jnp.int32)
  cell, steps = jax.lax.fori_loop(
      0, S, body, (jnp.asarray(spec.flat(spec.start), jnp.int32), jnp.zeros((), jnp.int32)))
  return jnp.where(cell == goal, steps, S)


NONFINITE = {"nonfinite/q": "the action values Q"}


@functools.lru_cache(maxsize=16)
def make(config: Config) -> Algorithm:
  """Tabular Dyna as an `Algorithm`: each chunk `chunk_steps` real steps.

  The history holds, per chunk [num_chunks, (S)]: "env_steps", "train/episodes" (ended in
  the chunk), "train/return" and "train/episode_length" (their means; NaN when none ended),
  "dyna/steps_per_episode" (the length of the chunk's last ended episode; NaN when none),
  "dyna/cumulative_reward" (over the whole run so far), "dyna/greedy_path_length" (of Q's
  greedy policy under the current walls, `num_cells` when it never arrives).
  """
  spec = maze_lib.maze(config.maze)

  def step(state: State):
    state, info = jax.lax.scan(lambda st, _: real_step(config, st), state, None,
                               length=config.chunk_steps)
    count = info.ended.sum()
    some = count > 0
    last = jnp.max(jnp.where(info.ended, jnp.arange(config.chunk_steps), -1))
    metrics = {
        "env_steps": state.env_steps,
        "train/episodes": count,
        "train/return": jnp.where(some, info.ret.sum() / jnp.maximum(count, 1), jnp.nan),
        "train/episode_length": jnp.where(some, info.length.sum() / jnp.maximum(count, 1),
                                          jnp.nan),
        "dyna/steps_per_episode": jnp.where(some, info.length[jnp.maximum(last, 0)]
                                            .astype(jnp.float32), jnp.nan),
        "dyna/cumulative_reward": state.cumulative_reward,
        "dyna/greedy_path_length": greedy_path_length(
            spec, maze_lib.walls_at(spec, state.env_steps), state.q),
        "nonfinite/q": ~jnp.all(jnp.isfinite(state.q)),
    }
    return state, metrics

  return Algorithm(name="dyna", unit="chunk", config=config,
                   init=lambda key: (init_state(config, key), {}), step=step,
                   num_chunks=config.num_steps // config.chunk_steps, nonfinite=NONFINITE)
