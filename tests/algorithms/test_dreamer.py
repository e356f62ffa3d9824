"""Dreamer: replay stores each frame once and its windows cross episodes, it learns to balance
the cart-pole, evaluation scores complete episodes, chunks compile once, seeds vmap, resume
equals an uninterrupted run, pixels run; config errors name the field (tiny sizes).

The cart-pole run (2 seeds, vmapped, checkpointed) is made once per module and shared by the
learning, evaluation, compilation and resume tests, so the module compiles it once."""

import dataclasses
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax import data
from mbrl_jax import envs
from mbrl_jax import run as run_lib
from mbrl_jax.algorithms import dreamer
from mbrl_jax.envs import acting
from mbrl_jax.models import rssm
from mbrl_jax.policies import imagination as im
from tests.conftest import count_compilations

pytestmark = pytest.mark.full_compile   # runtime-bound (tests/conftest.py)

TINY_WM = rssm.WorldModelConfig(deter=16, stoch=4, classes=4, hidden=16, mlp_layers=1,
                                cnn_depth=4)
TINY = dreamer.Config(
    env="pendulum", env_steps=40 + 3 * 20, prefill=40, chunk_steps=20, train_every=10,
    batch_size=2, seq_len=8, imag_starts=12, eval_episodes=2, world_model=TINY_WM,
    actor_critic=im.ActorCriticConfig(hidden=16, layers=1, horizon=4))

# Balancing the cart-pole (reward 1 per step, 200-step limit; random actions fall after ~28
# steps): 500 random steps, then 2 chunks of 500 env steps with a train step every 2.
# Episodes end early, so the replay holds more rows than env steps: capacity 2 x env_steps.
LEARN = dreamer.Config(
    env="cartpole_continuous", env_steps=1500, prefill=500, chunk_steps=500, train_every=2,
    batch_size=8, seq_len=16, buffer_capacity=3000, imag_starts=64, eval_episodes=4,
    model_lr=1e-3,
    world_model=rssm.WorldModelConfig(deter=32, stoch=4, classes=4, hidden=32, mlp_layers=1),
    actor_critic=im.ActorCriticConfig(hidden=32, layers=1, horizon=10, actor_lr=3e-4,
                                      critic_lr=1e-3))
LEARN_KEYS = (0, 1)


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
  """The LEARN run of seeds 0 and 1, checkpointed: (state, history, compile counts, keys,
  checkpoint dir)."""
  keys = jnp.stack([jax.random.key(s) for s in LEARN_KEYS])
  directory = str(tmp_path_factory.mktemp("dreamer") / "full")
  compiles = []
  with count_compilations() as counter:
    state, history = run_lib.train(dreamer.make(LEARN), keys, checkpoint_dir=directory,
                                   progress_fn=lambda c, m: compiles.append(counter.count))
  return state, history, compiles, keys, directory


# ---------------------------------------------------------------------------- replay


@pytest.fixture(scope="module")
def cartpole_steps():
  """Random-action cart-pole: the actor before 120 steps, as 40 + 80 steps, and the actors."""
  env = envs.make("cartpole_continuous")
  policy = acting.uniform_random(env.action_size)
  collect = jax.jit(lambda a, k, n: acting.collect(env, policy, a, k, n)[:2],
                    static_argnums=2)
  a0 = acting.reset(env, policy, jax.random.key(0))
  a1, tr1 = collect(a0, jax.random.key(1), 40)
  _, tr2 = collect(a1, jax.random.key(2), 80)
  return a0, a1, tr1, tr2


def test_replay_rows_store_each_frame_once_and_continue_across_collects(cartpole_steps):
  a0, a1, tr1, tr2 = cartpole_steps
  tr = jax.tree.map(lambda x, y: np.concatenate([x, y]), tr1, tr2)
  done = (tr.terminated + tr.truncated) > 0.5
  assert 2 <= done.sum() and not tr.truncated.any()          # episodes end early, terminated
  # Two collects give the rows one collect of all 120 steps would: the actor carries on.
  parts = [dreamer.replay_rows(a0, tr1), dreamer.replay_rows(a1, tr2)]
  rows = jax.tree.map(lambda x, y: np.concatenate([x, y]), *[p[0] for p in parts])
  valid = np.concatenate([p[1] for p in parts])
  assert rows.obs.shape == (240, 4) and valid.shape == (240,)
  rows = jax.tree.map(lambda x: np.asarray(x)[valid], rows)
  n = 120 + int(done.sum())
  assert rows.obs.shape == (n, 4)                            # one row per step and per end
  # Row by row, built by hand: each step's obs, then the final obs where it ended.
  want_obs, want_reward, want_first, want_last = [], [], [], []
  first, reward_in = True, 0.0
  for t in range(120):
    want_obs.append(tr.obs[t]), want_reward.append(reward_in), want_first.append(first)
    want_last.append(False)
    first, reward_in = False, float(tr.reward[t])
    if done[t]:
      want_obs.append(tr.next_obs[t]), want_reward.append(reward_in)
      want_first.append(False), want_last.append(True)
      first, reward_in = True, 0.0
  np.testing.assert_array_equal(rows.obs, np.stack(want_obs))
  np.testing.assert_array_equal(rows.reward, want_reward)
  np.testing.assert_array_equal(rows.is_first, want_first)
  np.testing.assert_array_equal(rows.is_last, want_last)
  np.testing.assert_array_equal(rows.is_terminal, want_last)    # cart-pole ends terminate
  np.testing.assert_array_equal(rows.action[rows.is_last], 0.0)
  np.testing.assert_array_equal(rows.action[~rows.is_last], tr.action)
  # One window of all rows: its transitions, less those into a first row, are the env's
  # (all but the last, whose next observation has no row yet unless it ended an episode).
  window, is_first = dreamer.window_transitions(jax.tree.map(lambda x: x[None], rows))
  np.testing.assert_array_equal(is_first[0], rows.is_first)
  real = ~rows.is_first[1:]
  assert real.sum() == 120 - (not done[-1])
  for name in ("obs", "action", "reward", "next_obs", "terminated", "truncated"):
    np.testing.assert_array_equal(getattr(window, name)[0][real],
                                  getattr(tr, name)[:real.sum()], err_msg=name)
  # Into a first row: action 0, reward 0, not terminated.
  for name in ("action", "reward", "terminated"):
    np.testing.assert_array_equal(getattr(window, name)[0][~real], 0.0, err_msg=name)


def test_replay_windows_cross_episodes_unless_told_not_to(cartpole_steps):
  a0, a1, tr1, tr2 = cartpole_steps
  buf = data.init(400, dreamer.Step.zeros((4,), 1, jnp.float32))
  buf = data.add_masked(buf, *dreamer.replay_rows(a0, tr1))
  buf = data.add_masked(buf, *dreamer.replay_rows(a1, tr2))
  sample = jax.jit(data.sample_sequences, static_argnums=(2, 3),
                   static_argnames="cross_episodes")
  rows, ok = sample(buf, jax.random.key(0), 256, 17, cross_episodes=True)
  assert bool(ok) and rows.is_first[:, 1:].any()
  rows, ok = sample(buf, jax.random.key(0), 256, 17, cross_episodes=False)
  assert bool(ok) and not rows.is_first[:, 1:].any() and not rows.is_last[:, :-1].any()


# ---------------------------------------------------------------------------- the cart-pole run


def test_dreamer_learns_to_balance_the_cartpole(cartpole_run):
  _, history, _, _, _ = cartpole_run
  env = envs.make("cartpole_continuous")
  random_returns = jax.jit(lambda k: acting.evaluate(
      env, acting.uniform_random(env.action_size), k, 16, 200).returns)(jax.random.key(9))
  random_mean = float(random_returns.mean())                   # ~28
  final = history["eval/return"][-1]                          # [seeds], 4 episodes each
  assert np.all(final > 2.0 * random_mean), (final, random_mean)
  assert final.mean() > 3.0 * random_mean, (final, random_mean)
  assert np.all(history["train/return"][-1] > 1.5 * random_mean)


def test_evaluation_scores_complete_episodes(cartpole_run):
  """Each evaluation episode runs from a reset to its end and counts once: on the cart-pole
  (reward 1 per step) the mean return is the mean length, at most the 200-step limit; the
  first chunk's policy falls early (an evaluation that summed the episodes ended within 200
  steps, or scored 0 when none ended, would not give these)."""
  _, history, _, _, _ = cartpole_run
  ret, length = history["eval/return"], history["eval/episode_length"]
  np.testing.assert_allclose(ret, length, rtol=1e-6)
  assert np.all(length <= 200) and np.all(ret >= 1)
  assert np.all(history["eval/return_min"] <= ret) and np.all(ret <= history["eval/return_max"])
  assert np.all(history["eval/return_max"] <= 200)
  assert np.any(length[0] < 200)


def test_seeds_vmap_and_second_chunk_does_not_recompile(cartpole_run):
  state, history, compiles, _, _ = cartpole_run
  assert len(compiles) == 2 and compiles[0] >= 1 and compiles[1] == compiles[0], compiles
  assert history["eval/return"].shape == (2, 2)
  np.testing.assert_array_equal(history["env_steps"][:, 0], [1000, 1500])
  np.testing.assert_array_equal(history["updates"][:, 1], [250, 500])
  assert np.all(history["model/valid_batch"] == 1.0)
  assert np.all(np.isfinite(history["model/loss"]))
  assert np.all(np.isfinite(history["actor_critic/actor_loss"]))
  # The replay: a row per env step and one per episode end, per seed, in order (the ring has
  # not wrapped): every last row is followed by a first one; the seeds differ.
  b = jax.tree.map(np.asarray, state.buffer.data)
  for s in range(2):
    size, ends = int(state.buffer.size[s]), int(b.is_last[s].sum())
    assert size == 1500 + ends and ends >= history["train/episodes"][:, s].sum() > 0
    assert b.is_first[s, 0] and int(b.is_first[s].sum()) == ends + 1
    np.testing.assert_array_equal(b.is_first[s, 1:size], b.is_last[s, :size - 1])
    # An episode's final row is terminal unless the episode ran to the time limit (a seed that
    # balances for the whole limit is truncated): its steps are the rows since its first row.
    assert not (b.is_terminal[s] & ~b.is_last[s]).any()
    starts, finals = np.flatnonzero(b.is_first[s, :size]), np.flatnonzero(b.is_last[s, :size])
    limit = envs.default_episode_length(LEARN.env)
    for start, final in zip(starts, finals):
      assert 0 < final - start <= limit and (b.is_terminal[s, final] or final - start == limit)
  assert not np.allclose(b.obs[0], b.obs[1])


def test_resume_after_an_interruption_equals_an_uninterrupted_run(cartpole_run, tmp_path):
  # The run's own checkpoints, less the last: what a run killed while its last chunk ran
  # leaves (checkpoints are written whole or not at all). Resuming computes that chunk alone.
  full_state, full, _, keys, directory = cartpole_run
  cut = tmp_path / "cut"
  shutil.copytree(directory, cut)
  meta = run_lib.run_meta("dreamer", keys, LEARN)
  steps = run_lib.Checkpointer(cut, meta=meta).all_steps()
  assert steps == [1, 2], steps               # the last two of the run's checkpoints are kept
  shutil.rmtree(cut / "2")
  assert run_lib.Checkpointer(cut, meta=meta).latest_step() == 1
  state, history = run_lib.train(dreamer.make(LEARN), keys, checkpoint_dir=str(cut),
                                 resume=True)
  for name in full:
    np.testing.assert_array_equal(history[name], full[name], err_msg=name)
  for a, b in zip(jax.tree.leaves(state.model_params), jax.tree.leaves(full_state.model_params)):
    np.testing.assert_array_equal(a, b)
  jax.tree.map(np.testing.assert_array_equal, state.buffer, full_state.buffer)


# ---------------------------------------------------------------------------- pixels, config


@pytest.mark.slow
@pytest.mark.cheap_compile   # compile-bound (tests/conftest.py)
def test_pixels_chunk_runs():
  config = dataclasses.replace(TINY, pixels=True, image_size=8, env_steps=60)
  state, history = run_lib.train(dreamer.make(config), jax.random.key(3))
  # One uint8 frame per env step (no episode ends in 60 pendulum steps).
  assert state.buffer.data.obs.shape == (60, 8, 8, 3)       # capacity = 60 + 60 // 200
  assert state.buffer.data.obs.dtype == jnp.uint8
  assert int(state.buffer.data.obs.max()) > 0
  assert int(state.buffer.size) == 60 and not state.buffer.data.is_last.any()
  assert history["model/recon"].shape == (1,) and np.isfinite(history["model/recon"][0])
  # Pendulum episodes all run to the 200-step limit (none terminates), so evaluation scores
  # full-length episodes with negative returns (not 0 for "none ended").
  np.testing.assert_array_equal(history["eval/episode_length"], [200])
  assert history["eval/return_max"][0] < 0


def test_config_errors_name_the_field():
  with pytest.raises(ValueError, match="chunk_steps"):
    dataclasses.replace(TINY, chunk_steps=25)
  with pytest.raises(ValueError, match="prefill"):
    dataclasses.replace(TINY, prefill=4)
  with pytest.raises(ValueError, match="env"):
    dataclasses.replace(TINY, env="nope")
  with pytest.raises(ValueError, match=r"dreamer.Config.world_model: deter"):
    dataclasses.replace(TINY, world_model=rssm.WorldModelConfig(deter=0))
  with pytest.raises(ValueError, match="image_size"):
    dataclasses.replace(TINY, pixels=True, image_size=20)
  with pytest.raises(ValueError, match="imag_starts"):
    dataclasses.replace(TINY, imag_starts=0)
  with pytest.raises(ValueError, match=r"dreamer.Config.buffer_capacity .*seq_len \+ 1"):
    dataclasses.replace(TINY, prefill=8, buffer_capacity=8)
  with pytest.raises(ValueError, match="typed PRNG key"):
    run_lib.train(dreamer.make(TINY), jax.random.PRNGKey(0))
