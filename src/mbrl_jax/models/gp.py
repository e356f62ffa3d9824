"""Gaussian-process dynamics models for PILCO: exact GPs with SE-ARD kernels, one per output,
hyperparameters by marginal likelihood (Adam or L-BFGS in a `lax.scan`, with pilco-matlab's
`hypCurb` penalty), and exact moment matching of a Gaussian input; a sparse (FITC) option for
when the data outgrow exact GPs.

E outputs (state differences, say) are E independent GPs on the same D-dimensional inputs, each
with its own squared-exponential ARD kernel
  k_e(x, x') = sf_e^2 exp(-1/2 (x - x')^T diag(ell_e)^-2 (x - x'))
and Gaussian noise sn_e^2, zero prior mean (Deisenroth & Rasmussen 2011, "PILCO: A Model-Based
and Data-Efficient Approach to Policy Search"; Deisenroth 2010, "Efficient Reinforcement
Learning using Gaussian Processes", ch. 2; Deisenroth, Fox & Rasmussen 2015, "Gaussian
Processes for Data-Efficient Learning in Robotics and Control", TPAMI).

The data are N rows at a FIXED capacity with a validity mask [N], so refitting on a growing
dataset never changes a shape and never recompiles. Invalid rows contribute nothing: their
kernel entries are zero off the diagonal, one on it, and their targets zero (the Gram matrix
is block diagonal with an identity block), and only valid rows count in the likelihood's
constant. Their inputs may hold anything (they are replaced by zeros before any kernel).

A fitted GP is summarised by a `Posterior`: centres [M, D], mean weights beta [E, M] and the
matrix inv_k [E, M, M] of the predictive variance. The exact GP and the sparse one (FITC,
Snelson & Ghahramani 2006, "Sparse Gaussian Processes using Pseudo-inputs") produce the same
fields, so `predict` and `moment_match` serve both.

Precision: in float32 the Cholesky of K + sn^2 I can fail (NaN) when the noise is far below
the signal (its error bound is about N float32 epsilons of sf^2); in a 300-row, 5-input float32
fit of nearly noise-free targets it failed at sf / sn near 430, inside the curb's default
snr_limit of 500. `fit` rejects such points and returns finite hyperparameters, but they can
sit at that edge, where another compilation of `posterior` may still fail. For PILCO-sized
problems with little noise use float64 (`jax.enable_x64`), as pilco-matlab does, or a lower
`GPFitConfig.snr_limit` (e.g. 100).

The kernels are written here by hand rather than taken from a GP library (tinygp, gpjax): the
SE-ARD closed forms are what moment matching needs, and fixed-capacity masked data have to be
supported; neither library does both.

Example (E = 1 output on D = 1 input):
  >>> x = jnp.linspace(-2.0, 2.0, 8)[:, None]                      # N = 8 rows
  >>> y = jnp.sin(x)                                                # [N, E]
  >>> params, info = jax.jit(fit, static_argnums=4)(init_params(x, y), x, y, None,
  ...                                              GPFitConfig(steps=20))
  >>> post = jax.jit(posterior)(params, x, y)
  >>> mean, cov, cross_cov = jax.jit(moment_match)(post, jnp.zeros(1), 0.1 * jnp.eye(1))
  >>> mean.shape, cov.shape, cross_cov.shape, info.loss.shape
  ((1,), (1, 1), (1, 1), (20,))
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
import optax

from mbrl_jax import checks
from mbrl_jax.types import PRNGKey


class GPParams(NamedTuple):
  """Hyperparameters of E independent SE-ARD GPs on D inputs (all in log space).

  Attributes:
    log_lengthscales: log ell, the kernel's length-scale per input dimension.   # [E, D]
    log_signal_std: log sf, the kernel's signal standard deviation.            # [E]
    log_noise_std: log sn, the observation noise standard deviation.            # [E]
  """

  log_lengthscales: jax.Array
  log_signal_std: jax.Array
  log_noise_std: jax.Array


class Posterior(NamedTuple):
  """What predictions need: mean_e(x) = sum_i beta[e, i] k_e(x, centres_i) and
  var_e(x) = sf_e^2 - k_e(x)^T inv_k[e] k_e(x) (latent f, noise not included).

  Attributes:
    params: the hyperparameters.
    centres: training inputs (exact GP) or inducing inputs (sparse GP); zeros where
      masked.                                                                   # [M, D]
    beta: predictive-mean weights; zero at masked centres.                     # [E, M]
    inv_k: exact: (K + sn^2 I)^-1; FITC: K_mm^-1 - (K_mm + K_mn Lambda^-1 K_nm)^-1;
      zero in the rows and columns of masked centres.                          # [E, M, M]
    mask: which centres are valid.                                             # [M] bool
  """

  params: GPParams
  centres: jax.Array
  beta: jax.Array
  inv_k: jax.Array
  mask: jax.Array


OPTIMIZERS = ("adam", "lbfgs")
"""`GPFitConfig.optimizer`'s choices."""


@dataclasses.dataclass(frozen=True)
class GPFitConfig:
  """How `fit` (and `fit_sparse`) choose hyperparameters. Python values, part of the compiled
  program.

  The objective is the negative log marginal likelihood summed over outputs, plus (if `curb`)
  pilco-matlab's `hypCurb.m` penalty per output e:
    sum_d ((log ell_ed - log std_d) / log(lengthscale_std_limit))^p
      + ((log sf_e - log sn_e) / log(snr_limit))^p,
  std_d the standard deviation of input d over the valid rows (ddof 1, as MATLAB's `std`),
  p = `curb_power` (30 there). The penalty is near 0 inside the box
  std / limit < ell < std * limit, sf / sn < snr_limit (and sn / sf < snr_limit: the power is
  even) and a steep wall outside. pilco-matlab's `trainGP.m` passes snr 1000 (`hypCurb.m`'s
  own default is 500, which is used here).

  Attributes:
    steps: optimizer steps (a `lax.scan`, so the cost is fixed).
    learning_rate: Adam step size on the log hyperparameters (constant); unused by L-BFGS.
    curb: add the hypCurb penalty.
    lengthscale_std_limit: length-scales are kept within this factor of the inputs' std.
    snr_limit: the signal-to-noise ratio sf / sn is kept below this.
    curb_power: p, an even int.
    fit_inducing: `fit_sparse` moves the inducing inputs (False: they stay).
    fit_sparse_hyperparameters: `fit_sparse` moves the hyperparameters (False: they stay;
      pilco-matlab's `train.m` fits the full GP's hyperparameters on a subset of the data,
      then moves only the inducing inputs under FITC's likelihood).
    optimizer: "adam" (the default: a fixed cost per step) or "lbfgs" (optax's L-BFGS with
      its zoom line search, closer to pilco-matlab's `minimize`; a step costs one line search,
      a `while_loop` of up to 20 objective evaluations, which under `vmap` runs until every
      member has finished).
  """

  steps: int = 500
  learning_rate: float = 0.03
  curb: bool = True
  lengthscale_std_limit: float = 100.0
  snr_limit: float = 500.0
  curb_power: int = 30
  fit_inducing: bool = True
  fit_sparse_hyperparameters: bool = True
  optimizer: str = "adam"

  def __post_init__(self):
    checks.positive_int(self, "steps")
    checks.in_range(self, "learning_rate", 0.0, None, low_open=True)
    checks.one_of(self, "optimizer", OPTIMIZERS)
    for field in ("curb", "fit_inducing", "fit_sparse_hyperparameters"):
      if not isinstance(getattr(self, field), bool):
        checks.fail(self, field, f"must be a bool, got {getattr(self, field)!r}")
    checks.in_range(self, "lengthscale_std_limit", 1.0, None, low_open=True)
    checks.in_range(self, "snr_limit", 1.0, None, low_open=True)
    checks.int_at_least(self, "curb_power", 2)
    if self.curb_power % 2:
      checks.fail(self, "curb_power", f"must be even, got {self.curb_power!r}")


class GPFitInfo(NamedTuple):
  """What a fit reports.

  Attributes:
    loss: the objective (negative LML summed over outputs, plus the curb) before each step
      (an output whose point was rejected counts with its last finite value; inf if it has
      none).
                                                                                # [steps]
    lml: log marginal likelihood per output at the returned hyperparameters.    # [E]
  """

  loss: jax.Array
  lml: jax.Array


# --------------------------------------------------------------------------- helpers


def _valid(mask: jax.Array | None, n: int) -> jax.Array:
  return jnp.ones(n, bool) if mask is None else jnp.asarray(mask).astype(bool)


def _clean(inputs, targets, valid):
  """Zeros in the invalid rows (whatever they held), so every kernel value is finite."""
  x = jnp.where(valid[:, None], inputs, 0.0)
  y = None if targets is None else jnp.where(valid[:, None], targets, 0.0)
  return x, y


def _std(x: jax.Array, valid: jax.Array) -> jax.Array:
  """Per-column standard deviation over the valid rows (ddof 1); 1 where it is 0 or undefined."""
  w = valid.astype(x.dtype)[:, None]
  n = w.sum()
  mean = (w * x).sum(0) / jnp.maximum(n, 1.0)
  var = (w * (x - mean) ** 2).sum(0) / jnp.maximum(n - 1.0, 1.0)
  std = jnp.sqrt(var)
  return jnp.where(std > 0, std, 1.0)


def _se(log_ell, log_sf, x1, x2):
  """SE-ARD kernel matrix of one output: [N1, D], [N2, D] -> [N1, N2]."""
  ell = jnp.exp(log_ell)
  d = (x1[:, None, :] - x2[None, :, :]) / ell
  return jnp.exp(2.0 * log_sf - 0.5 * jnp.sum(d * d, -1))


def _gram(log_ell, log_sf, log_sn, x, valid):
  """K + sn^2 I with the invalid rows and columns replaced by those of the identity."""
  both = valid[:, None] & valid[None, :]
  k = jnp.where(both, _se(log_ell, log_sf, x, x), 0.0)
  return k + jnp.diag(jnp.where(valid, jnp.exp(2.0 * log_sn), 1.0))


def _per_output(params: GPParams):
  return params.log_lengthscales, params.log_signal_std, params.log_noise_std


# --------------------------------------------------------------------------- exact GP


def init_params(inputs: jax.Array, targets: jax.Array,
                mask: jax.Array | None = None) -> GPParams:
  """A data-driven start, as pilco-matlab's `trainGP.m`: length-scales the inputs' standard
  deviations, signal std the targets', noise std a tenth of that (stds over the valid rows;
  a zero std is replaced by 1).

  Args:
    inputs: [N, D].
    targets: [N, E].
    mask: [N] valid rows (None: all).

  Returns:
    GPParams with log_lengthscales [E, D], log_signal_std [E], log_noise_std [E].
  """
  valid = _valid(mask, inputs.shape[0])
  x, y = _clean(inputs, targets, valid)
  log_sx = jnp.log(_std(x, valid))
  log_sy = jnp.log(_std(y, valid))
  num_out = targets.shape[1]
  return GPParams(log_lengthscales=jnp.broadcast_to(log_sx, (num_out, inputs.shape[1])),
                  log_signal_std=log_sy, log_noise_std=log_sy - math.log(10.0))


def log_marginal_likelihood(params: GPParams, inputs: jax.Array, targets: jax.Array,
                            mask: jax.Array | None = None) -> jax.Array:
  """log N(y_e | 0, K_e + sn_e^2 I) of each output over the valid rows (Rasmussen & Williams
  2006, eq. 2.30), by Cholesky.

  Args:
    params: the hyperparameters.
    inputs: [N, D].
    targets: [N, E].
    mask: [N] valid rows (None: all).

  Returns:
    [E] log marginal likelihoods.
  """
  valid = _valid(mask, inputs.shape[0])
  x, y = _clean(inputs, targets, valid)
  n = valid.sum().astype(x.dtype)

  def one(log_ell, log_sf, log_sn, y_e):
    chol = jnp.linalg.cholesky(_gram(log_ell, log_sf, log_sn, x, valid))
    alpha = jsl.cho_solve((chol, True), y_e)
    return (-0.5 * y_e @ alpha - jnp.sum(jnp.log(jnp.diagonal(chol)))
            - 0.5 * n * math.log(2.0 * math.pi))

  return jax.vmap(one)(*_per_output(params), y.T)


def curb_penalty(params: GPParams, inputs: jax.Array, mask: jax.Array | None,
                 config: GPFitConfig) -> jax.Array:
  """pilco-matlab's `hypCurb.m` penalty per output (see `GPFitConfig`): [E]."""
  valid = _valid(mask, inputs.shape[0])
  x, _ = _clean(inputs, None, valid)
  p = config.curb_power
  ls = (params.log_lengthscales - jnp.log(_std(x, valid))) / math.log(
      config.lengthscale_std_limit)
  snr = (params.log_signal_std - params.log_noise_std) / math.log(config.snr_limit)
  return jnp.sum(ls ** p, -1) + snr ** p


def _finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree)]))


def _optimise(objective, variables, config: GPFitConfig):
  """config.optimizer on `objective(variables)` for config.steps steps in a scan:
  (variables, losses [steps]).

  A step whose objective or gradient is not finite (a Cholesky that failed: in float32 a
  noise far below the signal makes K + sn^2 I numerically singular) is rejected: Adam goes
  back halfway to the last point that was finite and tries again from there (L-BFGS' line
  search rejects such points itself), and the step records the last finite objective. The
  result is the last point with a finite objective.
  """
  def where(ok, a, b):
    return jax.tree.map(lambda x, y: jnp.where(ok, x, y), a, b)

  if config.optimizer == "lbfgs":
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(objective)

    def step(carry, _):
      v, opt_state, good, good_loss = carry
      loss, grad = value_and_grad(v, state=opt_state)
      updates, opt_state = opt.update(grad, opt_state, v, value=loss, grad=grad,
                                      value_fn=objective)
      ok = _finite((loss, grad))
      good, good_loss = where(ok, (v, loss), (good, good_loss))
      return (optax.apply_updates(v, updates), opt_state, good, good_loss), good_loss
  else:
    opt = optax.adam(config.learning_rate)

    def step(carry, _):
      v, opt_state, good, good_loss = carry
      loss, grad = jax.value_and_grad(objective)(v)
      ok = _finite((loss, grad))
      grad = where(ok, grad, jax.tree.map(jnp.zeros_like, grad))
      updates, new_state = opt.update(grad, opt_state, v)
      back = jax.tree.map(lambda g, x: 0.5 * (g + x), good, v)
      good, good_loss = where(ok, (v, loss), (good, good_loss))
      return (where(ok, optax.apply_updates(v, updates), back), where(ok, new_state, opt_state),
              good, good_loss), good_loss

  init = (variables, opt.init(variables), variables, jnp.asarray(jnp.inf, jnp.result_type(
      *jax.tree.leaves(variables))))
  (last, _, good, _), losses = jax.lax.scan(step, init, None, length=config.steps)
  keep = jnp.isfinite(objective(last))
  return jax.tree.map(lambda a, b: jnp.where(keep, a, b), last, good), losses


def fit(params: GPParams, inputs: jax.Array, targets: jax.Array, mask: jax.Array | None,
        config: GPFitConfig) -> tuple[GPParams, GPFitInfo]:
  """Type-II maximum likelihood: minimises -sum_e LML_e (+ the curb penalty) with Adam (or
  L-BFGS, `config.optimizer`).

  Each output has its own optimiser (the outputs' likelihoods are independent), so an output
  whose Cholesky fails holds back only itself (see the step rejection in `_optimise`). Pure
  and of fixed cost, so it jits (config static or closed over), vmaps over seeds or datasets,
  and does not recompile for new data of the same capacity.

  Args:
    params: the start (e.g. `init_params`, or the previous fit's result).
    inputs: [N, D].
    targets: [N, E].
    mask: [N] valid rows (None: all).
    config: steps, step size and penalty.

  Returns:
    (fitted GPParams, GPFitInfo with the loss per step [steps] and the final LML [E]).
  """

  def one(p_e, y_e):                      # the outputs are independent: one optimiser each
    def objective(p):
      p = jax.tree.map(lambda a: a[None], p)
      loss = -log_marginal_likelihood(p, inputs, y_e[:, None], mask)[0]
      if config.curb:
        loss = loss + curb_penalty(p, inputs, mask, config)[0]
      return loss
    return _optimise(objective, p_e, config)

  params, losses = jax.vmap(one, (0, 1))(params, targets)
  return params, GPFitInfo(loss=jnp.sum(losses, 0),
                           lml=log_marginal_likelihood(params, inputs, targets, mask))


def posterior(params: GPParams, inputs: jax.Array, targets: jax.Array,
              mask: jax.Array | None = None) -> Posterior:
  """The exact GP posterior: inv_k = (K + sn^2 I)^-1, beta = inv_k y, by Cholesky; masked rows
  get zero beta and zero rows and columns of inv_k.

  Args:
    params: the hyperparameters.
    inputs: [N, D].
    targets: [N, E].
    mask: [N] valid rows (None: all).

  Returns:
    Posterior with M = N centres.
  """
  valid = _valid(mask, inputs.shape[0])
  x, y = _clean(inputs, targets, valid)
  both = valid[:, None] & valid[None, :]
  eye = jnp.eye(x.shape[0], dtype=x.dtype)

  def one(log_ell, log_sf, log_sn, y_e):
    chol = jnp.linalg.cholesky(_gram(log_ell, log_sf, log_sn, x, valid))
    inv = jsl.cho_solve((chol, True), eye)
    inv = jnp.where(both, 0.5 * (inv + inv.T), 0.0)
    beta = jnp.where(valid, jsl.cho_solve((chol, True), y_e), 0.0)
    return beta, inv

  beta, inv_k = jax.vmap(one)(*_per_output(params), y.T)
  return Posterior(params=params, centres=x, beta=beta, inv_k=inv_k, mask=valid)


# --------------------------------------------------------------------------- prediction


def predict(post: Posterior, x: jax.Array, *, include_noise: bool = False
            ) -> tuple[jax.Array, jax.Array]:
  """The GP's prediction at a deterministic input.

  Args:
    post: an exact or sparse posterior.
    x: [D] the input.
    include_noise: add sn^2 to the variance (of y rather than of the latent f).

  Returns:
    (mean [E], var [E]) of the latent function (plus noise if asked); the variance is
    clipped at 0 (in float32 sf^2 - k^T inv_k k is only good to ~1e-4 sf^2 near the data).
  """
  p = post.params
  ell = jnp.exp(p.log_lengthscales)                                      # [E, D]
  d = (x - post.centres)[None] / ell[:, None, :]                         # [E, M, D]
  sf2 = jnp.exp(2.0 * p.log_signal_std)
  k = jnp.where(post.mask, sf2[:, None] * jnp.exp(-0.5 * jnp.sum(d * d, -1)), 0.0)
  mean = jnp.sum(post.beta * k, -1)
  var = jnp.maximum(sf2 - jnp.einsum("em,emn,en->e", k, post.inv_k, k), 0.0)
  if include_noise:
    var = var + jnp.exp(2.0 * p.log_noise_std)
  return mean, var


def moment_match(post: Posterior, m: jax.Array, s: jax.Array, *, model_variance: bool = True,
                 include_noise: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Exact mean and covariance of y = f(x) for x ~ N(m, s), and cov(x, y) (Deisenroth 2010,
  sec. 2.3.2; Deisenroth et al. 2015, sec. 4 and appendix; pilco-matlab's `gp0.m`/`gp2.m`).

  With Lambda_a = diag(ell_a^2) and nu_i = centres_i - m:
    q_ai = sf_a^2 |s Lambda_a^-1 + I|^-1/2 exp(-1/2 nu_i^T (s + Lambda_a)^-1 nu_i),
    mean_a = beta_a^T q_a,
    cov(x, y_a) = sum_i beta_ai q_ai s (s + Lambda_a)^-1 nu_i,
    Q_ab,ij = k_a(x_i, m) k_b(x_j, m) |R|^-1/2 exp(1/2 z_ij^T R^-1 s z_ij),
      R = s (Lambda_a^-1 + Lambda_b^-1) + I,  z_ij = Lambda_a^-1 nu_i + Lambda_b^-1 nu_j,
    cov_ab = beta_a^T Q_ab beta_b - mean_a mean_b
      (+ on the diagonal, if model_variance: E_x[var_f_a(x)] = sf_a^2 - tr(inv_k_a Q_aa)).
  Every determinant and solve is of a D x D symmetric positive-definite matrix by Cholesky
  (diag(ell)^-1 s diag(ell)^-1 + I and its two-output counterpart).

  Args:
    post: an exact or sparse posterior.
    m: [D] input mean.
    s: [D, D] input covariance (positive semi-definite; 0 gives `predict` at m).
    model_variance: include the GP's own uncertainty (the E[var_f] term): the moments of the
      predictive distribution (PILCO's dynamics model, `gp0`). False: the moments of the
      posterior MEAN function only (PILCO's deterministic RBF policy, `gp2`).
    include_noise: also add sn^2 to the diagonal (only with model_variance).

  Returns:
    (mean [E], cov [E, E], cross_cov [D, E]) where cross_cov = cov(x, y) itself, NOT PILCO's
    s^-1 cov(x, y) (multiply by the inverse of s yourself if you want that).
  """
  p = post.params
  num_in = m.shape[0]
  eye = jnp.eye(num_in, dtype=s.dtype)
  ell = jnp.exp(p.log_lengthscales)                                       # [E, D]
  log_sf2 = 2.0 * p.log_signal_std                                        # [E]
  nu = post.centres - m                                                   # [M, D]
  valid = post.mask

  def first(ell_a, log_sf2_a, beta_a):
    u = nu / ell_a                                                        # [M, D]
    chol = jnp.linalg.cholesky(s / jnp.outer(ell_a, ell_a) + eye)
    t = jsl.cho_solve((chol, True), u.T).T                                # B^-1 u_i
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
    q = jnp.where(valid, jnp.exp(log_sf2_a - 0.5 * logdet - 0.5 * jnp.sum(u * t, -1)), 0.0)
    wq = beta_a * q
    return jnp.sum(wq), s @ ((wq @ t) / ell_a)

  mean, cross = jax.vmap(first)(ell, log_sf2, post.beta)                  # [E], [E, D]

  def pair(ell_a, log_sf2_a, ell_b, log_sf2_b):
    ia, ib = ell_a ** -2, ell_b ** -2
    rc = jnp.sqrt(ia + ib)                                                # C^1/2
    chol = jnp.linalg.cholesky(rc[:, None] * s * rc[None, :] + eye)       # G
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
    # R^-1 s = C^-1/2 G^-1 C^1/2 s, symmetric.
    t = jsl.cho_solve((chol, True), rc[:, None] * s) / rc[:, None]
    t = 0.5 * (t + t.T)
    a, b = nu * ia, nu * ib                                               # [M, D]
    ta, tb = a @ t, b @ t
    log_ka = log_sf2_a - 0.5 * jnp.sum(nu * a, -1)                        # log k_a(x_i, m)
    log_kb = log_sf2_b - 0.5 * jnp.sum(nu * b, -1)
    expo = ((log_ka + 0.5 * jnp.sum(ta * a, -1))[:, None]
            + (log_kb + 0.5 * jnp.sum(tb * b, -1))[None, :] + ta @ b.T - 0.5 * logdet)
    return jnp.where(valid[:, None] & valid[None, :], jnp.exp(expo), 0.0)  # [M, M]

  # Q_ba = Q_ab^T, so only the E (E + 1) / 2 pairs a <= b are computed (the M x M
  # exponentials are most of the cost of a predicted rollout).
  num_out = mean.shape[0]
  pa, pb = np.triu_indices(num_out)
  q = jax.vmap(pair)(ell[pa], log_sf2[pa], ell[pb], log_sf2[pb])        # [P, M, M]
  upper = jnp.einsum("pm,pmn,pn->p", post.beta[pa], q, post.beta[pb])     # [P]
  second = jnp.zeros((num_out, num_out), upper.dtype).at[pa, pb].set(upper)
  second = second.at[pb, pa].set(upper)
  cov = second - jnp.outer(mean, mean)
  if model_variance:
    diag = np.flatnonzero(pa == pb)                                       # the (a, a) pairs
    expected_var = jnp.exp(log_sf2) - jnp.einsum("amn,amn->a", post.inv_k, q[diag])
    if include_noise:
      expected_var = expected_var + jnp.exp(2.0 * p.log_noise_std)
    cov = cov + jnp.diag(expected_var)
  return mean, 0.5 * (cov + cov.T), cross.T


# --------------------------------------------------------------------------- sparse GP (FITC)


def select_inducing(key: PRNGKey, inputs: jax.Array, mask: jax.Array | None, m: int
                    ) -> jax.Array:
  """M inducing inputs: a uniformly random subset of the valid rows, without replacement.

  If fewer than m rows are valid, the valid rows repeat (FITC with repeated inducing inputs is
  still well defined; `sparse_posterior`'s jitter keeps K_mm invertible).

  Args:
    key: PRNG key.
    inputs: [N, D].
    mask: [N] valid rows (None: all); at least one must be valid.
    m: M, a Python int.

  Returns:
    [M, D] inducing inputs.
  """
  valid = _valid(mask, inputs.shape[0])
  score = jnp.where(valid, jax.random.uniform(key, valid.shape), 2.0)
  order = jnp.argsort(score)                                              # valid rows first
  count = jnp.maximum(valid.sum(), 1)
  return inputs[order[jnp.arange(m) % count]]


def _fitc(log_ell, log_sf, log_sn, x, y, z, valid, jitter):
  """FITC for one output: (lml, beta [M], inv_k [M, M])."""
  num_ind = z.shape[0]
  eye = jnp.eye(num_ind, dtype=x.dtype)
  sf2, sn2 = jnp.exp(2.0 * log_sf), jnp.exp(2.0 * log_sn)
  chol_m = jnp.linalg.cholesky(_se(log_ell, log_sf, z, z) + jitter * sf2 * eye)
  kmn = jnp.where(valid[None, :], _se(log_ell, log_sf, z, x), 0.0)       # [M, N]
  v = jsl.solve_triangular(chol_m, kmn, lower=True)                       # Lm^-1 K_mn
  lam = jnp.where(valid, jnp.maximum(sf2 - jnp.sum(v * v, 0), 0.0) + sn2, 1.0)
  vs = v / jnp.sqrt(lam)
  ys = y / jnp.sqrt(lam)
  chol_a = jnp.linalg.cholesky(eye + vs @ vs.T)                           # A
  vy = vs @ ys
  c = jsl.solve_triangular(chol_a, vy, lower=True)
  n = valid.sum().astype(x.dtype)
  lml = (-0.5 * (ys @ ys - c @ c) - jnp.sum(jnp.log(jnp.diagonal(chol_a)))
         - 0.5 * jnp.sum(jnp.log(lam)) - 0.5 * n * math.log(2.0 * math.pi))
  beta = jsl.solve_triangular(chol_m.T, jsl.cho_solve((chol_a, True), vy), lower=False)
  # K_mm^-1 - Sigma = Lm^-T (I - A^-1) Lm^-1, and I - A^-1 = A^-1 Vs Vs^T.
  inner = jsl.cho_solve((chol_a, True), vs @ vs.T)
  linv = jsl.solve_triangular(chol_m, eye, lower=True)
  inv_k = linv.T @ inner @ linv
  return lml, beta, 0.5 * (inv_k + inv_k.T)


def sparse_log_marginal_likelihood(params: GPParams, inputs: jax.Array, targets: jax.Array,
                                   inducing: jax.Array, mask: jax.Array | None = None, *,
                                   jitter: float = 1e-6) -> jax.Array:
  """FITC's log marginal likelihood log N(y_e | 0, Q_nn + diag(K_nn - Q_nn) + sn^2 I),
  Q_nn = K_nm K_mm^-1 K_mn, per output (Snelson & Ghahramani 2006).

  Args:
    params: the hyperparameters.
    inputs: [N, D].
    targets: [N, E].
    inducing: [M, D] inducing inputs (shared by the outputs).
    mask: [N] valid rows (None: all).
    jitter: jitter * sf^2 is added to the diagonal of K_mm.

  Returns:
    [E] log marginal likelihoods.
  """
  valid = _valid(mask, inputs.shape[0])
  x, y = _clean(inputs, targets, valid)
  return jax.vmap(lambda a, b, c, y_e: _fitc(a, b, c, x, y_e, inducing, valid, jitter)[0])(
      *_per_output(params), y.T)


def sparse_posterior(params: GPParams, inputs: jax.Array, targets: jax.Array,
                     inducing: jax.Array, mask: jax.Array | None = None, *,
                     jitter: float = 1e-6) -> Posterior:
  """The FITC posterior (Snelson & Ghahramani 2006) in the exact posterior's form:
  Sigma = (K_mm + K_mn Lambda^-1 K_nm)^-1 with Lambda = diag(K_nn - Q_nn) + sn^2 I,
  beta = Sigma K_mn Lambda^-1 y and inv_k = K_mm^-1 - Sigma, so that
  mean(x) = k_m(x)^T beta and var(x) = sf^2 - k_m(x)^T inv_k k_m(x) (FITC's predictive
  distribution; pilco-matlab's sparse GPs use the same). With the inducing inputs at all
  training inputs it equals the exact posterior (up to the jitter).

  Args:
    params: the hyperparameters.
    inputs: [N, D].
    targets: [N, E].
    inducing: [M, D] inducing inputs.
    mask: [N] valid rows (None: all).
    jitter: jitter * sf^2 is added to the diagonal of K_mm.

  Returns:
    Posterior with the M inducing inputs as centres (all valid).
  """
  valid = _valid(mask, inputs.shape[0])
  x, y = _clean(inputs, targets, valid)
  _, beta, inv_k = jax.vmap(lambda a, b, c, y_e: _fitc(a, b, c, x, y_e, inducing, valid,
                                                       jitter))(*_per_output(params), y.T)
  return Posterior(params=params, centres=inducing, beta=beta, inv_k=inv_k,
                   mask=jnp.ones(inducing.shape[0], bool))


def fit_sparse(params: GPParams, inducing: jax.Array, inputs: jax.Array, targets: jax.Array,
               mask: jax.Array | None, config: GPFitConfig, *, jitter: float = 1e-6
               ) -> tuple[GPParams, jax.Array, GPFitInfo]:
  """Maximises FITC's marginal likelihood (+ the curb penalty) over the hyperparameters (if
  `config.fit_sparse_hyperparameters`) and the inducing inputs (if `config.fit_inducing`),
  with `config.optimizer` (as `fit`).

  Args:
    params: the start (e.g. `init_params` or an exact fit on a subset).
    inducing: [M, D] the start (e.g. `select_inducing`).
    inputs: [N, D].
    targets: [N, E].
    mask: [N] valid rows (None: all).
    config: steps, step size and penalty.
    jitter: as in `sparse_posterior`.

  Returns:
    (GPParams, inducing [M, D], GPFitInfo with the FITC LML [E]).
  """
  if not (config.fit_inducing or config.fit_sparse_hyperparameters):
    checks.fail(config, "fit_inducing", "or fit_sparse_hyperparameters must be True for "
                "fit_sparse")

  def objective(v):
    p, z = v
    p = p if config.fit_sparse_hyperparameters else jax.lax.stop_gradient(p)
    z = z if config.fit_inducing else jax.lax.stop_gradient(z)
    loss = -jnp.sum(sparse_log_marginal_likelihood(p, inputs, targets, z, mask, jitter=jitter))
    if config.curb:
      loss = loss + jnp.sum(curb_penalty(p, inputs, mask, config))
    return loss

  (params, inducing), losses = _optimise(objective, (params, inducing), config)
  lml = sparse_log_marginal_likelihood(params, inputs, targets, inducing, mask, jitter=jitter)
  return params, inducing, GPFitInfo(loss=losses, lml=lml)
