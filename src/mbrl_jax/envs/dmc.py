"""DeepMind Control suite tasks through MuJoCo Playground, on Brax's `Env` API.

`envs.make("dmc/cartpole_swingup")` (and `--env dmc/cartpole_swingup` on every script) builds
the suite's task as ported to MJX by MuJoCo Playground (`pip install "mbrl_jax[dmc]"`, i.e.
`playground`; imported only when a dmc env is made, with a one-line ImportError naming the extra
when it is missing). Names are "dmc/<domain>_<task>" (:data:`TASKS`: cartpole_swingup,
pendulum_swingup, cheetah_run, walker_walk, reacher_easy and the rest of Playground's port),
optionally with options after a "?":

  dmc/cartpole_swingup                      # action repeat 1, 1000-step episodes
  dmc/cartpole_swingup?action_repeat=2      # Dreamer's convention: 500 agent steps
  dmc/walker_walk?action_repeat=2&impl=warp # MJX backend forced (default: per task and device)

Options are in the name, not make keywords, because every algorithm's config names its env by
one string (and PETS builds its env bare, with ``episode_length=None``): a repeat in the name
reaches every script, config file and checkpoint unchanged. `make_unwrapped` also takes
``action_repeat=`` and ``impl=`` keywords (they override the name's). `envs.make`'s own
``action_repeat`` is Brax's ``EpisodeWrapper`` repeat, which counts its time limit in env steps
while the algorithms count agent steps (`default_episode_length`): leave it at 1 for dmc names.

The suite's conventions:

* Episodes: 1000 env steps (every suite task's time limit over its control step). With action
  repeat k an agent step is k env steps, so `default_episode_length` is 1000 // k agent steps,
  which `envs.make` turns into Brax's ``EpisodeWrapper`` time limit as for any env (``done = 1``
  with ``info["truncation"] = 1``). The tasks never terminate on their own (Playground's done is
  1 only where the physics produced NaN).
* Rewards: each env step's reward is in [0, 1] (the suite's `tolerance` shapes), summed over the
  k repeated steps, so an agent step's reward is in [0, k] and an episode's return in [0, 1000],
  the scale DreamerV3 and TD-MPC2 report. The repeated steps stop adding once the physics has
  gone NaN.
* Actions: [A] in [-1, 1] (every suite actuator's ctrlrange; MuJoCo clips). Observations: the
  suite's proprioceptive vector, flattened to float32 [D] in Playground's order.
* State: ``State.pipeline_state`` is a :class:`PlaygroundState` holding Playground's own
  `mujoco_playground.State` as ``.state`` (whose ``.data`` is the `mjx.Data`), so its renderer
  and its step both apply to it; the wrapper only keeps the Data's zero-size arrays out of the
  pytree's leaves, which orbax cannot checkpoint.

Backend: MJX has a pure-JAX implementation (``impl="jax"``) and a Warp one (``"warp"``,
Playground's default, written for GPUs). On a GPU the default is Warp; on a CPU it is the one
measured faster here per task (:data:`CPU_IMPL`, from `experiments/bench_dmc.py`): jax for every
task measured, by 170-390x inside a compiled scan (ms per env step, one env, this 2-core CPU,
jax / warp: cartpole_swingup 0.04 / 6.6, pendulum_swingup 0.03 / 10.4, cheetah_run 1.3 / 235,
walker_walk 0.9 / 158, reacher_easy 0.07 / 22). Warp on a CPU also compiles its kernels on first
use (tens of seconds, cached in ~/.cache/warp after); its banner, kernel-load lines and
CUDA-driver notice are silenced.

Cost of resets: `envs.acting.step` computes a reset on every step and selects it where an
episode ended (see there). The suite's resets are cheap (0.01-0.02 ms) except cheetah_run's,
which lets the model settle for 200 physics steps as dm_control's does (36 ms with jax, ~27x
its step), so collecting on cheetah_run costs about a reset per step.

Reward and termination functions for planning (`envs.get_task_fns`), exact for action repeat 1
(the plain names): cartpole_swingup, cartpole_balance (the suite's product of upright, centered,
small-control and small-velocity terms, all read from the obs and action), pendulum_swingup (1
where the pole's cos(angle) > cos(8 deg)), reacher_easy and reacher_hard (1 where the
finger-to-target vector in the obs is shorter than the two radii). Not for cheetah_run and the
walker tasks: their rewards read the torso's subtree linear velocity (and for walker the torso
height), which the observation does not contain. None of the tasks terminates (termination fn
0). With action repeat k the reward of an agent step is a sum over intermediate states the
model does not see, so no task fns are registered under names with options.
`envs.has_termination_fn` is true for every dmc name: MBPO learns the reward and needs only the
termination fn, so it runs on every task and repeat.

What Playground's MJX versions change against the original dm_control tasks (read from
Playground 0.2.0's source and XMLs against dm_control's):

* every task: ``eulerdamp="disable"``, far fewer solver iterations than MuJoCo's defaults of
  100 / 50 (cartpole 1 / 4, pendulum 4 / 8, cheetah 4 / 8, walker 2 / 5, reacher 1 / 6), the
  ``energy`` flag dropped, ``done`` only on a NaN state; 1000-step episodes as in the suite;
* cartpole: Euler instead of RK4 (timestep 0.01 unchanged);
* pendulum: timestep 0.02 becomes 0.01 with 2 substeps; the observation is ordered [xz, zz]
  (dm_control: [zz, xz]); the start angle is drawn from U[0, pi) instead of U[-pi, pi);
* cheetah: timestep unchanged; MJX contact caps (6 contact points, 4 geom pairs); the 200-step
  settle at reset kept;
* walker: 0.0025 s timestep with 10 substeps as in dm_control, contact caps 4 / 4 (Warp reports
  hitting its 2-iteration solver limit); the observation's "height" entry is the torso's zz
  orientation, not its height, so the observation lacks the torso height;
* reacher: timestep 0.02 becomes 0.005 with 4 substeps; the target is a mocap body; the root's
  decorative geom is removed.

Pixels: not available through this module. Playground renders pixel observations only in the
``vision`` variants of a few tasks (cartpole among them), with MJX's Warp ray tracer, whose
render context is made for a fixed number of worlds and cannot be vmapped (our seeds and
evaluation episodes are vmapped), and those variants are other tasks (cartpole's: a 0.02 s
control step, 250-step episodes, an additive reward and a termination). Measured here on the
CPU: CartpoleSwingup with vision, one world, 64 x 64 x 3 (three stacked grey frames), 16 ms per
step. Playground's `render` (mujoco.Renderer, host OpenGL; ``MUJOCO_GL=egl`` works here) draws
our states (``pipeline_state.state``) for videos, outside the compiled step.

Example (needs playground):
  >>> env = make_dmc("dmc/cartpole_swingup?action_repeat=2")   # doctest: +SKIP
  >>> env.observation_size, env.action_size                   # doctest: +SKIP
  (5, 1)
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from typing import Any, Callable

from brax.envs.base import Env, State
import jax
import jax.numpy as jnp
import numpy as np

PREFIX = "dmc/"
EXTRA = 'pip install "mbrl_jax[dmc]"'
SUITE_EPISODE_LENGTH = 1000        # env steps: every suite task's time limit / control step
IMPLS = ("jax", "warp")

# Our names -> Playground's dm_control_suite names (all that Playground 0.2.0 ports).
TASKS: dict[str, str] = {
    "acrobot_swingup": "AcrobotSwingup",
    "acrobot_swingup_sparse": "AcrobotSwingupSparse",
    "ball_in_cup_catch": "BallInCup",
    "cartpole_balance": "CartpoleBalance",
    "cartpole_balance_sparse": "CartpoleBalanceSparse",
    "cartpole_swingup": "CartpoleSwingup",
    "cartpole_swingup_sparse": "CartpoleSwingupSparse",
    "cheetah_run": "CheetahRun",
    "finger_spin": "FingerSpin",
    "finger_turn_easy": "FingerTurnEasy",
    "finger_turn_hard": "FingerTurnHard",
    "fish_swim": "FishSwim",
    "hopper_hop": "HopperHop",
    "hopper_stand": "HopperStand",
    "humanoid_run": "HumanoidRun",
    "humanoid_stand": "HumanoidStand",
    "humanoid_walk": "HumanoidWalk",
    "pendulum_swingup": "PendulumSwingup",
    "point_mass_easy": "PointMass",
    "reacher_easy": "ReacherEasy",
    "reacher_hard": "ReacherHard",
    "swimmer_swimmer6": "SwimmerSwimmer6",
    "walker_run": "WalkerRun",
    "walker_stand": "WalkerStand",
    "walker_walk": "WalkerWalk",
}

# The faster backend on a CPU, per task, measured by experiments/bench_dmc.py (one env, 20 steps
# in a jitted scan, 2-core CPU: warp was 170-390x slower for each). Unlisted tasks: jax too.
CPU_IMPL: dict[str, str] = {
    "cartpole_swingup": "jax",
    "pendulum_swingup": "jax",
    "cheetah_run": "jax",
    "walker_walk": "jax",
    "reacher_easy": "jax",
}


def is_dmc_name(name: Any) -> bool:
  """True for names "dmc/<task>[?options]", which `envs.make` builds with `make_dmc`."""
  return isinstance(name, str) and name.startswith(PREFIX)


@dataclasses.dataclass(frozen=True)
class Spec:
  """A parsed "dmc/<task>?action_repeat=k&impl=..." name.

  Attributes:
    task: our task name, a key of `TASKS`.
    action_repeat: env steps per agent step (>= 1).
    impl: "jax", "warp", or None (per task and device, see `default_impl`).
  """

  task: str
  action_repeat: int = 1
  impl: str | None = None

  @property
  def episode_length(self) -> int:
    """Agent steps per episode: the suite's 1000 env steps over the action repeat."""
    return SUITE_EPISODE_LENGTH // self.action_repeat


def parse(name: str) -> Spec:
  """The `Spec` of a dmc name, or a one-line ValueError naming what is wrong."""
  if not is_dmc_name(name):
    raise ValueError(f"{name!r} is not a DM Control name (they start with {PREFIX!r})")
  task, _, query = name[len(PREFIX):].partition("?")
  if task not in TASKS:
    raise ValueError(f"Unknown DM Control task {task!r} in {name!r}. Valid tasks: "
                     + ", ".join(sorted(TASKS)))
  options: dict[str, Any] = {}
  for item in filter(None, query.split("&")):
    key, eq, value = item.partition("=")
    if not eq or key not in ("action_repeat", "impl"):
      raise ValueError(f"{name!r}: unknown option {item!r}; options are action_repeat=<int> "
                       f"and impl=jax|warp, e.g. {PREFIX}{task}?action_repeat=2")
    options[key] = value
  return _spec(name, task, **options)


def _spec(name: str, task: str, action_repeat: Any = 1, impl: Any = None) -> Spec:
  try:
    repeat = int(action_repeat)
  except (TypeError, ValueError):
    repeat = 0
  if repeat < 1 or repeat > SUITE_EPISODE_LENGTH:
    raise ValueError(f"{name!r}: action_repeat must be an integer in [1, "
                     f"{SUITE_EPISODE_LENGTH}], got {action_repeat!r}")
  if impl is not None and impl not in IMPLS:
    raise ValueError(f"{name!r}: impl must be one of {', '.join(IMPLS)}, got {impl!r}")
  return Spec(task=task, action_repeat=repeat, impl=impl)


def default_impl(task: str, backend: str | None = None) -> str:
  """MJX backend for `task` on `backend` (default: JAX's): warp on a GPU, `CPU_IMPL` else."""
  backend = backend or jax.default_backend()
  if backend == "gpu":
    return "warp"
  return CPU_IMPL.get(task, "jax")


def default_episode_length(name: str) -> int:
  """Agent steps per episode of a dmc name (1000 // action_repeat)."""
  return parse(name).episode_length


def check_name(config: Any, field: str) -> None:
  """A config's "dmc/..." field parses, else a one-line ValueError naming the field. (Whether
  playground is installed is checked when the env is made.)"""
  from mbrl_jax import checks  # pylint: disable=import-outside-toplevel
  name = getattr(config, field)
  try:
    parse(name)
  except ValueError as e:
    checks.fail(config, field, str(e))


def _playground_suite():
  """Playground's dm_control_suite module, or a one-line ImportError naming the extra."""
  try:
    # pylint: disable-next=import-outside-toplevel
    from mujoco_playground import dm_control_suite
  except ImportError as e:
    raise ImportError(f"DM Control envs need MuJoCo Playground, which is not installed "
                      f"({e}): {EXTRA}") from None
  return dm_control_suite


def _quiet_warp() -> None:
  """Before Warp's first use: drops its banner and kernel-load lines (``log_level``), and on a
  CPU-only JAX its "Could not find or load the NVIDIA CUDA driver" notice, which its C code
  writes to stderr from `warp.init` (so that call runs with fd 2 sent to /dev/null; errors
  there still raise)."""
  try:
    import warp  # pylint: disable=import-outside-toplevel
  except ImportError:
    return
  warp.config.log_level = max(warp.config.log_level, warp.LOG_WARNING)
  if jax.default_backend() != "cpu" or warp._src.context.runtime is not None:  # pylint: disable=protected-access
    return
  sys.stderr.flush()
  saved = os.dup(2)
  try:
    with open(os.devnull, "w", encoding="utf-8") as devnull:
      os.dup2(devnull.fileno(), 2)
      warp.init()
  finally:
    os.dup2(saved, 2)
    os.close(saved)


class DmcEnv(Env):
  """A Playground DM Control task as a Brax `Env` with action repeat (see the module docstring).

  Args:
    spec: the task, action repeat and backend.
    **config_overrides: Playground config fields (e.g. ``ctrl_dt``), forwarded to its
      ``config_overrides``.
  """

  def __init__(self, spec: Spec, **config_overrides: Any):
    suite = _playground_suite()
    self.spec = spec
    self.impl = spec.impl or default_impl(spec.task)
    if self.impl == "warp":
      _quiet_warp()
    config = suite.get_default_config(TASKS[spec.task])
    config.impl = self.impl
    self._env = suite.load(TASKS[spec.task], config=config,
                           config_overrides=config_overrides or None)

  @property
  def playground_env(self) -> Any:
    """The wrapped `mujoco_playground.MjxEnv` (its mj_model, dt, render, ...)."""
    return self._env

  @property
  def action_repeat(self) -> int:
    return self.spec.action_repeat

  @property
  def dt(self) -> float:
    """Seconds of simulated time per agent step (the task's control step x repeat)."""
    return float(self._env.dt) * self.spec.action_repeat

  @functools.cached_property
  def observation_size(self) -> int:  # pytype: disable=signature-mismatch
    return int(self._env.observation_size)

  @property
  def action_size(self) -> int:
    return int(self._env.action_size)

  @property
  def backend(self) -> str:
    return "mjx"

  def reset(self, rng: jax.Array) -> State:
    ps = self._env.reset(rng)
    return State(pipeline_state=PlaygroundState(ps), obs=_flat(ps.obs),
                 reward=jnp.zeros((), jnp.float32), done=jnp.zeros((), jnp.float32),
                 metrics={}, info={})

  def step(self, state: State, action: jax.Array) -> State:
    def one(carry, _):
      ps, reward, done = carry
      nxt = self._env.step(ps, action)
      reward = reward + jnp.where(done > 0, 0.0, nxt.reward.astype(jnp.float32))
      return (nxt, reward, jnp.maximum(done, nxt.done.astype(jnp.float32))), None

    zero = jnp.zeros((), jnp.float32)
    if self.spec.action_repeat == 1:
      (ps, reward, done), _ = one((state.pipeline_state.state, zero, zero), None)
    else:
      (ps, reward, done), _ = jax.lax.scan(one, (state.pipeline_state.state, zero, zero), None,
                                           length=self.spec.action_repeat)
    return state.replace(pipeline_state=PlaygroundState(ps), obs=_flat(ps.obs), reward=reward,
                         done=done)


@jax.tree_util.register_pytree_node_class
class PlaygroundState:
  """Playground's `State` (``.state``) as a pytree whose zero-size arrays are not leaves.

  An `mjx.Data` holds arrays with no elements (the contacts of a task without contacts, for
  one), and orbax refuses to checkpoint those; they carry no values, so they are kept out of
  the leaves and remade (NumPy zeros of their shape and dtype, per env) when the pytree is
  rebuilt. Everything else (jit, vmap, `jnp.where` between two states) sees an ordinary
  pytree.
  """

  def __init__(self, state: Any):
    self.state = state

  def tree_flatten(self):
    leaves, treedef = jax.tree.flatten(self.state)
    kept = [x for x in leaves if _size(x) != 0]
    empty = tuple((i, tuple(x.shape), str(x.dtype))
                  for i, x in enumerate(leaves) if _size(x) == 0)
    return kept, (treedef, len(leaves), empty)

  @classmethod
  def tree_unflatten(cls, aux, kept):
    treedef, count, empty = aux
    empties = {i: (shape, dtype) for i, shape, dtype in empty}
    kept = iter(kept)
    leaves = [np.zeros(*empties[i]) if i in empties else next(kept) for i in range(count)]
    return cls(jax.tree.unflatten(treedef, leaves))


def _size(x: Any) -> int:
  shape = getattr(x, "shape", None)
  return -1 if shape is None else int(np.prod(shape))


def _flat(obs: Any) -> jax.Array:
  return jnp.ravel(obs).astype(jnp.float32)


def make_dmc(name: str, **kwargs: Any) -> DmcEnv:
  """The bare `DmcEnv` of "dmc/<task>[?action_repeat=k&impl=...]" (no time limit;
  `envs.make` adds the suite's).

  Args:
    name: a dmc name (see the module docstring).
    **kwargs: ``action_repeat`` and ``impl`` (override the name's options); anything else is a
      Playground config override.

  Raises:
    ValueError: unknown task or option (one line).
    ImportError: playground is not installed (one line naming the extra).
  """
  spec = parse(name)
  repeat = kwargs.pop("action_repeat", spec.action_repeat)
  impl = kwargs.pop("impl", spec.impl)
  return DmcEnv(_spec(name, spec.task, repeat, impl), **kwargs)


# --- reward and termination functions for planning (action repeat 1) ----------------


def _tolerance() -> Callable[..., jax.Array]:
  _playground_suite()
  from mujoco_playground._src import reward  # pylint: disable=import-outside-toplevel
  return reward.tolerance


def _cartpole_reward(env: DmcEnv):
  del env
  tol = _tolerance()

  def reward_fn(obs, action, next_obs):
    del obs
    upright = (next_obs[..., 1] + 1) / 2
    centered = (1 + tol(next_obs[..., 0], margin=2)) / 2
    # MuJoCo clips ctrl to [-1, 1] but Playground's reward sees the raw action.
    small_control = (4 + tol(action[..., 0], margin=1, value_at_margin=0,
                             sigmoid="quadratic")) / 5
    small_velocity = (1 + tol(next_obs[..., 4], margin=5)) / 2
    return (upright * centered * small_control * small_velocity).astype(jnp.float32)

  return reward_fn


def _pendulum_reward(env: DmcEnv):
  del env
  tol = _tolerance()
  cos_bound = float(jnp.cos(jnp.deg2rad(8.0)))     # Playground's _COSINE_BOUND

  def reward_fn(obs, action, next_obs):           # next_obs = [sin-like xz, cos zz, omega]
    del obs, action
    return tol(next_obs[..., 1], (cos_bound, 1.0)).astype(jnp.float32)

  return reward_fn


def _reacher_reward(env: DmcEnv):
  tol = _tolerance()
  radii = float(env.playground_env._radii)        # pylint: disable=protected-access

  def reward_fn(obs, action, next_obs):           # next_obs = [qpos 2, finger->target 2, qvel 2]
    del obs, action
    dist = jnp.linalg.norm(next_obs[..., 2:4], axis=-1)
    return tol(dist, (0.0, radii)).astype(jnp.float32)

  return reward_fn


# name -> factory(env) -> reward_fn; envs.task_fns pairs each with its termination fn that
# never fires (no suite task terminates).
TASK_FNS: dict[str, Callable[[DmcEnv], Callable]] = {
    PREFIX + "cartpole_swingup": _cartpole_reward,
    PREFIX + "cartpole_balance": _cartpole_reward,
    PREFIX + "pendulum_swingup": _pendulum_reward,
    PREFIX + "reacher_easy": _reacher_reward,
    PREFIX + "reacher_hard": _reacher_reward,
}
