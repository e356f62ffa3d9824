"""COMBO and RAMBO: the CQL term and RAMBO's mixture likelihood against hand computations,
the sign of RAMBO's adversarial gradient (it lowers the policy's value under the model; with
lambda = 0 it is the plain NLL gradient), and each learning on conftest.py's mixed pendulum
set, on the driver with nothing compiled after the first epoch."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax import models
from mbrl_jax import run
from mbrl_jax.algorithms import offline
from mbrl_jax.types import Transition
from tests.algorithms.conftest import last_returns, learn_config, learning_bar
from tests.conftest import count_compilations

pytestmark = pytest.mark.full_compile   # runtime-bound (tests/conftest.py)


def test_cql_penalty_by_hand():
  # C = 2 critics, N = 2 pushed-down states, M = 3 sampled actions; Nd = 2 data rows.
  q_s = jnp.array([[[0.0, 0.0, np.log(2.0)], [1.0, 1.0, 1.0]],
                   [[2.0, 0.0, 0.0], [-1.0, 3.0, 0.0]]])
  q_d = jnp.array([[1.0, 3.0], [0.0, -2.0]])
  # T = 1: critic 0: logsumexp rows log(1 + 1 + 2) = log 4 and 1 + log 3; data mean 2.
  want0 = 0.5 * (np.log(4.0) + 1.0 + np.log(3.0)) - 2.0
  want1 = 0.5 * (np.log(np.exp(2.0) + 2.0) + np.log(np.exp(-1.0) + np.exp(3.0) + 1.0)) + 1.0
  np.testing.assert_allclose(offline.cql_penalty(q_s, q_d), [want0, want1], rtol=1e-6)
  # T = 2: 2 * logsumexp(q / 2): for critic 0's first row 2 log(1 + 1 + sqrt 2).
  got = offline.cql_penalty(q_s, q_d, temperature=2.0)
  want0 = 0.5 * (2.0 * np.log(2.0 + np.sqrt(2.0)) + 2.0 * np.log(3.0 * np.exp(0.5))) - 2.0
  np.testing.assert_allclose(got[0], want0, rtol=1e-6)
  # A soft maximum: never below the hard maximum's mean minus the data mean.
  assert np.all(np.asarray(offline.cql_penalty(q_s, q_d)) >=
                np.asarray(q_s.max(-1).mean(-1) - q_d.mean(-1)))


def test_rambo_log_prob_by_hand():
  # E = 3 members, elites 0 and 2, N = 1 row, D = 2.
  mean = jnp.array([[[0.0, 1.0]], [[9.0, 9.0]], [[1.0, 1.0]]])
  var = jnp.array([[[1.0, 4.0]], [[1.0, 1.0]], [[0.25, 1.0]]])
  y = jnp.array([[0.5, 2.0]])
  out = models.MemberOutput(mean=mean, var=var)
  npdf = lambda x, m, v: np.exp(-0.5 * (x - m) ** 2 / v) / np.sqrt(2 * np.pi * v)
  p0 = npdf(0.5, 0.0, 1.0) * npdf(2.0, 1.0, 4.0)
  p2 = npdf(0.5, 1.0, 0.25) * npdf(2.0, 1.0, 1.0)
  got = jax.jit(offline.rambo_log_prob)(out, jnp.array([0, 2]), y)
  np.testing.assert_allclose(got, [np.log(0.5 * (p0 + p2))], rtol=1e-5)


def test_rambo_advantage_is_standardised():
  adv = offline.rambo_advantage(jnp.array([1.0, 2.0, 3.0]), jnp.array([0.0, 1.0, 0.0]),
                                jnp.array([10.0, 10.0, 0.0]), jnp.zeros(3), 0.5)
  raw = np.array([6.0, 2.0, 3.0])                  # r + 0.5 (1 - term) q_next - q_now
  np.testing.assert_allclose(adv, (raw - raw.mean()) / (raw.std(ddof=1) + 1e-6), rtol=1e-5)


@pytest.fixture(scope="module")
def tiny_model():
  """A fresh 3-member (2 elites) ensemble on O = 2, A = 1, N = 4096 rows around one state,
  targets sampled from it, and a linear value V(s', r) = r - 0.9 s'_0."""
  ens = models.make_ensemble(2, 1, num_members=3, num_elites=2, hidden_sizes=(8,),
                             probabilistic=True, predict_reward=True)
  params = jax.jit(ens.init)(jax.random.key(0))
  n = 2048

  @jax.jit
  def draw(key):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    obs = 0.1 * jax.random.normal(k1, (n, 2))
    action = jax.random.uniform(k2, (n, 1), minval=-1, maxval=1)
    out = ens.apply(params, obs, action)
    member = params.elites[jax.random.randint(k3, (n,), 0, 2)]
    rows = jnp.arange(n)
    noise = jax.random.normal(k4, (n, 3))
    return obs, action, out.mean[member, rows] + jnp.sqrt(out.var[member, rows]) * noise

  obs, action, y = draw(jax.random.key(1))
  data = Transition(obs=obs[:256], action=action[:256], reward=y[:256, 2] + 0.3,
                    next_obs=obs[:256] + y[:256, :2] - 0.2, terminated=jnp.zeros(256),
                    truncated=jnp.zeros(256))
  return ens, params, obs, action, y, data


def _value(y, obs):
  return y[..., 2] - 0.9 * (obs[..., 0] + y[..., 0])


@functools.partial(jax.jit, static_argnums=0)
def _expected_value(ens, params, obs, action):
  """E[V] under the elite mixture, exactly (V is linear in the targets)."""
  out = ens.apply(params, obs, action)
  return jnp.mean(_value(out.mean[params.elites], obs[None]))


@functools.partial(jax.jit, static_argnums=0)
def _grads(ens, params, weight, obs, action, y, adv, data):
  def f(trainable):
    net, lo, hi = trainable
    p = params._replace(net=net, min_logvar=lo, max_logvar=hi)
    return offline.rambo_model_loss(ens, p, weight, obs, action, y, adv, data)[0]
  return jax.grad(f)((params.net, params.min_logvar, params.max_logvar))


def test_rambo_adversarial_step_lowers_the_model_value(tiny_model):
  ens, params, obs, action, y, data = tiny_model
  adv = jax.jit(offline.rambo_advantage)(y[:, 2], jnp.zeros(len(y)),
                                         -0.9 * (obs[:, 0] + y[:, 0]), jnp.zeros(len(y)), 1.0)
  np.testing.assert_allclose(_value(y, obs) - _value(y, obs).mean(),
                             adv * jnp.std(_value(y, obs), ddof=1), atol=1e-4)
  g1 = _grads(ens, params, 1.0, obs, action, y, adv, data)
  g0 = _grads(ens, params, 0.0, obs, action, y, adv, data)
  g_adv = jax.tree.map(lambda a, b: a - b, g1, g0)[0]       # the adversarial term alone
  before = float(_expected_value(ens, params, obs, action))
  for lr in (1e-3, 1e-2):
    lower = jax.tree.map(lambda p, g: p - lr * g, params.net, g_adv)
    after = float(_expected_value(ens, params._replace(net=lower), obs, action))
    assert after < before - 1e-5, (lr, before, after)
    # The opposite step raises it (the sign is the loss's, not chance).
    higher = jax.tree.map(lambda p, g: p + lr * g, params.net, g_adv)
    assert float(_expected_value(ens, params._replace(net=higher), obs, action)) > before


def test_rambo_zero_weight_is_the_plain_nll_gradient(tiny_model):
  ens, params, obs, action, y, data = tiny_model
  adv = jnp.linspace(-1.0, 1.0, len(y))
  g0 = _grads(ens, params, 0.0, obs, action, y, adv, data)

  def nll(trainable):          # the Gaussian NLL written out (fresh params: identity norms)
    net, lo, hi = trainable
    p = params._replace(net=net, min_logvar=lo, max_logvar=hi)
    out = ens.apply(p, data.obs, data.action)
    t = jnp.concatenate([data.next_obs - data.obs, data.reward[:, None]], -1)
    return jnp.sum(jnp.mean(jnp.square(out.mean - t) / out.var + jnp.log(out.var), (1, 2)))

  want = jax.jit(jax.grad(nll))((params.net, params.min_logvar, params.max_logvar))
  for a, b in zip(jax.tree.leaves(g0[0]), jax.tree.leaves(want[0])):
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-6)


def test_config_errors_name_the_field():
  with pytest.raises(ValueError, match="cql_states"):
    offline.Config(algo="combo", cql_states="real")
  with pytest.raises(ValueError, match="cql_temperature"):
    offline.Config(algo="combo", cql_temperature=0.0)
  with pytest.raises(ValueError, match="real_ratio"):
    offline.Config(algo="combo", real_ratio=0.0)
  with pytest.raises(ValueError, match="cql_states 'model' needs model rows"):
    offline.Config(algo="combo", cql_states="model", real_ratio=1.0)
  with pytest.raises(ValueError, match="rambo_adv_steps"):
    offline.Config(algo="rambo", rambo_adv_steps=-1)
  with pytest.raises(ValueError, match="rambo_adv_lr"):
    offline.Config(algo="rambo", rambo_adv_lr=0.0)
  with pytest.raises(ValueError, match="bc_pretrain_epochs"):
    offline.Config(algo="rambo", bc_pretrain_epochs=1.5)
  with pytest.raises(ValueError, match="preset_for: algo 'cql'"):
    offline.preset_for("cql", "hopper-medium")
  p = offline.preset_for("combo", "hopper-medium-replay")
  assert (p.penalty_coef, p.rollout_length, p.real_ratio) == (0.5, 5, 0.5)
  p = offline.preset_for("rambo", "walker2d-medium")
  assert (p.penalty_coef, p.rollout_length, p.epochs) == (0.0, 5, 2000)


@pytest.mark.parametrize("algo", ["combo", "rambo"])
def test_learns_and_the_second_epoch_compiles_nothing(pendulum_sets, algo):
  # Fails if COMBO (or RAMBO) does not learn: the same runs with learning rates of 1e-9
  # (conftest.broken) stay near the random return (-1200 here), below the bar (about -1000).
  # RAMBO without its BC start (bc_pretrain_epochs 0), so the policy's return is SAC's.
  coef = 0.5 if algo == "combo" else offline.QUICK_ADV_WEIGHT
  cfg = learn_config(pendulum_sets, algo, penalty_coef=coef)
  seen = []
  with count_compilations() as compiles:
    state, h = run.train(offline.make(cfg), jax.random.key(0),
                         progress_fn=lambda i, m: seen.append(compiles.count))
  assert len(seen) == cfg.epochs and seen[0] > 0 and seen[-1] == seen[0], seen
  assert np.all(np.isfinite(h["sac/critic_loss"])) and h["updates"][-1] == 10 * 500
  assert last_returns(h) > learning_bar(pendulum_sets), (h["eval/return"], pendulum_sets)
  if algo == "combo":
    assert np.all(np.isfinite(h["sac/cql_penalty"])) and "sac/q_data" in h
  else:
    # The adversarial steps moved the fitted model; the losses are reported.
    for k in ("model/rambo_sl_loss", "model/rambo_adv_loss", "model/rambo_log_prob"):
      assert np.all(np.isfinite(h[k])), k
    # RAMBO carries its model optimizer: Adam took rambo_adv_steps steps per epoch.
    counts = [x for x in jax.tree.leaves(state.model_opt) if x.dtype == jnp.int32]
    want = cfg.rambo_adv_steps * cfg.epochs
    assert counts and all(int(c) == want for c in counts), counts
