"""Model-based RL algorithms as compiled, scanned, vmappable loops: PETS, MBPO (and model-free
SAC on MBPO's loop), Dreamer, PILCO."""

from mbrl_jax.algorithms import dreamer, mbpo, pets, pilco, sac

__all__ = ["dreamer", "mbpo", "pets", "pilco", "sac"]
