"""Planning: action-sequence optimizers (random shooting, CEM, iCEM, MPPI, gradient) over a
carried `PlanState`, trajectory evaluation through a learned model, and the MPC controller;
LQR and iLQR with its own MPC controller (`mbrl_jax.planning.ilqr`) and the differentiable
true / learned dynamics it plans with (`mbrl_jax.planning.dynamics`); tree search over
discrete actions through mctx (`mbrl_jax.planning.search.make_mcts`: MCTS, Gumbel MuZero).
The function types are Protocols in `mbrl_jax.planning.base`."""

from mbrl_jax.planning.base import (
    Evaluator,
    InitFn,
    ModelFn,
    Objective,
    OptimizeFn,
    Optimizer,
    OptimizerInfo,
    PlanState,
    ShiftFn,
    TaskFn,
    TrajectoryStats,
)
from mbrl_jax.planning.dynamics import (
    ILQR_ENVS,
    TRUE_DYNAMICS_ENVS,
    ensemble_mean_dynamics,
    true_cost,
    true_dynamics,
    true_model_fn,
)
from mbrl_jax.planning.ilqr import (
    ILQR,
    ILQRMPC,
    ILQRConfig,
    ILQRInfo,
    ILQRMPCState,
    LQRSolution,
    lqr,
    make_ilqr,
    make_ilqr_mpc,
)
from mbrl_jax.planning.mpc import MPC, MPCState, make_mpc
from mbrl_jax.planning.optimizers import (
    OPTIMIZERS,
    SAMPLING_MODES,
    CEMConfig,
    GradientConfig,
    ICEMConfig,
    MPPIConfig,
    OptimizerConfig,
    RandomShootingConfig,
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
from mbrl_jax.planning.search import SEARCHES, ModelStep, RootFn, Search, SearchInfo, make_mcts
from mbrl_jax.planning.trajectory import MEMBER_ASSIGNMENTS, make_trajectory_evaluator

__all__ = [
    "Evaluator", "InitFn", "ModelFn", "Objective", "OptimizeFn", "Optimizer", "OptimizerInfo",
    "PlanState", "ShiftFn", "TaskFn", "TrajectoryStats",
    "MPC", "MPCState", "make_mpc", "MEMBER_ASSIGNMENTS", "make_trajectory_evaluator",
    "OPTIMIZERS", "SAMPLING_MODES", "CEMConfig", "GradientConfig", "ICEMConfig", "MPPIConfig",
    "OptimizerConfig", "RandomShootingConfig", "colored_noise", "icem_population_sizes",
    "make_cem", "make_gradient", "make_icem", "make_mppi", "make_optimizer",
    "make_random_shooting", "shift",
    "ILQR", "ILQRMPC", "ILQRConfig", "ILQRInfo", "ILQRMPCState", "LQRSolution", "lqr",
    "make_ilqr", "make_ilqr_mpc",
    "ILQR_ENVS", "TRUE_DYNAMICS_ENVS", "ensemble_mean_dynamics", "true_cost", "true_dynamics",
    "true_model_fn",
    "SEARCHES", "ModelStep", "RootFn", "Search", "SearchInfo", "make_mcts",
]
