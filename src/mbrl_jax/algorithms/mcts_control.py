"""Tree search on the TRUE model of a discrete-action env: no learning, one episode per chunk,
MCTS (MuZero's PUCT) or Gumbel MuZero through `mbrl_jax.planning.make_mcts`, replanned at
every step from the observed state.

Envs: the discrete envs of `mbrl_jax.envs.discrete` (`cartpole_v1`, `catch`; the search
embedding is the observation, the model the env's own `model_step`) and the chapter-8 mazes
(`maze_dyna`, `maze_blocking`, `maze_shortcut`, with their initial walls; the embedding is the
agent's cell, the model `envs.maze.recurrent_model`). Leaves are valued by `value`: "zero",
"rollout" (`rollout_steps` uniformly random actions through the model) or, on a maze,
"maze_distance" (discount ** (BFS steps to the goal - 1), the optimal value: an oracle that
makes the search trivially right, given so the maze example runs with few simulations).
`make(config)` is the `Algorithm` that `mbrl_jax.run.train` drives (seeds vmapped,
checkpoints, NaN stop, progress); `experiments/mcts.py` is its script.

Example (compiling an episode takes a few seconds, so it is skipped here):
  >>> from mbrl_jax import run
  >>> state, history = run.train(make(PRESETS["catch"]), jax.random.key(0))  # doctest: +SKIP
  >>> history["train/return"].shape                                         # doctest: +SKIP
  (4,)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from brax.envs.base import Env

from mbrl_jax import checks
from mbrl_jax import envs
from mbrl_jax.algorithms import mpc_control
from mbrl_jax.algorithms.base import Algorithm
from mbrl_jax.envs import acting
from mbrl_jax.envs import maze as maze_lib
from mbrl_jax.planning import search as search_lib
from mbrl_jax.types import PRNGKey

MAZE_ENVS = tuple(f"maze_{name}" for name in maze_lib.MAZES)
"""The mazes by env name here ("maze_dyna", ...), each with its initial walls."""
CONTROL_ENVS = (*envs.DISCRETE_ENVS, *MAZE_ENVS)
"""Envs MCTS control can act in: discrete actions and a true model."""
VALUES = ("zero", "rollout", "maze_distance")
MAZE_EPISODE_LENGTH = 50


@dataclasses.dataclass(frozen=True)
class Config:
  """True-model tree-search episodes.

  Attributes:
    env: a discrete-action env with a true model (`CONTROL_ENVS`).
    search: "muzero" (PUCT) or "gumbel" (Gumbel MuZero). On catch with random-rollout
      values, 4 seeds x 4 episodes measured: muzero 16 / 16 caught at 8 and 32 simulations,
      gumbel 15 / 16 at 32 but 8 / 16 at 8 (its sequential halving drops an action after one
      noisy rollout, and equal scores go to the lowest action index).
    num_simulations: simulations per step's search.
    discount: per-step discount of the search's returns.
    value: leaf value: "zero", "rollout" (random actions through the true model) or, on a
      maze only, "maze_distance" (the optimal value from BFS distances).
    rollout_steps: length of the random rollouts (value "rollout" only).
    max_depth: deepest node a simulation expands (0: no limit beyond num_simulations).
    pb_c_init: PUCT's c1 (muzero).
    gumbel_scale: scale of the root's Gumbel noise (gumbel; 0 for deterministic planning).
    episodes: chunks of the run, one episode each.
    episode_length: env steps per episode at most (0: the env's default: 500 for
      cartpole_v1, 9 for catch, 50 for a maze).
  """

  env: str = "catch"
  search: str = "muzero"
  num_simulations: int = 32
  discount: float = 1.0
  value: str = "rollout"
  rollout_steps: int = 10
  max_depth: int = 0
  pb_c_init: float = 1.25
  gumbel_scale: float = 1.0
  episodes: int = 4
  episode_length: int = 0

  def __post_init__(self):
    if self.env not in CONTROL_ENVS:
      known = "continuous" if self.env in envs.registered_names() else "unknown"
      checks.fail(self, "env", f"{self.env!r} is {known} here; tree search needs discrete "
                  f"actions and a true model, envs that have them: {', '.join(CONTROL_ENVS)}")
    checks.one_of(self, "search", search_lib.SEARCHES)
    checks.positive_int(self, "num_simulations", "episodes")
    checks.in_range(self, "discount", 0.0, 1.0)
    checks.one_of(self, "value", VALUES)
    if self.value == "maze_distance" and self.env not in MAZE_ENVS:
      checks.fail(self, "value", f"'maze_distance' needs a maze env ({', '.join(MAZE_ENVS)}), "
                  f"got env {self.env!r}")
    checks.int_at_least(self, "rollout_steps", 0)
    if self.value == "rollout" and self.rollout_steps < 1:
      checks.fail(self, "rollout_steps", f"must be >= 1 with value 'rollout', got "
                  f"{self.rollout_steps!r}")
    checks.int_at_least(self, "max_depth", 0)
    checks.int_at_least(self, "episode_length", 0)
    checks.in_range(self, "pb_c_init", 0.0)
    checks.in_range(self, "gumbel_scale", 0.0)


PRESETS: dict[str, Config] = {
    # Catch: 9-step episodes, the landing 9 steps deep; random rollouts value the leaves.
    "catch": Config(env="catch", num_simulations=32, value="rollout", rollout_steps=9,
                    episodes=4),
    # CartPole-v1: 500-step episodes, 1 per step; undiscounted random rollouts of 50 steps
    # look past the tree (4 seeds x 2 episodes: 500 in 7, 380 in one; discount 0.99 with
    # 20-step rollouts: 217-500).
    "cartpole_v1": Config(env="cartpole_v1", num_simulations=32, discount=1.0,
                          value="rollout", rollout_steps=50, episodes=2),
    # The Dyna maze with the optimal leaf value (see the module docstring): 14 steps.
    "maze": Config(env="maze_dyna", num_simulations=64, discount=0.95, value="maze_distance",
                   rollout_steps=0, episodes=2),
}
"""Named starting points (`experiments/mcts.py --preset NAME`)."""


# What a run carries from episode to episode: the same as MPC's (key, episode, env_steps).
State = mpc_control.State


class StepInfo(NamedTuple):
  """The search's diagnostics at one env step (what the policy's `info` holds).

  Attributes:
    root_value: the search's value of the state acted in.              # []
    chosen_visits: fraction of the simulations spent on the action taken. # []
  """

  root_value: jax.Array
  chosen_visits: jax.Array


class Parts(NamedTuple):
  """The env, the search and the map from an observation to the search's root embedding."""

  env: Env
  search: search_lib.Search
  embed: Callable[[jax.Array], Any]
  episode_length: int


def make_parts(config: Config) -> Parts:
  value_fn = None
  if config.env in MAZE_ENVS:
    spec = maze_lib.maze(config.env.removeprefix("maze_"))
    walls = maze_lib.wall_grid(spec, spec.walls)
    env: Env = maze_lib.Maze(spec, walls)
    model_step = maze_lib.recurrent_model(spec, jnp.asarray(walls))
    num_actions = maze_lib.NUM_ACTIONS
    embed = lambda obs: jnp.argmax(obs).astype(jnp.int32)
    length = config.episode_length or MAZE_EPISODE_LENGTH
    if config.value == "maze_distance":
      dist = jnp.asarray(maze_lib.goal_distances(spec, walls))
      goal = spec.flat(spec.goal)
      value_fn = lambda params, cell: jnp.where(
          (cell == goal) | (dist[cell] < 0), 0.0, config.discount ** (dist[cell] - 1))
  else:
    env = envs.make(config.env, episode_length=None)
    model_step = env.model_step
    num_actions = envs.num_actions(config.env)
    embed = lambda obs: obs
    length = config.episode_length or envs.default_episode_length(config.env)
  search = search_lib.make_mcts(
      model_step, num_actions=num_actions, num_simulations=config.num_simulations,
      discount=config.discount, search=config.search, max_depth=config.max_depth or None,
      value_fn=value_fn, rollout_steps=config.rollout_steps if config.value == "rollout" else 0,
      pb_c_init=config.pb_c_init, gumbel_scale=config.gumbel_scale)
  return Parts(env=env, search=search, embed=embed, episode_length=length)


def make_policy(parts: Parts) -> acting.Policy:
  """The search as an `envs.acting.Policy` (true model: no parameters); info `StepInfo`."""

  def act(state, key, obs):
    actions, info = parts.search.plan(None, key, jax.tree.map(lambda x: x[None],
                                                              parts.embed(obs)))
    action = actions[0]
    visits = info.visit_counts[0]
    step_info = StepInfo(root_value=info.root_value[0],
                         chosen_visits=visits[action] / jnp.maximum(visits.sum(), 1))
    return action, state, step_info

  return acting.Policy(init=lambda key: (), act=act)


def init(key: PRNGKey) -> State:
  return State(key=key, episode=jnp.zeros((), jnp.int32), env_steps=jnp.zeros((), jnp.int32))


NONFINITE = {"nonfinite/return": "the episode return",
             "nonfinite/root_value": "the search's root values"}


@functools.lru_cache(maxsize=16)
def make(config: Config) -> Algorithm:
  """True-model tree search as an `Algorithm`: each chunk one episode.

  The history holds, per episode [episodes, (S)]: "train/return", "train/episode_length",
  "env_steps", "search/root_value" (mean over the episode's steps), "search/chosen_visits"
  (mean fraction of the simulations on the action taken).
  """
  parts = make_parts(config)
  policy = make_policy(parts)

  def step(state: State):
    key, ep_key = jax.random.split(state.key)
    ep = acting.episode(parts.env, policy, ep_key, parts.episode_length)
    mean = lambda x: jnp.sum(jnp.where(ep.valid, x, 0.0)) / jnp.maximum(ep.valid.sum(), 1)
    root_value = mean(ep.info.root_value)
    metrics = {"train/return": ep.ret, "train/episode_length": ep.length,
               "env_steps": state.env_steps + ep.length,
               "search/root_value": root_value,
               "search/chosen_visits": mean(ep.info.chosen_visits),
               "nonfinite/return": ~jnp.isfinite(ep.ret),
               "nonfinite/root_value": ~jnp.isfinite(root_value)}
    return State(key=key, episode=state.episode + 1,
                 env_steps=state.env_steps + ep.length), metrics

  return Algorithm(name="mcts_control", unit="chunk", config=config,
                   init=lambda key: (init(key), {}), step=step, num_chunks=config.episodes,
                   nonfinite=NONFINITE)
