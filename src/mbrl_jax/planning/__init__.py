"""Planning: action-sequence optimizers (random shooting, CEM, iCEM, MPPI, gradient)."""

from mbrl_jax.planning.optimizers import (
    OPTIMIZERS,
    SAMPLING_MODES,
    Objective,
    Optimizer,
    OptimizerInfo,
    colored_noise,
    icem_population_sizes,
    make_cem,
    make_gradient,
    make_icem,
    make_mppi,
    make_optimizer,
    make_random_shooting,
    shift,
)

__all__ = [
    "OPTIMIZERS", "SAMPLING_MODES", "Objective", "Optimizer", "OptimizerInfo", "colored_noise",
    "icem_population_sizes", "make_cem", "make_gradient", "make_icem", "make_mppi",
    "make_optimizer", "make_random_shooting", "shift",
]
