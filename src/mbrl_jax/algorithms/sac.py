"""Model-free SAC on the MBPO loop: the "same learner without a model" baseline.

`make(config)` is `mbrl_jax.algorithms.mbpo.make(..., use_model=False)`: random exploration, then
epochs of `epoch_length` env steps, each step followed by `updates_per_step` SAC updates on
real transitions only, one compiled call per epoch, seeds vmapped, a deterministic evaluation
after each epoch. No ensemble is built or fitted.

Example (a minute of CPU, so skipped here):
  >>> from mbrl_jax import run
  >>> state, history = run.train(make(Config(env="pendulum")), jax.random.key(0))  # doctest: +SKIP
  >>> history["eval/return"].shape                                                 # doctest: +SKIP
  (19,)
"""

from __future__ import annotations

import dataclasses
from mbrl_jax.algorithms import mbpo
from mbrl_jax.algorithms.base import Algorithm


@dataclasses.dataclass(frozen=True)
class Config:
  """A model-free SAC run.

  Attributes:
    env: environment name (`mbrl_jax.envs.registered_names`).
    env_steps: env-step budget, exploration included.
    epoch_length: env steps per compiled call (and between evaluations).
    init_exploration_steps: env steps with uniformly random actions first.
    updates_per_step: SAC updates after every env step.
    episode_length: time limit of episodes (None: the env's default).
    eval_episodes: deterministic evaluation episodes after each epoch.
    sac: the SAC learner and its batch size.
  """

  env: str = "pendulum"
  env_steps: int = 20_000
  epoch_length: int = 1000
  init_exploration_steps: int = 1000
  updates_per_step: int = 1
  episode_length: int | None = None
  eval_episodes: int = 5
  sac: mbpo.SACConfig = mbpo.SACConfig(actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3)

  def __post_init__(self):
    try:                          # the MBPO loop's config checks the same fields
      to_mbpo(self)
    except ValueError as e:
      raise ValueError(str(e).replace("mbpo.Config.", "sac.Config.")) from None


def to_mbpo(config: Config) -> mbpo.Config:
  """The MBPO config that runs this SAC config with `use_model=False`."""
  return mbpo.Config(
      env=config.env, env_steps=config.env_steps, epoch_length=config.epoch_length,
      init_exploration_steps=config.init_exploration_steps,
      model_train_every=config.epoch_length, updates_per_step=config.updates_per_step,
      real_ratio=1.0, episode_length=config.episode_length, eval_episodes=config.eval_episodes,
      sac=config.sac)


def make(config: Config) -> Algorithm:
  """Model-free SAC as an `Algorithm` for `mbrl_jax.run.train`; the history is MBPO's
  without the model and rollout metrics."""
  return mbpo.make(to_mbpo(config), use_model=False)
