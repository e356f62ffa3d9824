"""Model-based RL algorithms as compiled, scanned, vmappable loops: PETS, MBPO (and model-free
SAC on MBPO's loop), Dreamer."""

from mbrl_jax.algorithms import dreamer, mbpo, pets, sac

__all__ = ["dreamer", "mbpo", "pets", "sac"]
