"""Videos: `--video-every` on a tiny PETS script run writes GIFs that read back with one frame
per state of the filmed episode; `python -m mbrl_jax.run.video DIR` films a run directory's
latest checkpoint; the recording is the episode `acting.episode` runs; the frame renderers
(ours, the gymnasium adapter's, the observation-bar fallback) and the writer."""

import pathlib
import sys

import imageio.v2 as imageio
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax import envs
from mbrl_jax.envs import acting
from mbrl_jax.run import video

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import pets as pets_script  # noqa: E402

LENGTH = 12
TINY = ["--env", "pendulum", "--trials", "1", "--trial-length", str(LENGTH),
        "--model.num-members", "2", "--model.hidden-sizes", "8",
        "--fit.max-epochs", "1", "--planner.num-particles", "2", "--planner.horizon", "3",
        "planner.optimizer:cem-config", "--planner.optimizer.population", "8",
        "--planner.optimizer.iterations", "1", "--planner.optimizer.return-mean-elites"]


def _read(path):
  images = imageio.mimread(path)
  return np.stack([np.asarray(im)[..., :3] for im in images])


@pytest.fixture(scope="module")
def pets_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("pets") / "run"
  pets_script.main(["--video-every", "1", "--out", str(out)] + TINY)
  return out


def test_pets_video_every_chunk_writes_a_playable_gif(pets_run, capsys):
  path = pets_run / "videos" / "pets_trial1.gif"                    # after the planned trial
  frames = _read(path)
  # PETS episodes never end early on the pendulum: the reset state and one per step.
  assert frames.shape == (LENGTH + 1, 128, 128, 3) and frames.dtype == np.uint8
  assert frames.std() > 0 and not np.array_equal(frames[0], frames[-1])    # it moves
  assert sorted(p.name for p in (pets_run / "videos").iterdir()) == ["pets_trial1.gif"]


def test_video_module_films_the_latest_checkpoint(pets_run, capsys):
  video.main([str(pets_run), "--size", "32"])
  out = capsys.readouterr().out
  path = pets_run / "videos" / "pets_trial1_seed0.gif"         # the checkpoint after trial 1
  assert f"wrote {path}" in out
  assert _read(path).shape == (LENGTH + 1, 32, 32, 3)
  with pytest.raises(SystemExit, match="no config.json there"):
    video.main([str(pets_run / "videos")])


def test_the_recording_is_the_episode_acting_runs_and_stops_at_done():
  env = envs.make("cartpole_v1")
  policy = acting.stateless(lambda key, obs: jnp.ones((), jnp.int32))
  key = jax.random.key(4)
  rec = jax.jit(lambda k: video.record(env, policy, k, 60))(key)
  ep = jax.jit(lambda k: acting.episode(env, policy, k, 60))(key)
  n = int(ep.length)
  assert n < 60 and int(rec.valid.sum()) == n + 1           # always right: it falls over
  np.testing.assert_allclose(rec.ret, ep.ret)
  np.testing.assert_allclose(rec.states.obs[1:n + 1], ep.transitions.next_obs[:n], rtol=1e-5,
                             atol=1e-6)
  frames = video.frames(env, rec, size=24)
  assert frames.shape == (n + 1, 24, 24, 3)


def test_frame_renderers_and_writer(tmp_path):
  gym_env = envs.make("gymnasium:Pendulum-v1")
  state = gym_env.reset(jax.random.key(0))
  theirs = jax.jit(video.frame_fn(gym_env, 32))(state)
  th = jnp.arctan2(state.obs[1], state.obs[0])
  ours = jax.jit(envs.Pendulum().render_pixels, static_argnums=1)(jnp.stack([th, 0.0]), 32)
  assert np.abs(np.asarray(theirs, int) - np.asarray(ours, int)).max() <= 1
  car = envs.make("gymnasium:MountainCarContinuous-v0")     # no drawing of its own: bars
  bars = jax.jit(video.frame_fn(car, 16))(car.reset(jax.random.key(0)))
  assert bars.shape == (16, 16, 3) and bars.dtype == jnp.uint8 and bars.std() > 0
  images = np.random.default_rng(0).integers(0, 255, (5, 16, 16, 3), dtype=np.uint8)
  path = video.write(tmp_path / "a.gif", images)
  assert _read(path).shape == (5, 16, 16, 3)
  if not video.can_write_mp4():
    with pytest.raises(ValueError, match="MP4 needs imageio-ffmpeg"):
      video.write(tmp_path / "a.mp4", images)
    with pytest.raises(SystemExit, match="mp4 needs imageio-ffmpeg"):
      pets_script.main(["--video-format", "mp4", "--out", str(tmp_path / "r")] + TINY)
