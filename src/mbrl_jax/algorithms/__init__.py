"""Model-based RL algorithms as compiled, scanned, vmappable loops: PETS, MBPO (and model-free
SAC on MBPO's loop), Dreamer, PILCO, and MPC on an env's true model (`mpc_control`: iLQR or a
sampling optimizer)."""

from mbrl_jax.algorithms import dreamer, mbpo, mpc_control, pets, pilco, sac

__all__ = ["dreamer", "mbpo", "mpc_control", "pets", "pilco", "sac"]
