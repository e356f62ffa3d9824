"""Parity of our reward/termination fns with Brax envs' own reward and done.

One jitted function per env (Brax compiles are slow on CPU): 50 envs x 20
random-action steps = 1,000 transitions, from perturbed initial states so that
terminations occur, with our rollout's auto-reset and Brax's EpisodeWrapper.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax import envs

NUM_ENVS = 50
NUM_STEPS = 20

# Per env: uniform noise on q, and a velocity kick (rad/s) added to one random
# velocity coordinate for the first fifth of the envs (exercises hopper's
# |qd| < 100 health check).
_PERTURB = {
    'inverted_pendulum': dict(q_noise=0.15, qd_kick=0.0),
    'reacher': dict(q_noise=0.5, qd_kick=0.0),
    'hopper': dict(q_noise=0.25, qd_kick=400.0),
    'walker2d': dict(q_noise=0.3, qd_kick=0.0),
    'halfcheetah': dict(q_noise=0.3, qd_kick=0.0),
}


def _collect(name: str, key: jax.Array):
  env = envs.make(name)  # EpisodeWrapper(1000) around the (patched) Brax env
  base = env.unwrapped
  q_noise, qd_kick = _PERTURB[name]['q_noise'], _PERTURB[name]['qd_kick']
  policy = envs.random_policy(env.action_size)

  def one(k, index):
    k_reset, k_q, k_j, k_roll = jax.random.split(k, 4)
    state = env.reset(k_reset)
    ps = state.pipeline_state
    q = ps.q + jax.random.uniform(k_q, ps.q.shape, minval=-q_noise, maxval=q_noise)
    j = jax.random.randint(k_j, (), 0, ps.qd.shape[0])
    kick = jnp.where(index < NUM_ENVS // 5, qd_kick, 0.0)
    qd = ps.qd.at[j].add(kick)
    if name == 'reacher':  # keep the target where reset put it
      q = q.at[2:].set(ps.q[2:])
    ps = base.pipeline_init(q, qd)
    # pylint: disable-next=protected-access
    state = state.replace(pipeline_state=ps, obs=base._get_obs(ps))
    transitions, _ = envs.rollout(
        env, policy, k_roll, NUM_STEPS, init_state=state
    )
    return transitions

  keys = jax.random.split(key, NUM_ENVS)
  return jax.jit(jax.vmap(one))(keys, jnp.arange(NUM_ENVS))


@pytest.mark.slow
@pytest.mark.parametrize('name', list(_PERTURB))
def test_task_fns_match_brax_env(name):
  tr = _collect(name, jax.random.PRNGKey(0))
  tr = jax.tree.map(np.asarray, tr)
  assert tr.obs.shape[:2] == (NUM_ENVS, NUM_STEPS)
  fns = envs.get_task_fns(name)
  reward = np.asarray(jax.jit(fns.reward_fn)(tr.obs, tr.action, tr.next_obs))
  done = np.asarray(jax.jit(fns.termination_fn)(tr.obs, tr.action, tr.next_obs))
  assert reward.shape == done.shape == (NUM_ENVS, NUM_STEPS)

  assert np.all(np.isfinite(tr.reward))
  # float32 rewards: 1e-5 relative to max(1, |r|), element-wise.
  np.testing.assert_allclose(reward, tr.reward, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(done, tr.terminated)
  assert not tr.truncated.any()  # 20 steps << 1000-step limit

  if name in ('inverted_pendulum', 'hopper', 'walker2d'):
    # Both outcomes occur, so termination parity is not vacuous.
    assert 0.02 < tr.terminated.mean() < 0.98, tr.terminated.mean()
  if name == 'hopper':
    # Some terminations are due to velocities only (|qd| >= 100).
    z, angle = tr.next_obs[..., 1], tr.next_obs[..., 2]
    posture_ok = (z > 0.7) & (np.abs(angle) < 0.2) & (np.abs(tr.next_obs[..., 2:6]) < 100).all(-1)
    assert ((tr.terminated == 1) & posture_ok).any()
