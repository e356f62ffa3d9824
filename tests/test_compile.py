import jax
import jax.numpy as jnp
import numpy as np

from mbrl_jax import compile as compile_lib


def test_cpu_options_and_opt_out(monkeypatch):
  assert jax.default_backend() == "cpu"
  assert compile_lib.compiler_options() == compile_lib.CPU_OPTIONS
  assert compile_lib.compiler_options(dot_rows=1400) == compile_lib.CPU_OPTIONS
  assert compile_lib.compiler_options(dot_rows=100) == compile_lib.SMALL_OPTIONS   # Eigen only
  monkeypatch.setenv("MBRL_JAX_XLA_DEFAULTS", "1")
  assert compile_lib.compiler_options() == {}


def test_jit_with_options_computes_the_same():
  w = jax.random.normal(jax.random.key(0), (3, 64, 64))
  x = jax.random.normal(jax.random.key(1), (3, 100, 64))
  f = lambda w, x: jnp.tanh(jnp.einsum("enh,ehk->enk", x, w)).sum(-1)
  np.testing.assert_allclose(compile_lib.jit(f)(w, x), jax.jit(f)(w, x), rtol=1e-5, atol=1e-5)


def test_pets_rows_per_member_pick_the_options():
  from mbrl_jax.algorithms import pets
  notebook = pets.Config()                       # population 350 x 20 particles / 5 members
  assert pets.planner_rows_per_member(notebook) == 1400
  from mbrl_jax import planning
  small = pets.Config(planner=pets.PlannerConfig(
      optimizer=planning.CEMConfig(population=100), num_particles=5))
  assert pets.planner_rows_per_member(small) == 100
  assert compile_lib.compiler_options(pets.planner_rows_per_member(small)) == \
      compile_lib.SMALL_OPTIONS
