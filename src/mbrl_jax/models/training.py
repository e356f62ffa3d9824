"""Fitting a dynamics ensemble: one compiled call per fit, whatever the amount of data.

The data are a fixed-capacity `Transition` batch [C, ...] with a validity mask [C] (a replay
buffer's storage, say), so refitting on a growing dataset never changes a shape and never
recompiles. Inside one call: a random holdout split of the valid rows, normaliser statistics
from the training rows, epochs as a `lax.scan` (an epoch after early stopping is skipped by
`lax.cond`), minibatches as a loop whose trip count depends on the data size, per-member
bootstrap resampling or permutation, the best parameters of each member kept by holdout MSE,
and the elites chosen from them.

Example:
  >>> trainer = make_trainer(ens, FitConfig(max_epochs=50))
  >>> fit_state = trainer.init(ens.init(key))
  >>> fit_state, metrics = jax.jit(trainer.fit)(key, fit_state, buffer_data, valid_mask)
  >>> check_fit(metrics)          # raises on NaN/Inf in the data or the loss
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mbrl_jax.models import normalizer as norm_lib
from mbrl_jax.models.ensemble import Ensemble, EnsembleParams
from mbrl_jax.types import PRNGKey, Transition


@dataclasses.dataclass(frozen=True)
class FitConfig:
  """How an ensemble is fitted. Python values, part of the compiled program.

  Attributes:
    learning_rate: Adam step size.
    weight_decay: decoupled weight decay on the kernels (AdamW); 0 disables it.
    batch_size: rows per member per gradient step.
    max_epochs: upper bound on epochs per fit.
    holdout_ratio: fraction of the valid rows held out for early stopping and elite choice.
    patience: stop after this many epochs in which no member improved its holdout MSE by more
      than `improvement_threshold` (relative); None trains for max_epochs.
    improvement_threshold: relative holdout improvement that counts as progress.
    bootstrap: each member trains on rows drawn with replacement (True) or on its own
      permutation of the training rows (False).
    eval_batch_size: rows per holdout evaluation batch (memory only; results do not depend on it).
  """

  learning_rate: float = 1e-3
  weight_decay: float = 5e-5
  batch_size: int = 32
  max_epochs: int = 50
  holdout_ratio: float = 0.2
  patience: int | None = 5
  improvement_threshold: float = 0.01
  bootstrap: bool = True
  eval_batch_size: int = 4096

  def __post_init__(self):
    def bad(name, why):
      raise ValueError(f"FitConfig.{name} {why}, got {getattr(self, name)!r}")
    if not self.learning_rate > 0:
      bad("learning_rate", "must be > 0")
    if not self.weight_decay >= 0:
      bad("weight_decay", "must be >= 0")
    for name in ("batch_size", "max_epochs", "eval_batch_size"):
      if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
        bad(name, "must be a positive int")
    if not 0.0 <= self.holdout_ratio < 1.0:
      bad("holdout_ratio", "must be in [0, 1)")
    if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
      bad("patience", "must be None or a positive int")
    if not self.improvement_threshold >= 0:
      bad("improvement_threshold", "must be >= 0")


class FitState(NamedTuple):
  """What persists from one fit to the next.

  Attributes:
    params: the ensemble's parameters (normalisers and elites included).
    opt_state: the optimizer's state for `params`.
  """

  params: EnsembleParams
  opt_state: optax.OptState


class FitMetrics(NamedTuple):
  """Per-epoch and summary metrics of one fit (E members, T = max_epochs).

  Attributes:
    train_loss: mean training loss per epoch and member (NaN for skipped epochs).  # [T, E]
    holdout_mse: holdout MSE (normalised targets) per epoch and member (NaN if skipped). # [T, E]
    epochs: epochs actually run.                                                   # []
    best_holdout_mse: holdout MSE of the kept parameters per member.               # [E]
    num_train: training rows.                                                      # []
    num_holdout: holdout rows (the training rows are scored when this is 0).       # []
    nonfinite_data: a valid row had a NaN or Inf.                                  # [] bool
    nonfinite_loss: a training loss was NaN or Inf.                                # [] bool
  """

  train_loss: jax.Array
  holdout_mse: jax.Array
  epochs: jax.Array
  best_holdout_mse: jax.Array
  num_train: jax.Array
  num_holdout: jax.Array
  nonfinite_data: jax.Array
  nonfinite_loss: jax.Array


class Trainer(NamedTuple):
  """Pure functions that fit an ensemble. Build with `make_trainer`.

  Attributes:
    init: `init(params) -> FitState`.
    fit: `fit(key, state, data, mask) -> (FitState, FitMetrics)`; data a `Transition` with
      leading capacity axis [C, ...], mask [C] bool marks the rows to use.
  """

  init: Callable[[EnsembleParams], FitState]
  fit: Callable[..., tuple[FitState, FitMetrics]]


def _trainable(params: EnsembleParams) -> tuple[Any, jax.Array, jax.Array]:
  """The leaves the optimizer moves: network weights and log-variance bounds."""
  return params.net, params.min_logvar, params.max_logvar


def _kernel_mask(trainable: tuple[Any, jax.Array, jax.Array]) -> Any:
  """True for the dense kernels, the only leaves weight decay applies to."""
  net, lo, hi = trainable
  net_mask = jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], "key", None) == "kernel", net)
  return net_mask, False, False


def make_trainer(ensemble: Ensemble, config: FitConfig = FitConfig()) -> Trainer:
  """Builds the fitting functions of `ensemble` under `config`."""
  spec = ensemble.spec
  E, K, B = spec.num_members, spec.num_elites, config.batch_size
  optimizer = optax.adamw(config.learning_rate, weight_decay=config.weight_decay,
                          mask=_kernel_mask)

  def init(params: EnsembleParams) -> FitState:
    return FitState(params=params, opt_state=optimizer.init(_trainable(params)))

  def grad_step(state: FitState, x, y, w) -> tuple[FitState, jax.Array]:
    def total(trainable):
      net, lo, hi = trainable
      p = state.params._replace(net=net, min_logvar=lo, max_logvar=hi)
      member_loss, _ = ensemble.loss(p, x, y, w)
      return member_loss.sum(), member_loss
    trainable = _trainable(state.params)
    grads, member_loss = jax.grad(total, has_aux=True)(trainable)
    updates, opt_state = optimizer.update(grads, state.opt_state, trainable)
    net, lo, hi = optax.apply_updates(trainable, updates)
    params = state.params._replace(net=net, min_logvar=lo, max_logvar=hi)
    return FitState(params, opt_state), member_loss

  def fit(key: PRNGKey, state: FitState, data: Transition,
          mask: jax.Array) -> tuple[FitState, FitMetrics]:
    capacity = data.obs.shape[0]
    if mask.shape != (capacity,):
      raise ValueError(f"fit: mask has shape {mask.shape}, expected ({capacity},) to match "
                       f"the data's leading axis")
    split_key, epochs_key = jax.random.split(key)
    x_raw = jnp.concatenate([data.obs.astype(jnp.float32),
                             data.action.astype(jnp.float32)], axis=-1)      # [C, O + A]
    y_raw = ensemble.targets(data.obs, data.action, data.reward, data.next_obs)  # [C, D]
    valid = mask.astype(bool)
    finite = jnp.isfinite(x_raw).all(-1) & jnp.isfinite(y_raw).all(-1)
    nonfinite_data = jnp.any(valid & ~finite)
    valid = valid & finite

    # Random holdout split of the valid rows. `order` lists valid rows first, shuffled.
    u = jax.random.uniform(split_key, (capacity,))
    order = jnp.argsort(jnp.where(valid, u, 2.0))
    n_valid = valid.sum()
    n_hold = jnp.floor(n_valid * config.holdout_ratio).astype(jnp.int32)
    n_train = n_valid - n_hold
    rank = jnp.argsort(order)
    is_hold = valid & (rank < n_hold)
    is_train = valid & ~is_hold
    train_rows = jnp.argsort(jnp.where(is_train, u, 2.0))        # training rows first
    # Score on the holdout rows, or on the training rows when there are none.
    eval_rows = jnp.where(n_hold > 0, order, train_rows)
    n_eval = jnp.where(n_hold > 0, n_hold, n_train)

    params = state.params._replace(
        input_norm=norm_lib.fit(x_raw, is_train), output_norm=norm_lib.fit(y_raw, is_train))
    x_all = norm_lib.normalize(params.input_norm, jnp.where(finite[:, None], x_raw, 0.0))
    y_all = norm_lib.normalize(params.output_norm, jnp.where(finite[:, None], y_raw, 0.0))
    state = state._replace(params=params)

    num_slots = -(-capacity // B) * B            # pad so every minibatch slice is in range
    eval_slots = -(-capacity // config.eval_batch_size) * config.eval_batch_size
    eval_rows = jnp.pad(eval_rows, (0, eval_slots - capacity))

    def member_rows(key):
      """Row indices each member trains on this epoch, [E, num_slots]; first n_train count."""
      if config.bootstrap:
        pos = jax.random.randint(key, (E, capacity), 0, jnp.maximum(n_train, 1))
      else:
        v = jax.random.uniform(key, (E, capacity))
        pos = jnp.argsort(jnp.where(jnp.arange(capacity) < n_train, v, 2.0), axis=1)
      return jnp.pad(train_rows[pos], ((0, 0), (0, num_slots - capacity)))

    def holdout_mse(params) -> jax.Array:
      def body(i, acc):
        rows = jax.lax.dynamic_slice_in_dim(eval_rows, i * config.eval_batch_size,
                                            config.eval_batch_size)
        w = (i * config.eval_batch_size + jnp.arange(config.eval_batch_size)) < n_eval
        x = jnp.broadcast_to(x_all[rows], (E, *x_all[rows].shape))
        y = jnp.broadcast_to(y_all[rows], (E, *y_all[rows].shape))
        w = jnp.broadcast_to(w, (E, w.shape[0])).astype(jnp.float32)
        _, mse = ensemble.loss(params, x, y, w)
        return acc + mse * w.sum(-1)
      n_batches = -(-n_eval // config.eval_batch_size)
      total = jax.lax.fori_loop(0, n_batches, body, jnp.zeros((E,)))
      return total / jnp.maximum(n_eval, 1)

    def run_epoch(carry):
      fit_state, best_params, best_score, since_improved, key = carry
      key, rows_key = jax.random.split(key)
      rows = member_rows(rows_key)

      def body(i, acc):
        st, loss_sum = acc
        r = jax.lax.dynamic_slice_in_dim(rows, i * B, B, axis=1)                 # [E, B]
        w = ((i * B + jnp.arange(B)) < n_train).astype(jnp.float32)
        st, member_loss = grad_step(st, x_all[r], y_all[r], jnp.broadcast_to(w, (E, B)))
        return st, loss_sum + member_loss * w.sum()

      n_batches = -(-n_train // B)
      fit_state, loss_sum = jax.lax.fori_loop(0, n_batches, body, (fit_state, jnp.zeros((E,))))
      train_loss = loss_sum / jnp.maximum(n_train, 1)
      score = holdout_mse(fit_state.params)
      improved = (best_score - score) > config.improvement_threshold * jnp.abs(best_score)
      improved = improved | ~jnp.isfinite(best_score)
      pick = lambda new, old: jnp.where(
          improved.reshape((E,) + (1,) * (new.ndim - 1)), new, old)
      best_params = best_params._replace(
          net=jax.tree.map(pick, fit_state.params.net, best_params.net),
          min_logvar=fit_state.params.min_logvar, max_logvar=fit_state.params.max_logvar)
      best_score = jnp.where(improved, score, best_score)
      since_improved = jnp.where(improved.any(), 0, since_improved + 1)
      return (fit_state, best_params, best_score, since_improved, key), (train_loss, score)

    def epoch(carry, _):
      since_improved = carry[3]
      stopped = (False if config.patience is None else since_improved >= config.patience)
      stopped = stopped | (n_train == 0)
      skipped = lambda c: (c, (jnp.full((E,), jnp.nan), jnp.full((E,), jnp.nan)))
      carry, (train_loss, score) = jax.lax.cond(stopped, skipped, run_epoch, carry)
      return carry, (train_loss, score, ~stopped)

    init_carry = (state, state.params, jnp.full((E,), jnp.inf), jnp.asarray(0, jnp.int32),
                  epochs_key)
    (state, best_params, best_score, _, _), (train_loss, score, ran) = jax.lax.scan(
        epoch, init_carry, None, length=config.max_epochs)

    elites = jnp.argsort(jnp.where(jnp.isfinite(best_score), best_score, jnp.inf))[:K]
    best_params = best_params._replace(elites=elites.astype(jnp.int32))
    metrics = FitMetrics(
        train_loss=train_loss, holdout_mse=score, epochs=ran.sum(),
        best_holdout_mse=best_score, num_train=n_train, num_holdout=n_hold,
        nonfinite_data=nonfinite_data,
        nonfinite_loss=jnp.any(ran[:, None] & ~jnp.isfinite(train_loss)))
    return FitState(params=best_params, opt_state=state.opt_state), metrics

  return Trainer(init=init, fit=fit)


def check_fit(metrics: FitMetrics, *, where: str = "model fit") -> None:
  """Raises FloatingPointError if a fit saw NaN/Inf data or losses (a host-side check).

  Call it outside compiled code on the metrics of one fit or of a stack of fits.
  """
  if np.any(np.asarray(metrics.nonfinite_data)):
    raise FloatingPointError(
        f"{where}: the training data contain NaN or Inf values in rows marked valid")
  if np.any(np.asarray(metrics.nonfinite_loss)):
    raise FloatingPointError(
        f"{where}: the training loss became NaN or Inf (per-epoch losses: "
        f"{np.asarray(metrics.train_loss).mean(-1).round(4).tolist()}); lower the learning "
        f"rate or check the data")
