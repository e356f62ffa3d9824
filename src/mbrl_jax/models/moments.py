"""Exact moments of simple functions of a Gaussian input, for analytic uncertainty propagation
(PILCO, Deisenroth & Rasmussen 2011; Deisenroth, Fox & Rasmussen 2015, TPAMI, appendix).

Every function takes the input's mean `m` [D] and covariance `s` [D, D] and returns
`(mean, cov, cross)`: the output's mean [K], covariance [K, K] and `cross` = cov(x, y) [D, K],
the covariance between the input and the output (PILCO's own code returns s^-1 cov(x, y)
instead; here it is the covariance itself). All are exact for a Gaussian input except where
said, and differentiable, so a rollout built from them can be optimised by autodiff.

  trig_augment       [sin x_i, cos x_i] for the angle indices i        (PILCO's gTrig)
  sin_squash         u = u_max * sin(z)                                 (PILCO's gSin)
  linear             y = W x + b                                        (linear policy)
  saturating_cost    E and Var of 1 - exp(-(x - t)^T W (x - t) / 2)     (PILCO's lossSat)
  expected_similarity  E[exp(-(x - t)^T W (x - t) / 2)], 1 - that cost, for objectives
  joint              the Gaussian of [x, y] from x's and y's moments and cov(x, y)
  through_input      cov(z, y) for z jointly Gaussian with y's input (Stein's lemma)

Stein's lemma is used throughout: for Gaussian x and a differentiable f,
cov(x, f(x)) = s E[grad f(x)], and E[grad f(x)] = d E[f(x)] / dm, so a cross-covariance follows
from the derivative of the output mean with respect to the input mean (`through_input`).

Example:
  >>> m, s = jnp.array([0.0, 1.0]), jnp.diag(jnp.array([0.1, 0.2]))
  >>> mean, cov, cross = trig_augment(m, s, (1,))
  >>> mean.shape, cov.shape, cross.shape
  ((2,), (2, 2), (2, 2))
  >>> cost, var = saturating_cost(m, s, jnp.zeros(2), jnp.eye(2))
  >>> bool(0.0 < cost < 1.0 and var > 0.0)
  True
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

Moments = tuple[jax.Array, jax.Array, jax.Array]


def _cos_sin_moments(mean: jax.Array, var: jax.Array) -> tuple[jax.Array, jax.Array]:
  """E[cos y], E[sin y] for y ~ N(mean, var), elementwise."""
  damp = jnp.exp(-0.5 * var)
  return damp * jnp.cos(mean), damp * jnp.sin(mean)


def _sin_cos_cov(m: jax.Array, s: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """For a Gaussian a ~ N(m [A], s [A, A]): cov(sin a_i, sin a_j), cov(sin a_i, cos a_j) and
  cov(cos a_i, cos a_j), each [A, A], from the product-to-sum identities."""
  v = jnp.diag(s)
  m_sub = m[:, None] - m[None, :]
  m_add = m[:, None] + m[None, :]
  v_sub = v[:, None] + v[None, :] - 2.0 * s
  v_add = v[:, None] + v[None, :] + 2.0 * s
  cos_sub, sin_sub = _cos_sin_moments(m_sub, v_sub)
  cos_add, sin_add = _cos_sin_moments(m_add, v_add)
  ec, es = _cos_sin_moments(m, v)
  ss = 0.5 * (cos_sub - cos_add) - es[:, None] * es[None, :]
  sc = 0.5 * (sin_add + sin_sub) - es[:, None] * ec[None, :]
  cc = 0.5 * (cos_sub + cos_add) - ec[:, None] * ec[None, :]
  return ss, sc, cc


def trig_augment(m: jax.Array, s: jax.Array, indices: Sequence[int]) -> Moments:
  """Moments of [sin x_i1, cos x_i1, sin x_i2, cos x_i2, ...] for the angle indices i (exact).

  Args:
    m: input mean.                                   # [D]
    s: input covariance.                             # [D, D]
    indices: the A angle dimensions, static.

  Returns:
    (mean [2A], cov [2A, 2A], cross = cov(x, [sin, cos]) [D, 2A]), interleaved as above
    (PILCO's gTrig order).
  """
  idx = jnp.asarray(tuple(indices), jnp.int32)
  a = len(tuple(indices))
  ma, sa = m[idx], s[idx][:, idx]
  ec, es = _cos_sin_moments(ma, jnp.diag(sa))
  ss, sc, cc = _sin_cos_cov(ma, sa)
  mean = jnp.stack([es, ec], axis=-1).reshape(2 * a)
  cov = jnp.stack([jnp.stack([ss, sc], axis=-1), jnp.stack([sc.T, cc], axis=-1)],
                  axis=1).reshape(2 * a, 2 * a)
  # Stein: cov(x, sin x_i) = s[:, i] E[cos x_i], cov(x, cos x_i) = -s[:, i] E[sin x_i].
  cross = jnp.stack([s[:, idx] * ec, -s[:, idx] * es], axis=-1).reshape(m.shape[0], 2 * a)
  return mean, cov, cross


def sin_squash(m: jax.Array, s: jax.Array, u_max: jax.Array | float) -> Moments:
  """Moments of u = u_max * sin(z), elementwise, for z ~ N(m, s) (exact; PILCO's gSin).

  Args:
    m: mean of the unsquashed z.                     # [U]
    s: its covariance.                               # [U, U]
    u_max: the bound(s), scalar or [U].

  Returns:
    (mean [U], cov [U, U], cross = cov(z, u) [U, U]); |u| <= u_max.
  """
  u_max = jnp.broadcast_to(jnp.asarray(u_max, m.dtype), m.shape)
  ec, es = _cos_sin_moments(m, jnp.diag(s))
  ss, _, _ = _sin_cos_cov(m, s)
  scale = u_max[:, None] * u_max[None, :]
  return u_max * es, scale * ss, s * (u_max * ec)[None, :]


def sat_squash(m: jax.Array, s: jax.Array, u_max: jax.Array | float) -> Moments:
  """Moments of u = u_max * (9 sin z + sin 3z) / 8, elementwise, for z ~ N(m, s) (exact;
  pilco-matlab's gSat: flatter than sine near the bound, |u| <= u_max).

  The sines of the stacked [z, 3z] by `sin_squash`, then the linear map u_max / 8 [9 I, I].

  Args:
    m: mean of the unsquashed z.                     # [U]
    s: its covariance.                               # [U, U]
    u_max: the bound(s), scalar or [U].

  Returns:
    (mean [U], cov [U, U], cross = cov(z, u) [U, U]).
  """
  u = m.shape[0]
  u_max = jnp.broadcast_to(jnp.asarray(u_max, m.dtype), m.shape)
  lift = jnp.concatenate([jnp.eye(u, dtype=m.dtype), 3.0 * jnp.eye(u, dtype=m.dtype)])
  ms, ss, cross = sin_squash(lift @ m, lift @ s @ lift.T, 1.0)     # [2U], [2U, 2U], [2U, 2U]
  w = (u_max / 8.0)[:, None] * jnp.concatenate(
      [9.0 * jnp.eye(u, dtype=m.dtype), jnp.eye(u, dtype=m.dtype)], 1)   # [U, 2U]
  # cov(z, sin(lift z)) = (cov(lift z, sin(lift z)))[:U] since z is lift z's first block.
  return w @ ms, w @ ss @ w.T, cross[:u] @ w.T


def linear(m: jax.Array, s: jax.Array, w: jax.Array, b: jax.Array | None = None) -> Moments:
  """Moments of y = W x + b (exact).

  Args:
    m, s: input mean [D] and covariance [D, D].
    w: the matrix.                                   # [K, D]
    b: the offset (None: zeros).                     # [K]

  Returns:
    (W m + b [K], W s W^T [K, K], s W^T [D, K]).
  """
  mean = w @ m if b is None else w @ m + b
  return mean, w @ s @ w.T, s @ w.T


def expected_similarity(m: jax.Array, s: jax.Array, target: jax.Array, w: jax.Array
                        ) -> jax.Array:
  """E[exp(-(x - t)^T W (x - t) / 2)] for x ~ N(m, s), in closed form:
  |I + s W|^-1/2 exp(-(m - t)^T W (I + s W)^-1 (m - t) / 2); 1 - the saturating cost, without
  the rounding of 1 - (nearly 1) far from the target (so its gradient keeps its digits).

  Args:
    m, s: the state's mean [D] and covariance [D, D].
    target: t.                                       # [D]
    w: the symmetric positive semi-definite weight.  # [D, D]

  Returns:
    [] in (0, 1].
  """
  eye = jnp.eye(m.shape[0], dtype=m.dtype)
  d = m - target
  # (m - t)^T W (I + s W)^-1 (m - t) with W (I + s W)^-1 = solve(I + W s, W)^T.
  quad = d @ jnp.linalg.solve(eye + w @ s, w).T @ d
  return jnp.exp(-0.5 * quad - 0.5 * jnp.linalg.slogdet(eye + s @ w)[1])


def saturating_cost(m: jax.Array, s: jax.Array, target: jax.Array, w: jax.Array
                    ) -> tuple[jax.Array, jax.Array]:
  """Mean and variance of the saturating cost c(x) = 1 - exp(-(x - t)^T W (x - t) / 2) for
  x ~ N(m, s), in closed form (PILCO's lossSat, Deisenroth 2010 eq. 3.46-3.47):

    E[c]   = 1 - |I + s W|^-1/2 exp(-(m - t)^T W (I + s W)^-1 (m - t) / 2)
    E[c^2] from the same with W -> 2 W.

  Args:
    m, s: the state's mean [D] and covariance [D, D].
    target: t.                                       # [D]
    w: the symmetric positive semi-definite weight (1 / width^2 on the cost's dims). # [D, D]

  Returns:
    (mean [], variance []).
  """
  r1 = expected_similarity(m, s, target, w)
  r2 = expected_similarity(m, s, target, 2.0 * w)
  return 1.0 - r1, jnp.maximum(r2 - r1**2, 0.0)


def joint(m: jax.Array, s: jax.Array, m_y: jax.Array, s_y: jax.Array, cross: jax.Array
          ) -> tuple[jax.Array, jax.Array]:
  """The Gaussian approximation of [x, y] (PILCO's propagate bookkeeping).

  Args:
    m, s: x's mean [D] and covariance [D, D].
    m_y, s_y: y's mean [K] and covariance [K, K].
    cross: cov(x, y).                                # [D, K]

  Returns:
    (mean [D + K], cov [D + K, D + K]), symmetrised.
  """
  cov = jnp.block([[s, cross], [cross.T, s_y]])
  return jnp.concatenate([m, m_y]), 0.5 * (cov + cov.T)


def through_input(mean_fn: Callable[[jax.Array], jax.Array], m: jax.Array,
                  cov_zx: jax.Array) -> jax.Array:
  """cov(z, f(x)) for x ~ N(m, s) and any z jointly Gaussian with x, by Stein's lemma:
  cov(z, f(x)) = cov(z, x) E[grad f(x)], and E[grad f(x)] is the Jacobian of the output mean
  E[f(x)] with respect to the input mean m (the input covariance held fixed).

  This needs no s^-1 (which is ill-conditioned when x holds both sin and cos of a well-known
  angle), and it is exact for Gaussian (z, x) whenever `mean_fn` is the exact output mean, e.g.
  a GP's moment-matched mean.

  Args:
    mean_fn: m' [D] -> E[f(x)] [K] for x ~ N(m', s) (s fixed, closed over).
    m: the input mean.                               # [D]
    cov_zx: cov(z, x).                               # [Z, D]

  Returns:
    cov(z, f(x)) [Z, K].
  """
  jac = jax.jacfwd(mean_fn)(m)                       # [K, D]
  return cov_zx @ jac.T
