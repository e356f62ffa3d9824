"""Grid mazes of Sutton & Barto, *Reinforcement Learning: An Introduction* (2nd ed., 2018),
chapter 8, in pure JAX: the one definition of these mazes for the whole library (tabular
Dyna in `mbrl_jax.algorithms.dyna`, tree search on the same maze).

The layouts are those of the book's Example 8.1 (Figure 8.2, the "Dyna maze"), Example 8.2
(Figure 8.4, the "blocking" maze) and Example 8.3 (Figure 8.5, the "shortcut" maze), checked
against the book's figures and the reference code that reproduces them
(ShangtongZhang/reinforcement-learning-an-introduction, chapter08/maze.py: same start,
goal, obstacles, switch times).

Cells are (row, col) with rows growing downward, (0, 0) top left; a cell's flat index is
`row * width + col`. Actions: 0 up, 1 down, 2 right, 3 left. A move into a wall or off the
grid leaves the agent where it is; reaching the goal gives reward 1 and ends the episode,
every other step gives 0.

Example:
  >>> spec = maze("dyna")
  >>> shortest_path_length(spec, walls_at(spec, 0))
  14
  >>> walls = walls_at(spec, 0)
  >>> start = spec.start[0] * spec.width + spec.start[1]
  >>> int(transition(spec, walls, start, RIGHT)[0])   # (2, 0) -> (2, 1)
  19
"""

from __future__ import annotations

import collections
from typing import Callable, NamedTuple

from brax.envs.base import Env, State
import jax
import jax.numpy as jnp
import numpy as np

NUM_ACTIONS = 4
UP, DOWN, RIGHT, LEFT = 0, 1, 2, 3
# (d_row, d_col) per action.                                   # [4, 2]
_MOVES = np.array([[-1, 0], [1, 0], [0, 1], [0, -1]], np.int32)

Cell = tuple[int, int]


class MazeSpec(NamedTuple):
  """A grid maze, hashable (tuples only), so it can key caches and be a static argument.

  Attributes:
    name: the maze's name in `MAZES`.
    height: rows H.
    width: columns W.
    start: (row, col) every episode starts in.
    goal: (row, col) that ends the episode with reward 1.
    walls: (row, col) cells that cannot be entered, from step 0.
    walls_after: the walls from real step `change_step` on (None: they never change).
    change_step: total real env steps after which `walls_after` replaces `walls`.
  """

  name: str
  height: int
  width: int
  start: Cell
  goal: Cell
  walls: tuple[Cell, ...]
  walls_after: tuple[Cell, ...] | None = None
  change_step: int | None = None

  @property
  def num_cells(self) -> int:
    """S = H * W, the number of (flat) cells, walls included."""
    return self.height * self.width

  def flat(self, cell: Cell) -> int:
    """(row, col) -> row * width + col."""
    return cell[0] * self.width + cell[1]


MAZES: dict[str, MazeSpec] = {
    # Example 8.1 / Figure 8.2: shortest path 14 steps.
    "dyna": MazeSpec(
        name="dyna", height=6, width=9, start=(2, 0), goal=(0, 8),
        walls=((1, 2), (2, 2), (3, 2), (0, 7), (1, 7), (2, 7), (4, 5))),
    # Example 8.2 / Figure 8.4: the gap on the right (3, 8) closes and one opens on the left
    # (3, 0) at step 1000.
    "blocking": MazeSpec(
        name="blocking", height=6, width=9, start=(5, 3), goal=(0, 8),
        walls=tuple((3, c) for c in range(0, 8)),
        walls_after=tuple((3, c) for c in range(1, 9)), change_step=1000),
    # Example 8.3 / Figure 8.5: a shorter path opens on the right at 3000.
    "shortcut": MazeSpec(
        name="shortcut", height=6, width=9, start=(5, 3), goal=(0, 8),
        walls=tuple((3, c) for c in range(1, 9)),
        walls_after=tuple((3, c) for c in range(1, 8)), change_step=3000),
}
"""The book's chapter-8 mazes by name."""


def maze(name: str) -> MazeSpec:
  """The maze called `name` in `MAZES`; ValueError naming the known ones otherwise."""
  if name not in MAZES:
    raise ValueError(f"unknown maze {name!r}; known mazes: {', '.join(MAZES)}")
  return MAZES[name]


def wall_grid(spec: MazeSpec, cells: tuple[Cell, ...]) -> np.ndarray:
  """bool [H, W], True on the given cells (a NumPy constant)."""
  grid = np.zeros((spec.height, spec.width), bool)
  for r, c in cells:
    grid[r, c] = True
  return grid


def walls_at(spec: MazeSpec, step: jax.Array | int) -> jax.Array:
  """The walls in force after `step` real env steps in total: bool [H, W].

  Args:
    spec: the maze.
    step: [] int, real env steps taken so far (all episodes); traced values are fine.

  Returns:
    bool [H, W]: `spec.walls` before `spec.change_step`, `spec.walls_after` from then on.
  """
  before = jnp.asarray(wall_grid(spec, spec.walls))
  if spec.walls_after is None or spec.change_step is None:
    return before
  after = jnp.asarray(wall_grid(spec, spec.walls_after))
  return jnp.where(jnp.asarray(step) >= spec.change_step, after, before)


def transition(spec: MazeSpec, walls: jax.Array, cell: jax.Array | int,
               action: jax.Array | int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One deterministic step of the maze.

  Args:
    spec: the maze (its size and goal).
    walls: bool [H, W], e.g. `walls_at(spec, step)`.
    cell: [] int, the flat cell row * W + col.
    action: [] int in [0, 4): 0 up, 1 down, 2 right, 3 left.

  Returns:
    (next_cell [] int32, reward [] float32, done [] bool): the agent stays put when the move
    leads into a wall or off the grid; reward 1.0 and done when next_cell is the goal.
  """
  cell = jnp.asarray(cell, jnp.int32)
  row, col = cell // spec.width, cell % spec.width
  move = jnp.asarray(_MOVES)[jnp.asarray(action, jnp.int32)]
  nrow = jnp.clip(row + move[0], 0, spec.height - 1)
  ncol = jnp.clip(col + move[1], 0, spec.width - 1)
  blocked = walls[nrow, ncol]
  next_cell = jnp.where(blocked, cell, nrow * spec.width + ncol).astype(jnp.int32)
  done = next_cell == spec.flat(spec.goal)
  return next_cell, done.astype(jnp.float32), done


def goal_distances(spec: MazeSpec, walls: jax.Array | np.ndarray) -> np.ndarray:
  """BFS steps from every flat cell to `spec.goal` through `walls` (on the host).

  Args:
    spec: the maze.
    walls: bool [H, W].

  Returns:
    int [H * W]: the fewest steps to the goal (moves are reversible, so also from the goal);
    -1 for walls and cells that cannot reach it.
  """
  walls = np.asarray(walls, bool)
  dist = np.full(spec.num_cells, -1)
  dist[spec.flat(spec.goal)] = 0
  queue = collections.deque([spec.goal])
  while queue:
    r, c = queue.popleft()
    for dr, dc in _MOVES:
      nr, nc = r + int(dr), c + int(dc)
      if (0 <= nr < spec.height and 0 <= nc < spec.width and not walls[nr, nc]
          and dist[spec.flat((nr, nc))] < 0):
        dist[spec.flat((nr, nc))] = dist[spec.flat((r, c))] + 1
        queue.append((nr, nc))
  return dist


def shortest_path_length(spec: MazeSpec, walls: jax.Array | np.ndarray) -> int:
  """Fewest steps from `spec.start` to `spec.goal` through `walls`, or -1 when the goal
  cannot be reached (`goal_distances` at the start)."""
  return int(goal_distances(spec, walls)[spec.flat(spec.start)])


def recurrent_model(spec: MazeSpec, walls: jax.Array, *, discount: float = 1.0
                    ) -> Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array,
                                                                jax.Array]]:
  """The maze as a pure model for tree search (wrap it into mctx's `recurrent_fn`).

  Args:
    spec: the maze.
    walls: bool [H, W], the walls the model believes in.
    discount: the per-step discount returned while the episode goes on.

  Returns:
    `step(cell, action) -> (reward [] float32, discount [] float32, next_cell [] int32)`,
    unbatched (vmap it over a batch). The step that reaches the goal has discount 0, and
    the goal is absorbing: from it every action stays there with reward 0, discount 0.
  """
  goal = spec.flat(spec.goal)

  def step(cell: jax.Array, action: jax.Array):
    next_cell, reward, done = transition(spec, walls, cell, action)
    at_goal = jnp.asarray(cell) == goal
    next_cell = jnp.where(at_goal, goal, next_cell).astype(jnp.int32)
    reward = jnp.where(at_goal, 0.0, reward).astype(jnp.float32)
    disc = jnp.where(at_goal | done, 0.0, discount).astype(jnp.float32)
    return reward, disc, next_cell

  return step


class Maze(Env):
  """A chapter-8 maze on Brax's `Env` API, with discrete actions.

  * Obs: one-hot float32 [H * W] of the agent's flat cell.
  * Action: an int32 scalar in [0, 4) (0 up, 1 down, 2 right, 3 left). `num_actions` is 4;
    `action_size` is 1 (one action per step), as for every discrete env in `envs.discrete`.
  * `state.info['cell']` (and `pipeline_state`): the flat cell, [] int32.
  * Reward 1.0 and done = 1 on reaching the goal, else 0; moves into walls stay put.
  * The walls are fixed: `walls` given here, or the maze's initial ones. The time-varying
    walls of "blocking" and "shortcut" are applied by the algorithm (`walls_at`,
    `transition`), not by the env.
  """

  def __init__(self, spec: MazeSpec, walls: np.ndarray | jax.Array | None = None):
    self.spec = spec
    self.walls = jnp.asarray(wall_grid(spec, spec.walls) if walls is None else walls, bool)

  @property
  def num_actions(self) -> int:
    return NUM_ACTIONS

  @property
  def observation_size(self) -> int:
    return self.spec.num_cells

  @property
  def action_size(self) -> int:
    return 1

  @property
  def backend(self) -> str:
    return 'jax'

  def _obs(self, cell: jax.Array) -> jax.Array:
    return jax.nn.one_hot(cell, self.spec.num_cells, dtype=jnp.float32)

  def reset(self, rng: jax.Array) -> State:
    del rng
    cell = jnp.asarray(self.spec.flat(self.spec.start), jnp.int32)
    zero = jnp.zeros((), jnp.float32)
    return State(cell, self._obs(cell), zero, zero, {}, {'cell': cell})

  def step(self, state: State, action: jax.Array) -> State:
    cell = state.info['cell']
    next_cell, reward, done = transition(self.spec, self.walls, cell, action)
    return state.replace(pipeline_state=next_cell, obs=self._obs(next_cell), reward=reward,
                         done=done.astype(jnp.float32),
                         info={**state.info, 'cell': next_cell})
