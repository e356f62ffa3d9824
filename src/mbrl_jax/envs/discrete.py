"""Discrete-action environments in pure JAX on Brax's `Env` API, with their true models.

* :class:`CartpoleV1` -- gym's CartPole-v1: the physics of
  :class:`mbrl_jax.envs.CartpoleContinuous` (one definition, its Euler step), two actions
  (0: force -10 N, 1: +10 N), gym's termination (|x| > 2.4 or |theta| > 12 deg), reward 1 per
  step; ``make("cartpole_v1")`` adds gym's 500-step limit.
* :class:`Catch` -- bsuite's Catch: a 10 x 5 board, the ball starts in the top row at a
  random column and falls one row per step, the paddle starts in the middle of the bottom
  row; actions 0 / 1 / 2 move it left / stay / right. After 9 steps the ball reaches the
  bottom row: reward +1 if the paddle is under it, else -1, and the episode ends.

An action is an int32 scalar ``[]`` (``action_size`` is 1: one action per step), and every
discrete env has a ``num_actions`` attribute and a true model for tree search,
``env.model_step(embedding, action) -> (reward, discount, next_embedding)``, on the
observation (the embedding a search carries, one per tree node): reward and discount of the
step, discount 0 on the step that terminates and on every step after it (reward 0 there).
It is pure, unbatched JAX; vmap it for a batch of embeddings.

  >>> env = Catch()
  >>> state = env.reset(jax.random.key(0))
  >>> reward, discount, nxt = env.model_step(state.obs, jnp.int32(1))
  >>> reward.tolist(), discount.tolist(), nxt.shape
  (0.0, 1.0, (50,))
"""

from __future__ import annotations

from typing import Any

from brax.envs.base import State
import jax
import jax.numpy as jnp

from mbrl_jax.envs import cartpole


class CartpoleV1(cartpole.CartpoleContinuous):
  """gym's CartPole-v1 with its two discrete actions, pure JAX.

  * State / obs: ``[x, x_dot, theta, theta_dot]`` float32 [4] (obs == state).
  * Action: int32 [] in {0, 1}: force -10 N or +10 N (gym's ``force_mag``).
  * Dynamics: :meth:`CartpoleContinuous.physics_step` (gym's equations, Euler, tau 0.02).
  * Reward 1.0 on every step; done when the NEXT state has |x| > 2.4 or |theta| > 12 deg
    (:func:`mbrl_jax.envs.cartpole.cartpole_continuous_termination`).
  * Reset: every component ~ U[-0.05, 0.05]; time limit: ``make('cartpole_v1')`` adds 500.
  """

  num_actions = 2

  def force(self, action: jax.Array) -> jax.Array:
    """int [] action -> force in newtons, []: 0 -> -force_mag, 1 -> +force_mag."""
    return jnp.where(action == 1, self.force_mag, -self.force_mag).astype(jnp.float32)

  def step(self, state: State, action: jax.Array) -> State:
    q = state.pipeline_state  # [4]
    next_q = self.physics_step(q, self.force(action))
    done = cartpole.cartpole_continuous_termination(q, action, next_q)
    return state.replace(pipeline_state=next_q, obs=next_q,
                         reward=jnp.ones((), jnp.float32), done=done)

  def model_step(self, embedding: jax.Array, action: jax.Array
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The true model on the obs: (reward [], discount [], next obs [4]).

    Reward 1 and discount 0 on the step whose next state is out of bounds; from an
    already out-of-bounds state reward 0 and discount 0 (the episode had ended).
    """
    next_q = self.physics_step(embedding, self.force(action))
    ended = cartpole.cartpole_continuous_termination(embedding, action, embedding) > 0.5
    ends = cartpole.cartpole_continuous_termination(embedding, action, next_q) > 0.5
    reward = jnp.where(ended, 0.0, 1.0).astype(jnp.float32)
    discount = jnp.where(ended | ends, 0.0, 1.0).astype(jnp.float32)
    return reward, discount, next_q


# ------------------------------------------------------------------------------
# Catch (bsuite).
# ------------------------------------------------------------------------------


def catch_decode(obs: jax.Array, rows: int, columns: int
                 ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """A Catch board [rows * columns] -> (ball_row, ball_col, paddle_col, caught), int32 [].

  The ball is the one 1 above the bottom row; when there is none it has reached the bottom
  row: then a single 1 there means the paddle is under it (``caught`` True) and two mean it
  was missed (the ball's column is then the one that is not the paddle's; which is which
  cannot be told from the board and does not matter: the episode is over).
  """
  board = obs.reshape(rows, columns)
  above = board[:-1]
  falling = jnp.any(above > 0.5)
  flat = jnp.argmax(above.reshape(-1) > 0.5)
  bottom = board[-1] > 0.5
  paddle = jnp.argmax(bottom).astype(jnp.int32)
  ball_row = jnp.where(falling, flat // columns, rows - 1).astype(jnp.int32)
  ball_col = jnp.where(falling, flat % columns, paddle).astype(jnp.int32)
  caught = (~falling) & (bottom.sum() == 1)
  return ball_row, ball_col, paddle, caught


def catch_board(ball_row: jax.Array, ball_col: jax.Array, paddle_col: jax.Array, rows: int,
                columns: int) -> jax.Array:
  """(ball_row, ball_col, paddle_col) -> the flattened board, float32 [rows * columns]."""
  board = jnp.zeros((rows, columns), jnp.float32)
  board = board.at[ball_row, ball_col].set(1.0)
  board = board.at[rows - 1, paddle_col].set(1.0)
  return board.reshape(-1)


def catch_reward(obs: jax.Array, action: jax.Array, next_obs: jax.Array, *, rows: int = 10,
                 columns: int = 5) -> jax.Array:
  """Catch's reward from the NEXT board: +1 caught, -1 missed, 0 while the ball falls.

  Args: obs [..., R*C] (unused), action [...] (unused), next_obs [..., R*C].
  Returns float32 [...].
  """
  del obs, action
  board = next_obs.reshape(next_obs.shape[:-1] + (rows, columns))
  landed = ~jnp.any(board[..., :-1, :] > 0.5, axis=(-2, -1))
  caught = jnp.sum(board[..., -1, :] > 0.5, axis=-1) == 1
  return jnp.where(landed, jnp.where(caught, 1.0, -1.0), 0.0).astype(jnp.float32)


def catch_termination(obs: jax.Array, action: jax.Array, next_obs: jax.Array, *,
                      rows: int = 10, columns: int = 5) -> jax.Array:
  """1.0 once the ball is in the bottom row of the NEXT board, else 0.0; float32 [...]."""
  del obs, action
  board = next_obs.reshape(next_obs.shape[:-1] + (rows, columns))
  return (~jnp.any(board[..., :-1, :] > 0.5, axis=(-2, -1))).astype(jnp.float32)


class Catch(cartpole._VectorStateEnv):  # pylint: disable=protected-access
  """bsuite's Catch (Osband et al., 2020), pure JAX.

  * pipeline_state: ``[ball_row, ball_col, paddle_col]`` int32 [3].
  * obs: the board flattened, float32 [rows * columns] (ball and paddle 1, the rest 0).
  * Action: int32 [] in {0, 1, 2}: paddle left / stay / right (clipped to the board).
  * Step: the paddle moves, then the ball falls one row. When it reaches the bottom row
    (after rows - 1 = 9 steps) the reward is +1 if the paddle is in its column, else -1, and
    done is 1; every other step has reward 0.
  * Reset: ball in row 0 at a uniformly random column; paddle at column columns // 2.
  """

  num_actions = 3

  def __init__(self, rows: int = 10, columns: int = 5):
    self.rows = rows
    self.columns = columns

  @property
  def observation_size(self) -> int:
    return self.rows * self.columns

  def _next(self, ball_row: jax.Array, ball_col: jax.Array, paddle: jax.Array,
            action: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    paddle = jnp.clip(paddle + action.astype(jnp.int32) - 1, 0, self.columns - 1)
    ball_row = jnp.minimum(ball_row + 1, self.rows - 1)
    landed = ball_row == self.rows - 1
    reward = jnp.where(landed, jnp.where(paddle == ball_col, 1.0, -1.0), 0.0)
    return ball_row, paddle, reward.astype(jnp.float32), landed

  def reset(self, rng: jax.Array) -> State:
    ball_col = jax.random.randint(rng, (), 0, self.columns, jnp.int32)
    q = jnp.stack([jnp.int32(0), ball_col, jnp.int32(self.columns // 2)])
    return self._state(q, catch_board(*q, self.rows, self.columns), 0.0, 0.0)

  def step(self, state: State, action: jax.Array) -> State:
    ball_row, ball_col, paddle = state.pipeline_state
    ball_row, paddle, reward, landed = self._next(ball_row, ball_col, paddle, action)
    q = jnp.stack([ball_row, ball_col, paddle])
    return state.replace(pipeline_state=q, obs=catch_board(*q, self.rows, self.columns),
                         reward=reward, done=landed.astype(jnp.float32))

  def model_step(self, embedding: jax.Array, action: jax.Array
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The true model on the board: (reward [], discount [], next board [rows * columns]).

    From a board whose ball has already landed: reward 0, discount 0, the board unchanged.
    """
    ball_row, ball_col, paddle, _ = catch_decode(embedding, self.rows, self.columns)
    ended = ball_row == self.rows - 1
    next_row, next_paddle, reward, landed = self._next(ball_row, ball_col, paddle, action)
    board = catch_board(next_row, ball_col, next_paddle, self.rows, self.columns)
    reward = jnp.where(ended, 0.0, reward).astype(jnp.float32)
    discount = jnp.where(ended | landed, 0.0, 1.0).astype(jnp.float32)
    return reward, discount, jnp.where(ended, embedding, board)


DISCRETE_ENVS = ("cartpole_v1", "catch")
"""Registered envs with discrete actions (int32 [] actions, `num_actions`, `model_step`)."""

_NUM_ACTIONS = {"cartpole_v1": CartpoleV1.num_actions, "catch": Catch.num_actions}


def num_actions(name: str, **env_kwargs: Any) -> int:
  """How many discrete actions env `name` has.

  Raises:
    ValueError: `name` is not a discrete env (the message lists those that are).
  """
  del env_kwargs
  if name not in _NUM_ACTIONS:
    raise ValueError(f"{name!r} is not a discrete-action env; discrete envs: "
                     f"{', '.join(DISCRETE_ENVS)}")
  return _NUM_ACTIONS[name]


def is_discrete(name: str) -> bool:
  """True for the envs in `DISCRETE_ENVS`."""
  return name in DISCRETE_ENVS
