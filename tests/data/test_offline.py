"""Offline datasets: generation (`mbrl_jax.run.datasets`: determinism, keys, metadata, the
cache), reading generated sets by name (`mbrl_jax.data.offline.load`, which never generates),
the D4RL HDF5 and Minari readers, clear errors on bad files, normalised scores."""

import json

import h5py
import numpy as np
import pytest

from mbrl_jax.data import offline
from mbrl_jax.run import datasets


@pytest.fixture(scope="module")
def random_sets(tmp_path_factory):
  """The same random pendulum set made twice in two caches, and one with another seed."""
  quiet = dict(log=lambda s: None, expert_reference=False)
  a = datasets.generate("pendulum", "random", size=300, seed=3,
                        cache_dir=tmp_path_factory.mktemp("a"), **quiet)
  b_dir = tmp_path_factory.mktemp("b")
  b = datasets.generate("pendulum", "random", size=300, seed=3, cache_dir=b_dir, **quiet)
  c = datasets.generate("pendulum", "random", size=300, seed=4, cache_dir=b_dir, **quiet)
  return a, b, c, b_dir


def test_generated_dataset_keys_metadata_and_determinism(random_sets):
  a, b, c, b_dir = random_sets
  assert set(a.arrays) == set(offline.KEYS)
  assert a.arrays["observations"].shape == (300, 3) and a.arrays["actions"].shape == (300, 1)
  for k in offline.KEYS:
    np.testing.assert_array_equal(a.arrays[k], b.arrays[k])
  assert not np.array_equal(a.arrays["actions"], c.arrays["actions"])
  # Consecutive rows chain within an episode; pendulum episodes end by the 200-step limit only.
  a_ = a.arrays
  np.testing.assert_allclose(a_["next_observations"][:-1][a_["timeouts"][:-1] == 0],
                             a_["observations"][1:][a_["timeouts"][:-1] == 0], atol=1e-6)
  assert a_["timeouts"].sum() == 1 and a_["timeouts"][199] == 1 and a_["terminals"].sum() == 0
  assert np.all(np.abs(a_["actions"]) <= 1)
  m = a.metadata
  for k in ("env", "backend", "kind", "policy_return", "size", "seed", "library_version",
            "ref_min_score", "ref_max_score"):
    assert k in m
  assert (m["env"], m["kind"], m["size"], m["seed"]) == ("pendulum", "random", 300, 3)
  assert m["policy_return"] == pytest.approx(a_["rewards"][:200].sum(), rel=1e-5)
  assert -1700 < m["ref_min_score"] < -700          # a random pendulum policy
  # A second call reads the cache: the file is named by what determines it.
  files = sorted(p.name for p in b_dir.glob("*.hdf5"))
  assert len(files) == 2 and all(f.startswith("pendulum-random-300-s") for f in files)
  again = datasets.generate("pendulum", "random", size=300, seed=3, cache_dir=b_dir,
                            log=lambda s: (_ for _ in ()).throw(AssertionError(s)),
                            expert_reference=False)
  np.testing.assert_array_equal(again.arrays["rewards"], b.arrays["rewards"])
  # `load` reads it by name from that cache, and only reads: a set not made is an error that
  # gives the command making it.
  by_name = offline.load("pendulum-random", size=300, seed=3, cache_dir=b_dir)
  np.testing.assert_array_equal(by_name.arrays["actions"], b.arrays["actions"])
  with pytest.raises(ValueError) as e:
    offline.load("pendulum-random", size=301, seed=3, cache_dir=b_dir)
  msg = str(e.value)
  assert "\n" not in msg and "not in the cache" in msg, msg
  assert "make_dataset.py --env pendulum --kind random --size 301 --seed 3" in msg, msg
  assert len(list(b_dir.glob("*.hdf5"))) == 2 and not list(b_dir.glob("*-work"))


def test_cache_keys_and_sac_settings():
  k = offline.cache_key("hopper", "medium", 1000, 2)
  assert k.startswith("hopper-medium-1000-s2-")
  assert offline.cache_key("hopper", "medium", 1000, 2, sac_steps=50_000) != k
  # medium-replay is the SAC run's buffer whatever the size: no size in its name.
  mr = offline.cache_key("hopper", "medium-replay", 1000, 2)
  assert mr.startswith("hopper-medium-replay-s2-") and mr.split("-")[-1] == k.split("-")[-1]
  assert offline.cache_key("hopper", "medium-replay", 5, 2) == mr
  # The names digest every field of the SAC run the generator builds from them.
  cfg = datasets.sac_config("hopper", 50_000)
  assert cfg.env_steps == 50_000 and cfg.sac.normalize_observations
  assert datasets.sac_config("pendulum").sac.hidden_sizes == (64, 64)
  assert offline.parse_name("walker2d-medium-expert") == ("walker2d", "medium-expert")
  assert offline.parse_name("walker2d-mediocre") is None


def test_generate_rejects_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match="kind must be one of"):
    datasets.generate("pendulum", "medium-random", size=10, cache_dir=tmp_path)
  with pytest.raises(ValueError, match="size must be a positive int"):
    datasets.generate("pendulum", "random", size=0, cache_dir=tmp_path)
  with pytest.raises(ValueError, match="not a registered continuous-action env"):
    datasets.generate("cartpole_v1", "random", size=10, cache_dir=tmp_path)


def _toy(n=7, o=3, a=1, seed=0):
  rng = np.random.default_rng(seed)
  arrays = {"observations": rng.normal(size=(n, o)).astype(np.float32),
            "actions": rng.uniform(-1, 1, (n, a)).astype(np.float32),
            "rewards": rng.normal(size=n).astype(np.float32),
            "next_observations": rng.normal(size=(n, o)).astype(np.float32),
            "terminals": np.zeros(n, np.float32), "timeouts": np.zeros(n, np.float32)}
  arrays["terminals"][3] = 1
  return offline.Dataset(arrays, {"env": "pendulum", "kind": "toy"})


def test_d4rl_round_trip_and_raw_files(tmp_path):
  ds = _toy()
  offline.write_d4rl(tmp_path / "x.hdf5", ds)
  back = offline.read_d4rl(tmp_path / "x.hdf5", env="pendulum")
  for k in offline.KEYS:
    np.testing.assert_array_equal(back.arrays[k], ds.arrays[k])
  assert back.metadata["kind"] == "toy" and back.metadata["size"] == 7
  # Episode returns: rows 0..3 end at the terminal; rows 4..6 never end (left out).
  assert back.metadata["policy_return"] == pytest.approx(ds.arrays["rewards"][:4].sum(), 1e-5)
  # D4RL's own raw layout: no next_observations, [N, 1] rewards, bool flags, a timeout.
  obs = np.arange(12, dtype=np.float32).reshape(6, 2)
  with h5py.File(tmp_path / "raw.hdf5", "w") as f:
    f["observations"] = obs
    f["actions"] = np.ones((6, 1), np.float32)
    f["rewards"] = np.arange(6, dtype=np.float32)[:, None]
    f["terminals"] = np.array([0, 0, 0, 0, 1, 0], bool)
    f["timeouts"] = np.array([0, 1, 0, 0, 0, 0], bool)
    f.create_group("infos")
  raw = offline.read_d4rl(tmp_path / "raw.hdf5")
  # Rows 1 (timeout: its next row starts a new episode) and 5 (the last) are dropped.
  np.testing.assert_array_equal(raw.arrays["observations"], obs[[0, 2, 3, 4]])
  np.testing.assert_array_equal(raw.arrays["next_observations"], obs[[1, 3, 4, 5]])
  np.testing.assert_array_equal(raw.arrays["terminals"], [0, 0, 0, 1])
  np.testing.assert_array_equal(raw.arrays["rewards"], [0, 2, 3, 4])
  # The behaviour return is of the file's own episodes: rows 0-1 (to the timeout) 0 + 1, rows
  # 2-4 (to the terminal) 2 + 3 + 4; row 5 never ends. Not 9: dropping the timeout row first
  # would run the first episode into the second.
  assert raw.metadata["policy_return"] == pytest.approx(5.0)


def _write_minari(root, episodes, obs_extra=1):
  (root / "data").mkdir(parents=True)
  with h5py.File(root / "data" / "main_data.hdf5", "w") as f:
    for i, (obs, act, rew, term, trunc) in enumerate(episodes):
      g = f.create_group(f"episode_{i}")
      g["observations"] = obs if obs_extra else obs[:-1]
      g["actions"], g["rewards"] = act, rew
      g["terminations"], g["truncations"] = term, trunc
  (root / "data" / "metadata.json").write_text(json.dumps(
      {"dataset_id": "toy/pendulum-v0", "env_spec": {"id": "Pendulum-v1"}}))


def _episode(t, seed, terminated):
  rng = np.random.default_rng(seed)
  term = np.zeros(t, bool)
  trunc = np.zeros(t, bool)
  (term if terminated else trunc)[-1] = True
  return (rng.normal(size=(t + 1, 3)).astype(np.float32),
          rng.uniform(-1, 1, (t, 1)).astype(np.float32), rng.normal(size=t).astype(np.float32),
          term, trunc)


def test_minari_folder_round_trip(tmp_path):
  eps = [_episode(4, 0, True), _episode(3, 1, False)]
  _write_minari(tmp_path / "toy", eps)
  ds = offline.read_minari(tmp_path / "toy", env="pendulum")
  assert ds.size == 7
  np.testing.assert_array_equal(ds.arrays["observations"][:4], eps[0][0][:-1])
  np.testing.assert_array_equal(ds.arrays["next_observations"][4:], eps[1][0][1:])
  np.testing.assert_array_equal(ds.arrays["terminals"], [0, 0, 0, 1, 0, 0, 0])
  np.testing.assert_array_equal(ds.arrays["timeouts"], [0, 0, 0, 0, 0, 0, 1])
  assert ds.metadata["minari_env"] == "Pendulum-v1"
  want = np.mean([eps[0][2].sum(), eps[1][2].sum()])
  assert ds.metadata["policy_return"] == pytest.approx(want, rel=1e-5)
  # `load` tells the formats apart.
  assert offline.load(str(tmp_path / "toy")).size == 7
  # Minari itself stores env_spec as a JSON string (EnvSpec.to_json()).
  (tmp_path / "toy" / "data" / "metadata.json").write_text(json.dumps(
      {"dataset_id": "toy/pendulum-v0", "env_spec": json.dumps({"id": "Pendulum-v1"})}))
  assert offline.read_minari(tmp_path / "toy").metadata["minari_env"] == "Pendulum-v1"


def test_bad_files_give_one_line_errors(tmp_path):
  def one_line(excinfo, *words):
    msg = str(excinfo.value)
    assert "\n" not in msg
    for w in words:
      assert w in msg, msg

  (tmp_path / "junk.hdf5").write_text("not hdf5")
  with pytest.raises(ValueError) as e:
    offline.read_d4rl(tmp_path / "junk.hdf5")
  one_line(e, "junk.hdf5", "not an HDF5 file")
  with h5py.File(tmp_path / "nokeys.hdf5", "w") as f:
    f["observations"] = np.zeros((3, 3))
  with pytest.raises(ValueError) as e:
    offline.read_d4rl(tmp_path / "nokeys.hdf5")
  one_line(e, "nokeys.hdf5", "missing key(s) actions, rewards, terminals")
  ds = _toy()
  bad = dict(ds.arrays, rewards=ds.arrays["rewards"][:5])
  offline.write_d4rl(tmp_path / "short.hdf5", offline.Dataset(bad, {}))
  with pytest.raises(ValueError) as e:
    offline.read_d4rl(tmp_path / "short.hdf5")
  one_line(e, "short.hdf5", "'rewards' has 5 rows, observations has 7")
  wide = _toy(o=11, a=3)
  offline.write_d4rl(tmp_path / "hopperish.hdf5", offline.Dataset(wide.arrays, {}))
  with pytest.raises(ValueError) as e:
    offline.read_d4rl(tmp_path / "hopperish.hdf5", env="pendulum")
  one_line(e, "observations of size 11 and actions of size 3", "'pendulum' has 3 and 1")
  offline.write_d4rl(tmp_path / "other.hdf5", offline.Dataset(ds.arrays, {"env": "hopper"}))
  with pytest.raises(ValueError) as e:
    offline.read_d4rl(tmp_path / "other.hdf5", env="pendulum")
  one_line(e, "of env 'hopper', not 'pendulum'")
  _write_minari(tmp_path / "m", [_episode(3, 0, True)], obs_extra=0)
  with pytest.raises(ValueError) as e:
    offline.read_minari(tmp_path / "m")
  one_line(e, "episode_0 has 3 observations for 3 actions (expected T + 1 = 4)")
  with pytest.raises(ValueError) as e:
    offline.read_minari(tmp_path)
  one_line(e, "not a Minari dataset folder")
  with pytest.raises(ValueError) as e:
    offline.load("pendulum-mediocre")
  one_line(e, "neither an existing file or folder nor '<env>-<kind>'")


def test_normalized_score_by_hand():
  meta = {"ref_min_score": -1200.0, "ref_max_score": -200.0}
  assert offline.normalized_score(-200.0, meta) == pytest.approx(100.0)
  assert offline.normalized_score(-1200.0, meta) == pytest.approx(0.0)
  assert offline.normalized_score(-700.0, meta) == pytest.approx(50.0)   # 100 * 500 / 1000
  np.testing.assert_allclose(offline.normalized_score(np.array([-950.0, 0.0]), meta),
                             [25.0, 120.0])
  with pytest.raises(ValueError, match="no ref_min_score"):
    offline.normalized_score(1.0, {"ref_min_score": 0.0})


def test_episode_returns_by_hand():
  r = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
  term = np.array([0, 1, 0, 0, 0, 0.0])
  tout = np.array([0, 0, 0, 1, 0, 0.0])
  np.testing.assert_allclose(offline.episode_returns(r, term, tout), [3.0, 7.0])
