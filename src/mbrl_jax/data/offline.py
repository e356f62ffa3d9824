"""Offline datasets: the `Dataset` type, the names and cache files of the D4RL-style datasets
the library makes with its own SAC, and readers for D4RL HDF5 files and Minari dataset folders.

A dataset is a `Dataset`: NumPy arrays under D4RL's keys (`KEYS`: observations [N, O],
actions [N, A], rewards [N], next_observations [N, O], terminals [N] (a true end: no
bootstrapping), timeouts [N] (a time limit: kept apart from terminals)) and a metadata dict
(env, backend, kind, policy return, size, seed, library version, and the reference returns
`ref_min_score` / `ref_max_score` that `normalized_score` uses).

The generated kinds follow D4RL (Fu et al. 2020, "D4RL: Datasets for Deep Data-Driven
Reinforcement Learning", section 5 and appendix C), made the way D4RL made its MuJoCo sets,
with SAC on the simulator:

  random         a uniformly random policy, `size` transitions.
  medium         `size` transitions of the SAC policy of the epoch whose deterministic
                 evaluation return is nearest a third of the way from the random return to
                 the expert's, acting stochastically.
  medium-replay  every transition of that SAC run's replay buffer up to that point (its size
                 is what the run took, not `size`, as in D4RL; so its file name has no size).
  expert         `size` transitions of the SAC policy at the end of its run (stochastic).
  medium-expert  medium then expert (2 * `size`).

This module only names and reads them (layer 1: it imports envs and types, nothing above).
Making them, the SAC run and the collectors, is the driver's job: `generate` in
run/datasets.py (`python experiments/make_dataset.py --env ENV --kind KIND`), which returns
the cached set when there is one. `load("<env>-<kind>")` reads the cache and, when the set is
not there, says which command makes it.

Datasets are cached outside the repository, under `$MBRL_JAX_DATA` or
`~/.cache/mbrl_jax/datasets`, as HDF5 files named by everything that determines them
(`cache_key`: env, kind, size, seed, and a digest of the SAC settings `sac_settings`, the
library and format versions).

Example (a toy set written and read back):
  >>> import tempfile, pathlib
  >>> arrays = {k: np.zeros((4, 3) if "observations" in k else (4, 1) if k == "actions"
  ...                       else (4,), np.float32) for k in KEYS}
  >>> path = pathlib.Path(tempfile.mkdtemp()) / "toy.hdf5"
  >>> write_d4rl(path, Dataset(arrays, {"env": "pendulum"}))
  >>> load(str(path), env="pendulum").size
  4
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from typing import Any, NamedTuple

import h5py
import numpy as np

import mbrl_jax
from mbrl_jax import envs
from mbrl_jax.types import Transition

KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
KINDS = ("random", "medium", "medium-replay", "expert", "medium-expert")
REFERENCE_EPISODES = 10
FORMAT_VERSION = 2
BRAX_ENVS = ("hopper", "halfcheetah", "walker2d")


class Dataset(NamedTuple):
  """An offline dataset.

  Attributes:
    arrays: {key: array} for every key of `KEYS`, each with a leading axis N (float32; the
      flags 0.0 / 1.0).
    metadata: JSON-able facts: env, backend, kind, size, seed, policy_return (mean return of
      the dataset's complete episodes), ref_min_score, ref_max_score, library_version, ...
  """

  arrays: dict[str, np.ndarray]
  metadata: dict[str, Any]

  @property
  def size(self) -> int:
    return int(self.arrays["observations"].shape[0])

  def to_transitions(self) -> Transition:
    """The dataset as a `Transition` batch [N, ...] (NumPy leaves)."""
    a = self.arrays
    return Transition(obs=a["observations"], action=a["actions"], reward=a["rewards"],
                      next_obs=a["next_observations"], terminated=a["terminals"],
                      truncated=a["timeouts"])


def normalized_score(ret: Any, metadata: dict[str, Any]) -> Any:
  """D4RL's normalised score, 100 * (R - R_random) / (R_expert - R_random), with the reference
  returns of the dataset's metadata (`ref_min_score`, `ref_max_score`); works on arrays."""
  lo, hi = metadata.get("ref_min_score"), metadata.get("ref_max_score")
  if lo is None or hi is None:
    raise ValueError("normalized_score: the metadata has no ref_min_score / ref_max_score "
                     "(give them, e.g. from the generator's dataset for the same env)")
  if hi == lo:
    raise ValueError(f"normalized_score: ref_max_score equals ref_min_score ({hi})")
  return 100.0 * (np.asarray(ret) - lo) / (hi - lo)


# --------------------------------------------------------------------------------------------
# What names a generated dataset. The generation itself (the SAC run, the collectors) is in
# run/datasets.py: data sits below the algorithms and the driver it needs.

# The generator's SAC runs (every field of the algorithms' `sac.Config`, as plain data so that
# this layer can name the files without importing the algorithms; run/datasets.py builds the
# Config from them and checks that nothing is left out).
_SAC_SMALL = {   # pendulum, inverted_pendulum: small networks, short epochs (seconds to a minute)
    "env_steps": 6000, "episode_length": None, "epoch_length": 500, "eval_episodes": 3,
    "init_exploration_steps": 500, "updates_per_step": 1,
    "sac": {"actor_lr": 0.001, "actor_update_every": 1, "alpha_lr": 0.001, "batch_size": 128,
            "critic_lr": 0.001, "gamma": 0.99, "hidden_sizes": (64, 64), "init_alpha": 1.0,
            "learn_alpha": True, "normalize_observations": False, "target_entropy": None,
            "target_update_every": 1, "tau": 0.005}}
_SAC_BRAX = {    # Brax locomotion: SAC as the MBPO loop runs it (mbpo.SACConfig's defaults, 5000
                 # random steps), observations standardised (see mbpo.PRESETS)
    "env_steps": 300_000, "episode_length": None, "epoch_length": 5000, "eval_episodes": 5,
    "init_exploration_steps": 5000, "updates_per_step": 1,
    "sac": {"actor_lr": 0.0003, "actor_update_every": 1, "alpha_lr": 0.0003, "batch_size": 256,
            "critic_lr": 0.0003, "gamma": 0.99, "hidden_sizes": (256, 256), "init_alpha": 1.0,
            "learn_alpha": True, "normalize_observations": True, "target_entropy": None,
            "target_update_every": 1, "tau": 0.005}}


def sac_settings(env: str, sac_steps: int | None = None) -> dict[str, Any]:
  """The fields of the SAC run (the algorithms' `sac.Config`) behind an env's datasets,
  `sac_steps` its env-step budget (None: 6000 on the pendulums, 300,000 otherwise)."""
  base = _SAC_SMALL if env in ("pendulum", "inverted_pendulum") else _SAC_BRAX
  out = {**base, "env": env, "sac": dict(base["sac"])}
  if sac_steps:
    out["env_steps"] = sac_steps
  return out


def default_root() -> pathlib.Path:
  """Where datasets are cached: $MBRL_JAX_DATA or ~/.cache/mbrl_jax/datasets."""
  root = os.environ.get("MBRL_JAX_DATA")
  return pathlib.Path(root) if root else pathlib.Path.home() / ".cache" / "mbrl_jax" / "datasets"


def _digest(obj: Any) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True, default=repr).encode()).hexdigest()[:12]


def cache_key(env: str, kind: str, size: int, seed: int, sac_steps: int | None = None) -> str:
  """The file stem of a generated dataset: env, kind, size, seed and a digest of everything
  else that determines it (the SAC settings, the library and format versions).
  medium-replay's stem has no size (`<env>-medium-replay-s<seed>-<digest>`): that set is the
  SAC run's replay buffer, whatever `size` says."""
  digest = _digest([sac_settings(env, sac_steps), mbrl_jax.__version__, FORMAT_VERSION,
                    REFERENCE_EPISODES])
  if kind == "medium-replay":
    return f"{env}-{kind}-s{seed}-{digest}"
  return f"{env}-{kind}-{size}-s{seed}-{digest}"


def cache_path(env: str, kind: str, size: int, seed: int, sac_steps: int | None = None,
               cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
  """The HDF5 file a generated dataset is cached in (`cache_dir` None: `default_root()`)."""
  root = pathlib.Path(cache_dir) if cache_dir is not None else default_root()
  return root / f"{cache_key(env, kind, size, seed, sac_steps)}.hdf5"


def check_args(env: str, kind: str, size: int, seed: int) -> None:
  """One-line ValueErrors for a generated dataset's arguments."""
  if kind not in KINDS:
    raise ValueError(f"dataset kind must be one of {', '.join(KINDS)}, got {kind!r}")
  if env not in envs.continuous_names():
    raise ValueError(f"dataset env {env!r} is not a registered continuous-action env")
  if not isinstance(size, int) or size < 1:
    raise ValueError(f"dataset size must be a positive int, got {size!r}")
  if not isinstance(seed, int) or seed < 0:
    raise ValueError(f"dataset seed must be a non-negative int, got {seed!r}")


def parse_name(name: str) -> tuple[str, str] | None:
  """("env", "kind") of a generated dataset's name "<env>-<kind>" ("hopper-medium-replay" ->
  ("hopper", "medium-replay")), or None if `name` is an existing path or ends in no kind."""
  if pathlib.Path(os.path.expanduser(name)).exists():
    return None
  for kind in sorted(KINDS, key=len, reverse=True):
    if name.endswith("-" + kind):
      return name[: -len(kind) - 1], kind
  return None


def episode_returns(rewards: np.ndarray, terminals: np.ndarray,
                    timeouts: np.ndarray) -> np.ndarray:
  """Returns of the complete episodes in time-ordered arrays (an episode ends at a terminal or
  a timeout; a trailing unfinished one is left out)."""
  ends = np.flatnonzero((np.asarray(terminals) > 0.5) | (np.asarray(timeouts) > 0.5))
  sums = np.cumsum(np.asarray(rewards, np.float64))
  starts = np.concatenate([[0], ends[:-1] + 1])
  return np.array([sums[e] - (sums[s - 1] if s else 0.0) for s, e in zip(starts, ends)])


def from_transitions(tr: Any) -> dict[str, np.ndarray]:
  """D4RL's arrays (`KEYS`, float32 NumPy) from a `Transition` batch [N, ...]."""
  f32 = lambda x: np.asarray(x, np.float32)
  return {"observations": f32(tr.obs), "actions": f32(tr.action), "rewards": f32(tr.reward),
          "next_observations": f32(tr.next_obs), "terminals": f32(tr.terminated),
          "timeouts": f32(tr.truncated)}


# --------------------------------------------------------------------------------------------
# Files: D4RL HDF5 and Minari folders.

def write_d4rl(path: str | os.PathLike, ds: Dataset) -> None:
  """Writes `ds` as a D4RL-style HDF5 file: one dataset per key of `KEYS` at the root, the
  metadata as JSON in the root attribute "metadata" (written to a temporary name, then
  renamed, so a crash never leaves a half file)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp")
  with h5py.File(tmp, "w") as f:
    for k in KEYS:
      f.create_dataset(k, data=ds.arrays[k])
    f.attrs["metadata"] = json.dumps(ds.metadata, default=repr)
  os.replace(tmp, path)


def _fail(path: Any, why: str) -> ValueError:
  return ValueError(f"{path}: {why}")


def _check_arrays(path: Any, arrays: dict[str, np.ndarray], env: str | None,
                  metadata: dict[str, Any]) -> None:
  n = arrays["observations"].shape[0]
  if arrays["observations"].ndim != 2 or arrays["actions"].ndim != 2:
    raise _fail(path, f"observations and actions must be [N, dim], got "
                      f"{arrays['observations'].shape} and {arrays['actions'].shape}")
  for k in KEYS:
    if arrays[k].shape[0] != n:
      raise _fail(path, f"'{k}' has {arrays[k].shape[0]} rows, observations has {n}")
    if k in ("rewards", "terminals", "timeouts") and arrays[k].ndim != 1:
      raise _fail(path, f"'{k}' must be [N], got shape {arrays[k].shape}")
  if arrays["next_observations"].shape != arrays["observations"].shape:
    raise _fail(path, f"next_observations {arrays['next_observations'].shape} and observations "
                      f"{arrays['observations'].shape} differ")
  if env is not None:
    if metadata.get("env") not in (None, env):
      raise _fail(path, f"is a dataset of env {metadata['env']!r}, not {env!r}")
    e = envs.make(env)
    o, a = arrays["observations"].shape[1], arrays["actions"].shape[1]
    if (o, a) != (e.observation_size, e.action_size):
      raise _fail(path, f"has observations of size {o} and actions of size {a}; env {env!r} "
                        f"has {e.observation_size} and {e.action_size}")


def read_d4rl(path: str | os.PathLike, *, env: str | None = None) -> Dataset:
  """Reads a D4RL HDF5 file (D4RL's own or `write_d4rl`'s) into a `Dataset`.

  Needs observations, actions, rewards and terminals; timeouts default to zeros. Without
  next_observations (D4RL's raw files), they are the next row's observations and rows whose
  next row starts a new episode (a timeout, or the last row) are dropped, as
  `d4rl.qlearning_dataset` does. `env` (optional) checks the file's env name and sizes.
  Raises a one-line ValueError naming the file and what is wrong.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise _fail(path, "no such file")
  try:
    f = h5py.File(path, "r")
  except OSError as e:
    raise _fail(path, f"not an HDF5 file ({e})") from None
  with f:
    missing = [k for k in ("observations", "actions", "rewards", "terminals") if k not in f]
    if missing:
      raise _fail(path, f"missing key(s) {', '.join(missing)} (has {', '.join(sorted(f.keys()))})")
    arrays = {k: np.asarray(f[k]) for k in KEYS if k in f and isinstance(f[k], h5py.Dataset)}
    metadata = json.loads(f.attrs["metadata"]) if "metadata" in f.attrs else {}
  arrays = {k: (v.reshape(-1) if k in ("rewards", "terminals", "timeouts") and v.ndim == 2
                and v.shape[1] == 1 else v) for k, v in arrays.items()}
  n = arrays["observations"].shape[0]
  arrays.setdefault("timeouts", np.zeros(n, np.float32))
  # The behaviour return from the file's own episodes, before any row is dropped (after
  # dropping the timeout rows, episodes ending at the time limit would run into the next one).
  rets = episode_returns(np.asarray(arrays["rewards"], np.float32),
                         np.asarray(arrays["terminals"], np.float32),
                         np.asarray(arrays["timeouts"], np.float32))
  if "next_observations" not in arrays:
    keep = np.ones(n, bool)
    keep[-1] = False
    keep &= ~(arrays["timeouts"].astype(bool))
    nxt = np.concatenate([arrays["observations"][1:], arrays["observations"][-1:]])
    arrays["next_observations"] = nxt
    arrays = {k: v[keep] if v.shape[:1] == (n,) else v for k, v in arrays.items()}
  arrays = {k: np.asarray(v, np.float32) for k, v in arrays.items()}
  _check_arrays(path, arrays, env, metadata)
  metadata.setdefault("source", str(path))
  if "policy_return" not in metadata:
    metadata["policy_return"] = float(rets.mean()) if rets.size else None
  metadata["size"] = int(arrays["observations"].shape[0])
  return Dataset(arrays=arrays, metadata=metadata)


def read_minari(path: str | os.PathLike, *, env: str | None = None) -> Dataset:
  """Reads a Minari dataset folder (`<dataset_id>/data/main_data.hdf5` with one group
  `episode_<i>` per episode holding observations [T + 1, O], actions [T, A], rewards [T],
  terminations [T], truncations [T]; `data/metadata.json` beside it) with h5py, into a
  `Dataset` with D4RL's keys (terminals = terminations, timeouts = truncations). The
  metadata's `env_spec` id, if any, is kept as "minari_env"; `env` (optional) checks sizes.
  Raises a one-line ValueError naming the folder and what is wrong.
  """
  path = pathlib.Path(path)
  main = path / "data" / "main_data.hdf5"
  if not main.is_file():
    raise _fail(path, "not a Minari dataset folder (no data/main_data.hdf5)")
  meta_file = path / "data" / "metadata.json"
  metadata = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
  parts = {k: [] for k in KEYS}
  with h5py.File(main, "r") as f:
    names = sorted((k for k in f.keys() if k.startswith("episode_")),
                   key=lambda s: int(s.split("_")[1]))
    if not names:
      raise _fail(main, "has no episode_<i> groups")
    for name in names:
      ep = f[name]
      missing = [k for k in ("observations", "actions", "rewards", "terminations",
                             "truncations") if k not in ep]
      if missing:
        raise _fail(main, f"{name} lacks {', '.join(missing)}")
      if not isinstance(ep["observations"], h5py.Dataset):
        raise _fail(main, f"{name}/observations is a group (dict observations are not "
                          "supported)")
      obs = np.asarray(ep["observations"])
      t = np.asarray(ep["actions"]).shape[0]
      if obs.shape[0] != t + 1:
        raise _fail(main, f"{name} has {obs.shape[0]} observations for {t} actions (expected "
                          f"T + 1 = {t + 1})")
      parts["observations"].append(obs[:-1])
      parts["next_observations"].append(obs[1:])
      parts["actions"].append(np.asarray(ep["actions"]))
      parts["rewards"].append(np.asarray(ep["rewards"]).reshape(-1))
      parts["terminals"].append(np.asarray(ep["terminations"]).reshape(-1))
      parts["timeouts"].append(np.asarray(ep["truncations"]).reshape(-1))
  arrays = {k: np.concatenate(v).astype(np.float32) for k, v in parts.items()}
  spec = metadata.get("env_spec")
  if isinstance(spec, str):            # Minari writes EnvSpec.to_json(), a JSON string
    try:
      spec = json.loads(spec)
    except ValueError:
      spec = None
  out_meta = {"source": str(path), "minari_id": metadata.get("dataset_id"),
              "minari_env": spec.get("id") if isinstance(spec, dict) else None}
  for k in ("env", "kind", "ref_min_score", "ref_max_score"):
    if k in metadata:
      out_meta[k] = metadata[k]
  _check_arrays(path, arrays, env, out_meta)
  rets = episode_returns(arrays["rewards"], arrays["terminals"], arrays["timeouts"])
  out_meta["policy_return"] = float(rets.mean()) if rets.size else None
  out_meta["size"] = int(arrays["observations"].shape[0])
  return Dataset(arrays=arrays, metadata=out_meta)


def load(name: str, *, env: str | None = None, size: int = 100_000, seed: int = 0,
         sac_steps: int | None = None, cache_dir: str | os.PathLike | None = None) -> Dataset:
  """A dataset by name: "<env>-<kind>" (a generated one, read from the cache, e.g.
  "hopper-medium-replay"), a path to a D4RL HDF5 file, or a path to a Minari dataset folder.

  Reads only: a generated set missing from the cache is a one-line ValueError giving the
  command that makes it (experiments/make_dataset.py, or `generate` in run/datasets.py).
  """
  p = pathlib.Path(os.path.expanduser(name))
  if p.is_dir():
    return read_minari(p, env=env)
  if p.suffix in (".hdf5", ".h5") or p.is_file():
    return read_d4rl(p, env=env)
  parsed = parse_name(name)
  if parsed is None:
    raise ValueError(f"dataset {name!r} is neither an existing file or folder nor "
                     f"'<env>-<kind>' with kind in {', '.join(KINDS)}")
  ds_env, kind = parsed
  if env is not None and env != ds_env:
    raise ValueError(f"dataset {name!r} is of env {ds_env!r}, not {env!r}")
  check_args(ds_env, kind, size, seed)
  path = cache_path(ds_env, kind, size, seed, sac_steps, cache_dir)
  if not path.exists():
    steps = f" --sac-steps {sac_steps}" if sac_steps else ""
    where = f" --cache-dir {cache_dir}" if cache_dir is not None else ""
    raise ValueError(
        f"dataset {name!r} (size {size}, seed {seed}) is not in the cache ({path}); make it "
        f"with `python experiments/make_dataset.py --env {ds_env} --kind {kind} --size {size} "
        f"--seed {seed}{steps}{where}` or run.datasets.generate({ds_env!r}, "
        f"{kind!r}, size={size}, seed={seed}, sac_steps={sac_steps})")
  return read_d4rl(path, env=ds_env)
