"""Offline datasets: D4RL-style datasets made with the library's own SAC, and readers for
D4RL HDF5 files and Minari dataset folders.

A dataset is a `Dataset`: NumPy arrays under D4RL's keys (`KEYS`: observations [N, O],
actions [N, A], rewards [N], next_observations [N, O], terminals [N] (a true end: no
bootstrapping), timeouts [N] (a time limit: kept apart from terminals)) and a metadata dict
(env, backend, kind, policy return, size, seed, library version, and the reference returns
`ref_min_score` / `ref_max_score` that `normalized_score` uses).

The kinds follow D4RL (Fu et al. 2020, "D4RL: Datasets for Deep Data-Driven Reinforcement
Learning", section 5 and appendix C), made here the way D4RL made its MuJoCo sets, with SAC on
the simulator (`mbrl_jax.algorithms.sac` driven by `mbrl_jax.run.train`):

  random         a uniformly random policy, `size` transitions.
  medium         `size` transitions of the SAC policy of the epoch whose deterministic
                 evaluation return is nearest a third of the way from the random return to
                 the expert's (D4RL: "about 1/3 of the expert"; the normalised form works for
                 negative rewards too), acting stochastically.
  medium-replay  every transition of that SAC run's replay buffer up to that point, random
                 exploration included (its size is what the run took, not `size`, as in
                 D4RL).
  expert         `size` transitions of the SAC policy at the end of its run (stochastic).
  medium-expert  medium then expert (2 * `size`).

One SAC run per (env, seed, SAC config) makes all kinds: its eval return after each epoch,
its policy parameters at the medium epoch and at the end, and the medium replay buffer are
kept beside its checkpoints, so an interrupted run resumes (`generate` again with the same
arguments) and the other kinds cost only their collection. Reference returns are measured on
the same env by the generator: `ref_min_score` is the mean return of `REFERENCE_EPISODES`
uniformly random episodes, `ref_max_score` the expert's mean deterministic return over as
many (D4RL's Gym references do not carry over to Brax's dynamics).

Datasets are cached outside the repository, under `$MBRL_JAX_DATA` or
`~/.cache/mbrl_jax/datasets`, as HDF5 files named by everything that determines them
(`cache_key`), and are deterministic given the seed.

Example (a random pendulum set of 400 transitions; two compiles, so skipped here):
  >>> import tempfile
  >>> ds = generate("pendulum", "random", size=400, seed=0, cache_dir=tempfile.mkdtemp(),
  ...               expert_reference=False, log=lambda line: None)   # doctest: +SKIP
  >>> ds.arrays["observations"].shape, ds.metadata["kind"]           # doctest: +SKIP
  ((400, 3), 'random')
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import pathlib
from typing import Any, Callable, NamedTuple

import h5py
import jax
import jax.numpy as jnp
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
# The SAC settings that generate datasets.

def _sac_config(env: str, sac_steps: int | None):
  """The SAC run (`mbrl_jax.algorithms.sac.Config`) behind an env's datasets."""
  from mbrl_jax.algorithms import mbpo, sac   # algorithms sit above data; imported late
  if env in ("pendulum", "inverted_pendulum"):
    # Small networks, short epochs: a pendulum set takes seconds to a minute.
    return sac.Config(
        env=env, env_steps=sac_steps or 6000, epoch_length=500, init_exploration_steps=500,
        updates_per_step=1, eval_episodes=3,
        sac=mbpo.SACConfig(hidden_sizes=(64, 64), actor_lr=1e-3, critic_lr=1e-3,
                           alpha_lr=1e-3, batch_size=128))
  # Brax locomotion: SAC as the MBPO loop runs it (mbpo.SACConfig's defaults, 5000 random
  # steps), observations standardised (lifted our SAC on Brax halfcheetah, see mbpo.PRESETS).
  return sac.Config(
      env=env, env_steps=sac_steps or 300_000, epoch_length=5000, init_exploration_steps=5000,
      updates_per_step=1, eval_episodes=5,
      sac=mbpo.SACConfig(normalize_observations=True))


def default_root() -> pathlib.Path:
  """Where datasets are cached: $MBRL_JAX_DATA or ~/.cache/mbrl_jax/datasets."""
  root = os.environ.get("MBRL_JAX_DATA")
  return pathlib.Path(root) if root else pathlib.Path.home() / ".cache" / "mbrl_jax" / "datasets"


def _digest(obj: Any) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True, default=repr).encode()).hexdigest()[:12]


def cache_key(env: str, kind: str, size: int, seed: int, sac_steps: int | None = None) -> str:
  """The file stem of a generated dataset: env, kind, size, seed and a digest of everything
  else that determines it (the SAC config, the library and format versions)."""
  sac_cfg = _sac_config(env, sac_steps)
  digest = _digest([dataclasses.asdict(sac_cfg), mbrl_jax.__version__, FORMAT_VERSION,
                    REFERENCE_EPISODES])
  return f"{env}-{kind}-{size}-s{seed}-{digest}"


def _backend(env: str) -> str:
  return "brax-generalized" if env not in ("pendulum", "cartpole_continuous",
                                           "cartpole_swingup") else "mbrl_jax"


def _check_args(env: str, kind: str, size: int, seed: int) -> None:
  if kind not in KINDS:
    raise ValueError(f"dataset kind must be one of {', '.join(KINDS)}, got {kind!r}")
  if env not in envs.continuous_names():
    raise ValueError(f"dataset env {env!r} is not a registered continuous-action env")
  if not isinstance(size, int) or size < 1:
    raise ValueError(f"dataset size must be a positive int, got {size!r}")
  if not isinstance(seed, int) or seed < 0:
    raise ValueError(f"dataset seed must be a non-negative int, got {seed!r}")


# --------------------------------------------------------------------------------------------
# Collection.

def _policy_fns(env_name: str, sac_cfg: Any):
  from mbrl_jax.algorithms import mbpo
  env = envs.make(env_name)
  sac = mbpo._make_sac(sac_cfg.sac, env.observation_size, env.action_size)
  return env, sac


@functools.lru_cache(maxsize=32)
def _collect_fn(env_name: str, sac_cfg: Any, steps: int, policy: str):
  """A jitted `fn(key, sac_params) -> Transition [steps]` for policy "random", "stochastic"
  (SAC sampling its actions) or returns of deterministic SAC episodes ("evaluate")."""
  env, sac = _policy_fns(env_name, sac_cfg)
  length = envs.default_episode_length(env_name)

  def make_policy(params):
    if policy == "random":
      return envs.acting.uniform_random(env.action_size)
    return envs.acting.stateless(
        lambda k, obs: sac.act(params, obs, k, deterministic=policy == "evaluate"))

  def collect(key, params):
    pol = make_policy(params)
    if policy == "evaluate":
      return envs.acting.evaluate(env, pol, key, steps, length).returns
    k_reset, k_run = jax.random.split(key)
    actor = envs.acting.reset(env, pol, k_reset)
    _, tr, _, _ = envs.acting.collect(env, pol, actor, k_run, steps)
    return tr

  return jax.jit(collect)


def episode_returns(rewards: np.ndarray, terminals: np.ndarray,
                    timeouts: np.ndarray) -> np.ndarray:
  """Returns of the complete episodes in time-ordered arrays (an episode ends at a terminal or
  a timeout; a trailing unfinished one is left out)."""
  ends = np.flatnonzero((np.asarray(terminals) > 0.5) | (np.asarray(timeouts) > 0.5))
  sums = np.cumsum(np.asarray(rewards, np.float64))
  starts = np.concatenate([[0], ends[:-1] + 1])
  return np.array([sums[e] - (sums[s - 1] if s else 0.0) for s, e in zip(starts, ends)])


def _to_arrays(tr: Any) -> dict[str, np.ndarray]:
  tr = jax.tree.map(np.asarray, tr)
  return {"observations": tr.obs.astype(np.float32), "actions": tr.action.astype(np.float32),
          "rewards": tr.reward.astype(np.float32),
          "next_observations": tr.next_obs.astype(np.float32),
          "terminals": tr.terminated.astype(np.float32),
          "timeouts": tr.truncated.astype(np.float32)}


# --------------------------------------------------------------------------------------------
# The SAC run behind medium / medium-replay / expert.

def _save_tree(path: pathlib.Path, tree: Any) -> None:
  leaves = jax.tree.leaves(tree)
  tmp = path.with_suffix(".tmp.npz")
  np.savez(tmp, *[np.asarray(x) for x in leaves])
  os.replace(tmp, path)


def _load_tree(path: pathlib.Path, like: Any) -> Any:
  with np.load(path) as f:
    leaves = [jnp.asarray(f[f"arr_{i}"]) for i in range(len(f.files))]
  return jax.tree.unflatten(jax.tree.structure(like), leaves)


def sac_run(env: str, seed: int, *, sac_steps: int | None = None,
            cache_dir: str | os.PathLike | None = None,
            log: Callable[[str], Any] = print) -> dict[str, Any]:
  """Runs (or resumes, or reads back) the SAC run behind an env's medium, medium-replay and
  expert datasets.

  The run goes epoch by epoch through `mbrl_jax.run.train` with checkpoints (resume is
  `train(..., resume=True)` on the same directory), so a killed run continues where it
  stopped (each epoch's evaluation return is in epochs.json beside the checkpoints). After
  it: the random and expert reference returns (the expert is the epoch with the best
  evaluation return, known only at the end), the medium epoch (the one up to the expert's
  whose evaluation return is nearest R_random + (R_expert - R_random) / 3, picked afterwards
  from the saved per-epoch policies) and the replay buffer's length at that epoch.

  Returns:
    {"medium": SACParams, "expert": SACParams, "replay": Transition [n] (NumPy, time order),
     "meta": {...}}.
  """
  from mbrl_jax import run
  from mbrl_jax.algorithms import sac as sac_alg
  cfg = _sac_config(env, sac_steps)
  root = pathlib.Path(cache_dir) if cache_dir is not None else default_root()
  work = _work_dir(env, seed, sac_steps, root)
  work.mkdir(parents=True, exist_ok=True)
  done_file = work / "run.json"
  algorithm = sac_alg.make(cfg)
  key = jax.random.key(seed)
  like = _policy_fns(env, cfg)[1].init(jax.random.key(0)).params
  if not done_file.exists():
    epochs_file = work / "epochs.json"
    record = json.loads(epochs_file.read_text()) if epochs_file.exists() else []
    state = None
    for n in range(len(record) + 1, algorithm.num_chunks + 1):
      state, history = run.train(algorithm._replace(num_chunks=n), key,
                                 checkpoint_dir=str(work / "checkpoints"), resume=True)
      ret = float(history["eval/return"][-1])
      _save_tree(work / f"policy_{n - 1}.npz", state.sac.params)
      record.append({"epoch": n - 1, "eval_return": ret, "env_steps": int(state.env_steps)})
      epochs_file.write_text(json.dumps(record))
      log(f"[dataset {env} seed {seed}] SAC epoch {n}/{algorithm.num_chunks}: eval return "
          f"{ret:.1f}, {int(state.env_steps)} env steps")
    if state is None:     # every epoch was done before a crash in the final bookkeeping
      state, _ = run.train(algorithm, key, checkpoint_dir=str(work / "checkpoints"),
                           resume=True)
    real = state.real
    replay = jax.tree.map(lambda x: np.asarray(x)[: int(real.size)], real.data)
    np.savez(work / "replay.npz", **replay._asdict())
    k_rand, k_exp = jax.random.split(jax.random.fold_in(key, 7))
    r_random = _random_returns(env, k_rand)
    best = int(np.argmax([r["eval_return"] for r in record]))
    expert = _load_tree(work / f"policy_{best}.npz", like)
    r_expert = np.asarray(_collect_fn(env, cfg, REFERENCE_EPISODES, "evaluate")(k_exp, expert))
    lo, hi = float(r_random.mean()), float(r_expert.mean())
    target = lo + (hi - lo) / 3.0
    # The epoch (up to the best one) whose evaluation return is nearest the target: SAC's
    # return jumps between epochs on easy envs, so "the first above" can overshoot far.
    medium = min(record[: best + 1], key=lambda r: abs(r["eval_return"] - target))["epoch"]
    meta = {"env": env, "seed": seed, "epochs": record, "expert_epoch": best,
            "medium_epoch": medium, "medium_target": target, "ref_min_score": lo,
            "ref_max_score": hi,
            "medium_env_steps": record[medium]["env_steps"],
            "sac_config": dataclasses.asdict(cfg)}
    done_file.write_text(json.dumps(meta, default=repr))
    log(f"[dataset {env} seed {seed}] references: random {lo:.1f}, expert {hi:.1f} (epoch "
        f"{best}); medium = epoch {medium} (target {target:.1f})")
  meta = json.loads(done_file.read_text())
  with np.load(work / "replay.npz") as f:
    replay = Transition(**{k: f[k][: meta["medium_env_steps"]] for k in Transition._fields})
  return {"medium": _load_tree(work / f"policy_{meta['medium_epoch']}.npz", like),
          "expert": _load_tree(work / f"policy_{meta['expert_epoch']}.npz", like),
          "replay": replay, "meta": meta}


@functools.lru_cache(maxsize=8)
def _random_returns_fn(env: str) -> Callable[[jax.Array], jax.Array]:
  env_obj = envs.make(env)
  length = envs.default_episode_length(env)
  return jax.jit(lambda k: envs.acting.evaluate(
      env_obj, envs.acting.uniform_random(env_obj.action_size), k, REFERENCE_EPISODES,
      length).returns)


def _random_returns(env: str, key: jax.Array) -> np.ndarray:
  """Returns of `REFERENCE_EPISODES` uniformly random episodes, [REFERENCE_EPISODES]."""
  return np.asarray(_random_returns_fn(env)(key))


def generate(env: str, kind: str, *, size: int = 100_000, seed: int = 0,
             sac_steps: int | None = None, cache_dir: str | os.PathLike | None = None,
             log: Callable[[str], Any] = print, expert_reference: bool = True) -> Dataset:
  """The `kind` dataset of `env` (see the module docstring), read from the cache or made and
  cached. Deterministic given the arguments.

  Args:
    env: a registered continuous env ("pendulum", "inverted_pendulum", "hopper",
      "halfcheetah", "walker2d", ...).
    kind: one of `KINDS`.
    size: transitions for random / medium / expert (medium-expert has 2 * size;
      medium-replay has what the SAC run took).
    seed: the seed of the SAC run and of the collection.
    sac_steps: the SAC run's env-step budget (None: the env's default, see `_sac_config`).
    cache_dir: the cache root (None: `default_root()`).
    log: where progress lines go.
    expert_reference: a random set also gets `ref_max_score`, which needs the SAC run (False
      leaves it None; asking again with True later fills it in).
  """
  _check_args(env, kind, size, seed)
  root = pathlib.Path(cache_dir) if cache_dir is not None else default_root()
  path = root / f"{cache_key(env, kind, size, seed, sac_steps)}.hdf5"
  if path.exists():
    ds = read_d4rl(path)
    if expert_reference and ds.metadata.get("ref_max_score") is None:
      meta = sac_run(env, seed, sac_steps=sac_steps, cache_dir=root, log=log)["meta"]
      ds.metadata.update({k: meta[k] for k in ("ref_min_score", "ref_max_score")})
      write_d4rl(path, ds)
    return ds
  cfg = _sac_config(env, sac_steps)
  key = jax.random.fold_in(jax.random.key(seed), KINDS.index(kind) + 1)
  like = _policy_fns(env, cfg)[1].init(jax.random.key(0)).params
  if kind == "random":
    sac_meta = None
    arrays = _to_arrays(_collect_fn(env, cfg, size, "random")(key, like))
    if expert_reference or _sac_done(env, seed, sac_steps, root):
      meta = sac_run(env, seed, sac_steps=sac_steps, cache_dir=root, log=log)["meta"]
      refs = {k: meta[k] for k in ("ref_min_score", "ref_max_score")}
    else:   # the same random reference as the SAC run's, without the expert's
      k_rand = jax.random.split(jax.random.fold_in(jax.random.key(seed), 7))[0]
      refs = {"ref_min_score": float(_random_returns(env, k_rand).mean()),
              "ref_max_score": None}
  else:
    sac_out = sac_run(env, seed, sac_steps=sac_steps, cache_dir=root, log=log)
    sac_meta = sac_out["meta"]
    refs = {k: sac_meta[k] for k in ("ref_min_score", "ref_max_score")}
    collect = _collect_fn(env, cfg, size, "stochastic")
    if kind == "medium-replay":
      arrays = _to_arrays(sac_out["replay"])
    elif kind == "medium":
      arrays = _to_arrays(collect(key, sac_out["medium"]))
    elif kind == "expert":
      arrays = _to_arrays(collect(key, sac_out["expert"]))
    else:
      med = generate(env, "medium", size=size, seed=seed, sac_steps=sac_steps, cache_dir=root,
                     log=log)
      exp = generate(env, "expert", size=size, seed=seed, sac_steps=sac_steps, cache_dir=root,
                     log=log)
      arrays = {k: np.concatenate([med.arrays[k], exp.arrays[k]]) for k in KEYS}
  rets = episode_returns(arrays["rewards"], arrays["terminals"], arrays["timeouts"])
  metadata = {
      "env": env, "backend": _backend(env), "kind": kind, "size": int(arrays["rewards"].shape[0]),
      "seed": seed, "policy_return": float(rets.mean()) if rets.size else None,
      "episodes": int(rets.size), **refs, "library_version": mbrl_jax.__version__,
      "format_version": FORMAT_VERSION, "generator": "mbrl_jax.data.offline.generate",
      "sac_steps": sac_steps,
      "medium_epoch": None if sac_meta is None else sac_meta["medium_epoch"],
      "expert_epoch": None if sac_meta is None else sac_meta["expert_epoch"]}
  ds = Dataset(arrays=arrays, metadata=metadata)
  write_d4rl(path, ds)
  log(f"[dataset] wrote {path} ({ds.size} transitions, policy return "
      f"{metadata['policy_return']})")
  return ds


def _work_dir(env: str, seed: int, sac_steps: int | None, root: pathlib.Path) -> pathlib.Path:
  """The SAC run's folder (checkpoints, per-epoch policies, replay buffer, run.json)."""
  return root / f"{cache_key(env, 'sac', 0, seed, sac_steps)}-work"


def _sac_done(env: str, seed: int, sac_steps: int | None, root: pathlib.Path) -> bool:
  return (_work_dir(env, seed, sac_steps, root) / "run.json").exists()


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
    rets = episode_returns(arrays["rewards"], arrays["terminals"], arrays["timeouts"])
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
  out_meta = {"source": str(path), "minari_id": metadata.get("dataset_id"),
              "minari_env": (metadata.get("env_spec") or {}).get("id")
              if isinstance(metadata.get("env_spec"), dict) else None}
  for k in ("env", "kind", "ref_min_score", "ref_max_score"):
    if k in metadata:
      out_meta[k] = metadata[k]
  _check_arrays(path, arrays, env, out_meta)
  rets = episode_returns(arrays["rewards"], arrays["terminals"], arrays["timeouts"])
  out_meta["policy_return"] = float(rets.mean()) if rets.size else None
  out_meta["size"] = int(arrays["observations"].shape[0])
  return Dataset(arrays=arrays, metadata=out_meta)


def load(name: str, *, env: str | None = None, size: int = 100_000, seed: int = 0,
         sac_steps: int | None = None, cache_dir: str | os.PathLike | None = None,
         log: Callable[[str], Any] = print) -> Dataset:
  """A dataset by name: "<env>-<kind>" (generated and cached, e.g. "hopper-medium-replay"),
  a path to a D4RL HDF5 file, or a path to a Minari dataset folder."""
  p = pathlib.Path(os.path.expanduser(name))
  if p.is_dir():
    return read_minari(p, env=env)
  if p.suffix in (".hdf5", ".h5") or p.is_file():
    return read_d4rl(p, env=env)
  for kind in sorted(KINDS, key=len, reverse=True):
    if name.endswith("-" + kind):
      ds_env = name[: -len(kind) - 1]
      if env is not None and env != ds_env:
        raise ValueError(f"dataset {name!r} is of env {ds_env!r}, not {env!r}")
      return generate(ds_env, kind, size=size, seed=seed, sac_steps=sac_steps,
                      cache_dir=cache_dir, log=log)
  raise ValueError(f"dataset {name!r} is neither an existing file or folder nor "
                   f"'<env>-<kind>' with kind in {', '.join(KINDS)}")
