"""Planning: action-sequence optimizers (random shooting, CEM, iCEM, MPPI, gradient),
trajectory evaluation through a learned model, and the MPC controller."""

from mbrl_jax.planning.mpc import MPC, MPCState, make_mpc
from mbrl_jax.planning.trajectory import TrajectoryStats, make_trajectory_evaluator

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
    "MPC", "MPCState", "make_mpc", "TrajectoryStats", "make_trajectory_evaluator",
    "OPTIMIZERS", "SAMPLING_MODES", "Objective", "Optimizer", "OptimizerInfo", "colored_noise",
    "icem_population_sizes", "make_cem", "make_gradient", "make_icem", "make_mppi",
    "make_optimizer", "make_random_shooting", "shift",
]
