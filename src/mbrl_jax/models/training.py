"""Fitting a dynamics ensemble: one compiled call per fit, whatever the amount of data.

The data are a fixed-capacity `Transition` batch [C, ...] with a validity mask [C] (a replay
buffer's storage, say), so refitting on a growing dataset never changes a shape and never
recompiles. Inside one call: a random holdout split of the valid rows, normaliser statistics
from the training rows (inputs standardised, targets too unless asked not to), epochs as a
`lax.while_loop` that ends when the holdout patience runs out or after `max_epochs`,
minibatches as a loop whose trip count depends on the data size, per-member bootstrap
resampling or permutation, the best parameters of each member kept by holdout MSE, and the
elites chosen from them.

Under `jax.vmap` over seeds the epoch loop runs until every seed has stopped (a seed that
stopped earlier keeps its parameters and optimizer state, and its later per-epoch metrics stay
NaN): the batch costs its longest seed's epochs, not `max_epochs`.

The weight decay follows mbrl-lib (Pineda et al. 2021, "MBRL-Lib: A Modular Library for
Model-based Reinforcement Learning"): Adam with coupled L2 weight decay (torch's
`Adam(weight_decay=...)`: wd * w added to the gradient before the moments). Target
standardisation does not: see `FitConfig.normalize_targets` for why.

Example (a fit on 64 transitions of a linear system):
  >>> from mbrl_jax.models import make_ensemble
  >>> from mbrl_jax.types import Transition
  >>> obs = jax.random.normal(jax.random.key(0), (64, 2))
  >>> action = jax.random.uniform(jax.random.key(1), (64, 1), minval=-1.0, maxval=1.0)
  >>> data = Transition(obs=obs, action=action, reward=obs[:, 0],
  ...                   next_obs=obs + 0.1 * action, terminated=jnp.zeros(64),
  ...                   truncated=jnp.zeros(64))
  >>> ens = make_ensemble(obs_size=2, action_size=1, num_members=3, hidden_sizes=(32,))
  >>> trainer = make_trainer(ens, FitConfig(max_epochs=5, batch_size=16))
  >>> fit_state = trainer.init(ens.init(jax.random.key(2)))
  >>> fit_state, metrics = jax.jit(trainer.fit)(jax.random.key(3), fit_state, data,
  ...                                           jnp.ones(64, bool))
  >>> check_fit(metrics)          # raises on NaN/Inf in the data or the loss
  >>> int(metrics.epochs), metrics.best_holdout_mse.shape
  (5, (3,))
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


WEIGHT_DECAY_MODES = ("l2", "decoupled")


@dataclasses.dataclass(frozen=True)
class FitConfig:
  """How an ensemble is fitted. Python values, part of the compiled program.

  Attributes:
    learning_rate: Adam step size.
    weight_decay: weight decay on the dense kernels (not the biases or log-variance bounds);
      0 disables it. One rate for every layer, or a tuple of one rate per dense layer, input
      layer first (MBPO's ensemble uses 2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4 for its 4 hidden
      layers and the output layer); `make_trainer` checks the tuple's length against the
      ensemble. How it acts is `weight_decay_mode`'s choice.
    weight_decay_mode: "l2" adds weight_decay * w to each kernel's gradient before Adam's
      moments (an L2 penalty weight_decay / 2 * |w|^2 on the loss; torch's
      `Adam(weight_decay=...)`, as mbrl-lib uses it); "decoupled" shrinks kernels by
      learning_rate * weight_decay * w per step outside the moments (AdamW, Loshchilov & Hutter
      2019), far weaker at the values mbrl-lib uses (5e-5: 5e-8 of a weight per step).
    batch_size: rows per member per gradient step.
    max_epochs: upper bound on epochs per fit.
    holdout_ratio: fraction of the valid rows held out for early stopping and elite choice.
    max_holdout: at most this many holdout rows (None: no cap); the rest of the valid rows
      train. MBPO caps its holdout at 5000 rows (`max_logging` in jannerm/mbpo's
      `BNN.train`).
    patience: stop after this many epochs in which no member improved its holdout MSE by more
      than `improvement_threshold` (relative); None trains for max_epochs.
    improvement_threshold: relative holdout improvement that counts as progress.
    bootstrap: each member trains on rows drawn with replacement (True) or on its own
      permutation of the training rows (False).
    eval_batch_size: rows per holdout evaluation batch (memory only; results do not depend on it).
    normalize_targets: also standardise the regression targets (the default; the ensemble
      then predicts in standardised units, and its log-variance bounds are in those units).
      False standardises the inputs only, as PETS (Chua et al. 2018) and mbrl-lib do. Either
      way a constant target dimension is pinned to its value and predicted exactly. Not the
      papers' choice by default because the log-variance starts near -0.5 whatever the
      targets' scale: in raw units it must fall by 3-11 for cart-pole's deltas (variance
      1e-5 to 3e-2), and PETS' first fits here (a 27-step random trial: 20-50 epochs of one
      minibatch) do not get it there. Measured: after one such 20-epoch fit the predicted
      variance was ~0.5 in every dimension, model rollouts were noise, and the quick PETS
      preset returned 27/30/18/35/25/31 per trial against 27/138/200/200/141/199 with
      standardised targets. (mbrl-lib's PETS starts from `initial_exploration_steps` = 200
      random steps on cart-pole: 7 minibatches per epoch in its first fit, not 1.)
  """

  learning_rate: float = 1e-3
  weight_decay: float | tuple[float, ...] = 5e-5
  batch_size: int = 32
  max_epochs: int = 50
  holdout_ratio: float = 0.2
  max_holdout: int | None = None
  patience: int | None = 5
  improvement_threshold: float = 0.01
  bootstrap: bool = True
  eval_batch_size: int = 4096
  weight_decay_mode: str = "l2"
  normalize_targets: bool = True

  def __post_init__(self):
    def bad(name, why):
      raise ValueError(f"FitConfig.{name} {why}, got {getattr(self, name)!r}")
    if not self.learning_rate > 0:
      bad("learning_rate", "must be > 0")
    decays = self.weight_decay if isinstance(self.weight_decay, tuple) else (self.weight_decay,)
    if not decays or not all(isinstance(d, (int, float)) and d >= 0 for d in decays):
      bad("weight_decay", "must be >= 0 (one rate, or a non-empty tuple of rates)")
    if isinstance(self.weight_decay, tuple) and self.weight_decay_mode == "decoupled":
      bad("weight_decay", "per-layer rates need weight_decay_mode 'l2'")
    if self.weight_decay_mode not in WEIGHT_DECAY_MODES:
      bad("weight_decay_mode", f"must be one of {WEIGHT_DECAY_MODES}")
    for name in ("batch_size", "max_epochs", "eval_batch_size"):
      if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
        bad(name, "must be a positive int")
    if not 0.0 <= self.holdout_ratio < 1.0:
      bad("holdout_ratio", "must be in [0, 1)")
    if self.max_holdout is not None and (not isinstance(self.max_holdout, int)
                                         or self.max_holdout < 1):
      bad("max_holdout", "must be None or a positive int")
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
    train_loss: mean training loss per epoch and member (NaN past `epochs`).       # [T, E]
    holdout_mse: holdout MSE per epoch and member (NaN past `epochs`), in the units the
      model is trained in: the targets' own, or standardised with `normalize_targets`. # [T, E]
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


def trainable(params: EnsembleParams) -> tuple[Any, jax.Array, jax.Array]:
  """The leaves a model optimizer moves, (net, min_logvar, max_logvar): the network weights
  and the log-variance bounds (the normalisers and the elite indices stay). An optimizer from
  `make_optimizer` is initialised and updated on this tuple."""
  return params.net, params.min_logvar, params.max_logvar


def _kernel_mask(trainable: tuple[Any, jax.Array, jax.Array]) -> Any:
  """True for the dense kernels, the only leaves weight decay applies to."""
  net, lo, hi = trainable
  net_mask = jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], "key", None) == "kernel", net)
  return net_mask, False, False


def _layer_mask(layer: int) -> Callable[[Any], Any]:
  """A mask function: True for the kernel of dense layer `layer` (flax's "Dense_<layer>")."""
  def mask(trainable):
    net, lo, hi = trainable
    net_mask = jax.tree_util.tree_map_with_path(
        lambda path, _: (getattr(path[-1], "key", None) == "kernel" and
                         any(getattr(p, "key", None) == f"Dense_{layer}" for p in path)), net)
    return net_mask, False, False
  return mask


def make_optimizer(config: FitConfig) -> optax.GradientTransformation:
  """The fit's optimizer: Adam at `config.learning_rate` with `config`'s weight decay on the
  dense kernels only (see `FitConfig.weight_decay_mode`), acting on `trainable(params)`.
  Also what other model updates use to match the fit (RAMBO's adversarial steps)."""
  if config.weight_decay_mode == "decoupled":
    return optax.adamw(config.learning_rate, weight_decay=config.weight_decay, mask=_kernel_mask)
  if isinstance(config.weight_decay, tuple):
    decay = [optax.masked(optax.add_decayed_weights(rate), _layer_mask(i))
             for i, rate in enumerate(config.weight_decay)]
  else:
    decay = [optax.masked(optax.add_decayed_weights(config.weight_decay), _kernel_mask)]
  return optax.chain(*decay, optax.scale_by_adam(),
                     optax.scale_by_learning_rate(config.learning_rate))


def optimizer_step(optimizer: optax.GradientTransformation, opt_state: Any,
                   params: EnsembleParams,
                   loss_fn: Callable[[EnsembleParams], tuple[jax.Array, Any]]
                   ) -> tuple[EnsembleParams, Any, Any]:
  """One step of `optimizer` (from `make_optimizer`) on the trainable leaves of `params`.

  Args:
    optimizer, opt_state: the optimizer and its state (initialised on `trainable(params)`).
    params: the ensemble's parameters.
    loss_fn: `loss_fn(params) -> (scalar loss, aux)`, differentiated in `trainable(params)`
      only.

  Returns:
    (params after the step, the new optimizer state, aux at the old params).
  """
  def f(leaves):
    net, lo, hi = leaves
    return loss_fn(params._replace(net=net, min_logvar=lo, max_logvar=hi))

  leaves = trainable(params)
  grads, aux = jax.grad(f, has_aux=True)(leaves)
  updates, opt_state = optimizer.update(grads, opt_state, leaves)
  net, lo, hi = optax.apply_updates(leaves, updates)
  return params._replace(net=net, min_logvar=lo, max_logvar=hi), opt_state, aux


def data_nll(ensemble: Ensemble, params: EnsembleParams, data: Transition) -> jax.Array:
  """Each member's training loss on raw transitions `data` [B] under `params`' own input and
  target normalisers (what `fit` minimises on a batch), [E]; differentiable in `params`, for
  losses that add a data term to something else (RAMBO's adversarial model update, MOREC's
  generators)."""
  E = ensemble.spec.num_members
  x = jnp.concatenate([data.obs, data.action], -1).astype(jnp.float32)
  x = norm_lib.normalize(params.input_norm, x)
  y = norm_lib.normalize(params.output_norm, ensemble.targets(data.obs, data.action,
                                                              data.reward, data.next_obs))
  member_loss, _ = ensemble.loss(params, jnp.broadcast_to(x, (E, *x.shape)),
                                 jnp.broadcast_to(y, (E, *y.shape)), jnp.ones((E, x.shape[0])))
  return member_loss


class _EpochCarry(NamedTuple):
  """The epoch loop's state (E members, T = max_epochs).

  Attributes:
    epoch: epochs run so far.                                          # [] int32
    fit_state: parameters and optimizer state after the last epoch.
    best_params: each member's parameters at its best holdout MSE.
    best_score: each member's best holdout MSE (inf before the first epoch). # [E]
    since_improved: epochs since any member last improved.            # [] int32
    key: randomness for the epochs still to run.
    train_loss: per-epoch training loss, NaN where not run.            # [T, E]
    holdout_mse: per-epoch holdout MSE, NaN where not run.             # [T, E]
  """

  epoch: jax.Array
  fit_state: FitState
  best_params: EnsembleParams
  best_score: jax.Array
  since_improved: jax.Array
  key: PRNGKey
  train_loss: jax.Array
  holdout_mse: jax.Array


def make_trainer(ensemble: Ensemble, config: FitConfig = FitConfig()) -> Trainer:
  """Builds the fitting functions of `ensemble` under `config`."""
  spec = ensemble.spec
  E, K, B, T = spec.num_members, spec.num_elites, config.batch_size, config.max_epochs
  if (isinstance(config.weight_decay, tuple)
      and len(config.weight_decay) != len(spec.hidden_sizes) + 1):
    raise ValueError(f"make_trainer: FitConfig.weight_decay has {len(config.weight_decay)} "
                     f"per-layer rates; this ensemble has {len(spec.hidden_sizes) + 1} dense "
                     f"layers ({len(spec.hidden_sizes)} hidden and the output layer)")
  optimizer = make_optimizer(config)

  def init(params: EnsembleParams) -> FitState:
    return FitState(params=params, opt_state=optimizer.init(trainable(params)))

  def grad_step(state: FitState, x, y, w) -> tuple[FitState, jax.Array]:
    def total(p):
      member_loss, _ = ensemble.loss(p, x, y, w)
      return member_loss.sum(), member_loss
    params, opt_state, member_loss = optimizer_step(optimizer, state.opt_state, state.params,
                                                    total)
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
    if config.max_holdout is not None:
      n_hold = jnp.minimum(n_hold, config.max_holdout)
    n_train = n_valid - n_hold
    rank = jnp.argsort(order)
    is_hold = valid & (rank < n_hold)
    is_train = valid & ~is_hold
    train_rows = jnp.argsort(jnp.where(is_train, u, 2.0))        # training rows first
    # Score on the holdout rows, or on the training rows when there are none.
    eval_rows = jnp.where(n_hold > 0, order, train_rows)
    n_eval = jnp.where(n_hold > 0, n_hold, n_train)

    output_norm = norm_lib.fit(y_raw, is_train)
    if not config.normalize_targets:
      output_norm = norm_lib.constants_only(output_norm)
    params = state.params._replace(input_norm=norm_lib.fit(x_raw, is_train),
                                   output_norm=output_norm)
    x_all = norm_lib.normalize(params.input_norm, jnp.where(finite[:, None], x_raw, 0.0))
    y_all = norm_lib.normalize(params.output_norm, jnp.where(finite[:, None], y_raw, 0.0))
    state = state._replace(params=params)

    num_slots = -(-capacity // B) * B            # pad so every minibatch slice is in range
    # Holdout batches no larger than the buffer: a small buffer is not padded to 4096 rows.
    eval_batch = min(config.eval_batch_size, capacity)
    eval_slots = -(-capacity // eval_batch) * eval_batch
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
        rows = jax.lax.dynamic_slice_in_dim(eval_rows, i * eval_batch,
                                            eval_batch)
        w = (i * eval_batch + jnp.arange(eval_batch)) < n_eval
        x = jnp.broadcast_to(x_all[rows], (E, *x_all[rows].shape))
        y = jnp.broadcast_to(y_all[rows], (E, *y_all[rows].shape))
        w = jnp.broadcast_to(w, (E, w.shape[0])).astype(jnp.float32)
        _, mse = ensemble.loss(params, x, y, w)
        return acc + mse * w.sum(-1)
      n_batches = -(-n_eval // eval_batch)
      total = jax.lax.fori_loop(0, n_batches, body, jnp.zeros((E,)))
      return total / jnp.maximum(n_eval, 1)

    def run_epoch(c: _EpochCarry) -> _EpochCarry:
      key, rows_key = jax.random.split(c.key)
      rows = member_rows(rows_key)

      def body(i, acc):
        st, loss_sum = acc
        r = jax.lax.dynamic_slice_in_dim(rows, i * B, B, axis=1)                 # [E, B]
        w = ((i * B + jnp.arange(B)) < n_train).astype(jnp.float32)
        st, member_loss = grad_step(st, x_all[r], y_all[r], jnp.broadcast_to(w, (E, B)))
        return st, loss_sum + member_loss * w.sum()

      n_batches = -(-n_train // B)
      fit_state, loss_sum = jax.lax.fori_loop(0, n_batches, body, (c.fit_state, jnp.zeros((E,))))
      train_loss = loss_sum / jnp.maximum(n_train, 1)
      score = holdout_mse(fit_state.params)
      improved = (c.best_score - score) > config.improvement_threshold * jnp.abs(c.best_score)
      improved = improved | ~jnp.isfinite(c.best_score)
      pick = lambda new, old: jnp.where(
          improved.reshape((E,) + (1,) * (new.ndim - 1)), new, old)
      best_params = c.best_params._replace(
          net=jax.tree.map(pick, fit_state.params.net, c.best_params.net),
          min_logvar=fit_state.params.min_logvar, max_logvar=fit_state.params.max_logvar)
      return _EpochCarry(
          epoch=c.epoch + 1, fit_state=fit_state, best_params=best_params,
          best_score=jnp.where(improved, score, c.best_score),
          since_improved=jnp.where(improved.any(), 0, c.since_improved + 1), key=key,
          train_loss=c.train_loss.at[c.epoch].set(train_loss),
          holdout_mse=c.holdout_mse.at[c.epoch].set(score))

    def keep_going(c: _EpochCarry) -> jax.Array:
      go = (c.epoch < T) & (n_train > 0)
      if config.patience is not None:
        go = go & (c.since_improved < config.patience)
      return go

    nan = jnp.full((T, E), jnp.nan, jnp.float32)
    init_carry = _EpochCarry(
        epoch=jnp.asarray(0, jnp.int32), fit_state=state, best_params=state.params,
        best_score=jnp.full((E,), jnp.inf), since_improved=jnp.asarray(0, jnp.int32),
        key=epochs_key, train_loss=nan, holdout_mse=nan)
    # A while loop, not a scan over max_epochs with a cond: under vmap a cond turns into a
    # select that runs every epoch for every seed; a while loop stops once all have stopped.
    done = jax.lax.while_loop(keep_going, run_epoch, init_carry)
    state, best_params, best_score = done.fit_state, done.best_params, done.best_score
    ran = jnp.arange(T) < done.epoch                                               # [T]

    elites = jnp.argsort(jnp.where(jnp.isfinite(best_score), best_score, jnp.inf))[:K]
    best_params = best_params._replace(elites=elites.astype(jnp.int32))
    metrics = FitMetrics(
        train_loss=done.train_loss, holdout_mse=done.holdout_mse, epochs=done.epoch,
        best_holdout_mse=best_score, num_train=n_train, num_holdout=n_hold,
        nonfinite_data=nonfinite_data,
        nonfinite_loss=jnp.any(ran[:, None] & ~jnp.isfinite(done.train_loss)))
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
