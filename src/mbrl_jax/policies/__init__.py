"""Model-free learners used inside model-based RL: SAC (for MBPO), DQN (`dqn`: Double DQN,
epsilon-greedy; for deep Dyna), the imagination actor-critic (for Dreamer) and tabular Q
(`tabular`: epsilon-greedy with random ties, one-step Q-learning; for Dyna)."""

from mbrl_jax.policies import dqn, imagination, sac, tabular

__all__ = ["dqn", "imagination", "sac", "tabular"]
