"""Tabular Dyna: the Q-learning update by hand, the model, prioritized sweeping's queue,
learning on the Dyna maze (n = 50 against n = 0), Dyna-Q+ finding the shortcut, the driver
and the config checks."""

from __future__ import annotations

import dataclasses
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax import run as run_lib
from mbrl_jax.algorithms import dyna
from mbrl_jax.envs import maze as maze_lib
from mbrl_jax.policies import tabular
from tests.conftest import count_compilations

RUNS, EPISODES = 10, 8


def test_q_learning_update_by_hand():
  q = jnp.zeros((3, 4)).at[0, 1].set(0.2).at[2].set(jnp.array([0.4, 1.0, -1.0, 0.0]))
  new = jax.jit(lambda q: tabular.q_learning_update(q, 0, 1, 0.5, 2, alpha=0.5, gamma=0.9))(q)
  # target 0.5 + 0.9 * max(0.4, 1.0, -1.0, 0.0) = 1.4; 0.2 + 0.5 * (1.4 - 0.2) = 0.8.
  np.testing.assert_allclose(new[0, 1], 0.8, rtol=1e-6)
  np.testing.assert_array_equal(new.at[0, 1].set(0.2), q)       # nothing else moved


def test_epsilon_greedy_breaks_ties_at_random():
  keys = jax.random.split(jax.random.key(0), 4000)
  row = jnp.array([1.0, 1.0, 0.0, 1.0])
  greedy = np.asarray(jax.jit(jax.vmap(lambda k: tabular.epsilon_greedy(k, row, 0.0)))(keys))
  counts = np.bincount(greedy, minlength=4) / len(keys)
  assert counts[2] == 0 and np.all(np.abs(counts[[0, 1, 3]] - 1 / 3) < 0.04), counts
  uniform = np.asarray(jax.jit(jax.vmap(lambda k: tabular.epsilon_greedy(k, row, 1.0)))(keys))
  assert np.all(np.abs(np.bincount(uniform, minlength=4) / len(keys) - 0.25) < 0.04)


def test_a_real_step_records_the_model():
  config = dyna.Config(maze="dyna", planning_steps=0, alpha=0.5)
  spec = maze_lib.maze("dyna")
  state0 = dyna.init_state(config, jax.random.key(3))
  state, info = jax.jit(lambda s: dyna.real_step(config, s))(state0)
  (s, a), = np.argwhere(np.asarray(state.seen))
  assert s == spec.flat(spec.start)
  nxt, r, _ = maze_lib.transition(spec, maze_lib.walls_at(spec, 0), s, a)
  assert int(state.model_next[s, a]) == int(nxt) == int(state.cell)
  assert float(state.model_reward[s, a]) == float(r) == float(info.reward) == 0.0
  assert int(state.last_tried[s, a]) == 1 and int(state.env_steps) == 1
  assert int(state.episode_length) == 1 and not bool(info.ended)


def test_reaching_the_goal_updates_q_and_restarts():
  """Next to the goal with Q pointing up: the Q-learning update by hand, then the restart."""
  config = dyna.Config(maze="dyna", planning_steps=5, alpha=0.5, epsilon=0.0)
  spec = maze_lib.maze("dyna")
  below = spec.flat((1, 8))
  state = dyna.init_state(config, jax.random.key(0))
  state = state._replace(cell=jnp.int32(below), q=state.q.at[below, maze_lib.UP].set(0.1))
  state, info = jax.jit(lambda s: dyna.real_step(config, s))(state)
  # Direct update 0.1 + 0.5 (1 - 0.1) = 0.55; five planning updates of the only pair:
  # each halves the distance to 1.
  np.testing.assert_allclose(state.q[below, maze_lib.UP], 1 - 0.9 * 0.5 ** 6, rtol=1e-5)
  assert bool(info.ended) and float(info.ret) == 1.0 and int(info.length) == 1
  assert int(state.cell) == spec.flat(spec.start) and int(state.episodes) == 1


def test_prioritized_sweeping_pops_and_empties_the_queue():
  config = dyna.Config(maze="dyna", variant="prioritized_sweeping", planning_steps=3,
                       alpha=0.5, epsilon=0.0, theta=1e-4)
  spec = maze_lib.maze("dyna")
  below = spec.flat((1, 8))
  state = dyna.init_state(config, jax.random.key(0))
  state = state._replace(cell=jnp.int32(below), q=state.q.at[below, maze_lib.UP].set(0.1))
  state, _ = jax.jit(lambda s: dyna.real_step(config, s))(state)
  # No direct update; |TD error| 0.9 queues the pair, the first sweep pops it (0.1 + 0.45),
  # it has no predecessors, so the queue is empty and the other two sweeps do nothing.
  np.testing.assert_allclose(state.q[below, maze_lib.UP], 0.55, rtol=1e-6)
  assert float(jnp.max(state.priority)) == 0.0


def test_prioritized_sweeping_queues_and_updates_the_predecessors():
  # A = (2, 8) --up--> B = (1, 8) is in the model already (reward 0); the real step is B --up-->
  # the goal (reward 1). Two sweeps: pop (B, up), then its predecessor (A, up).
  config = dyna.Config(maze="dyna", variant="prioritized_sweeping", planning_steps=2,
                       alpha=0.5, gamma=0.95, epsilon=0.0, theta=1e-4)
  spec = maze_lib.maze("dyna")
  a_cell, b_cell = spec.flat((2, 8)), spec.flat((1, 8))
  up = maze_lib.UP
  state = dyna.init_state(config, jax.random.key(0))
  state = state._replace(cell=jnp.int32(b_cell), q=state.q.at[b_cell, up].set(0.1),
                         seen=state.seen.at[a_cell, up].set(True),
                         model_next=state.model_next.at[a_cell, up].set(b_cell))
  state, _ = jax.jit(lambda s: dyna.real_step(config, s))(state)
  # Sweep 1: Q(B, up) = 0.1 + 0.5 (1 - 0.1) = 0.55; (A, up) enters the queue with
  # |0 + 0.95 * 0.55 - 0| = 0.5225. Sweep 2 pops it: Q(A, up) = 0.5 * 0.5225 = 0.26125.
  np.testing.assert_allclose(state.q[b_cell, up], 0.55, rtol=1e-6)
  np.testing.assert_allclose(state.q[a_cell, up], 0.26125, rtol=1e-6)
  # A has no predecessors in the model: the queue is empty again.
  assert float(jnp.max(state.priority)) == 0.0


def test_dyna_q_plus_planning_bonus_and_untried_actions_by_hand():
  """One planning update from a model that knows one pair, (s0, RIGHT) -> s1 with reward
  0.2, tried at step 7 of 16: Dyna-Q replays that pair only; Dyna-Q+ adds kappa sqrt(tau)
  and may also pick s0's untried actions, as self-loops with reward 0 and tau = 16."""
  spec = maze_lib.maze("dyna")
  s0, s1, right = spec.flat((3, 0)), spec.flat((3, 1)), maze_lib.RIGHT
  keys = jax.random.split(jax.random.key(1), 400)

  def planned(variant):
    config = dyna.Config(maze="dyna", variant=variant, planning_steps=1, alpha=0.5,
                         gamma=0.95, kappa=0.1)
    state = dyna.init_state(config, jax.random.key(0))
    state = state._replace(
        seen=state.seen.at[s0, right].set(True),
        model_next=state.model_next.at[s0, right].set(s1),
        model_reward=state.model_reward.at[s0, right].set(0.2),
        last_tried=state.last_tried.at[s0, right].set(7), env_steps=jnp.int32(16))
    return np.asarray(jax.jit(jax.vmap(lambda k: dyna._plan(config, state, k)[0]))(keys))

  # Dyna-Q: Q(s0, RIGHT) = 0.5 * (0.2 + 0.95 * 0) = 0.1 every time, nothing else moves.
  q = planned("dyna_q")
  np.testing.assert_allclose(q[:, s0, right], 0.1, rtol=1e-6)
  assert np.count_nonzero(q) == len(keys)
  # Dyna-Q+: the tried pair gets 0.5 * (0.2 + 0.1 * sqrt(16 - 7)) = 0.25; an untried action
  # a of s0 loops back with 0.5 * (0 + 0.1 * sqrt(16) + 0.95 * 0) = 0.2. One pair per update,
  # always in s0 (the only visited state), the four actions about equally often.
  q = planned("dyna_q_plus")
  changed = np.argwhere(q != 0)                                 # [updates, (key, s, a)]
  np.testing.assert_array_equal(changed[:, 0], np.arange(len(keys)))
  assert np.all(changed[:, 1] == s0)
  values = q[changed[:, 0], changed[:, 1], changed[:, 2]]
  np.testing.assert_allclose(values, np.where(changed[:, 2] == right, 0.25, 0.2), rtol=1e-6)
  counts = np.bincount(changed[:, 2], minlength=maze_lib.NUM_ACTIONS) / len(keys)
  assert np.all(np.abs(counts - 0.25) < 0.07), counts


@pytest.fixture(scope="module")
def dyna_maze_runs():
  keys = jax.random.split(jax.random.key(0), RUNS)
  return {n: dyna.batched_episodes(dyna.Config(maze="dyna", planning_steps=n), EPISODES)(keys)
          for n in (0, 50)}


def test_planning_learns_the_dyna_maze_faster(dyna_maze_runs):
  """Figure 8.2 in small: with n = 50 the episodes are near the 14-step path by the third
  (16-17 with epsilon-greedy detours); without planning they still take hundreds."""
  planned, direct = dyna_maze_runs[50], dyna_maze_runs[0]
  steps50 = np.asarray(planned.steps).mean(0)                    # [E]
  steps0 = np.asarray(direct.steps).mean(0)
  print("mean steps per episode, n=50:", steps50.round(1), "n=0:", steps0.round(1))
  assert steps50[2:].max() <= 22 and steps0[2:].min() >= 100
  greedy = np.asarray(planned.greedy_length)[:, -1]                # [R]
  assert np.all(greedy < spec_cells()) and greedy.min() == 14, greedy
  assert np.asarray(direct.greedy_length)[:, -1].min() == spec_cells()   # none arrives yet


def test_prioritized_sweeping_learns_the_dyna_maze():
  """n = 5 sweeps per step (alpha 0.5, theta 1e-4, as the reference's Example 8.4): short
  episodes and a greedy path to the goal in every run within 8 episodes."""
  keys = jax.random.split(jax.random.key(2), RUNS)
  config = dyna.Config(maze="dyna", variant="prioritized_sweeping", planning_steps=5,
                       alpha=0.5, theta=1e-4)
  stats = dyna.batched_episodes(config, EPISODES)(keys)
  steps = np.asarray(stats.steps).mean(0)
  print("prioritized sweeping, mean steps per episode:", steps.round(1))
  assert steps[-3:].max() <= 25 and steps[1] < steps[0] / 4
  assert np.all(np.asarray(stats.greedy_length)[:, -1] < spec_cells())


def spec_cells() -> int:
  return maze_lib.maze("dyna").num_cells


def test_dyna_q_plus_finds_the_shortcut():
  """Figure 8.5 in small (n = 10, 3 runs): after 6000 steps Dyna-Q+'s greedy path takes the
  10-step shortcut opened at step 3000, Dyna-Q's still the old 16-step way."""
  keys = jax.random.split(jax.random.key(1), 3)
  greedy = {}
  for variant in ("dyna_q", "dyna_q_plus"):
    config = dataclasses.replace(dyna.PRESETS["figure_8_5"], variant=variant,
                                 planning_steps=10)
    greedy[variant] = np.asarray(dyna.batched_steps(config, 6000)(keys).greedy_length)
  print("greedy path lengths after 6000 steps:", greedy)
  assert np.all(greedy["dyna_q_plus"] == 10) and np.all(greedy["dyna_q"] == 16)


def test_driver_compiles_once_and_resumes(tmp_path):
  config = dataclasses.replace(dyna.PRESETS["quick"], num_steps=200, chunk_steps=100)
  keys = jnp.stack([jax.random.key(s) for s in range(2)])
  seen = []
  with count_compilations() as compiles:
    state, history = run_lib.train(dyna.make(config), keys, checkpoint_dir=str(tmp_path),
                                   progress_fn=lambda i, m: seen.append(compiles.count))
  assert len(seen) == 2 and seen[0] > 0 and seen[1] == seen[0]
  np.testing.assert_array_equal(history["env_steps"], [[100, 100], [200, 200]])
  for name in ("train/episodes", "train/return", "dyna/steps_per_episode",
               "dyna/cumulative_reward", "dyna/greedy_path_length", "nonfinite/q"):
    assert history[name].shape == (2, 2), name
  np.testing.assert_array_equal(history["dyna/cumulative_reward"][-1],
                                history["train/episodes"].sum(0))   # reward 1 per episode
  assert dyna.make(config) is dyna.make(config)
  # Killed before its last checkpoint: the resumed run redoes chunk 1 and ends the same.
  shutil.rmtree(tmp_path / "2")
  redone = []
  resumed, again = run_lib.train(dyna.make(config), keys, checkpoint_dir=str(tmp_path),
                                 resume=True, progress_fn=lambda i, m: redone.append(i))
  assert redone == [1]
  for name in history:
    np.testing.assert_array_equal(again[name], history[name], err_msg=name)
  np.testing.assert_array_equal(resumed.q, state.q)


@pytest.mark.parametrize("field,value,message", [
    ("maze", "nope", "dyna.Config.maze 'nope' is unknown; valid: dyna, blocking, shortcut"),
    ("variant", "dyna_z", "dyna.Config.variant 'dyna_z' is unknown"),
    ("planning_steps", -1, "dyna.Config.planning_steps must be an int >= 0"),
    ("alpha", 0.0, r"dyna.Config.alpha must be in \(0, 1\]"),
    ("alpha", 1.5, r"dyna.Config.alpha must be in \(0, 1\]"),
    ("epsilon", -0.1, r"dyna.Config.epsilon must be in \[0, 1\]"),
    ("num_steps", 150, "dyna.Config.num_steps must be a multiple of chunk_steps=100"),
])
def test_bad_config_values_raise(field, value, message):
  with pytest.raises(ValueError, match=message):
    dyna.Config(**{field: value})


def test_prioritized_sweeping_without_planning_is_refused():
  with pytest.raises(ValueError, match=r"^dyna.Config.planning_steps must be >= 1 for "
                     r"prioritized_sweeping \(it has no direct update"):
    dyna.Config(variant="prioritized_sweeping", planning_steps=0)
