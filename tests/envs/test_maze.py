"""The chapter-8 mazes: layouts, transitions, switching walls, the Brax env and the search
model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax.envs import maze as maze_lib
from mbrl_jax.envs.maze import DOWN, LEFT, RIGHT, UP


def test_shortest_paths_match_the_book():
  dyna = maze_lib.maze("dyna")
  assert maze_lib.shortest_path_length(dyna, maze_lib.walls_at(dyna, 0)) == 14
  blocking = maze_lib.maze("blocking")
  before = maze_lib.shortest_path_length(blocking, maze_lib.walls_at(blocking, 999))
  after = maze_lib.shortest_path_length(blocking, maze_lib.walls_at(blocking, 1000))
  assert (before, after) == (10, 16)     # the right gap closes, a longer way opens left
  shortcut = maze_lib.maze("shortcut")
  assert maze_lib.shortest_path_length(shortcut, maze_lib.walls_at(shortcut, 0)) == 16
  assert maze_lib.shortest_path_length(shortcut, maze_lib.walls_at(shortcut, 3000)) == 10


def test_unknown_maze_names_the_known_ones():
  with pytest.raises(ValueError, match="unknown maze 'nope'; known mazes: dyna, blocking"):
    maze_lib.maze("nope")


def test_specs_are_hashable():
  assert len({maze_lib.maze(n) for n in maze_lib.MAZES}) == 3


def test_walls_and_edges_block():
  spec = maze_lib.maze("dyna")
  walls = maze_lib.walls_at(spec, 0)
  step = jax.jit(lambda c, a: maze_lib.transition(spec, walls, c, a))
  cell = lambda r, c: spec.flat((r, c))
  # (2, 1) -> right is the wall (2, 2): stays.
  assert int(step(cell(2, 1), RIGHT)[0]) == cell(2, 1)
  # (0, 0): up and left leave the grid: stays; down and right move.
  assert int(step(cell(0, 0), UP)[0]) == cell(0, 0)
  assert int(step(cell(0, 0), LEFT)[0]) == cell(0, 0)
  assert int(step(cell(0, 0), DOWN)[0]) == cell(1, 0)
  assert int(step(cell(0, 0), RIGHT)[0]) == cell(0, 1)
  nxt, reward, done = step(cell(2, 0), RIGHT)
  assert (int(nxt), float(reward), bool(done)) == (cell(2, 1), 0.0, False)
  assert nxt.dtype == jnp.int32 and reward.dtype == jnp.float32 and done.dtype == jnp.bool_


def test_goal_gives_reward_and_done():
  spec = maze_lib.maze("dyna")
  walls = maze_lib.walls_at(spec, 0)
  nxt, reward, done = maze_lib.transition(spec, walls, spec.flat((1, 8)), UP)
  assert (int(nxt), float(reward), bool(done)) == (spec.flat(spec.goal), 1.0, True)


def test_walls_switch_at_change_step():
  spec = maze_lib.maze("blocking")
  f = jax.jit(lambda t: maze_lib.walls_at(spec, t))
  before, after = np.asarray(f(999)), np.asarray(f(1000))
  assert before[3, 0] and not before[3, 8]
  assert not after[3, 0] and after[3, 8]
  assert before.sum() == after.sum() == 8
  dyna = maze_lib.maze("dyna")
  np.testing.assert_array_equal(maze_lib.walls_at(dyna, 0), maze_lib.walls_at(dyna, 10**6))


def test_env_reset_and_step_under_jit():
  spec = maze_lib.maze("dyna")
  env = maze_lib.Maze(spec)
  assert (env.num_actions, env.action_size, env.observation_size) == (4, 1, 54)
  state = jax.jit(env.reset)(jax.random.key(0))
  assert int(state.info["cell"]) == spec.flat(spec.start)
  assert state.obs.shape == (54,) and state.obs.dtype == jnp.float32
  assert int(jnp.argmax(state.obs)) == spec.flat(spec.start)
  step = jax.jit(env.step)
  # One shortest path, found by a host BFS over `transition`.
  path = _bfs_actions(spec)
  assert len(path) == 14
  total = 0.0
  for i, a in enumerate(path):
    state = step(state, jnp.int32(a))
    total += float(state.reward)
    assert float(state.done) == (1.0 if i == len(path) - 1 else 0.0)
  assert int(state.info["cell"]) == spec.flat(spec.goal) and total == 1.0


def _bfs_actions(spec):
  """The actions of one shortest path (host BFS over `transition`)."""
  walls = maze_lib.walls_at(spec, 0)
  start, goal = spec.flat(spec.start), spec.flat(spec.goal)
  parent = {start: None}
  frontier = [start]
  while goal not in parent:
    nxt = []
    for c in frontier:
      for a in range(4):
        n = int(maze_lib.transition(spec, walls, c, a)[0])
        if n not in parent:
          parent[n] = (c, a)
          nxt.append(n)
    frontier = nxt
  actions, c = [], goal
  while parent[c] is not None:
    c, a = parent[c]
    actions.append(a)
  return actions[::-1]


def test_recurrent_model_discounts_and_absorbs():
  spec = maze_lib.maze("dyna")
  step = jax.jit(jax.vmap(maze_lib.recurrent_model(spec, maze_lib.walls_at(spec, 0),
                                                   discount=0.95)))
  cells = jnp.array([spec.flat((1, 8)), spec.flat(spec.goal), spec.flat((2, 0))])
  reward, discount, nxt = step(cells, jnp.array([UP, DOWN, RIGHT]))
  np.testing.assert_allclose(reward, [1.0, 0.0, 0.0])
  np.testing.assert_allclose(discount, [0.0, 0.0, 0.95])
  np.testing.assert_array_equal(nxt, [spec.flat(spec.goal), spec.flat(spec.goal),
                                      spec.flat((2, 1))])
