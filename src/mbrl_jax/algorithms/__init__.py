"""Model-based RL algorithms as compiled, scanned, vmappable loops: PETS, MBPO (and model-free
SAC on MBPO's loop), Dreamer, PILCO, MPC on an env's true model (`mpc_control`: iLQR or a
sampling optimizer) and tree search on a discrete env's true model (`mcts_control`: MCTS or
Gumbel MuZero through mctx)."""

from mbrl_jax.algorithms import dreamer, mbpo, mcts_control, mpc_control, pets, pilco, sac

__all__ = ["dreamer", "mbpo", "mcts_control", "mpc_control", "pets", "pilco", "sac"]
