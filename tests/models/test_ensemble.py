"""Ensemble forward pass and propagation modes, against explicit per-member computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax.models import PROPAGATION_MODES, make_ensemble, normalizer

E, K, O, A = 5, 3, 3, 2


@pytest.fixture(scope="module")
def ens():
  return make_ensemble(O, A, num_members=E, num_elites=K, hidden_sizes=(16, 16),
                       predict_reward=True)


@pytest.fixture(scope="module")
def params(ens):
  p = ens.init(jax.random.key(0))
  # Non-trivial normalisers and elites so that the tests see them applied.
  rng = np.random.default_rng(1)
  return p._replace(
      input_norm=normalizer.Normalizer(jnp.asarray(rng.normal(size=O + A), jnp.float32),
                                       jnp.asarray(rng.uniform(0.5, 2, O + A), jnp.float32)),
      output_norm=normalizer.Normalizer(jnp.asarray(rng.normal(size=O + 1), jnp.float32),
                                        jnp.asarray(rng.uniform(0.1, 3, O + 1), jnp.float32)),
      elites=jnp.array([4, 1, 2], jnp.int32))


def _rows(n, seed=0):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.normal(size=(n, O)), jnp.float32),
          jnp.asarray(rng.uniform(-1, 1, size=(n, A)), jnp.float32))


def _member_reference(ens, params, obs, action):
  """Slow reference: each member's MLP evaluated by hand in NumPy, one member at a time."""
  x = np.concatenate([obs, action], -1)
  x = (x - np.asarray(params.input_norm.mean)) / np.asarray(params.input_norm.std)
  means, variances = [], []
  for e in range(E):
    h = x
    layers = params.net["params"]
    names = sorted(layers, key=lambda s: int(s.split("_")[1]))
    for i, name in enumerate(names):
      h = h @ np.asarray(layers[name]["kernel"][e]) + np.asarray(layers[name]["bias"][e])
      if i < len(names) - 1:
        h = h / (1 + np.exp(-h))                                    # silu
    d = O + 1
    mean, raw = h[:, :d], h[:, d:]
    lo, hi = np.asarray(params.min_logvar), np.asarray(params.max_logvar)
    softplus = lambda z: np.logaddexp(0, z)
    logvar = hi - softplus(hi - raw)
    logvar = lo + softplus(logvar - lo)
    std = np.asarray(params.output_norm.std)
    means.append(mean * std + np.asarray(params.output_norm.mean))
    variances.append(np.exp(logvar) * std**2)
  return np.stack(means), np.stack(variances)


def test_apply_matches_numpy_reference(ens, params):
  obs, action = _rows(7)
  out = jax.jit(ens.apply)(params, obs, action)
  mean, var = _member_reference(ens, params, np.asarray(obs), np.asarray(action))
  np.testing.assert_allclose(out.mean, mean, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(out.var, var, rtol=1e-4, atol=1e-7)
  assert out.mean.shape == (E, 7, O + 1)


def test_apply_per_member_rows(ens, params):
  obs, action = _rows(E * 4)
  obs_m, action_m = obs.reshape(E, 4, O), action.reshape(E, 4, A)
  out = ens.apply(params, obs_m, action_m)
  full = ens.apply(params, obs, action)
  for e in range(E):
    np.testing.assert_allclose(out.mean[e], full.mean[e, e * 4:(e + 1) * 4], rtol=1e-5, atol=1e-6)


def test_log_variance_within_bounds(ens, params):
  obs, action = _rows(200)
  out = ens.apply(params, obs * 100, action)            # far inputs push the raw head
  std = np.asarray(params.output_norm.std)
  logvar = np.log(np.asarray(out.var) / std**2)
  assert (logvar <= np.asarray(params.max_logvar) + 1e-4).all()
  assert (logvar >= np.asarray(params.min_logvar) - 1e-4).all()


@pytest.mark.parametrize("n", [12, 10])                 # 12 % K == 0: regrouped; 10: gathered
def test_tsinf_uses_fixed_elite_member_per_row(ens, params, n):
  obs, action = _rows(n)
  means = np.asarray(ens.apply(params, obs, action).mean)
  elites = np.asarray(params.elites)
  for seed in range(2):          # the member of a row does not depend on the key
    step = ens.predict(params, jax.random.key(seed), obs, action, mode="tsinf", sample=False)
    want = np.stack([means[elites[i % K], i] for i in range(n)])
    np.testing.assert_allclose(step.next_obs, np.asarray(obs) + want[:, :O], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(step.reward, want[:, O], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [12, 10])
def test_ts1_draws_a_random_elite_member_per_row(ens, params, n):
  obs, action = _rows(n)
  means = np.asarray(ens.apply(params, obs, action).mean)[:, :, :O] + np.asarray(obs)[None]
  elites = set(np.asarray(params.elites).tolist())
  predict = jax.jit(lambda key: ens.predict(params, key, obs, action, mode="ts1", sample=False))
  used = set()
  for seed in range(20):
    step = np.asarray(predict(jax.random.key(seed)).next_obs)
    dist = np.abs(means - step[None]).max(-1)           # [E, n]
    member = dist.argmin(0)
    assert (dist.min(0) < 1e-4).all()                   # every row is some member's output
    assert set(member.tolist()) <= elites               # ... and that member is an elite
    used |= set(member.tolist())
  assert used == elites


def test_expectation_and_all_modes(ens, params):
  obs, action = _rows(6)
  out = ens.apply(params, obs, action)
  elites = np.asarray(params.elites)
  exp = ens.predict(params, jax.random.key(0), obs, action, mode="expectation", sample=False)
  np.testing.assert_allclose(exp.next_obs, obs + np.asarray(out.mean)[elites, :, :O].mean(0),
                             rtol=1e-5, atol=1e-5)
  every = ens.predict(params, jax.random.key(0), obs, action, mode="all", sample=False)
  assert every.next_obs.shape == (E, 6, O) and every.reward.shape == (E, 6)
  np.testing.assert_allclose(every.next_obs, obs[None] + np.asarray(out.mean)[:, :, :O],
                             rtol=1e-5, atol=1e-5)


def test_sampling_matches_predicted_variance(ens, params):
  obs, action = _rows(1)
  n = 6000                                   # one row repeated; tsinf spreads it over elites
  obs, action = jnp.repeat(obs, n, 0), jnp.repeat(action, n, 0)
  out = ens.apply(params, obs[:1], action[:1])
  step = ens.predict(params, jax.random.key(3), obs, action, mode="tsinf", sample=True)
  elites = np.asarray(params.elites)
  for j, e in enumerate(elites):
    rows = np.asarray(step.next_obs)[j::K] - np.asarray(obs)[j::K]
    np.testing.assert_allclose(rows.mean(0), out.mean[e, 0, :O],
                               atol=4 * np.sqrt(out.var[e, 0, :O].max() / len(rows)))
    np.testing.assert_allclose(rows.var(0), out.var[e, 0, :O], rtol=0.1)


def test_uncertainty_decomposition(ens, params):
  obs, action = _rows(9)
  out = ens.apply(params, obs, action)
  u = ens.uncertainty(params, obs, action)
  elites = np.asarray(params.elites)
  np.testing.assert_allclose(u.epistemic, np.asarray(out.mean)[elites].var(0), rtol=1e-4)
  np.testing.assert_allclose(u.aleatoric, np.asarray(out.var)[elites].mean(0), rtol=1e-4)


def test_deterministic_ensemble_has_no_noise():
  ens = make_ensemble(O, A, num_members=2, hidden_sizes=(8,), probabilistic=False)
  params = ens.init(jax.random.key(0))
  obs, action = _rows(4)
  a = ens.predict(params, jax.random.key(0), obs, action, mode="tsinf", sample=True)
  b = ens.predict(params, jax.random.key(1), obs, action, mode="tsinf", sample=False)
  np.testing.assert_array_equal(a.next_obs, b.next_obs)
  assert a.reward is None
  np.testing.assert_array_equal(ens.uncertainty(params, obs, action).aleatoric, 0.0)


def test_predict_vmaps_over_a_batch_of_start_states(ens, params):
  obs, action = _rows(4 * 6)
  obs, action = obs.reshape(4, 6, O), action.reshape(4, 6, A)
  keys = jax.random.split(jax.random.key(0), 4)
  f = jax.vmap(lambda k, o, a: ens.predict(params, k, o, a, mode="tsinf", sample=False))
  batched = f(keys, obs, action)
  for b in range(4):
    single = ens.predict(params, keys[b], obs[b], action[b], mode="tsinf", sample=False)
    np.testing.assert_allclose(batched.next_obs[b], single.next_obs, rtol=1e-5, atol=1e-6)


def test_bad_inputs_raise_clear_errors(ens, params):
  obs, action = _rows(4)
  with pytest.raises(ValueError, match="propagation mode 'ts2'"):
    ens.predict(params, jax.random.key(0), obs, action, mode="ts2")
  with pytest.raises(ValueError, match="obs_size=3"):
    ens.predict(params, jax.random.key(0), obs[:, :2], action)
  with pytest.raises(ValueError, match="action_size=2"):
    ens.apply(params, obs, action[:, :1])
  with pytest.raises(ValueError, match="leading axes"):
    ens.apply(params, obs, action[:3])
  with pytest.raises(ValueError, match="num_elites"):
    make_ensemble(O, A, num_members=2, num_elites=3)
  with pytest.raises(ValueError, match="activation"):
    make_ensemble(O, A, activation="swishy")
  assert set(PROPAGATION_MODES) == {"ts1", "tsinf", "expectation", "all"}

def test_given_noise_replaces_the_draw(ens, params):
  obs, action = _rows(6)
  noise = jax.random.normal(jax.random.key(5), (6, O + 1))
  a = ens.predict(params, jax.random.key(0), obs, action, mode="tsinf", noise=noise)
  b = ens.predict(params, jax.random.key(1), obs, action, mode="tsinf", noise=noise)
  np.testing.assert_array_equal(a.next_obs, b.next_obs)
  out = ens.apply(params, obs, action)
  elites = np.asarray(params.elites)
  want = np.stack([np.asarray(out.mean[elites[i % K], i] + np.sqrt(out.var[elites[i % K], i])
                              * noise[i]) for i in range(6)])
  np.testing.assert_allclose(a.next_obs, np.asarray(obs) + want[:, :O], rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="noise has shape"):
    ens.predict(params, jax.random.key(0), obs, action, noise=noise[:, :2])


def test_variance_saturates_at_the_bounds_for_extreme_raw_outputs(ens, params):
  """The predicted variance is exp(soft-bounded logvar) (PETS' two softplus) for raw
  log-variances far outside the bounds too, where an exp of them would overflow, and
  its gradient stays finite there."""
  raw = np.array([-500.0, -60.0, 0.0, 60.0, 500.0], np.float32)              # one per member
  net = params.net["params"]
  last = sorted(net)[-1]
  D = O + 1
  kernel = net[last]["kernel"].at[..., D:].set(0.0)
  bias = net[last]["bias"].at[:, D:].set(jnp.asarray(raw)[:, None])
  p = params._replace(net={"params": {**net, last: {"kernel": kernel, "bias": bias}}},
                      min_logvar=jnp.array([-10.0, -3.0, -20.0, 0.0]),
                      max_logvar=jnp.array([0.5, 2.0, 1.0, 0.25]))
  obs, action = _rows(3)
  out = ens.apply(p, obs, action)
  lo, hi = np.asarray(p.min_logvar, np.float64), np.asarray(p.max_logvar, np.float64)
  softplus = lambda z: np.logaddexp(z, 0.0)
  logvar = hi - softplus(hi - raw.astype(np.float64)[:, None])                 # [E, D]
  logvar = lo + softplus(logvar - lo)
  want = np.exp(logvar)[:, None, :] * np.asarray(p.output_norm.std, np.float64) ** 2
  np.testing.assert_allclose(out.var, np.broadcast_to(want, out.var.shape), rtol=1e-5)
  grad = jax.grad(lambda o: ens.predict(p, jax.random.key(0), jnp.repeat(o, E, 0),
                                        jnp.repeat(action[:1], E, 0)).next_obs.sum())(obs[:1])
  assert np.isfinite(np.asarray(grad)).all()
