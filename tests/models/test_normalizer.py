import jax.numpy as jnp
import numpy as np

from mbrl_jax.models import normalizer


def test_fit_matches_numpy_on_masked_rows():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(50, 3)).astype(np.float32) * [1.0, 5.0, 0.1] + [0.0, 2.0, -1.0]
  mask = np.arange(50) < 30
  x[30:] = 1e6                                  # masked rows must not count
  x[40] = np.nan
  n = normalizer.fit(jnp.asarray(x), jnp.asarray(mask))
  np.testing.assert_allclose(n.mean, x[:30].mean(0), rtol=1e-5)
  np.testing.assert_allclose(n.std, x[:30].std(0), rtol=1e-4)


def test_zero_variance_dimension_stays_finite():
  x = jnp.stack([jnp.linspace(-1, 1, 20), jnp.full((20,), 3.0)], axis=1)
  n = normalizer.fit(x)
  assert float(n.std[1]) == 0.0                 # constant dimension
  z = normalizer.normalize(n, x)
  assert np.isfinite(np.asarray(z)).all()
  np.testing.assert_allclose(z[:, 1], 0.0)
  np.testing.assert_allclose(normalizer.denormalize(n, z), x, atol=1e-6)
  # Whatever a model outputs for a constant dimension, it comes back as the constant.
  np.testing.assert_allclose(normalizer.denormalize(n, jnp.full((3, 2), 7.0))[:, 1], 3.0)
  # A new value in a dimension that was constant maps to 0, not to a huge number.
  np.testing.assert_allclose(normalizer.normalize(n, jnp.array([[0.0, 3.001]]))[0, 1], 0.0)


def test_no_valid_rows_gives_identity():
  n = normalizer.fit(jnp.ones((4, 2)), jnp.zeros((4,), bool))
  np.testing.assert_array_equal(n.mean, 0.0)
  np.testing.assert_array_equal(n.std, 1.0)


def test_constants_only_keeps_constant_dimensions_and_nothing_else():
  x = jnp.stack([jnp.linspace(-1, 5, 20), jnp.full((20,), 3.0)], axis=1)
  n = normalizer.constants_only(normalizer.fit(x))
  np.testing.assert_array_equal(n.mean, [0.0, 3.0])
  np.testing.assert_array_equal(n.std, [1.0, 0.0])
  z = normalizer.normalize(n, x)
  np.testing.assert_array_equal(z[:, 0], x[:, 0])        # original units
  np.testing.assert_array_equal(z[:, 1], 0.0)
  np.testing.assert_array_equal(normalizer.denormalize(n, jnp.full((3, 2), 7.0)),
                                [[7.0, 3.0]] * 3)          # the constant comes back exactly
  empty = normalizer.constants_only(normalizer.fit(x, jnp.zeros((20,), bool)))
  np.testing.assert_array_equal(empty.std, 1.0)            # no data: the identity
  np.testing.assert_array_equal(empty.mean, 0.0)
