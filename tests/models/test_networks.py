"""The one MLP: its function against NumPy, its parameter names, its options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax.models.networks import ACTIVATIONS, MLP


def _numpy_mlp(p, x, num_hidden, act, layer_norm=False, eps=1e-3):
  for i in range(num_hidden):
    x = x @ np.asarray(p[f"Dense_{i}"]["kernel"]) + np.asarray(p[f"Dense_{i}"]["bias"])
    if layer_norm:
      ln = p[f"LayerNorm_{i}"]
      x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
      x = x * np.asarray(ln["scale"]) + np.asarray(ln["bias"])
    x = act(x)
  out = p[f"Dense_{num_hidden}"]
  return x @ np.asarray(out["kernel"]) + np.asarray(out["bias"])


@pytest.mark.parametrize("layer_norm", [False, True])
def test_mlp_matches_numpy(layer_norm):
  mlp = MLP(hidden_sizes=(8, 6), out_size=3, activation=ACTIVATIONS["silu"],
            layer_norm=layer_norm)
  params = mlp.init(jax.random.key(0), jnp.zeros((1, 5)))
  names = set(params["params"])
  want = {"Dense_0", "Dense_1", "Dense_2"} | ({"LayerNorm_0", "LayerNorm_1"} if layer_norm
                                                else set())
  assert names == want
  if layer_norm:   # random LayerNorm parameters, so the test sees them used
    params = jax.tree.map(lambda a: a + 0.1, params)
  x = np.asarray(jax.random.normal(jax.random.key(1), (7, 5)))
  silu = lambda v: v / (1 + np.exp(-v))
  got = jax.jit(mlp.apply)(params, jnp.asarray(x))
  np.testing.assert_allclose(got, _numpy_mlp(params["params"], x, 2, silu, layer_norm),
                             rtol=1e-5, atol=1e-5)


def test_mlp_without_output_layer_and_zero_init_output():
  feats = MLP(hidden_sizes=(4,), activation=jnp.tanh)
  params = feats.init(jax.random.key(0), jnp.zeros((1, 3)))
  assert set(params["params"]) == {"Dense_0"}
  out = feats.apply(params, jnp.ones((2, 3)))
  assert out.shape == (2, 4) and float(jnp.abs(out).max()) <= 1.0
  head = MLP(hidden_sizes=(4,), out_size=2, zero_init_output=True)
  params = head.init(jax.random.key(0), jnp.zeros((1, 3)))
  np.testing.assert_array_equal(head.apply(params, jnp.ones((5, 3))), np.zeros((5, 2)))
