"""Trajectory evaluation against hand-computed returns, the particles' member assignment, MPC
on the true cart-pole, and MPC carrying iCEM's elites from step to step."""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax import envs
from mbrl_jax import planning
from mbrl_jax.planning.mpc import make_mpc
from mbrl_jax.models import make_ensemble
from mbrl_jax.planning import TrajectoryStats
from mbrl_jax.planning.trajectory import NAN_RETURN, make_trajectory_evaluator


class Step(NamedTuple):
  next_obs: jax.Array
  reward: jax.Array | None


def _integrator(params, key, obs, action):
  """x' = x + a (+ params * noise); the learned reward is x'."""
  noise = params * jax.random.normal(key, obs.shape)
  nxt = obs + action + noise
  return Step(nxt, nxt[:, 0])


def test_returns_match_hand_computation():
  ev = make_trajectory_evaluator(_integrator, num_particles=3, discount=0.5)
  actions = jnp.array([[[1.0], [2.0], [-1.0]], [[0.0], [0.0], [0.0]]])     # [P=2, H=3, A=1]
  out = ev(0.0, jax.random.key(0), jnp.array([1.0]), actions)
  # sequence 0: x = 2, 4, 3 -> 2 + 0.5 * 4 + 0.25 * 3; sequence 1: x = 1, 1, 1.
  np.testing.assert_allclose(out.returns, [2 + 2 + 0.75, 1 + 0.5 + 0.25], rtol=1e-6)
  np.testing.assert_allclose(out.std, 0.0, atol=1e-6)


def test_known_reward_and_termination_stop_reward_collection():
  reward_fn = lambda o, a, n: jnp.ones(())
  done_fn = lambda o, a, n: n[0] >= 3.0
  ev = make_trajectory_evaluator(_integrator, reward_fn=reward_fn, termination_fn=done_fn,
                                 num_particles=1)
  actions = jnp.ones((1, 6, 1))
  out = ev(0.0, jax.random.key(0), jnp.array([0.0]), actions)
  # x = 1, 2, 3 (terminates, its reward still counts), then nothing: 3.
  np.testing.assert_allclose(out.returns, [3.0])


def test_terminal_value_risk_and_uncertainty_penalty():
  value = lambda vp, x: vp * x[:, 0]
  ev = make_trajectory_evaluator(_integrator, num_particles=2000, terminal_value_fn=value,
                                 discount=1.0, risk_coef=1.0,
                                 uncertainty_fn=lambda p, x, a: jnp.full(x.shape[:1], 0.25),
                                 uncertainty_coef=2.0)
  actions = jnp.zeros((1, 2, 1))
  out = ev(1.0, jax.random.key(0), jnp.array([0.0]), actions, 10.0)
  # x1 = e1, x2 = e1 + e2 (std 1 noise); return = x1 + x2 + 10 x2 - 2 * 0.25 * 2.
  # mean -1, std of (2 e1 + e2 + 10 (e1 + e2)) = sqrt(12^2 + 11^2) = 16.28
  np.testing.assert_allclose(out.mean, -1.0, atol=1.5)
  np.testing.assert_allclose(out.std, np.sqrt(12 ** 2 + 11 ** 2), rtol=0.05)
  np.testing.assert_allclose(out.returns, out.mean - out.std, rtol=1e-6)


def test_nan_returns_are_replaced():
  bad = lambda p, k, o, a: Step(o * jnp.nan, None)
  ev = make_trajectory_evaluator(bad, reward_fn=lambda o, a, n: n[0], num_particles=1)
  out = ev(0.0, jax.random.key(0), jnp.array([1.0]), jnp.zeros((2, 3, 1)))
  np.testing.assert_array_equal(out.returns, NAN_RETURN)


def test_bad_arguments():
  with pytest.raises(ValueError, match="num_particles"):
    make_trajectory_evaluator(_integrator, num_particles=0)
  with pytest.raises(ValueError, match="discount"):
    make_trajectory_evaluator(_integrator, discount=1.5)
  with pytest.raises(ValueError, match="uncertainty_fn"):
    make_trajectory_evaluator(_integrator, uncertainty_coef=1.0)
  ev = make_trajectory_evaluator(_integrator)
  with pytest.raises(ValueError, match=r"\[P, H, A\]"):
    ev(0.0, jax.random.key(0), jnp.zeros(1), jnp.zeros((3, 1)))


def test_noise_drawn_before_the_rollout_is_what_the_model_would_draw():
  # One member, so that particles differ only by the aleatoric noise.
  ens = make_ensemble(2, 1, num_members=1, hidden_sizes=(8,), init_min_logvar=-3.0)
  params = ens.init(jax.random.key(0))
  model = functools.partial(ens.predict, mode="tsinf")
  assert ens.noise_size == 2                                  # the ensemble says what it draws
  assert make_ensemble(2, 1, num_members=2, hidden_sizes=(8,),
                       probabilistic=False).noise_size == 0
  reward = lambda o, a, n: n[0]
  up_front = make_trajectory_evaluator(model, reward_fn=reward, num_particles=4,
                                       noise_size=ens.noise_size)
  own = make_trajectory_evaluator(model, reward_fn=reward, num_particles=4)   # noise_size=0
  mean_only = make_trajectory_evaluator(functools.partial(model, sample=False),
                                        reward_fn=reward, num_particles=4)
  actions = jax.random.uniform(jax.random.key(1), (3, 5, 1), minval=-1, maxval=1)
  args = (params, jax.random.key(2), jnp.array([0.1, -0.2]), actions)
  a, b, c = up_front(*args), own(*args), mean_only(*args)
  np.testing.assert_allclose(a.mean, b.mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(a.std, b.std, rtol=1e-4, atol=1e-6)
  assert (np.asarray(a.std) > 1e-3).all()                     # the particles were sampled
  np.testing.assert_allclose(c.std, 0.0, atol=1e-6)
  with pytest.raises(ValueError, match="noise_size"):
    make_trajectory_evaluator(model, noise_size=-1)
  with pytest.raises(ValueError, match="noise_size"):
    make_trajectory_evaluator(model, noise_size=True)
  looped = make_trajectory_evaluator(model, reward_fn=reward, num_particles=4, unroll=1,
                                     noise_size=ens.noise_size)
  np.testing.assert_allclose(looped(*args).mean, a.mean, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="unroll"):
    make_trajectory_evaluator(model, unroll=0)


# --- Which member a particle uses --------------------------------------------------------

_E = 3


def _row_member_model(params, key, obs, action):
  """A stand-in for an ensemble's tsinf rule: row r steps with member r % 3, and the step
  reveals it (x' = x + 10^member)."""
  del params, key, action
  member = jnp.arange(obs.shape[0]) % _E
  return Step(obs + (10.0 ** member)[:, None], None)


def _member_returns(assignment, key, sequences=12, particles=1, horizon=4):
  ev = make_trajectory_evaluator(_row_member_model, reward_fn=lambda o, a, n: n[0] - o[0],
                                 num_particles=particles, member_assignment=assignment)
  actions = jnp.zeros((sequences, horizon, 1))
  return np.asarray(jax.jit(ev)(None, key, jnp.zeros(1), actions).mean)


def test_fixed_member_assignment_is_row_mod_members():
  returns = _member_returns("fixed", jax.random.key(0))
  # Particle p (K = 1) on row p: member p % 3 at every one of the 4 steps.
  np.testing.assert_allclose(returns, 4 * 10.0 ** (np.arange(12) % _E))
  np.testing.assert_allclose(_member_returns("fixed", jax.random.key(1)), returns)


def test_random_member_assignment_is_a_permutation_fixed_over_the_horizon():
  a = _member_returns("random", jax.random.key(0))
  b = _member_returns("random", jax.random.key(1))
  for returns in (a, b):
    # A sum of 4 steps of 1, 10 or 100 is 4 * 10^m only if all 4 steps used member m.
    members = np.log10(returns / 4)
    np.testing.assert_allclose(members, np.round(members), atol=1e-6)
    counts = np.bincount(np.round(members).astype(int), minlength=_E)
    np.testing.assert_array_equal(counts, [4, 4, 4])        # a permutation of the rows
  fixed = 4 * 10.0 ** (np.arange(12) % _E)
  assert not np.array_equal(a, fixed) and not np.array_equal(a, b)   # drawn per evaluation
  with pytest.raises(ValueError, match="member_assignment"):
    make_trajectory_evaluator(_row_member_model, member_assignment="round_robin")


def test_random_assignment_keeps_a_sequences_particles_together():
  """Particle returns go back to their own sequence: with K = 3 particles and an action-
  dependent reward, a sequence's mean does not depend on the layout."""
  model = lambda p, k, o, a: Step(o + a, None)
  ev = lambda assignment: make_trajectory_evaluator(
      model, reward_fn=lambda o, a, n: n[0], num_particles=3, member_assignment=assignment)
  actions = jnp.arange(5.0).reshape(5, 1, 1) * jnp.ones((5, 3, 1))
  args = (None, jax.random.key(0), jnp.zeros(1), actions)
  np.testing.assert_allclose(ev("random")(*args).mean, ev("fixed")(*args).mean)
  np.testing.assert_allclose(ev("random")(*args).std, 0.0, atol=1e-6)


# --- MPC with the true cart-pole dynamics as the model ---------------------------------------

_ENV = envs.make("cartpole_continuous", episode_length=None)
_TASK = envs.get_task_fns("cartpole_continuous")


def _true_model(params, key, obs, action):
  del params, key
  template = _ENV.reset(jax.random.key(0))
  step = lambda o, a: _ENV.step(template.replace(pipeline_state=o, obs=o), a).obs
  return Step(jax.vmap(step)(obs, action), None)


_OPTIMIZERS = {
    "random": dict(population=200),
    "cem": dict(population=100, iterations=3),
    "icem": dict(population=100, iterations=3),
    "mppi": dict(population=100, iterations=3, temperature=0.02),
    "gradient": dict(num_starts=4, num_steps=20),
}


def _smooth_reward(obs, action, next_obs):
  """Upright and centred, differentiable. The env's own reward (+1 while alive) has zero
  gradient almost everywhere (useless to the gradient optimizer) and, over a 10-step horizon,
  does not see the cart drifting towards the end of the rail."""
  return jnp.cos(next_obs[2]) - 0.1 * (next_obs[0] / 2.4) ** 2


@pytest.mark.parametrize("name", sorted(_OPTIMIZERS))
def test_mpc_with_true_dynamics_balances_cartpole(name):
  horizon = 10
  evaluate = make_trajectory_evaluator(_true_model, reward_fn=_smooth_reward,
                                       termination_fn=_TASK.termination_fn, num_particles=1)
  optimizer = planning.make_optimizer(planning.OPTIMIZERS[name](**_OPTIMIZERS[name]),
                                      horizon=horizon, action_size=1)
  mpc = make_mpc(optimizer, evaluate)

  def episode(key):
    env_state = _ENV.reset(key)
    def step(carry, _):
      env_state, mpc_state, alive = carry
      action, mpc_state, _ = mpc.act(mpc_state, None, env_state.obs)
      env_state = _ENV.step(env_state, action)
      alive = alive & (env_state.done == 0)
      return (env_state, mpc_state, alive), alive
    _, alive = jax.lax.scan(step, (env_state, mpc.init(key), jnp.asarray(True)), None, 200)
    return alive.sum()

  steps = int(jax.jit(episode)(jax.random.key(1)))
  assert steps == 200, f"{name}: the pole fell after {steps} steps"


def test_mpc_replans_every_k_steps():
  calls = []
  def evaluate(params, key, obs, actions, value_params=None):
    r = -jnp.sum((actions - obs[0]) ** 2, axis=(1, 2))   # optimum: every action = obs
    return TrajectoryStats(returns=r, mean=r, std=jnp.zeros_like(r))
  optimizer = planning.make_cem(horizon=4, action_size=1, population=50, iterations=3)
  mpc = make_mpc(optimizer, evaluate, replan_every=2)
  state = mpc.init(jax.random.key(0))
  act = jax.jit(mpc.act)
  actions = []
  for obs in [0.5, -0.5, 0.2, 0.9]:
    action, state, info = act(state, None, jnp.array([obs]))
    actions.append(float(action[0]))
    calls.append(bool(np.isfinite(info.best_return)))
  assert calls == [True, False, True, False]
  # Steps 1 and 3 execute the plan made at steps 0 and 2 (for obs 0.5 and 0.2).
  np.testing.assert_allclose(actions, [0.5, 0.5, 0.2, 0.2], atol=0.1)
  with pytest.raises(ValueError, match="replan_every"):
    make_mpc(optimizer, evaluate, replan_every=5)


def test_mpc_carries_icem_elites_to_the_next_step():
  """The elites iCEM keeps at step t are, shifted by the executed action, among the candidates
  evaluated in step t + 1's first iteration; CEM carries only its plan."""
  population, carried, horizon = 20, 2, 4
  first_iteration = []

  def evaluate(params, key, obs, actions, value_params=None):
    if actions.shape[0] == population + carried:               # iteration 0 of iCEM
      jax.debug.callback(lambda x: first_iteration.append(np.asarray(x)), actions)
    r = -jnp.sum((actions - obs[0]) ** 2, axis=(1, 2))
    return TrajectoryStats(returns=r, mean=r, std=jnp.zeros_like(r))

  icem = planning.make_icem(horizon=horizon, action_size=1, population=population,
                            iterations=3, num_elites=4, keep_elite_frac=0.5)
  mpc = make_mpc(icem, evaluate)
  act = jax.jit(mpc.act)
  state = mpc.init(jax.random.key(0))
  assert state.plan_state.elites.shape == (carried, horizon, 1)
  _, state, _ = act(state, None, jnp.array([0.3]))
  elites_t = np.asarray(state.plan_state.elites)               # [2, H, 1] after step t
  _, state, _ = jax.block_until_ready(act(state, None, jnp.array([-0.4])))
  assert len(first_iteration) == 2
  candidates = first_iteration[1]                               # step t + 1, iteration 0
  expected = np.concatenate([elites_t[:, 1:], np.zeros((carried, 1, 1))], axis=1)
  np.testing.assert_allclose(candidates[-carried:], expected, atol=1e-6)
  assert not np.allclose(elites_t, 0.0)                         # real elites, not the init

  cem = make_mpc(planning.make_cem(horizon=horizon, action_size=1, population=20,
                                   iterations=2), evaluate)
  action, cem_state, _ = jax.jit(cem.act)(cem.init(jax.random.key(0)), None, jnp.array([0.3]))
  assert cem_state.plan_state.elites.shape == (0, horizon, 1)
  np.testing.assert_array_equal(cem_state.plan_state.mean, cem_state.plan)
  np.testing.assert_array_equal(action, cem_state.plan[0])
