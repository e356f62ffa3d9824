"""mbrl_jax: model-based reinforcement learning in JAX, written as pure functions."""

# Before anything imports brax: drops mujoco-mjx's "Failed to import warp" lines (see there).
from mbrl_jax import _quiet_imports  # noqa: F401

__version__ = "0.1.0"
