"""Making the offline datasets of `mbrl_jax.data.offline` with the library's own SAC: the SAC
run behind medium / medium-replay / expert (checkpointed, resumable), the collectors, the
reference returns, and `generate`, which returns the cached set when there is one.

Layer 5 (beside the driver): it runs `mbrl_jax.algorithms.sac` through `mbrl_jax.run.train`.
The kinds, the file names and the readers are `mbrl_jax.data.offline`'s (layer 1), which reads
only; `offline.load("<env>-<kind>")` points here when a set is not cached yet.

One SAC run per (env, seed, SAC settings) makes all kinds: its eval return after each epoch,
its policy parameters at every epoch, and its replay buffer are kept beside its checkpoints
(folder `<env>-sac-0-s<seed>-<digest>-work` in the cache), so an interrupted run resumes
(`generate` again with the same arguments) and the other kinds cost only their collection.
Reference returns are measured on the same env: `ref_min_score` is the mean return of
`offline.REFERENCE_EPISODES` uniformly random episodes, `ref_max_score` the expert's mean
deterministic return over as many (D4RL's Gym references do not carry over to Brax's
dynamics). Deterministic given the seed.

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
import json
import os
import pathlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import mbrl_jax
from mbrl_jax import envs
from mbrl_jax.algorithms import mbpo
from mbrl_jax.algorithms import sac as sac_alg
from mbrl_jax.data import offline
from mbrl_jax.run import loop
from mbrl_jax.types import Transition

KINDS = offline.KINDS


def sac_config(env: str, sac_steps: int | None = None) -> sac_alg.Config:
  """The SAC run behind an env's datasets, built from `offline.sac_settings` (which the file
  names digest); a field of `sac.Config` the settings leave out is an error, since the names
  would not cover it."""
  s = offline.sac_settings(env, sac_steps)
  cfg = sac_alg.Config(**{**s, "sac": mbpo.SACConfig(**s["sac"])})
  if dataclasses.asdict(cfg) != s:
    raise ValueError(f"data.offline.sac_settings({env!r}) does not list every field of "
                     f"sac.Config {sorted(dataclasses.asdict(cfg))}; add the missing ones")
  return cfg


def _backend(env: str) -> str:
  return "brax-generalized" if env not in ("pendulum", "cartpole_continuous",
                                           "cartpole_swingup") else "mbrl_jax"


# --------------------------------------------------------------------------------------------
# Collection.

def _policy_fns(env_name: str, sac_cfg: Any):
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
  cfg = sac_config(env, sac_steps)
  root = pathlib.Path(cache_dir) if cache_dir is not None else offline.default_root()
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
      state, history = loop.train(algorithm._replace(num_chunks=n), key,
                                 checkpoint_dir=str(work / "checkpoints"), resume=True)
      ret = float(history["eval/return"][-1])
      _save_tree(work / f"policy_{n - 1}.npz", state.sac.params)
      record.append({"epoch": n - 1, "eval_return": ret, "env_steps": int(state.env_steps)})
      epochs_file.write_text(json.dumps(record))
      log(f"[dataset {env} seed {seed}] SAC epoch {n}/{algorithm.num_chunks}: eval return "
          f"{ret:.1f}, {int(state.env_steps)} env steps")
    if state is None:     # every epoch was done before a crash in the final bookkeeping
      state, _ = loop.train(algorithm, key, checkpoint_dir=str(work / "checkpoints"),
                           resume=True)
    real = state.real
    replay = jax.tree.map(lambda x: np.asarray(x)[: int(real.size)], real.data)
    np.savez(work / "replay.npz", **replay._asdict())
    k_rand, k_exp = jax.random.split(jax.random.fold_in(key, 7))
    r_random = _random_returns(env, k_rand)
    best = int(np.argmax([r["eval_return"] for r in record]))
    expert = _load_tree(work / f"policy_{best}.npz", like)
    r_expert = np.asarray(
        _collect_fn(env, cfg, offline.REFERENCE_EPISODES, "evaluate")(k_exp, expert))
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
      env_obj, envs.acting.uniform_random(env_obj.action_size), k, offline.REFERENCE_EPISODES,
      length).returns)


def _random_returns(env: str, key: jax.Array) -> np.ndarray:
  """Returns of `offline.REFERENCE_EPISODES` uniformly random episodes, [episodes]."""
  return np.asarray(_random_returns_fn(env)(key))


def generate(env: str, kind: str, *, size: int = 100_000, seed: int = 0,
             sac_steps: int | None = None, cache_dir: str | os.PathLike | None = None,
             log: Callable[[str], Any] = print,
             expert_reference: bool = True) -> offline.Dataset:
  """The `kind` dataset of `env` (see the module docstring), read from the cache or made and
  cached. Deterministic given the arguments.

  Args:
    env: a registered continuous env ("pendulum", "inverted_pendulum", "hopper",
      "halfcheetah", "walker2d", ...).
    kind: one of `KINDS`.
    size: transitions for random / medium / expert (medium-expert has 2 * size;
      medium-replay has what the SAC run took).
    seed: the seed of the SAC run and of the collection.
    sac_steps: the SAC run's env-step budget (None: the env's default, see `sac_config`).
    cache_dir: the cache root (None: `offline.default_root()`).
    log: where progress lines go.
    expert_reference: a random set also gets `ref_max_score`, which needs the SAC run (False
      leaves it None; asking again with True later fills it in).
  """
  offline.check_args(env, kind, size, seed)
  root = pathlib.Path(cache_dir) if cache_dir is not None else offline.default_root()
  path = offline.cache_path(env, kind, size, seed, sac_steps, root)
  if path.exists():
    ds = offline.read_d4rl(path)
    if expert_reference and ds.metadata.get("ref_max_score") is None:
      meta = sac_run(env, seed, sac_steps=sac_steps, cache_dir=root, log=log)["meta"]
      ds.metadata.update({k: meta[k] for k in ("ref_min_score", "ref_max_score")})
      offline.write_d4rl(path, ds)
    return ds
  cfg = sac_config(env, sac_steps)
  key = jax.random.fold_in(jax.random.key(seed), offline.KINDS.index(kind) + 1)
  like = _policy_fns(env, cfg)[1].init(jax.random.key(0)).params
  if kind == "random":
    sac_meta = None
    arrays = offline.from_transitions(_collect_fn(env, cfg, size, "random")(key, like))
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
      arrays = offline.from_transitions(sac_out["replay"])
    elif kind == "medium":
      arrays = offline.from_transitions(collect(key, sac_out["medium"]))
    elif kind == "expert":
      arrays = offline.from_transitions(collect(key, sac_out["expert"]))
    else:
      med = generate(env, "medium", size=size, seed=seed, sac_steps=sac_steps, cache_dir=root,
                     log=log)
      exp = generate(env, "expert", size=size, seed=seed, sac_steps=sac_steps, cache_dir=root,
                     log=log)
      arrays = {k: np.concatenate([med.arrays[k], exp.arrays[k]]) for k in offline.KEYS}
  # Each part's complete episodes (medium's unfinished last one must not run into expert's).
  parts = [med.arrays, exp.arrays] if kind == "medium-expert" else [arrays]
  rets = np.concatenate([offline.episode_returns(a["rewards"], a["terminals"], a["timeouts"])
                         for a in parts])
  metadata = {
      "env": env, "backend": _backend(env), "kind": kind, "size": int(arrays["rewards"].shape[0]),
      "seed": seed, "policy_return": float(rets.mean()) if rets.size else None,
      "episodes": int(rets.size), **refs, "library_version": mbrl_jax.__version__,
      "format_version": offline.FORMAT_VERSION, "generator": "mbrl_jax.run.datasets.generate",
      "sac_steps": sac_steps,
      "medium_epoch": None if sac_meta is None else sac_meta["medium_epoch"],
      "expert_epoch": None if sac_meta is None else sac_meta["expert_epoch"]}
  ds = offline.Dataset(arrays=arrays, metadata=metadata)
  offline.write_d4rl(path, ds)
  log(f"[dataset] wrote {path} ({ds.size} transitions, policy return "
      f"{metadata['policy_return']})")
  return ds


def _work_dir(env: str, seed: int, sac_steps: int | None, root: pathlib.Path) -> pathlib.Path:
  """The SAC run's folder (checkpoints, per-epoch policies, replay buffer, run.json)."""
  return root / f"{offline.cache_key(env, 'sac', 0, seed, sac_steps)}-work"


def _sac_done(env: str, seed: int, sac_steps: int | None, root: pathlib.Path) -> bool:
  return (_work_dir(env, seed, sac_steps, root) / "run.json").exists()




def ensure(name: str, *, size: int = 100_000, seed: int = 0, sac_steps: int | None = None,
           cache_dir: str | os.PathLike | None = None, log: Callable[[str], Any] = print
           ) -> offline.Dataset | None:
  """Makes (or finds in the cache) the dataset `name` if it is a generated one,
  "<env>-<kind>", so that `offline.load(name, ...)` with the same arguments then reads it;
  a path to a file or folder is left alone (returns None). What the scripts call before an
  offline run (`mbrl_jax.algorithms.offline` reads datasets, it never makes them)."""
  parsed = offline.parse_name(name)
  if parsed is None:
    return None
  return generate(*parsed, size=size, seed=seed, sac_steps=sac_steps, cache_dir=cache_dir,
                  log=log)
