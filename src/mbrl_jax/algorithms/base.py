"""The algorithm protocol: what an algorithm module gives the driver in `mbrl_jax.run`.

An algorithm module (`pets`, `mbpo`, `sac`, `dreamer`, ...) exposes a frozen `Config` with its
presets beside it (`PRESETS`), and `make(config) -> Algorithm`: pure, unjitted, unbatched
functions plus the facts the driver needs. `make` is memoised per config, so calling it again
returns the same functions and the driver's compiled ones are reused.
`mbrl_jax.run.train(algorithm, key)` does the rest for every algorithm alike: vmap over seeds,
jit with the state donated, checkpoints and resume, the stop on NaN/Inf, progress and metric
history. Nothing under `algorithms/` imports `mbrl_jax.run`.

Metric names follow one scheme for all algorithms (the same key means the same thing
everywhere, in JSONL, CSV, TensorBoard and plots):

  env_steps              env steps taken so far, exploration included
  train/return           mean return of the training episodes that ended in the chunk
  train/episode_length   mean length of those episodes
  train/episodes         how many ended (MBPO, Dreamer: a PETS trial is one episode)
  eval/return            mean return of complete evaluation episodes (min / max beside it)
  model/...              the dynamics or world model (holdout_mse, train_loss, epochs, ...)
  planner/..., sac/..., actor_critic/..., rollout/...   the other components
  nonfinite/<component>  [] bool, NaN or Inf found in that component this chunk
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax

from mbrl_jax.types import PRNGKey

# init(key) -> (state, done): `done` holds the metrics of the chunks init itself ran, each
# with a leading axis [D] (PETS' random trials; {} when init runs none).
InitFn = Callable[[PRNGKey], tuple[Any, dict[str, jax.Array]]]
# step(state) -> (state, metrics): one chunk (a PETS trial, an MBPO epoch, a Dreamer chunk).
StepFn = Callable[[Any], tuple[Any, dict[str, jax.Array]]]


class Algorithm(NamedTuple):
  """An algorithm ready to be driven by `mbrl_jax.run.train`.

  Attributes:
    name: short name, for messages, checkpoints and run directories ("pets").
    unit: what one chunk is called ("trial", "epoch", "chunk").
    config: the frozen config it was made from; with `name` it keys checkpoints (a resumed
      run must have the same) and the driver's compile cache (which also checks that `init`
      and `step` are the same functions).
    init: unbatched `init(key) -> (state, done)`, see `InitFn`.
    step: unbatched, pure `step(state) -> (state, metrics)`, see `StepFn`; every metric is a
      scalar per seed.
    num_chunks: chunks of a whole run, those done by `init` included.
    nonfinite: {metric: component} for the step's boolean `nonfinite/...` metrics, e.g.
      {"nonfinite/model_params": "the model parameters"}; a True one stops the run.
    dot_rows: rows each ensemble member's matrix products see in the step's hot loop (picks
      compiler options, see `mbrl_jax.compile`); None for the defaults.
    step_at: None (`step` runs every chunk), or `step_at(i) -> StepFn`, chunk i's step, for
      an algorithm whose program is better specialised to the chunk (PILCO's exact GP on the
      rows chunk i can have, not the whole run's capacity). The driver compiles each distinct
      function it returns once, so chunks that share a program must get the same function
      object (memoise); each must take and return a state of `init`'s structure.
  """

  name: str
  unit: str
  config: Any
  init: InitFn
  step: StepFn
  num_chunks: int
  nonfinite: dict[str, str]
  dot_rows: int | None = None
  step_at: Callable[[int], StepFn] | None = None
