"""Model-based RL algorithms as compiled, scanned, vmappable loops."""

from mbrl_jax.algorithms import pets

__all__ = ["pets"]
