"""Model-based RL algorithms as compiled, scanned, vmappable loops: PETS, MBPO (and model-free
SAC on MBPO's loop), Dreamer, PILCO, tabular Dyna on the chapter-8 mazes (`dyna`: Dyna-Q,
Dyna-Q+, prioritized sweeping), deep Dyna on discrete-action envs (`dyna_dqn`: DQN with or
without imagined transitions from a learned ensemble), MPC on an env's true model
(`mpc_control`: iLQR or a sampling optimizer) and tree search on a discrete env's true model
(`mcts_control`: MCTS or Gumbel MuZero through mctx)."""

from mbrl_jax.algorithms import (dreamer, dyna, dyna_dqn, mbpo, mcts_control, mpc_control, pets,
                                 pilco, sac)

__all__ = ["dreamer", "dyna", "dyna_dqn", "mbpo", "mcts_control", "mpc_control", "pets", "pilco",
           "sac"]
