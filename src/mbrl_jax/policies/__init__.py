"""Model-free learners used inside model-based RL: SAC (for MBPO) and the imagination
actor-critic (for Dreamer)."""
