"""GP model for PILCO: likelihood, fit, prediction and moment matching against slow references
(scipy, numpy formulas, Monte Carlo, finite differences); masking; FITC."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from scipy.stats import multivariate_normal

from mbrl_jax.models import gp
from tests.conftest import count_compilations

N, D, E = 20, 3, 2

# Jitted once for the file (eager op-by-op dispatch is slower than compiling).
lml_fn = jax.jit(gp.log_marginal_likelihood)
posterior_fn = jax.jit(gp.posterior)
sparse_fn = jax.jit(gp.sparse_posterior, static_argnames="jitter")
predict_fn = jax.jit(jax.vmap(gp.predict, (None, 0)))
predict1_fn = jax.jit(gp.predict, static_argnames="include_noise")
mm_fn = jax.jit(gp.moment_match, static_argnames="model_variance")


def _data(n=N, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, D))
  y = np.stack([np.sin(x[:, 0]) + 0.5 * x[:, 1], np.cos(x[:, 2]) * x[:, 0]], 1)
  y = y + 0.05 * rng.normal(size=(n, E))
  return x.astype(np.float32), y.astype(np.float32)


def _params(dtype=jnp.float32):
  return gp.GPParams(
      log_lengthscales=jnp.log(jnp.array([[1.2, 2.0, 3.0], [1.5, 4.0, 1.0]], dtype)),
      log_signal_std=jnp.log(jnp.array([1.0, 0.7], dtype)),
      log_noise_std=jnp.log(jnp.array([0.05, 0.1], dtype)))


def _np_kernel(params, e, a, b):
  ell = np.exp(np.asarray(params.log_lengthscales[e], np.float64))
  sf2 = np.exp(2 * float(params.log_signal_std[e]))
  d = (a[:, None, :] - b[None, :, :]) / ell
  return sf2 * np.exp(-0.5 * (d ** 2).sum(-1))


def _np_posterior(params, x, y, xs, e):
  x, y, xs = (np.asarray(v, np.float64) for v in (x, y, xs))
  ky = _np_kernel(params, e, x, x) + np.exp(2 * float(params.log_noise_std[e])) * np.eye(len(x))
  ks = _np_kernel(params, e, xs, x)
  mean = ks @ np.linalg.solve(ky, y[:, e])
  var = np.exp(2 * float(params.log_signal_std[e])) - np.einsum(
      "ij,ji->i", ks, np.linalg.solve(ky, ks.T))
  return mean, var


def _padded(x, y, capacity=32):
  """The data at a larger capacity, padded with garbage (NaN, huge values)."""
  pad = capacity - x.shape[0]
  garbage = np.full((pad, x.shape[1]), np.nan, np.float32)
  garbage[::2] = 1e6
  xp = np.concatenate([garbage[: pad // 2], x, garbage[pad // 2:]])
  yp = np.concatenate([np.full((pad // 2, y.shape[1]), np.nan, np.float32), y,
                       np.full((pad - pad // 2, y.shape[1]), 3e5, np.float32)])
  mask = np.zeros(capacity, bool)
  mask[pad // 2: pad // 2 + x.shape[0]] = True
  return xp, yp, mask


def test_log_marginal_likelihood_matches_scipy():
  x, y = _data()
  params = _params()
  lml = lml_fn(params, x, y)
  assert lml.shape == (E,)
  for e in range(E):
    cov = (_np_kernel(params, e, x.astype(np.float64), x.astype(np.float64))
           + np.exp(2 * float(params.log_noise_std[e])) * np.eye(N))
    ref = multivariate_normal.logpdf(y[:, e].astype(np.float64), mean=np.zeros(N), cov=cov)
    np.testing.assert_allclose(lml[e], ref, rtol=1e-4, atol=1e-3)


def test_masked_rows_change_nothing():
  x, y = _data()
  xp, yp, mask = _padded(x, y)
  params = _params()
  np.testing.assert_allclose(lml_fn(params, xp, yp, mask),
                             lml_fn(params, x, y), rtol=1e-5, atol=1e-4)
  post, post_p = posterior_fn(params, x, y), posterior_fn(params, xp, yp, mask)
  assert np.all(np.isfinite(post_p.inv_k)) and np.all(post_p.beta[:, ~mask] == 0)
  m, s = jnp.array([0.2, -0.1, 0.3]), 0.2 * jnp.eye(D)
  # float32: a variance sf^2 - k^T inv_k k near 0 is only good to ~1e-4 sf^2 either way.
  for a, b in zip(predict1_fn(post, m), predict1_fn(post_p, m)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-4)
  for a, b in zip(mm_fn(post, m, s), mm_fn(post_p, m, s)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-4)
  init, init_p = gp.init_params(x, y), gp.init_params(xp, yp, mask)
  for a, b in zip(init, init_p):
    np.testing.assert_allclose(a, b, rtol=1e-5)


@pytest.mark.parametrize("optimizer,steps", [("adam", 300), ("lbfgs", 20)])
def test_fit_increases_the_likelihood_and_recovers_the_lengthscale(optimizer, steps):
  # y drawn from a GP with ell = 0.6, sf = 1, sn = 0.1 on 50 points in [-3, 3].
  rng = np.random.default_rng(1)
  x = np.sort(rng.uniform(-3, 3, size=(50, 1)), 0)
  k = np.exp(-0.5 * (x - x.T) ** 2 / 0.6 ** 2) + 1e-8 * np.eye(50)
  y = np.linalg.cholesky(k) @ rng.normal(size=(50, 1)) + 0.1 * rng.normal(size=(50, 1))
  x, y = x.astype(np.float32), y.astype(np.float32)
  start = gp.init_params(x, y)
  cfg = gp.GPFitConfig(steps=steps, optimizer=optimizer)
  fitted, info = jax.jit(gp.fit, static_argnames="config")(start, x, y, None, cfg)
  assert info.loss.shape == (steps,) and info.lml.shape == (1,)
  assert float(info.lml[0]) > float(lml_fn(start, x, y)[0]) + 10.0
  assert float(info.loss[-1]) < float(info.loss[0])
  assert 0.6 / 1.5 < float(jnp.exp(fitted.log_lengthscales[0, 0])) < 0.6 * 1.5
  assert 0.05 < float(jnp.exp(fitted.log_noise_std[0])) < 0.2
  assert float(info.lml[0]) > 18.0      # the optimum is 18.62 (seen with L-BFGS, 30+ steps)


def test_fit_rejects_steps_whose_cholesky_fails():
  # Noise-free data on repeated inputs and no curb: the noise std falls until K + sn^2 I is
  # singular in float32; fit must stop short of that and return finite hyperparameters.
  x = np.linspace(-2, 2, 10, dtype=np.float32)[:, None]
  x = np.concatenate([x, x])
  y = np.sin(x)
  cfg = gp.GPFitConfig(steps=300, curb=False, learning_rate=0.1)
  fitted, info = jax.jit(gp.fit, static_argnames="config")(gp.init_params(x, y), x, y, None, cfg)
  assert np.all(np.isfinite(info.loss)) and np.all(np.isfinite(info.lml))
  assert all(np.all(np.isfinite(a)) for a in fitted)
  assert float(fitted.log_noise_std[0]) < -5.0                    # it did get near the edge
  assert np.any(np.diff(np.asarray(info.loss)) == 0.0)            # and some steps were rejected


def test_predict_matches_the_numpy_formula():
  x, y = _data()
  params = _params()
  post = posterior_fn(params, x, y)
  xs = np.random.default_rng(2).normal(size=(5, D)).astype(np.float32)
  mean, var = predict_fn(post, xs)
  _, var_y = jax.jit(jax.vmap(lambda v: gp.predict(post, v, include_noise=True)))(xs)
  for e in range(E):
    ref_mean, ref_var = _np_posterior(params, x, y, xs, e)
    np.testing.assert_allclose(mean[:, e], ref_mean, atol=1e-4)
    np.testing.assert_allclose(var[:, e], ref_var, atol=1e-4)
    np.testing.assert_allclose(var_y[:, e] - var[:, e], np.exp(2 * params.log_noise_std[e]),
                               atol=2e-5)


@pytest.mark.parametrize("model_variance", [False, True])
def test_moment_match_agrees_with_monte_carlo(model_variance):
  x, y = _data()
  post = posterior_fn(_params(), x, y)
  m = jnp.array([0.2, -0.1, 0.3])
  a = np.random.default_rng(3).normal(size=(D, D)) * 0.4
  s = jnp.asarray(a @ a.T + 0.05 * np.eye(D), jnp.float32)
  mean, cov, cross = mm_fn(
      post, m, s, model_variance=model_variance)
  assert mean.shape == (E,) and cov.shape == (E, E) and cross.shape == (D, E)
  n = 100_000
  xs = jax.random.multivariate_normal(jax.random.key(0), m, s, (n,))
  mu, var = predict_fn(post, xs)
  mc_cov = np.cov(np.asarray(mu, np.float64).T)
  if model_variance:
    mc_cov = mc_cov + np.diag(np.asarray(var, np.float64).mean(0))
  xc = np.asarray(xs, np.float64) - np.asarray(xs, np.float64).mean(0)
  mc_cross = xc.T @ (np.asarray(mu, np.float64) - np.asarray(mu, np.float64).mean(0)) / n
  se = np.sqrt(np.diag(np.cov(np.asarray(mu, np.float64).T)) / n)
  assert np.all(np.abs(mean - mu.mean(0)) < 4 * se + 1e-4)
  scale = np.sqrt(np.outer(np.diag(mc_cov), np.diag(mc_cov)))
  assert np.all(np.abs(cov - mc_cov) < 0.03 * scale)
  cross_scale = np.sqrt(np.outer(np.diag(s), np.diag(mc_cov)))
  assert np.all(np.abs(cross - mc_cross) < 0.03 * cross_scale)


def test_moment_match_with_zero_input_covariance_is_predict():
  x, y = _data()
  post = posterior_fn(_params(), x, y)
  m = jnp.array([0.4, 0.1, -0.5])
  mean_p, var_p = predict1_fn(post, m)
  mean, cov, cross = mm_fn(post, m, jnp.zeros((D, D)))
  np.testing.assert_allclose(mean, mean_p, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(cov, np.diag(var_p), atol=1e-4)
  np.testing.assert_allclose(cross, 0.0, atol=1e-7)
  _, cov_mean_only, _ = mm_fn(post, m, jnp.zeros((D, D)), model_variance=False)
  np.testing.assert_allclose(cov_mean_only, 0.0, atol=1e-4)


def test_moment_match_gradients_match_finite_differences():
  with jax.enable_x64(True):
    x, y = _data()
    x, y = x.astype(np.float64), y.astype(np.float64)
    a = np.random.default_rng(4).normal(size=(D, D)) * 0.4
    s0 = jnp.asarray(a @ a.T + 0.05 * np.eye(D))
    w = jnp.asarray(np.random.default_rng(5).normal(size=(E + E * E + D * E,)))

    def scalar(params, m, s_half):
      post = posterior_fn(params, x, y)
      mean, cov, cross = mm_fn(post, m, s_half @ s_half.T)
      return jnp.concatenate([mean, cov.ravel(), cross.ravel()]) @ w

    args = (_params(jnp.float64), jnp.array([0.2, -0.1, 0.3]), jnp.linalg.cholesky(s0))
    flat, unravel = ravel_pytree(args)
    f = jax.jit(lambda v: scalar(*unravel(v)))
    grad = jax.jit(jax.grad(f))(flat)
    h, eye = 1e-5, np.eye(flat.shape[0])
    fd = np.array([(f(flat + h * d) - f(flat - h * d)) / (2 * h) for d in eye])
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-7)


def test_sparse_posterior_with_all_inputs_as_inducing_is_exact():
  with jax.enable_x64(True):
    x, y = _data()
    x, y = x.astype(np.float64), y.astype(np.float64)
    params = _params(jnp.float64)
    exact = posterior_fn(params, x, y)
    sparse = sparse_fn(params, x, y, jnp.asarray(x), jitter=1e-10)
    xs = np.random.default_rng(6).normal(size=(4, D))
    for a, b in zip(predict_fn(exact, xs),
                    predict_fn(sparse, xs)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    s = 0.2 * jnp.eye(D)
    for a, b in zip(mm_fn(exact, xs[0], s), mm_fn(sparse, xs[0], s)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.jit(gp.sparse_log_marginal_likelihood, static_argnames="jitter")(
        params, x, y, x, jitter=1e-10),
                               lml_fn(params, x, y), rtol=1e-6)


def test_sparse_posterior_with_fewer_inducing_inputs_stays_close():
  rng = np.random.default_rng(7)
  x = rng.uniform(-3, 3, size=(80, 1)).astype(np.float32)
  y = (np.sin(x) + 0.05 * rng.normal(size=(80, 1))).astype(np.float32)
  xp, yp, mask = _padded(x, y, capacity=96)
  params = gp.GPParams(jnp.log(jnp.array([[1.0]])), jnp.zeros(1), jnp.log(jnp.array([0.05])))
  z = gp.select_inducing(jax.random.key(0), xp, mask, 16)
  assert z.shape == (16, 1) and np.all(np.isin(np.asarray(z), x))
  exact, sparse = posterior_fn(params, x, y), sparse_fn(params, xp, yp, z, mask)
  grid = jnp.linspace(-2.5, 2.5, 11)[:, None]
  (me, ve), (ms, vs) = (predict_fn(p, grid) for p in (exact, sparse))
  assert np.max(np.abs(me - ms)) < 0.02 and np.max(np.abs(ve - vs)) < 0.01
  cfg = gp.GPFitConfig(steps=30)
  fitted, z_fit, info = jax.jit(gp.fit_sparse, static_argnames="config")(
      params, z, xp, yp, mask, cfg)
  assert z_fit.shape == z.shape and float(info.loss[-1]) < float(info.loss[0])


def test_batched_fit_does_not_recompile_for_new_data():
  x, y = _data()
  xp, yp, mask = _padded(x, y)
  cfg = gp.GPFitConfig(steps=20)
  fit = jax.jit(jax.vmap(gp.fit, (0, None, None, None, None)), static_argnums=4)
  start = gp.init_params(xp, yp, mask)
  starts = jax.tree.map(lambda a: jnp.stack([a, a + 0.3]), start)   # vmapped over 2 starts
  fit(starts, xp, yp, mask, cfg)
  new_x, new_y, new_mask = 1.5 * xp, 0.5 * yp, mask.copy()
  new_mask[np.flatnonzero(mask)[-3:]] = False                   # less data, same capacity
  with count_compilations() as c:
    params, info = fit(starts, new_x, new_y, new_mask, cfg)
    jax.block_until_ready(params)
  assert c.count == 0
  assert params.log_lengthscales.shape == (2, E, D) and info.loss.shape == (2, 20)
  lml_start = jax.vmap(gp.log_marginal_likelihood, (0, None, None, None))(
      starts, new_x, new_y, new_mask)
  assert np.all(info.lml > lml_start + 1.0)


def test_config_is_validated():
  with pytest.raises(ValueError, match=r"gp\.GPFitConfig\.steps"):
    gp.GPFitConfig(steps=0)
  with pytest.raises(ValueError, match=r"gp\.GPFitConfig\.curb_power must be even"):
    gp.GPFitConfig(curb_power=3)
  with pytest.raises(ValueError, match=r"gp\.GPFitConfig\.snr_limit"):
    gp.GPFitConfig(snr_limit=1.0)
  with pytest.raises(ValueError, match=r"gp\.GPFitConfig\.optimizer 'sgd' is unknown"):
    gp.GPFitConfig(optimizer="sgd")
