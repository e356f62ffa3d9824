"""Tree search through mctx: MCTS on the true Dyna maze acts along a shortest path, Gumbel
search improves on its prior with few simulations, plan compiles once, vmaps over seeds,
takes a learned recurrent_fn, and refuses bad arguments in one line."""


import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

from mbrl_jax import planning
from mbrl_jax.envs import maze as maze_lib
from tests.conftest import count_compilations

DISCOUNT = 0.95


def _greedy_episode(search, step, start, goal, max_steps):
  """Acts with the search's action from `start`, replanning every step: steps to the goal
  (max_steps if never reached), in one compiled scan."""

  def body(carry, key):
    cell, done, steps = carry
    action, _ = search.plan(None, key, cell[None])
    _, _, nxt = step(cell, action[0])
    return (jnp.where(done, cell, nxt), done | (nxt == goal), steps + (~done)), None

  @jax.jit
  def run(key):
    init = (jnp.int32(start), jnp.asarray(False), jnp.int32(0))
    (_, _, steps), _ = jax.lax.scan(body, init, jax.random.split(key, max_steps))
    return steps

  return run


def test_mcts_on_the_true_dyna_maze_takes_the_shortest_path():
  # The search uses the maze's true model, discount 0.95 and a leaf value of
  # 0.95 ** (steps to the goal - 1), the optimal value (BFS distances): a zero value only
  # finds the goal within ~3 steps of it at these sizes, and discount ** manhattan distance
  # is trapped behind the wall at (0, 7) even with 512 simulations, so neither is used.
  spec = maze_lib.maze("dyna")
  walls = maze_lib.walls_at(spec, 0)
  step = maze_lib.recurrent_model(spec, walls)
  dist = jnp.asarray(maze_lib.goal_distances(spec, walls))
  goal = spec.flat(spec.goal)
  value = lambda params, cell: jnp.where(cell == goal, 0.0, DISCOUNT ** (dist[cell] - 1))
  search = planning.make_mcts(step, num_actions=maze_lib.NUM_ACTIONS, num_simulations=64,
                              discount=DISCOUNT, value_fn=value)
  run = _greedy_episode(search, step, spec.flat(spec.start), goal, max_steps=20)
  steps = [int(run(jax.random.key(seed))) for seed in range(3)]
  assert steps == [maze_lib.shortest_path_length(spec, walls)] * 3 == [14] * 3


def test_zero_value_mcts_finds_a_nearby_goal_by_search_alone():
  spec = maze_lib.maze("dyna")
  walls = maze_lib.walls_at(spec, 0)
  step = maze_lib.recurrent_model(spec, walls)
  search = planning.make_mcts(step, num_actions=4, num_simulations=64, discount=DISCOUNT)
  start = spec.flat((3, 8))                       # 3 steps below the goal
  run = _greedy_episode(search, step, start, spec.flat(spec.goal), max_steps=6)
  assert int(run(jax.random.key(0))) == 3


ARM_REWARDS = jnp.array([0.0, 0.3, 1.0, 0.5])
PRIOR_LOGITS = jnp.array([2.0, 1.0, 0.0, 1.0])   # the best arm (2) is the least favoured


def _bandit(**kwargs):
  step = lambda emb, a: (ARM_REWARDS[a], jnp.float32(0.0), emb)
  return planning.make_mcts(step, num_actions=4, discount=1.0, search="gumbel",
                            prior_fn=lambda params, emb: PRIOR_LOGITS, **kwargs)


@pytest.mark.parametrize("num_simulations", [4, 8])
def test_gumbel_search_improves_on_its_prior_with_few_simulations(num_simulations):
  roots = jnp.zeros((64, 1))
  actions, info = jax.jit(_bandit(num_simulations=num_simulations).plan)(
      None, jax.random.key(0), roots)
  prior = jax.nn.softmax(PRIOR_LOGITS)
  assert float(prior[2]) < 0.1
  # The improved policy puts more mass on the best arm than the prior, on every root.
  assert bool(jnp.all(info.action_weights[:, 2] > prior[2] + 0.3))
  assert bool(jnp.all(jnp.argmax(info.action_weights, -1) == 2))
  # With Gumbel noise of scale 1 the action is close to a sample of the improved policy:
  # the best arm most of the time (75-77% measured with this key), far above its prior.
  assert float(jnp.mean(actions == 2)) >= 0.6
  np.testing.assert_array_equal(info.visit_counts.sum(-1), num_simulations)
  # Without the noise the chosen action is the best arm, always.
  actions, _ = _bandit(num_simulations=num_simulations, gumbel_scale=0.0).plan(
      None, jax.random.key(1), roots)
  np.testing.assert_array_equal(actions, 2)


def test_plan_compiles_once_and_vmaps_over_seeds():
  spec = maze_lib.maze("dyna")
  step = maze_lib.recurrent_model(spec, maze_lib.walls_at(spec, 0))
  search = planning.make_mcts(step, num_actions=4, num_simulations=16, discount=DISCOUNT)
  plan = jax.jit(search.plan)
  roots = jnp.arange(8, dtype=jnp.int32) + 9
  actions, info = plan(None, jax.random.key(0), roots)
  assert actions.shape == (8,) and actions.dtype == jnp.int32
  assert info.visit_counts.shape == info.q_values.shape == (8, 4)
  assert info.root_value.shape == info.prior_value.shape == (8,)
  new_roots, new_key = roots + 9, jax.random.key(1)
  with count_compilations() as compiles:
    jax.block_until_ready(plan(None, new_key, new_roots))
  assert compiles.count == 0
  keys = jax.random.split(jax.random.key(2), 3)
  many = jax.jit(jax.vmap(search.plan, (None, 0, 0)))(None, keys, jnp.stack([roots] * 3))
  for s in range(3):
    one = plan(None, keys[s], roots)
    np.testing.assert_array_equal(many[0][s], one[0])
    np.testing.assert_array_equal(many[1].visit_counts[s], one[1].visit_counts)


def test_a_learned_recurrent_fn_plugs_in():
  # A linear "network": embedding [B, 3], reward = embedding[:, 0] * (action - 1).
  def recurrent_fn(params, key, action, embedding):
    del key
    reward = embedding[:, 0] * (action - 1).astype(jnp.float32)
    out = mctx.RecurrentFnOutput(reward=reward, discount=jnp.full_like(reward, 0.9),
                                 prior_logits=jnp.zeros((action.shape[0], 3)) + params,
                                 value=jnp.zeros_like(reward))
    return out, embedding

  def root_fn(params, key, obs):
    del key
    return mctx.RootFnOutput(prior_logits=jnp.zeros((obs.shape[0], 3)) + params,
                             value=jnp.zeros(obs.shape[0]), embedding=obs)

  for search in planning.SEARCHES:
    s = planning.make_mcts(recurrent_fn=recurrent_fn, root_fn=root_fn, num_actions=3,
                           num_simulations=12, search=search, gumbel_scale=0.0)
    obs = jnp.array([[1.0, 0, 0], [-1.0, 0, 0]])
    actions, info = jax.jit(s.plan)(jnp.zeros(()), jax.random.key(0), obs)
    np.testing.assert_array_equal(actions, [2, 0])
    assert info.action_weights.shape == (2, 3)


def test_a_learned_models_discount_is_multiplied_by_the_search_discount():
  # reward = action, the model's discount 0.9, every value 1: a child's Q is
  # reward + search discount 0.5 * 0.9 * 1 = action + 0.45.
  def recurrent_fn(params, key, action, embedding):
    del params, key
    reward = action.astype(jnp.float32)
    out = mctx.RecurrentFnOutput(reward=reward, discount=jnp.full_like(reward, 0.9),
                                 prior_logits=jnp.zeros((action.shape[0], 2)),
                                 value=jnp.ones_like(reward))
    return out, embedding

  def root_fn(params, key, obs):
    del params, key
    return mctx.RootFnOutput(prior_logits=jnp.zeros((obs.shape[0], 2)),
                             value=jnp.ones(obs.shape[0]), embedding=obs)

  s = planning.make_mcts(recurrent_fn=recurrent_fn, root_fn=root_fn, num_actions=2,
                         num_simulations=2, discount=0.5, search="gumbel", gumbel_scale=0.0)
  _, info = jax.jit(s.plan)(None, jax.random.key(0), jnp.zeros((3, 1)))
  np.testing.assert_array_equal(info.visit_counts, 1)          # each root action once
  np.testing.assert_allclose(info.q_values, [[0.45, 1.45]] * 3, rtol=1e-6)


_STEP = lambda emb, a: (jnp.float32(0.0), jnp.float32(1.0), emb)


@pytest.mark.parametrize("kwargs,message", [
    (dict(num_simulations=0), "make_mcts: num_simulations must be an int >= 1, got 0"),
    (dict(num_actions=1), "make_mcts: num_actions must be an int >= 2, got 1"),
    (dict(discount=1.5), "make_mcts: discount must be a number in [0, 1], got 1.5"),
    (dict(search="alphazero"), "make_mcts: search must be one of muzero, gumbel"),
    (dict(max_depth=0), "make_mcts: max_depth must be an int >= 1, got 0"),
    (dict(rollout_steps=-1), "make_mcts: rollout_steps must be an int >= 0"),
    (dict(root_fn=lambda p, k, o: None), "make_mcts: root_fn is for a recurrent_fn"),
    (dict(recurrent_fn=lambda *a: None), "give exactly one of model_step"),
    (dict(dirichlet_alpha=0.0), "make_mcts: dirichlet_alpha must be > 0"),
])
def test_bad_arguments_fail_in_one_line(kwargs, message):
  args = dict(num_actions=2, num_simulations=4, discount=1.0)
  args.update(kwargs)
  with count_compilations() as compiles, pytest.raises(ValueError) as err:
    planning.make_mcts(_STEP, **args)
  assert message in str(err.value) and "\n" not in str(err.value)
  assert compiles.count == 0


def test_integer_search_settings_are_taken_as_floats():
  # mctx asserts float Dirichlet settings while tracing; ints given here must not reach it.
  search = planning.make_mcts(_STEP, num_actions=2, num_simulations=2, discount=1,
                              dirichlet_fraction=0, dirichlet_alpha=1, pb_c_init=1,
                              pb_c_base=19652, temperature=1)
  actions, _ = jax.jit(search.plan)(None, jax.random.key(0), jnp.zeros((2, 1)))
  assert actions.shape == (2,)


def test_random_rollout_values_see_past_the_tree():
  # A chain: action 1 moves right, 0 stays; reward 1 on reaching cell 6 (6 steps away).
  # One simulation per action at the root cannot reach it; rollouts of 8 steps can.
  def step(cell, action):
    nxt = jnp.minimum(cell + action, 6)
    reward = jnp.where((nxt == 6) & (cell < 6), 1.0, 0.0)
    return reward, jnp.where(cell == 6, 0.0, 1.0), nxt

  plain = planning.make_mcts(step, num_actions=2, num_simulations=2, discount=1.0)
  rolled = planning.make_mcts(step, num_actions=2, num_simulations=2, discount=1.0,
                              rollout_steps=8)
  roots = jnp.zeros((64,), jnp.int32)
  _, info = plain.plan(None, jax.random.key(0), roots)
  assert float(jnp.abs(info.q_values).max()) == 0.0
  _, info = rolled.plan(None, jax.random.key(0), roots)
  assert 0.0 < float(info.prior_value.mean()) < 1.0
  # The leaves' values come from rollouts too: some children's Q see the reward.
  assert float(info.q_values.max()) > 0.0 and float(info.q_values.min()) >= 0.0
