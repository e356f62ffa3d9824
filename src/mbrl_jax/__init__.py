"""mbrl_jax: model-based reinforcement learning in JAX, written as pure functions."""

__version__ = "0.1.0"
