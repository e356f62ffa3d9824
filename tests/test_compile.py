import jax
import jax.numpy as jnp
import numpy as np

from mbrl_jax import compile as compile_lib


def test_cpu_options_and_opt_out(monkeypatch):
  assert jax.default_backend() == "cpu"
  assert compile_lib.compiler_options() == compile_lib.CPU_OPTIONS
  monkeypatch.setenv("MBRL_JAX_XLA_DEFAULTS", "1")
  assert compile_lib.compiler_options() == {}


def test_jit_with_options_computes_the_same():
  w = jax.random.normal(jax.random.key(0), (3, 64, 64))
  x = jax.random.normal(jax.random.key(1), (3, 100, 64))
  f = lambda w, x: jnp.tanh(jnp.einsum("enh,ehk->enk", x, w)).sum(-1)
  np.testing.assert_allclose(compile_lib.jit(f)(w, x), jax.jit(f)(w, x), rtol=1e-5, atol=1e-5)
