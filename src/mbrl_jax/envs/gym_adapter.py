"""Gymnasium environments on Brax's `Env` API, stepped on the host from compiled code.

`from_gymnasium(env_id_or_env)` wraps any gymnasium env with a flat `Box` observation and a
`Box` or `Discrete` action space as a `brax.envs.base.Env`, so every algorithm here (PETS, MBPO,
Dreamer, ...) runs on it unchanged: planning, model fitting and learning stay inside the one
compiled chunk, and only the env's `reset` / `step` leave it, through `jax.pure_callback` into a
pool of host gymnasium envs. `envs.make("gymnasium:Pendulum-v1")` (and `--env
gymnasium:Pendulum-v1` on the scripts) builds one, time-limited by Brax's `EpisodeWrapper` at
the gymnasium spec's `max_episode_steps` like every other env.

How a functional env is made of mutable host envs:

* The env state's ``pipeline_state`` is a handle, int32 [2] = (pool id, episode id). `reset(key)`
  opens a new episode: the host resets a scratch env with the seed drawn from `key` and returns
  its observation; the episode gets a host env of its own only at its first `step` (reset again
  with the same seed, so its trajectory starts from that observation). Resets whose result is
  thrown away (`acting.step` resets every step and selects) therefore cost one scratch reset and
  hold no env. An episode returns its env to the pool when it terminates or is truncated; later
  steps of a finished episode repeat its last observation with reward 0 and done 1 (what
  `acting.episode` does after the end is never seen). At most `max_envs` episodes hold an env at
  once: beyond that the least recently stepped one loses its env, and stepping it again raises
  (a `RuntimeError` inside the callback, surfacing as a JAX runtime error) rather than
  continuing another episode's env.
* Each step passes its handle back out of the callback into the next state, so successive steps
  of an episode are data-dependent: XLA cannot reorder or drop them. Under `vmap` (seeds,
  evaluation episodes) the callbacks use ``vmap_method="broadcast_all"``: one host call per
  step for the whole batch, which steps the batch's envs one after another.
* Actions: a `Box` action space is exposed as ``action_size`` actions in [-1, 1], mapped
  affinely onto [low, high] (finite bounds needed); a `Discrete(n)` one as an int32 [] action in
  [0, n) with ``num_actions = n`` (like `envs.CartpoleV1`). Observations are float32 [D].
* Time limits: an env built from an id has gymnasium's `TimeLimit` removed, so the time limit
  is the one `envs.make` adds; a truncation the host env reports itself (an instance passed with
  its own `TimeLimit`) sets ``done = 1`` and ``info["truncation"] = 1``.
* Checkpoints and resume: a host env's internal state is not in the checkpoint. A resumed
  process has a new pool id, and the first step of an episode carried over from the previous
  process ends it at once as truncated (reward 0, next obs = obs, `done` 1); acting then resets
  as usual. PETS trials start with a reset, so a resumed PETS run is unaffected; MBPO and Dreamer
  carry a training episode across chunks and lose (truncate) the one running at the checkpoint.
* A state is a handle, not a value: stepping the same `State` twice advances the host env
  twice (JAX's functional semantics do not hold for the host side), and `pure_callback` is
  declared free of side effects, so under `vmap` a `lax.cond` runs both branches. In the same
  process, a run resumed from a checkpoint after a stop (e.g. the NaN stop in a notebook)
  keeps its pool id, so its restored handles point at host envs that have moved on: restart
  the process to resume such a run (a new pool id truncates the carried-over episodes as
  above). Not yet detected by the adapter (a review found it).

Reward and termination functions: `envs.get_task_fns("gymnasium:Pendulum-v1")` is our
pendulum's (the adapter's [-1, 1] actions make gymnasium's Pendulum-v1 exactly `envs.Pendulum`).
For another env, what each algorithm needs: PETS plans with a known reward and termination
(register yours with `envs.task_fns.register`; PETS here has no learned-reward option); MBPO
learns the reward with its ensemble and needs only the termination function (register it, with
any reward function); Dreamer learns reward and continuation and needs neither.

Cost: every step is a host round trip, and `acting.step` also computes a reset on every step
(it selects it where an episode ended), which here is a scratch-env reset on the host for every
env of the batch; `experiments/bench_gymnasium.py` measures both against the pure-JAX pendulum.

Example:
  >>> env = from_gymnasium("Pendulum-v1")
  >>> state = jax.jit(env.reset)(jax.random.key(0))
  >>> state = jax.jit(env.step)(state, jnp.array([0.5]))
  >>> state.obs.shape, state.obs.dtype, env.action_size
  ((3,), dtype('float32'), 1)
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import functools
import secrets
import threading
from typing import Any, Callable

from brax.envs.base import Env, State
import jax
import jax.numpy as jnp
import numpy as np

PREFIX = "gymnasium:"
DEFAULT_EPISODE_LENGTH = 1000       # when the gymnasium spec has no max_episode_steps


def is_gymnasium_name(name: Any) -> bool:
  """True for names "gymnasium:<id>", which `envs.make` builds with `from_gymnasium`."""
  return isinstance(name, str) and name.startswith(PREFIX)


def _gymnasium():
  try:
    import gymnasium  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ImportError("gymnasium is not installed: `pip install gymnasium` (or "
                      "`pip install mbrl_jax[gymnasium]`) to use gymnasium envs") from None
  return gymnasium


def _strip_time_limit(env: Any) -> Any:
  gym = _gymnasium()
  while isinstance(env, gym.wrappers.TimeLimit):
    env = env.env
  return env


@dataclasses.dataclass(frozen=True)
class Spaces:
  """What the adapter needs from an env's spaces (checked once, on the first env made).

  Attributes:
    env_id: the gymnasium id, or the env's class name.
    obs_size: D, the flat observation's length.
    discrete: Discrete actions (else Box).
    action_size: A (1 for Discrete: one int per step).
    num_actions: n for Discrete(n), else None.
    action_start: Discrete's `start`.
    low, high: Box action bounds [A] (float64 tuples; empty for Discrete).
    action_dtype: the action space's NumPy dtype.
    max_episode_steps: the spec's time limit, or None.
  """

  env_id: str
  obs_size: int
  discrete: bool
  action_size: int
  num_actions: int | None
  action_start: int
  low: tuple[float, ...]
  high: tuple[float, ...]
  action_dtype: Any
  max_episode_steps: int | None


def check_spaces(env: Any, env_id: str, max_episode_steps: int | None = None) -> Spaces:
  """The env's `Spaces`, or ValueError (one line) for spaces the adapter cannot carry."""
  gym = _gymnasium()
  obs_space, act_space = env.observation_space, env.action_space
  where = f"gymnasium env {env_id!r}"
  if not isinstance(obs_space, gym.spaces.Box):
    raise ValueError(f"{where}: observation space {obs_space} is not supported; mbrl_jax needs "
                     f"a flat Box (flatten Dict/Tuple observations with "
                     f"gymnasium.wrappers.FlattenObservation)")
  if len(obs_space.shape) != 1:
    raise ValueError(f"{where}: observation space Box{obs_space.shape} is not a flat vector "
                     f"(images and other shapes are not supported; the models here take [D] "
                     f"vectors: flatten it, or use an env with vector observations)")
  if max_episode_steps is None:
    max_episode_steps = getattr(getattr(env, "spec", None), "max_episode_steps", None)
  common = dict(env_id=env_id, obs_size=int(obs_space.shape[0]),
                max_episode_steps=max_episode_steps,
                action_dtype=act_space.dtype)
  if isinstance(act_space, gym.spaces.Discrete):
    return Spaces(discrete=True, action_size=1, num_actions=int(act_space.n),
                  action_start=int(act_space.start), low=(), high=(), **common)
  if isinstance(act_space, gym.spaces.Box):
    if len(act_space.shape) != 1:
      raise ValueError(f"{where}: action space Box{act_space.shape} is not a flat vector")
    if not (np.all(np.isfinite(act_space.low)) and np.all(np.isfinite(act_space.high))):
      raise ValueError(f"{where}: action space {act_space} has infinite bounds; actions here "
                       f"are in [-1, 1] and are mapped onto [low, high], so bounds must be "
                       f"finite (wrap it with gymnasium.wrappers.RescaleAction)")
    return Spaces(discrete=False, action_size=int(act_space.shape[0]), num_actions=None,
                  action_start=0, low=tuple(map(float, act_space.low)),
                  high=tuple(map(float, act_space.high)), **common)
  raise ValueError(f"{where}: action space {act_space} is not supported; mbrl_jax takes Box "
                   f"(continuous) or Discrete actions (MultiDiscrete, MultiBinary, Dict and "
                   f"Tuple are not)")


@dataclasses.dataclass
class _Episode:
  seed: int
  obs: np.ndarray                      # the last observation, float32 [D]
  env: Any = None                      # the host env, from the first step until the end
  done: bool = False
  evicted: bool = False


class HostEnvPool:
  """Host gymnasium envs behind handles (see the module docstring). Thread-safe.

  Args:
    factory: makes one host env (called lazily, at most `max_envs` times).
    spaces: the envs' `Spaces`.
    max_envs: episodes that may hold an env at once.
    max_episodes: episode records kept (most are resets that were never stepped).
  """

  def __init__(self, factory: Callable[[], Any], spaces: Spaces, *, max_envs: int = 256,
               max_episodes: int = 1 << 16):
    self.factory, self.spaces = factory, spaces
    self.max_envs, self.max_episodes = max_envs, max_episodes
    self.pool_id = secrets.randbelow(2**31 - 1) + 1       # differs in every process
    self._lock = threading.Lock()
    self._next = 0
    self._episodes: collections.OrderedDict[int, _Episode] = collections.OrderedDict()
    self._holders: collections.OrderedDict[int, None] = collections.OrderedDict()  # LRU
    self._free: list[Any] = []
    self._made = 0
    self._scratch = None
    self.host_steps = 0

  def _acquire(self) -> Any:
    if self._free:
      return self._free.pop()
    if self._made < self.max_envs:
      self._made += 1
      return self.factory()
    oldest, _ = self._holders.popitem(last=False)
    episode = self._episodes[oldest]
    env, episode.env, episode.evicted = episode.env, None, True
    return env

  def _release(self, handle: int, episode: _Episode) -> None:
    if episode.env is not None:
      self._free.append(episode.env)
      episode.env = None
    self._holders.pop(handle, None)

  def reset(self, seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """seeds uint32 [...] -> (handles int32 [..., 2], obs float32 [..., D])."""
    seeds = np.asarray(seeds)
    flat = seeds.reshape(-1)
    handles = np.empty((flat.size, 2), np.int32)
    obs = np.empty((flat.size, self.spaces.obs_size), np.float32)
    with self._lock:
      if self._scratch is None:
        self._scratch = self.factory()
      for i, seed in enumerate(flat):
        o, _ = self._scratch.reset(seed=int(seed))
        self._next += 1
        self._episodes[self._next] = _Episode(seed=int(seed), obs=np.asarray(o, np.float32))
        handles[i] = (self.pool_id, self._next)
        obs[i] = o
      while len(self._episodes) > self.max_episodes:
        handle, episode = self._episodes.popitem(last=False)
        self._release(handle, episode)
    return handles.reshape(*seeds.shape, 2), obs.reshape(*seeds.shape, -1)

  def step(self, handles: np.ndarray, obs: np.ndarray, actions: np.ndarray
           ) -> tuple[np.ndarray, ...]:
    """One step of each handle's episode.

    Args:
      handles: int32 [..., 2].
      obs: the observations the caller holds, float32 [..., D] (returned for an episode of
        another process, which ends truncated).
      actions: env-space actions [..., A] (Box) or int [...] (Discrete).

    Returns:
      (handles, next obs [..., D], reward [...], terminated [...], truncated [...]).
    """
    handles = np.asarray(handles)
    batch = handles.shape[:-1]
    flat_h = handles.reshape(-1, 2)
    flat_o = np.asarray(obs, np.float32).reshape(flat_h.shape[0], -1)
    flat_a = np.asarray(actions).reshape(flat_h.shape[0], -1)
    n = flat_h.shape[0]
    next_obs = np.empty_like(flat_o)
    reward = np.zeros(n, np.float32)
    terminated = np.zeros(n, np.float32)
    truncated = np.zeros(n, np.float32)
    with self._lock:
      for i in range(n):
        pool_id, handle = int(flat_h[i, 0]), int(flat_h[i, 1])
        if pool_id != self.pool_id:              # from another process: a resumed run
          next_obs[i], truncated[i] = flat_o[i], 1.0
          continue
        episode = self._episodes.get(handle)
        if episode is None or episode.evicted:
          raise RuntimeError(
              f"gymnasium env {self.spaces.env_id!r}: episode {handle} lost its host env "
              f"(more than max_envs={self.max_envs} episodes, or max_episodes="
              f"{self.max_episodes} resets, were in use at once); raise max_envs")
        self._episodes.move_to_end(handle)
        if episode.done:
          next_obs[i], terminated[i] = episode.obs, 1.0
          continue
        if episode.env is None:
          episode.env = self._acquire()
          first, _ = episode.env.reset(seed=episode.seed)
          if not np.array_equal(np.asarray(first, np.float32), episode.obs):
            raise RuntimeError(f"gymnasium env {self.spaces.env_id!r}: reset(seed) is not "
                               f"deterministic; the adapter needs it to be")
        self._holders[handle] = None
        self._holders.move_to_end(handle)
        if self.spaces.discrete:
          action = int(flat_a[i, 0]) + self.spaces.action_start
        else:
          action = flat_a[i].astype(self.spaces.action_dtype)
        o, r, te, tr, _ = episode.env.step(action)
        self.host_steps += 1
        episode.obs = np.asarray(o, np.float32)
        next_obs[i], reward[i] = episode.obs, r
        terminated[i], truncated[i] = float(bool(te)), float(bool(tr) and not te)
        if te or tr:
          episode.done = True
          self._release(handle, episode)
    return (handles, next_obs.reshape(*batch, -1), reward.reshape(batch),
            terminated.reshape(batch), truncated.reshape(batch))

  def close(self) -> None:
    with self._lock:
      envs = self._free + [e.env for e in self._episodes.values() if e.env is not None]
      envs += [self._scratch] if self._scratch is not None else []
      for env in envs:
        env.close()
      self._free, self._scratch = [], None
      self._episodes.clear()
      self._holders.clear()


class GymnasiumEnv(Env):
  """A gymnasium env as a Brax `Env` (see the module docstring); build it with
  `from_gymnasium`.

  * ``pipeline_state``: the episode's handle, int32 [2].
  * ``obs``: float32 [D]; ``reward``, ``done``: float32 []; ``info["truncation"]``: float32 [].
  * Action: float [A] in [-1, 1] (Box, mapped onto [low, high]) or int32 [] (Discrete).
  """

  def __init__(self, pool: HostEnvPool):
    self.pool = pool
    self.spaces = pool.spaces
    if self.spaces.discrete:
      self.num_actions = self.spaces.num_actions

  @property
  def observation_size(self) -> int:
    return self.spaces.obs_size

  @property
  def action_size(self) -> int:
    return self.spaces.action_size

  @property
  def backend(self) -> str:
    return "gymnasium"

  def env_action(self, action: jax.Array) -> jax.Array:
    """Our action -> the gymnasium env's: [-1, 1]^A onto [low, high] (clipped), or the int."""
    if self.spaces.discrete:
      return jnp.asarray(action, jnp.int32).reshape(())
    low = jnp.asarray(self.spaces.low, jnp.float32)
    high = jnp.asarray(self.spaces.high, jnp.float32)
    a = jnp.clip(jnp.asarray(action, jnp.float32), -1.0, 1.0)
    return low + 0.5 * (a + 1.0) * (high - low)

  def reset(self, rng: jax.Array) -> State:
    seed = seed_of(rng)
    shapes = (jax.ShapeDtypeStruct((2,), jnp.int32),
              jax.ShapeDtypeStruct((self.observation_size,), jnp.float32))
    handle, obs = jax.pure_callback(self.pool.reset, shapes, seed,
                                    vmap_method="broadcast_all")
    zero = jnp.zeros((), jnp.float32)
    return State(pipeline_state=handle, obs=obs, reward=zero, done=zero, metrics={},
                 info={"truncation": zero})

  def step(self, state: State, action: jax.Array) -> State:
    scalar = jax.ShapeDtypeStruct((), jnp.float32)
    shapes = (jax.ShapeDtypeStruct((2,), jnp.int32),
              jax.ShapeDtypeStruct((self.observation_size,), jnp.float32),
              scalar, scalar, scalar)
    handle, obs, reward, terminated, truncated = jax.pure_callback(
        self.pool.step, shapes, state.pipeline_state, state.obs, self.env_action(action),
        vmap_method="broadcast_all")
    done = jnp.maximum(terminated, truncated)
    return state.replace(pipeline_state=handle, obs=obs, reward=reward, done=done,
                         info={**state.info, "truncation": truncated})

  def obs_renderer(self, size: int) -> Callable[[jax.Array], jax.Array] | None:
    """`render(obs) -> uint8 [size, size, 3]` for the classic-control ids we can draw from the
    observation (Pendulum, CartPole; pure JAX, for videos), else None."""
    from mbrl_jax.envs import rendering  # pylint: disable=import-outside-toplevel
    name = self.spaces.env_id.split(":")[-1].split("-v")[0]
    if name == "Pendulum":
      return lambda obs: rendering.render_pendulum(obs[0], obs[1], size=size)
    if name == "CartPole":
      return lambda obs: rendering.render_cartpole(
          obs[0], jnp.cos(obs[2]), jnp.sin(obs[2]), size=size, pole_length=1.0,
          half_width=2.6, center=(0.0, 0.5), cart_half_extents=(0.25, 0.15))
    return None


def seed_of(key: jax.Array) -> jax.Array:
  """The gymnasium seed `GymnasiumEnv.reset(key)` uses: uint32 [], drawn from `key`."""
  return jax.random.bits(key, (), jnp.uint32)


def _factory(env_or_id: Any, kwargs: dict) -> tuple[Callable[[], Any], str, dict]:
  """(make one host env, the env's name, {"max_episode_steps": the id's time limit})."""
  gym = _gymnasium()
  limit: dict[str, int | None] = {"max_episode_steps": None}
  if isinstance(env_or_id, str):
    env_id = env_or_id[len(PREFIX):] if is_gymnasium_name(env_or_id) else env_or_id

    def make():
      try:
        env = gym.make(env_id, **kwargs)
      except gym.error.Error as e:
        raise ValueError(f"gymnasium cannot make {env_id!r}: {e}") from None
      limit["max_episode_steps"] = getattr(env.spec, "max_episode_steps", None)
      return _strip_time_limit(env)
    return make, env_id, limit
  if kwargs:
    raise ValueError("keyword arguments are for gymnasium.make; pass them with an env id")
  if isinstance(env_or_id, gym.Env):
    template = env_or_id
    spec = getattr(template, "spec", None)
    name = spec.id if spec is not None else type(template.unwrapped).__name__
    return (lambda: copy.deepcopy(template)), name, limit
  if callable(env_or_id):
    return env_or_id, getattr(env_or_id, "__name__", "env"), limit
  raise ValueError(f"from_gymnasium takes an env id, a gymnasium.Env or a factory, got "
                   f"{type(env_or_id).__name__}")


def from_gymnasium(env_or_id: Any, *, max_envs: int = 256, **make_kwargs: Any) -> GymnasiumEnv:
  """A gymnasium env as a Brax `Env` stepped on the host (see the module docstring).

  Args:
    env_or_id: a gymnasium id ("Pendulum-v1", "gymnasium:Pendulum-v1", or
      "my_package:MyEnv-v0", which gymnasium imports first), a `gymnasium.Env` (copied with
      `copy.deepcopy` for each host env), or a function making one.
    max_envs: episodes that may hold a host env at once (seeds x evaluation episodes, plus
      the training episodes, must fit).
    **make_kwargs: forwarded to `gymnasium.make` (with an id).

  Returns:
    A `GymnasiumEnv` without a time limit (`envs.make("gymnasium:<id>")` adds one).

  Raises:
    ImportError: gymnasium is not installed.
    ValueError: an unknown id, or spaces the adapter cannot carry (one line each).
  """
  factory, env_id, limit = _factory(env_or_id, make_kwargs)
  first = factory()
  spaces = check_spaces(first, env_id, limit["max_episode_steps"])
  made = [first]

  def lazily():                      # the first env made is reused as the first host env
    return made.pop() if made else factory()

  return GymnasiumEnv(HostEnvPool(lazily, spaces, max_envs=max_envs))


@functools.lru_cache(maxsize=64)
def spaces_of(name: str) -> Spaces:
  """The `Spaces` of "gymnasium:<id>" (one env made and closed; cached)."""
  factory, env_id, limit = _factory(name, {})
  env = factory()
  try:
    return check_spaces(env, env_id, limit["max_episode_steps"])
  finally:
    env.close()


def default_episode_length(name: str) -> int:
  """The gymnasium spec's max_episode_steps for "gymnasium:<id>" (1000 without one)."""
  return spaces_of(name).max_episode_steps or DEFAULT_EPISODE_LENGTH


def check_name(config: Any, field: str, *, continuous: bool) -> None:
  """A config's "gymnasium:<id>" field names an env the adapter carries (with continuous
  actions when `continuous`), else a one-line ValueError naming the field."""
  from mbrl_jax import checks  # pylint: disable=import-outside-toplevel
  name = getattr(config, field)
  try:
    spaces = spaces_of(name)
  except (ImportError, ValueError) as e:
    checks.fail(config, field, f"{name!r}: {e}")
  if continuous and spaces.discrete:
    checks.fail(config, field, f"{name!r} has discrete actions (Discrete({spaces.num_actions})); "
                f"this algorithm needs continuous (Box) ones")
