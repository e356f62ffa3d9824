"""Model-free learners used inside model-based RL: SAC (for MBPO), the imagination
actor-critic (for Dreamer) and tabular Q (`tabular`: epsilon-greedy with random ties,
one-step Q-learning; for Dyna)."""

from mbrl_jax.policies import imagination, sac, tabular

__all__ = ["imagination", "sac", "tabular"]
