"""Videos of what an agent does: one evaluation episode, recorded as a state trajectory by one
compiled call and rendered after it (rendering stays out of the training loop), written as a
GIF (or an MP4 where imageio-ffmpeg is installed).

  python -m mbrl_jax.run.video runs/pets_quick            # the latest checkpoint's policy
  python experiments/pets.py --preset quick --video        # the final policy, after the run
  python experiments/mbpo.py --video-every 5               # also after every 5th epoch

Frames: envs with ``render_pixels`` (ours: cart-poles, pendulum) draw their physical state;
gymnasium envs we can draw from the observation (Pendulum, CartPole) through
``GymnasiumEnv.obs_renderer``; Brax envs get a flat side view (x-z) of their capsule, sphere
and box geoms, since Brax's renderer (`brax.io.image`) needs pytinyrenderer, which is not
installed here; any other env shows its observation as bars.

`POLICIES` names, per algorithm, how its state gives the env and the policy to film (PETS: MPC
on the fitted model; MBPO and SAC: the deterministic actor; Dreamer: the actor on the
filtered latent).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import pathlib
import sys
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mbrl_jax.envs import acting
from mbrl_jax.envs import rendering

FORMATS = ("gif", "mp4")


class Film(NamedTuple):
  """What to film of an algorithm: the env, the policy a state gives, the episode length cap.

  Attributes:
    env: the env the policy acts in.
    select: `select(state) -> part`: the part of the state the policy needs (its replay
      buffers left out, so filming does not copy them).
    policy_of: `policy_of(part) -> acting.Policy` (traced: the parameters are arguments of
      the compiled recording, not constants in it).
    max_steps: the episode's length cap.
  """

  env: Any
  select: Callable[[Any], Any]
  policy_of: Callable[[Any], acting.Policy]
  max_steps: int


def _pets(config: Any) -> Film:
  from mbrl_jax.algorithms import pets  # pylint: disable=import-outside-toplevel
  parts = pets.make_parts(config)
  return Film(parts.env, lambda state: state._replace(buffer=None),
              lambda state: pets.make_policy(state, config, parts), config.trial_length)


def _mbpo(config: Any, use_model: bool = True) -> Film:
  from mbrl_jax import envs  # pylint: disable=import-outside-toplevel
  from mbrl_jax.algorithms import mbpo  # pylint: disable=import-outside-toplevel
  parts = mbpo.make_parts(config, use_model=use_model)

  def policy_of(params):
    return acting.stateless(lambda k, obs: parts.sac.act(params, obs, k, deterministic=True))
  return Film(parts.env, lambda state: state.sac.params, policy_of,
              config.episode_length or envs.default_episode_length(config.env))


def _dreamer(config: Any) -> Film:
  from mbrl_jax import envs  # pylint: disable=import-outside-toplevel
  from mbrl_jax.algorithms import dreamer  # pylint: disable=import-outside-toplevel
  parts = dreamer.make_parts(config)
  return Film(parts.env, lambda state: (state.model_params, state.ac.actor),
              lambda p: dreamer.make_policy(parts, p[0], p[1], "eval"),
              envs.default_episode_length(config.env))


# Algorithm.name -> (its module under mbrl_jax.algorithms, film(config)).
POLICIES: dict[str, tuple[str, Callable[[Any], Film]]] = {
    "pets": ("pets", _pets),
    "mbpo": ("mbpo", _mbpo),
    "sac": ("mbpo", lambda c: _mbpo(c, use_model=False)),
    "dreamer": ("dreamer", _dreamer),
}


class Recording(NamedTuple):
  """One episode's states, from the reset to the end.

  Attributes:
    states: the env state at each step, reset first.        # [T + 1, ...]
    valid: the state belongs to the episode.                # [T + 1] bool
    ret: the episode's return.                              # []
  """

  states: Any
  valid: jax.Array
  ret: jax.Array


def record(env: Any, policy: acting.Policy, key: jax.Array, max_steps: int) -> Recording:
  """One episode from a reset (like `acting.episode`), keeping every env state. Pure; jit it."""
  reset_key, steps_key = jax.random.split(key)
  actor = acting.reset(env, policy, reset_key)

  def body(carry, k):
    actor, active, ret = carry
    actor, tr, _, _ = acting.step(env, policy, actor, k, auto_reset=False)
    ret = ret + jnp.where(active, tr.reward, 0.0)
    return (actor, active & (actor.env_state.done < 0.5), ret), (actor.env_state, active)

  (_, _, ret), (states, active) = jax.lax.scan(
      body, (actor, jnp.asarray(True), jnp.zeros((), jnp.float32)),
      jax.random.split(steps_key, max_steps))
  states = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), actor.env_state, states)
  return Recording(states=states, valid=jnp.concatenate([jnp.ones((1,), bool), active]),
                   ret=ret)


def _bars(obs: jax.Array, size: int) -> jax.Array:
  """The observation as vertical bars around a middle line (tanh-squashed), uint8 [S, S, 3]."""
  obs = jnp.ravel(obs).astype(jnp.float32)
  d = obs.shape[0]
  col = jnp.minimum((jnp.arange(size) * d) // size, d - 1)                  # [S]
  height = jnp.tanh(obs[col])                                              # [S] in (-1, 1)
  y = 1.0 - 2.0 * (jnp.arange(size, dtype=jnp.float32) + 0.5) / size       # [S], top = 1
  lit = ((y[:, None] >= jnp.minimum(0.0, height)) & (y[:, None] <= jnp.maximum(0.0, height)))
  img = jnp.where(lit[..., None], jnp.asarray(rendering.CART), jnp.asarray(rendering.BACKGROUND))
  return rendering.to_uint8(img)


def _brax_side_view(env: Any, size: int) -> Callable[[Any], jax.Array]:
  """A side view (x-z plane) of a Brax pipeline state: each capsule or cylinder geom as a
  thick segment, spheres and boxes as discs (boxes by their first half size), the ground as
  a line; the view follows the root body's x."""
  from brax import math as brax_math  # pylint: disable=import-outside-toplevel
  sys_ = env.sys
  kinds = np.asarray(sys_.geom_type)
  bodies = np.asarray(sys_.geom_bodyid)
  sizes = np.asarray(sys_.geom_size)
  # mujoco geom types: 0 plane, 2 sphere, 3 capsule, 5 cylinder, 6 box; body 0 is the world.
  drawn = [g for g in range(len(kinds)) if bodies[g] > 0 and kinds[g] in (2, 3, 5, 6)]
  geom_pos = jnp.asarray(sys_.geom_pos)
  geom_quat = jnp.asarray(sys_.geom_quat)

  def draw(pipeline_state: Any) -> jax.Array:
    pos, rot = pipeline_state.x.pos, pipeline_state.x.rot          # [L, 3], [L, 4]
    u, v, px = rendering.pixel_grid(size, (pos[0, 0], 1.0), 2.0)
    ground = rendering.segment_alpha(u, v, jnp.array([-1e3, 0.0]), jnp.array([1e3, 0.0]),
                                     px, px)
    layers = [(ground, rendering.RAIL)]
    for g in drawn:
      link = bodies[g] - 1
      center = pos[link] + brax_math.rotate(geom_pos[g], rot[link])
      if kinds[g] in (3, 5):
        axis = brax_math.rotate(brax_math.rotate(jnp.array([0.0, 0.0, sizes[g, 1]]),
                                                 geom_quat[g]), rot[link])
        a, b = (center - axis)[jnp.array([0, 2])], (center + axis)[jnp.array([0, 2])]
      else:
        a = b = center[jnp.array([0, 2])]
      layers.append((rendering.segment_alpha(u, v, a, b, max(float(sizes[g, 0]), px), px),
                     rendering.POLE if g % 2 else rendering.CART))
    return rendering.to_uint8(rendering.composite(layers))
  return draw


def frame_fn(env: Any, size: int) -> Callable[[Any], jax.Array]:
  """`frame(env_state) -> uint8 [size, size, 3]` for `env` (see the module docstring)."""
  inner = env.unwrapped
  draw_obs = inner.obs_renderer(size) if hasattr(inner, "obs_renderer") else None
  if draw_obs is not None:
    return lambda state: draw_obs(state.obs)
  if hasattr(inner, "render_pixels"):
    return lambda state: inner.render_pixels(state.pipeline_state, size)
  if hasattr(inner, "sys") and hasattr(inner.sys, "geom_bodyid"):
    draw = _brax_side_view(inner, size)
    return lambda state: draw(state.pipeline_state)
  return lambda state: _bars(state.obs, size)


def frames(env: Any, recording: Recording, size: int = 128) -> np.ndarray:
  """The recording's valid states rendered, uint8 [N, size, size, 3] (after the episode, one
  vmapped render call)."""
  return _render(env, recording, _renderer(env, size))


@functools.lru_cache(maxsize=16)
def _renderer(env: Any, size: int) -> Callable[[Any], jax.Array]:
  return jax.jit(jax.vmap(frame_fn(env, size)))


def _render(env: Any, recording: Recording, render: Callable) -> np.ndarray:
  del env
  n = int(np.asarray(recording.valid).sum())
  return np.asarray(render(recording.states))[:n]        # every state: one shape, one compile


def can_write_mp4() -> bool:
  """imageio-ffmpeg is installed (imageio writes MP4 through it)."""
  try:
    import imageio_ffmpeg  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return False
  return True


def write(path: pathlib.Path, images: np.ndarray, fps: int = 20) -> pathlib.Path:
  """Writes uint8 [N, H, W, 3] frames to `path` (.gif, or .mp4 with imageio-ffmpeg)."""
  import imageio.v2 as imageio  # pylint: disable=import-outside-toplevel
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  if path.suffix == ".mp4":
    if not can_write_mp4():
      raise ValueError("MP4 needs imageio-ffmpeg (`pip install imageio-ffmpeg`); write a "
                       ".gif instead")
    imageio.mimwrite(path, list(images), fps=fps)
  elif path.suffix == ".gif":
    imageio.mimwrite(path, list(images), duration=1000.0 / fps, loop=0)
  else:
    raise ValueError(f"video path {path} must end in .gif or .mp4")
  return path


@functools.lru_cache(maxsize=8)
def _recorder(name: str, config: Any, max_steps: int | None):
  """(film, jitted `record_part(part, key) -> Recording`), once per config."""
  what = POLICIES[name][1](config)
  steps = max_steps or what.max_steps
  return what, jax.jit(lambda part, key: record(what.env, what.policy_of(part), key, steps))


def film(name: str, config: Any, state: Any, path: pathlib.Path, *, seed_index: int | None = None,
         key: jax.Array | None = None, size: int = 128, max_steps: int | None = None,
         fps: int = 20) -> tuple[pathlib.Path, float]:
  """Records one evaluation episode of algorithm `name`'s policy in `state` and writes it to
  `path`. `state` is one seed's, or a vmapped run's with `seed_index` naming the seed. Returns
  (path, the episode's return). The recording is compiled once per (name, config,
  max_steps): filming a run every few chunks compiles once."""
  if name not in POLICIES:
    raise ValueError(f"no video for algorithm {name!r}; available: {', '.join(POLICIES)}")
  what, record_part = _recorder(name, config, max_steps)
  part = what.select(state)
  if seed_index is not None:
    part = seed_slice(part, seed_index)
  recording = record_part(part, jax.random.key(0) if key is None else key)
  images = _render(what.env, recording, _renderer(what.env, size))
  return write(path, images, fps), float(recording.ret)


def seed_slice(state: Any, index: int = 0) -> Any:
  """One seed's state out of a vmapped run's (every leaf's leading axis)."""
  return jax.tree.map(lambda x: x[index], state)


def from_run_dir(run_dir: pathlib.Path, *, seed_index: int = 0, fmt: str = "gif",
                 size: int = 128, max_steps: int | None = None) -> tuple[pathlib.Path, float]:
  """Films the latest checkpoint of the run in `run_dir` into run_dir/videos/."""
  from mbrl_jax.run import config as config_lib  # pylint: disable=import-outside-toplevel
  from mbrl_jax.run.checkpoint import Checkpointer, run_meta  # pylint: disable=import-outside-toplevel
  run_dir = pathlib.Path(run_dir)
  if not (run_dir / "config.json").exists():
    raise ValueError(f"{run_dir}: no config.json there (not a run directory?)")
  saved = json.loads((run_dir / "config.json").read_text())
  name = saved["algorithm"]
  if name not in POLICIES:
    raise ValueError(f"{run_dir}: no video for algorithm {name!r}; available: "
                     f"{', '.join(POLICIES)}")
  module = importlib.import_module(f"mbrl_jax.algorithms.{POLICIES[name][0]}")
  config = config_lib.from_dict(module.Config, saved["config"])
  algorithm = module.make(config) if name != "sac" else module.make(config, use_model=False)
  seeds = list(range(saved["seed"], saved["seed"] + saved["seeds"]))
  keys = jnp.stack([jax.random.key(s) for s in seeds])
  ckpt = Checkpointer(run_dir / "checkpoints", meta=run_meta(name, keys, config))
  step = ckpt.latest_step()
  if step is None:
    raise ValueError(f"{run_dir}: no checkpoint yet")
  if not 0 <= seed_index < len(seeds):
    raise ValueError(f"--seed-index must be in [0, {len(seeds)}), got {seed_index}")
  template = jax.eval_shape(jax.vmap(algorithm.init), keys)[0]
  state, _ = ckpt.restore(template)
  # Named after the last chunk the checkpoint holds, as --video names its files.
  after = f"{algorithm.unit}{step - 1}" if step > 0 else "init"
  path = run_dir / "videos" / f"{name}_{after}_seed{seeds[seed_index]}.{fmt}"
  return film(name, config, state, path, seed_index=seed_index, size=size, max_steps=max_steps)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
      prog="python -m mbrl_jax.run.video",
      description="Render one evaluation episode of a run's latest checkpoint into DIR/videos/.")
  parser.add_argument("run_dir", type=pathlib.Path)
  parser.add_argument("--seed-index", type=int, default=0, help="which of the run's seeds")
  parser.add_argument("--format", choices=FORMATS, default="gif")
  parser.add_argument("--size", type=int, default=128, help="frame side in pixels")
  parser.add_argument("--max-steps", type=int, default=None, help="cap on the episode length")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  try:
    path, ret = from_run_dir(args.run_dir, seed_index=args.seed_index, fmt=args.format,
                             size=args.size, max_steps=args.max_steps)
  except (ValueError, OSError) as e:
    raise SystemExit(f"error: {e}") from None
  print(f"wrote {path} (episode return {ret:.1f})")


if __name__ == "__main__":
  main()
