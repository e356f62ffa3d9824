"""Dynamics ensembles: MLP members stacked on a leading axis, initialised and applied by vmap.

An ensemble predicts the change in observation (and, optionally, the reward) from an
observation and an action. Members are either deterministic (trained with MSE) or
probabilistic (a diagonal Gaussian trained with negative log-likelihood, log-variance softly
bounded between learnable limits, as in PETS: Chua et al. 2018, "Deep Reinforcement Learning in
a Handful of Trials using Probabilistic Dynamics Models", appendix A.1).

Everything a prediction needs (network weights, log-variance bounds, input and output
normalisers, elite indices) is in one pytree, `EnsembleParams`, so a model is passed around as
`(params, ensemble.predict)` and planners never see a network object.

Example:
  >>> ens = make_ensemble(obs_size=4, action_size=1, num_members=5)
  >>> params = ens.init(jax.random.key(0))
  >>> obs, action = jnp.zeros((10, 4)), jnp.zeros((10, 1))         # N = 10 rows
  >>> step = ens.predict(params, jax.random.key(1), obs, action, mode="tsinf")
  >>> step.next_obs.shape
  (10, 4)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mbrl_jax.models import normalizer as norm_lib
from mbrl_jax.models.networks import ACTIVATIONS, MLP
from mbrl_jax.types import PRNGKey

PROPAGATION_MODES = ("ts1", "tsinf", "expectation", "all")
"""How `predict` turns an ensemble into one next state per row.

- ``ts1``: each row uses a random elite member, drawn afresh at every call (every step).
- ``tsinf``: row i always uses elite member ``i % num_elites`` (a fixed member per particle,
  for the whole trajectory; rows of one action sequence are spread over the members).
- ``expectation``: the mean of the elite members' predictions.
- ``all``: every member (elite or not) predicts every row; outputs gain a leading member axis.

TS1 and TSinf cost one member's forward pass per row (rows are regrouped, not repeated) when
the row count is a multiple of the number of elites; otherwise every elite runs on every row
and the wanted one is picked (num_elites times the work).
"""


class EnsembleParams(NamedTuple):
  """Everything an ensemble's prediction depends on (E members, D = target size).

  Attributes:
    net: flax parameters of the member MLPs; every leaf has a leading member axis [E, ...].
    min_logvar: lower soft bound of the log-variance, in output_norm's units.       # [D]
    max_logvar: upper soft bound of the log-variance, in output_norm's units.       # [D]
    input_norm: normaliser of the inputs [obs, action].                            # [O + A]
    output_norm: normaliser of the targets [delta obs, (reward)]; the identity but for
      constant dimensions if fitted with `FitConfig(normalize_targets=False)`.      # [D]
    elites: indices of the members used by predict, best first.                    # [K] int32
  """

  net: Any
  min_logvar: jax.Array
  max_logvar: jax.Array
  input_norm: norm_lib.Normalizer
  output_norm: norm_lib.Normalizer
  elites: jax.Array


class MemberOutput(NamedTuple):
  """Per-member Gaussian over the targets, in original (unnormalised) units.

  Attributes:
    mean: predicted [delta obs, (reward)].          # [E, N, D]
    var: predicted variance; zeros if deterministic. # [E, N, D]
  """

  mean: jax.Array
  var: jax.Array


class ModelStep(NamedTuple):
  """One model step for a batch of rows.

  Attributes:
    next_obs: predicted next observation.               # [N, O] ([E, N, O] in mode "all")
    reward: predicted reward, or None if not learned.    # [N]    ([E, N] in mode "all")
  """

  next_obs: jax.Array
  reward: jax.Array | None


class Uncertainty(NamedTuple):
  """Uncertainty of the elite members about each row's targets, in original units.

  Attributes:
    mean: mean of the elite members' predicted means.                      # [N, D]
    epistemic: variance of the members' means (member disagreement).       # [N, D]
    aleatoric: mean of the members' predicted variances (noise).            # [N, D]
  """

  mean: jax.Array
  epistemic: jax.Array
  aleatoric: jax.Array


@dataclasses.dataclass(frozen=True)
class EnsembleSpec:
  """The static shape of an ensemble (Python values; changing one means recompiling)."""

  obs_size: int
  action_size: int
  num_members: int
  num_elites: int
  hidden_sizes: tuple[int, ...]
  activation: str
  probabilistic: bool
  predict_reward: bool
  learn_logvar_bounds: bool

  @property
  def input_size(self) -> int:
    return self.obs_size + self.action_size

  @property
  def target_size(self) -> int:
    return self.obs_size + int(self.predict_reward)

  def flops_per_row(self) -> int:
    """Multiply-add FLOPs (2 per MAC) of one member's forward pass on one row."""
    sizes = (self.input_size, *self.hidden_sizes, self.target_size * (2 if self.probabilistic else 1))
    return sum(2 * a * b for a, b in zip(sizes[:-1], sizes[1:]))


class Ensemble(NamedTuple):
  """Pure functions of a dynamics ensemble. Build with `make_ensemble`.

  Attributes:
    spec: static sizes and options.
    init: `init(key) -> EnsembleParams`.
    apply: `apply(params, obs, action) -> MemberOutput`; obs [N, O] (the same rows for every
      member) or [E, N, O] (member e sees its own rows).
    predict: `predict(params, key, obs, action, *, mode="tsinf", sample=True) -> ModelStep`.
    uncertainty: `uncertainty(params, obs, action) -> Uncertainty` (runs every elite).
    loss: `loss(params, x, y, weight) -> (loss [E], mse [E])` on normalised per-member
      minibatches x [E, B, O + A], y [E, B, D] with row weights [E, B]; used by the trainer.
    targets: `targets(obs, action, reward, next_obs) -> [..., D]`, the regression targets.
    noise_size: D, the standard-normal noise [N, D] `predict` draws per row (its `noise=`
      argument's last axis); 0 for a deterministic ensemble. Pass it to
      `planning.make_trajectory_evaluator(noise_size=...)`.
  """

  spec: EnsembleSpec
  init: Callable[[PRNGKey], EnsembleParams]
  apply: Callable[..., MemberOutput]
  predict: Callable[..., ModelStep]
  uncertainty: Callable[..., Uncertainty]
  loss: Callable[..., tuple[jax.Array, jax.Array]]
  targets: Callable[..., jax.Array]
  noise_size: int


def make_ensemble(
    obs_size: int,
    action_size: int,
    *,
    num_members: int = 5,
    num_elites: int | None = None,
    hidden_sizes: Sequence[int] = (200, 200, 200),
    activation: str = "silu",
    probabilistic: bool = True,
    predict_reward: bool = False,
    learn_logvar_bounds: bool = True,
    init_min_logvar: float = -10.0,
    init_max_logvar: float = 0.5,
) -> Ensemble:
  """Builds an MLP dynamics ensemble.

  Args:
    obs_size: O, length of an observation vector.
    action_size: A, length of an action vector.
    num_members: E, members in the ensemble.
    num_elites: K <= E, members that `predict` and `uncertainty` use (the K best on holdout
      after fitting; all members before the first fit). Defaults to E.
    hidden_sizes: widths of the hidden layers.
    activation: one of `ACTIVATIONS` (PETS uses "silu", a.k.a. swish).
    probabilistic: Gaussian members trained by NLL (True) or deterministic ones by MSE.
    predict_reward: also predict the reward (targets become [delta obs, reward]).
    learn_logvar_bounds: learn the log-variance bounds (with a penalty on their gap) or keep
      them fixed at their initial values.
    init_min_logvar, init_max_logvar: initial bounds, in the units the network predicts in
      (the targets' own unless they are standardised, see `FitConfig.normalize_targets`).

  Returns:
    An `Ensemble` of pure functions.
  """
  for name, value in (("obs_size", obs_size), ("action_size", action_size),
                      ("num_members", num_members)):
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"make_ensemble: {name} must be a positive int, got {value!r}")
  num_elites = num_members if num_elites is None else num_elites
  if not 1 <= num_elites <= num_members:
    raise ValueError(
        f"make_ensemble: num_elites must be in [1, num_members={num_members}], got {num_elites}")
  if activation not in ACTIVATIONS:
    raise ValueError(f"make_ensemble: unknown activation {activation!r}; "
                     f"valid: {sorted(ACTIVATIONS)}")
  if any(h < 1 for h in hidden_sizes):
    raise ValueError(f"make_ensemble: hidden sizes must be positive, got {tuple(hidden_sizes)}")
  if not init_min_logvar < init_max_logvar:
    raise ValueError(f"make_ensemble: init_min_logvar ({init_min_logvar}) must be below "
                     f"init_max_logvar ({init_max_logvar})")

  spec = EnsembleSpec(
      obs_size=obs_size, action_size=action_size, num_members=num_members,
      num_elites=num_elites, hidden_sizes=tuple(hidden_sizes), activation=activation,
      probabilistic=probabilistic, predict_reward=predict_reward,
      learn_logvar_bounds=learn_logvar_bounds)
  D = spec.target_size
  E = num_members
  mlp = MLP(hidden_sizes=spec.hidden_sizes, out_size=D * (2 if probabilistic else 1),
            activation=ACTIVATIONS[activation])

  def init(key: PRNGKey) -> EnsembleParams:
    keys = jax.random.split(key, E)
    dummy = jnp.zeros((1, spec.input_size), jnp.float32)
    net = jax.vmap(mlp.init, in_axes=(0, None))(keys, dummy)
    return EnsembleParams(
        net=net,
        min_logvar=jnp.full((D,), init_min_logvar, jnp.float32),
        max_logvar=jnp.full((D,), init_max_logvar, jnp.float32),
        input_norm=norm_lib.identity(spec.input_size),
        output_norm=norm_lib.identity(D),
        elites=jnp.arange(num_elites, dtype=jnp.int32))

  def _bounds(params: EnsembleParams) -> tuple[jax.Array, jax.Array]:
    if learn_logvar_bounds:
      return params.min_logvar, params.max_logvar
    return jax.lax.stop_gradient(params.min_logvar), jax.lax.stop_gradient(params.max_logvar)

  def _forward(params: EnsembleParams, net: Any, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Members `net` [M, ...] on normalised rows x [M, N, O + A] -> normalised (mean, logvar)."""
    out = jax.vmap(mlp.apply)(net, x)                   # [M, N, D or 2D]
    if not probabilistic:
      return out, jnp.full_like(out, -jnp.inf)
    mean, raw = out[..., :D], out[..., D:]
    lo, hi = _bounds(params)
    logvar = hi - nn.softplus(hi - raw)
    logvar = lo + nn.softplus(logvar - lo)
    return mean, logvar

  act = ACTIVATIONS[activation]
  num_layers = len(spec.hidden_sizes) + 1

  def _members_apply(net: Any, x: jax.Array) -> jax.Array:
    """`jax.vmap(mlp.apply)(net, x)`, the same function, written out per layer. A first layer
    on a few inputs (<= 16: an observation and an action) is an elementwise multiply-add that
    XLA fuses with the input normalisation before it and the activation after it, rather than
    a dot contracting a few numbers (a library call and an extra pass over the layer's output
    for ~1% of the FLOPs). x [M, N, in] -> [M, N, out]."""
    layers = net["params"]
    h = x                                                  # [M, N, in]
    for i in range(num_layers):
      w, b = layers[f"Dense_{i}"]["kernel"], layers[f"Dense_{i}"]["bias"]   # [M, in, out], [M, out]
      if i == 0 and w.shape[-2] <= 16:
        y = b[..., None, :]
        for j in range(w.shape[-2]):
          y = y + h[..., j, None] * w[..., None, j, :]
      else:
        y = jnp.einsum("mni,mio->mno", h, w) + b[..., None, :]
      h = act(y) if i < num_layers - 1 else y
    return h

  def _forward_var(params: EnsembleParams, net: Any, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """As `_forward`, but -> normalised (mean, variance): exp of the same soft-bounded logvar.

    With logvar = lo + softplus(hi - softplus(hi - raw) - lo), and exp(softplus(z)) = 1 + e^z,
    exp(logvar) = e^lo + e^hi * sigmoid(raw - hi): one exp and one divide per entry (the
    sigmoid; e^lo and e^hi are [D]) instead of two softplus (an exp and a log1p each) and an
    exp. It saturates at e^lo and e^lo + e^hi for raw far outside the bounds, with finite
    gradients. Prediction needs the variance; training keeps `_forward` (its loss needs logvar).
    """
    out = _members_apply(net, x)                        # [M, N, D or 2D]
    if not probabilistic:
      return out, jnp.zeros_like(out)
    mean, raw = out[..., :D], out[..., D:]
    lo, hi = _bounds(params)
    return mean, jnp.exp(lo) + jnp.exp(hi) * jax.nn.sigmoid(raw - hi)

  def _inputs(params: EnsembleParams, obs: jax.Array, action: jax.Array) -> jax.Array:
    _check_rows(spec, obs, action)
    x = jnp.concatenate([obs.astype(jnp.float32), action.astype(jnp.float32)], axis=-1)
    return norm_lib.normalize(params.input_norm, x)

  def _to_original(params: EnsembleParams, mean: jax.Array, var: jax.Array) -> MemberOutput:
    """Normalised (mean, variance) from `_forward_var` -> original units."""
    std = params.output_norm.std
    return MemberOutput(mean=norm_lib.denormalize(params.output_norm, mean),
                        var=var * jnp.square(std))

  def _elite_net(params: EnsembleParams) -> Any:
    if num_elites == E:
      # Before any fit the elites are 0..E-1; after a fit they are a permutation of all members,
      # and the order of members does not matter to any propagation mode.
      return params.net
    return jax.tree.map(lambda p: p[params.elites], params.net)

  def apply(params: EnsembleParams, obs: jax.Array, action: jax.Array) -> MemberOutput:
    x = _inputs(params, obs, action)
    if x.ndim == 2:
      x = jnp.broadcast_to(x, (E, *x.shape))
    elif x.ndim != 3 or x.shape[0] != E:
      raise ValueError(f"apply: obs must be [N, {obs_size}] or [{E}, N, {obs_size}], "
                       f"got {obs.shape}")
    return _to_original(params, *_forward_var(params, params.net, x))

  def _step(obs: jax.Array, y: jax.Array) -> ModelStep:
    next_obs = obs.astype(jnp.float32) + y[..., :obs_size]
    return ModelStep(next_obs=next_obs, reward=y[..., obs_size] if predict_reward else None)

  def _sample(key: PRNGKey, out: MemberOutput, sample: bool, noise: jax.Array | None) -> jax.Array:
    if not (sample and probabilistic):
      return out.mean
    if noise is None:
      noise = jax.random.normal(key, out.mean.shape)
    elif noise.shape != out.mean.shape:
      raise ValueError(f"predict: noise has shape {noise.shape}, expected {out.mean.shape}")
    return out.mean + jnp.sqrt(out.var) * noise

  def predict(params: EnsembleParams, key: PRNGKey, obs: jax.Array, action: jax.Array, *,
              mode: str = "tsinf", sample: bool = True,
              noise: jax.Array | None = None) -> ModelStep:
    """One model step for rows obs [N, O], action [N, A] (see PROPAGATION_MODES).

    `noise` (standard normal, [N, D], or [E, N, D] in mode "all") replaces the draw from `key`
    for the aleatoric sample. Drawing a whole horizon's noise in one call before a rollout is
    faster on CPU than one draw per step inside the rollout's loop.
    """
    check_mode(mode)
    x = _inputs(params, obs, action)
    if x.ndim != 2:
      raise ValueError(f"predict: obs must be [N, {obs_size}], got {obs.shape}")
    n = x.shape[0]
    perm_key, noise_key = jax.random.split(key)
    if mode == "all":
      xe = jnp.broadcast_to(x, (E, *x.shape))
      out = _to_original(params, *_forward_var(params, params.net, xe))
      return _step(obs[None], _sample(noise_key, out, sample, noise))
    net = _elite_net(params)
    k = num_elites
    if mode == "expectation":
      out = _to_original(params, *_forward_var(params, net, jnp.broadcast_to(x, (k, *x.shape))))
      out = MemberOutput(mean=out.mean.mean(0), var=out.var.mean(0))
      return _step(obs, _sample(noise_key, out, sample, noise))
    # Trajectory sampling: row i -> member i % k (tsinf), or the same after a fresh random
    # permutation of the rows (ts1).
    if n % k == 0:
      if mode == "ts1":
        perm = jax.random.permutation(perm_key, n)
        x = x[perm]
      xm = x.reshape(n // k, k, -1).swapaxes(0, 1)                        # [k, n/k, in]
      out = _to_original(params, *_forward_var(params, net, xm))
      out = jax.tree.map(lambda a: a.swapaxes(0, 1).reshape(n, D), out)    # [n, D]
      if mode == "ts1":
        out = jax.tree.map(lambda a: jnp.zeros_like(a).at[perm].set(a), out)
    else:
      out = _to_original(params, *_forward_var(params, net, jnp.broadcast_to(x, (k, *x.shape))))
      member = (jax.random.randint(perm_key, (n,), 0, k) if mode == "ts1"
                else jnp.arange(n) % k)
      out = jax.tree.map(lambda a: a[member, jnp.arange(n)], out)
    return _step(obs, _sample(noise_key, out, sample, noise))

  def uncertainty(params: EnsembleParams, obs: jax.Array, action: jax.Array) -> Uncertainty:
    x = _inputs(params, obs, action)
    k = num_elites
    out = _to_original(params, *_forward_var(params, _elite_net(params),
                                             jnp.broadcast_to(x, (k, *x.shape))))
    return Uncertainty(mean=out.mean.mean(0), epistemic=out.mean.var(0),
                       aleatoric=out.var.mean(0))

  def loss(params: EnsembleParams, x: jax.Array, y: jax.Array,
           weight: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-member training loss and MSE on normalised minibatches (see `Ensemble.loss`)."""
    mean, logvar = _forward(params, params.net, x)                       # [E, B, D]
    sq = jnp.square(mean - y)
    wsum = jnp.maximum(weight.sum(-1), 1.0)                               # [E]
    mse = (sq.mean(-1) * weight).sum(-1) / wsum
    if not probabilistic:
      return mse, mse
    nll = (sq * jnp.exp(-logvar) + logvar).mean(-1)                       # [E, B]
    member_loss = (nll * weight).sum(-1) / wsum
    if learn_logvar_bounds:
      # PETS' penalty keeps the learned bounds from drifting apart (it is shared by members).
      member_loss = member_loss + 0.01 * (params.max_logvar.sum() - params.min_logvar.sum()) / E
    return member_loss, mse

  def targets(obs: jax.Array, action: jax.Array, reward: jax.Array,
              next_obs: jax.Array) -> jax.Array:
    del action
    delta = next_obs.astype(jnp.float32) - obs.astype(jnp.float32)
    if predict_reward:
      return jnp.concatenate([delta, reward.astype(jnp.float32)[..., None]], axis=-1)
    return delta

  return Ensemble(spec=spec, init=init, apply=apply, predict=predict,
                  uncertainty=uncertainty, loss=loss, targets=targets,
                  noise_size=D if probabilistic else 0)


def check_mode(mode: str) -> None:
  """Raises ValueError for a propagation mode not in PROPAGATION_MODES."""
  if mode not in PROPAGATION_MODES:
    raise ValueError(f"unknown propagation mode {mode!r}; valid modes: {PROPAGATION_MODES}")


def sample_member(out: MemberOutput, members: jax.Array, member_key: PRNGKey,
                  noise_key: PRNGKey, dims: int | None = None) -> jax.Array:
  """A reparameterised Gaussian sample per row from a member drawn uniformly per row.

  Args:
    out: every member's prediction, [E, N, D].
    members: the member indices to draw from, [K] int (`params.elites`, or all members).
    member_key: draws each row's member.
    noise_key: draws the standard normal noise.
    dims: sample only the first `dims` targets (the next-state change, say; None: all D).

  Returns:
    mean + sqrt(var) * noise of each row's member, [N, dims or D]; differentiable in `out`
    (RAMBO's adversarial step and MOREC's generators use it; `predict(mode="ts1")` is the
    rollouts' sampler, with balanced member assignment).
  """
  n = out.mean.shape[1]
  member = members[jax.random.randint(member_key, (n,), 0, members.shape[0])]
  rows = jnp.arange(n)
  mean, var = out.mean[member, rows, :dims], out.var[member, rows, :dims]
  return mean + jnp.sqrt(var) * jax.random.normal(noise_key, mean.shape)


def _check_rows(spec: EnsembleSpec, obs: jax.Array, action: jax.Array) -> None:
  if obs.shape[-1:] != (spec.obs_size,):
    raise ValueError(f"obs has shape {obs.shape}; this ensemble expects obs_size="
                     f"{spec.obs_size} in the last dimension")
  if action.shape[-1:] != (spec.action_size,):
    raise ValueError(f"action has shape {action.shape}; this ensemble expects action_size="
                     f"{spec.action_size} in the last dimension")
  if obs.shape[:-1] != action.shape[:-1]:
    raise ValueError(f"obs {obs.shape} and action {action.shape} disagree on leading axes")
