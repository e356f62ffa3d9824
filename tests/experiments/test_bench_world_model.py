"""experiments/bench_world_model.py runs end to end at a tiny size and writes its JSON rows."""

import dataclasses
import json
import pathlib
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import bench_world_model  # noqa: E402

from mbrl_jax.types import Transition  # noqa: E402

TINY = bench_world_model.Args(
    envs=("pendulum",), deter=16, stoch=4, classes=4, hidden=16, mlp_layers=1,
    train_episodes=3, test_episodes=2, episode_length=40, train_steps=20, steps_per_call=10,
    batch_size=4, seq_len=8, context=3, horizon=6, starts_per_episode=3)


def test_open_loop_windows_align_context_actions_and_future():
  # Episode e, step t: obs = 100 e + t, action = t, so every index is readable.
  E, T, context, horizon = 2, 12, 3, 4
  t = np.arange(T, dtype=np.float32)
  obs = (100.0 * np.arange(E)[:, None] + t)[..., None]                       # [E, T, 1]
  data = Transition(obs=obs, action=np.broadcast_to(t[None, :, None], (E, T, 1)),
                    reward=np.zeros((E, T)), next_obs=obs + 1.0,
                    terminated=np.zeros((E, T)), truncated=np.zeros((E, T)))
  ctx, prev_a, act, future = bench_world_model.open_loop_windows(data, context, horizon, 2)
  assert ctx.shape == (4, 3, 1) and prev_a.shape == (4, 3, 1)
  assert act.shape == (4, 4, 1) and future.shape == (4, 4, 1)
  # Starts s = 0 and s = T - horizon - context + 1 = 6, episodes in order within each start.
  np.testing.assert_array_equal(ctx[:, :, 0], [[0, 1, 2], [100, 101, 102], [6, 7, 8],
                                               [106, 107, 108]])
  # The action before each context observation (zero before obs 0), then the actions taken
  # from the start observation on, and the observations they lead to.
  np.testing.assert_array_equal(prev_a[:, :, 0], [[0, 0, 1], [0, 0, 1], [5, 6, 7], [5, 6, 7]])
  np.testing.assert_array_equal(act[:, :, 0], [[2, 3, 4, 5]] * 2 + [[8, 9, 10, 11]] * 2)
  np.testing.assert_array_equal(future[:, :, 0], [[3, 4, 5, 6], [103, 104, 105, 106],
                                                  [9, 10, 11, 12], [109, 110, 111, 112]])


def test_bench_world_model_tiny(tmp_path):
  out = tmp_path / "bench.json"
  rows = bench_world_model.main(dataclasses.replace(TINY, out=out))
  saved = json.loads(out.read_text())
  assert [r["name"] for r in saved] == [r["name"] for r in rows] == ["open_loop/pendulum"]
  r = saved[0]
  assert r["train_steps"] == 20 and r["horizon"] == 6 and r["starts"] == 2 * 3
  assert r["world_model"]["deter"] == 16 and r["train_transitions"] == 3 * 40
  for name in ("model_mse", "no_change_mse", "untrained_model_mse", "model_mse_h1",
               "model_mse_h6", "no_change_mse_h6", "model_nmse", "no_change_nmse", "train_s"):
    assert np.isfinite(r[name]) and r[name] > 0, (name, r[name])
  np.testing.assert_allclose(r["ratio"], r["model_mse"] / r["no_change_mse"], rtol=1e-6)
  assert len(r["model_mse_per_dim"]) == 3
  # Without a model the baseline grows with the horizon (the pendulum moves).
  assert r["no_change_mse_h6"] > r["no_change_mse_h1"]
  assert np.isfinite(r["final_loss"]["wm_loss"]) and "jax" in r


def test_flags_are_validated_before_compiling():
  with pytest.raises(ValueError, match="--seq-len"):
    bench_world_model.validate(bench_world_model.Args(seq_len=500))
  with pytest.raises(ValueError, match="--envs"):
    bench_world_model.validate(bench_world_model.Args(envs=("nope",)))
  with pytest.raises(ValueError, match="--preset"):
    bench_world_model.validate(bench_world_model.Args(preset="huge"))
  with pytest.raises(ValueError, match="deter"):
    bench_world_model.validate(bench_world_model.Args(deter=0))
