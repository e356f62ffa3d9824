"""Tabular action values: epsilon-greedy acting with random tie-breaking and the one-step
Q-learning update (Sutton & Barto, 2nd ed., eq. 6.8), on a Q table [S, A].

Random tie-breaking matters: with a zero-initialised table every action ties, and always
taking the first one (what `argmax` does) makes the early episodes of the chapter-8 mazes
far longer than the book's.

Example:
  >>> q = jnp.zeros((3, 2))
  >>> q = q_learning_update(q, 0, 1, 1.0, 2, alpha=0.5, gamma=0.9)
  >>> float(q[0, 1])
  0.5
  >>> int(epsilon_greedy(jax.random.key(0), q[0], 0.0))    # the one greedy action
  1
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mbrl_jax.types import PRNGKey


def greedy_random_ties(key: PRNGKey, q_row: jax.Array) -> jax.Array:
  """A maximising action, uniformly among ties.

  Args:
    key: random key.
    q_row: [A] action values of one state.

  Returns:
    [] int32 action.
  """
  best = q_row == jnp.max(q_row)
  return jax.random.categorical(key, jnp.where(best, 0.0, -jnp.inf)).astype(jnp.int32)


def epsilon_greedy(key: PRNGKey, q_row: jax.Array, epsilon: float | jax.Array) -> jax.Array:
  """With probability epsilon a uniform action, else a greedy one with random ties.

  Args:
    key: random key.
    q_row: [A] action values of one state.
    epsilon: exploration probability.

  Returns:
    [] int32 action.
  """
  explore_key, random_key, greedy_key = jax.random.split(key, 3)
  random_action = jax.random.randint(random_key, (), 0, q_row.shape[-1], jnp.int32)
  return jnp.where(jax.random.uniform(explore_key) < epsilon, random_action,
                   greedy_random_ties(greedy_key, q_row))


def td_error(q: jax.Array, s: jax.Array | int, a: jax.Array | int, r: jax.Array | float,
             s_next: jax.Array | int, gamma: float) -> jax.Array:
  """The Q-learning TD error r + gamma max_a' Q(s', a') - Q(s, a): [] float.

  Terminal states need no flag when no transition out of them is ever learned: their row
  of Q then stays zero (the chapter-8 mazes' goal).
  """
  return r + gamma * jnp.max(q[s_next]) - q[s, a]


def q_learning_update(q: jax.Array, s: jax.Array | int, a: jax.Array | int,
                      r: jax.Array | float, s_next: jax.Array | int, *, alpha: float,
                      gamma: float) -> jax.Array:
  """Q(s, a) += alpha (r + gamma max_a' Q(s', a') - Q(s, a)).

  Args:
    q: [S, A] action values.
    s, a: the state and action updated ([] int).
    r: the reward ([] float).
    s_next: the next state ([] int).
    alpha: step size.
    gamma: discount.

  Returns:
    [S, A], the updated table.
  """
  return q.at[s, a].add(alpha * td_error(q, s, a, r, s_next, gamma))
