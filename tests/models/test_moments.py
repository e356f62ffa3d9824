"""mbrl_jax.models.moments against Monte-Carlo sampling (1e5 samples).

Tolerances: with n = 1e5 samples a Monte-Carlo mean has a standard error of sd / sqrt(n) ~
0.003 sd and a covariance entry ~ 0.0045 s_ii s_jj-scale; every check below allows 0.02
(absolute, on quantities of order 1), about 5 standard errors.
"""

import jax
import jax.numpy as jnp
import numpy as np

from mbrl_jax.models import moments

N = 100_000
TOL = 0.02


def _gaussian(key, d, scale=0.5):
  k1, k2 = jax.random.split(key)
  m = jax.random.normal(k1, (d,))
  a = scale * jax.random.normal(k2, (d, d))
  return m, a @ a.T + 0.05 * jnp.eye(d)


def _samples(key, m, s):
  return jax.random.multivariate_normal(key, m, s, (N,), method="svd")


def _empirical(x, y):
  """Mean [K], cov [K, K] of y and cov(x, y) [D, K] from samples."""
  xc, yc = x - x.mean(0), y - y.mean(0)
  return y.mean(0), yc.T @ yc / (N - 1), xc.T @ yc / (N - 1)


def _close(got, want):
  for g, w in zip(got, want):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=TOL, rtol=0)


def test_trig_augment_matches_monte_carlo():
  m, s = _gaussian(jax.random.key(0), 4)
  x = _samples(jax.random.key(1), m, s)
  idx = (1, 3)
  y = jnp.stack([jnp.sin(x[:, 1]), jnp.cos(x[:, 1]), jnp.sin(x[:, 3]), jnp.cos(x[:, 3])], 1)
  _close(jax.jit(moments.trig_augment, static_argnums=2)(m, s, idx), _empirical(x, y))


def test_sin_squash_matches_monte_carlo():
  m, s = _gaussian(jax.random.key(2), 2, scale=0.8)
  z = _samples(jax.random.key(3), m, s)
  u_max = jnp.array([1.0, 2.5])
  got = jax.jit(moments.sin_squash)(m, s, u_max)
  want = _empirical(z, u_max * jnp.sin(z))
  np.testing.assert_allclose(got[0], want[0], atol=TOL)
  np.testing.assert_allclose(got[1], want[1], atol=2.5 * TOL)     # u up to 2.5
  np.testing.assert_allclose(got[2], want[2], atol=2.5 * TOL)


def test_sat_squash_matches_monte_carlo():
  """pilco-matlab's gSat, u_max (9 sin z + sin 3z) / 8."""
  m, s = _gaussian(jax.random.key(12), 2, scale=0.8)
  z = _samples(jax.random.key(13), m, s)
  u_max = jnp.array([1.0, 2.5])
  got = jax.jit(moments.sat_squash)(m, s, u_max)
  want = _empirical(z, u_max * (9.0 * jnp.sin(z) + jnp.sin(3.0 * z)) / 8.0)
  np.testing.assert_allclose(got[0], want[0], atol=TOL)
  np.testing.assert_allclose(got[1], want[1], atol=2.5 * TOL)     # u up to 2.5
  np.testing.assert_allclose(got[2], want[2], atol=2.5 * TOL)
  assert float(jnp.abs(got[2]).max()) > 0.1                        # not a vacuous zero


def test_linear_matches_monte_carlo():
  m, s = _gaussian(jax.random.key(4), 3)
  w = jax.random.normal(jax.random.key(5), (2, 3))
  b = jnp.array([0.5, -1.0])
  x = _samples(jax.random.key(6), m, s)
  got = jax.jit(moments.linear)(m, s, w, b)
  want = _empirical(x, x @ w.T + b)
  _close(got, want)


def test_saturating_cost_matches_monte_carlo():
  m, s = _gaussian(jax.random.key(7), 3, scale=0.3)
  target = jnp.array([0.2, -0.1, 0.5])
  c = jnp.array([[1.0, 0.6, 0.0], [0.0, 0.0, 0.6]])
  w = c.T @ c / 0.25**2
  x = _samples(jax.random.key(8), m, s)
  d = x - target
  cost = 1.0 - jnp.exp(-0.5 * jnp.einsum("ni,ij,nj->n", d, w, d))
  mean, var = jax.jit(moments.saturating_cost)(m, s, target, w)
  np.testing.assert_allclose(mean, cost.mean(), atol=0.005)
  np.testing.assert_allclose(var, cost.var(), atol=0.005)
  # A known state costs exactly c(m), and zero variance.
  mean0, var0 = moments.saturating_cost(target, jnp.zeros((3, 3)), target, w)
  assert abs(float(mean0)) < 1e-6 and abs(float(var0)) < 1e-6


def test_through_input_is_the_exact_cross_covariance():
  """cov(z, f(x)) by Stein's lemma, z = [x, sin x_0] and f a nonlinear function whose Gaussian
  mean is known in closed form (f = sin x_1, E f = exp(-s_11 / 2) sin m_1)."""
  m, s = _gaussian(jax.random.key(9), 2)
  mean_fn = lambda mm: jnp.exp(-0.5 * s[1, 1]) * jnp.sin(mm[1:2])
  _, _, cross_trig = moments.trig_augment(m, s, (0,))
  cov_zx = jnp.concatenate([s, cross_trig[:, :1].T], 0)           # [3, 2]
  got = moments.through_input(mean_fn, m, cov_zx)
  x = _samples(jax.random.key(10), m, s)
  z = jnp.concatenate([x, jnp.sin(x[:, :1])], 1)
  _, _, want = _empirical(z, jnp.sin(x[:, 1:2]))
  np.testing.assert_allclose(got, want, atol=TOL)


def test_joint_is_symmetric_block():
  m, s = _gaussian(jax.random.key(11), 3)
  mj, sj = moments.joint(m, s, jnp.ones(1), jnp.eye(1), jnp.full((3, 1), 0.1))
  assert mj.shape == (4,) and sj.shape == (4, 4)
  np.testing.assert_allclose(sj, sj.T)
  np.testing.assert_allclose(sj[:3, 3], 0.1)


def test_gradients_are_finite_at_a_point_mass():
  """A deterministic input (s = 0) is the start of every PILCO rollout's cost."""
  grad = jax.grad(lambda m: moments.saturating_cost(m, jnp.zeros((2, 2)), jnp.zeros(2),
                                                    jnp.eye(2))[0])(jnp.ones(2))
  assert np.isfinite(np.asarray(grad)).all()


def test_expected_similarity_is_one_minus_the_cost():
  m, s = _gaussian(jax.random.key(12), 3)
  w, t = jnp.eye(3) * 2.0, jnp.ones(3)
  np.testing.assert_allclose(moments.expected_similarity(m, s, t, w),
                             1.0 - moments.saturating_cost(m, s, t, w)[0], atol=1e-6)
