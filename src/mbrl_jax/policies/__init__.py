"""Model-free learners used inside model-based RL: SAC (for MBPO) and the imagination
actor-critic (for Dreamer)."""

from mbrl_jax.policies import imagination, sac

__all__ = ["imagination", "sac"]
