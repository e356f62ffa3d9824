"""Pure-JAX rasterisation of the classic-control envs to small RGB images.

Shapes are drawn with anti-aliased coverage masks computed from signed distances
on a pixel grid (no Python control flow on traced values), so every function is
jittable, vmappable and differentiable almost everywhere.

Conventions: images are ``[size, size, 3]``; row 0 is the top of the image
(largest world y); column 0 is the left (smallest world x). Colours are floats
in [0, 1] until :func:`to_uint8`.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

Color = tuple[float, float, float]

BACKGROUND: Color = (1.0, 1.0, 1.0)
RAIL: Color = (0.45, 0.45, 0.45)
CART: Color = (0.15, 0.25, 0.55)
POLE: Color = (0.85, 0.45, 0.15)
AXLE: Color = (0.35, 0.35, 0.35)


def pixel_grid(
    size: int, center: tuple[float, float], half_width: float
) -> tuple[jax.Array, jax.Array, float]:
  """World coordinates of the pixel centres of a square view.

  Args:
    size: image side in pixels.
    center: world (x, y) at the image centre.
    half_width: half the side of the square view, in world units.

  Returns:
    (u, v, pixel_size): world x and y of every pixel centre, each [size, size],
    and the side of one pixel in world units.
  """
  px = 2.0 * half_width / size
  offsets = (jnp.arange(size, dtype=jnp.float32) + 0.5) * px - half_width  # [S]
  u = center[0] + jnp.broadcast_to(offsets[None, :], (size, size))  # [S, S]
  v = center[1] - jnp.broadcast_to(offsets[:, None], (size, size))  # [S, S]
  return u, v, px


def _coverage(signed_dist: jax.Array, px: float) -> jax.Array:
  """Approximate pixel coverage from a signed distance (negative inside)."""
  return jnp.clip(0.5 - signed_dist / px, 0.0, 1.0)


def segment_alpha(
    u: jax.Array,
    v: jax.Array,
    p0: jax.Array,
    p1: jax.Array,
    radius: float,
    px: float,
) -> jax.Array:
  """Coverage of a capsule (segment p0-p1 thickened by `radius`).

  Args:
    u, v: pixel-centre world coordinates, [S, S].
    p0, p1: segment end points, [2] each (may coincide: a disc).
    radius: half thickness in world units.
    px: pixel side in world units.

  Returns:
    Coverage in [0, 1], [S, S].
  """
  d = p1 - p0  # [2]
  du, dv = u - p0[0], v - p0[1]  # [S, S]
  denom = jnp.maximum(d[0] * d[0] + d[1] * d[1], 1e-12)
  t = jnp.clip((du * d[0] + dv * d[1]) / denom, 0.0, 1.0)  # [S, S]
  dist = jnp.sqrt(jnp.square(du - t * d[0]) + jnp.square(dv - t * d[1]))
  return _coverage(dist - radius, px)


def box_alpha(
    u: jax.Array,
    v: jax.Array,
    center: jax.Array,
    half_extents: tuple[float, float],
    px: float,
) -> jax.Array:
  """Coverage of an axis-aligned rectangle, [S, S] (center: [2])."""
  dx = jnp.abs(u - center[0]) - half_extents[0]
  dy = jnp.abs(v - center[1]) - half_extents[1]
  return _coverage(jnp.maximum(dx, dy), px)


def composite(
    layers: Sequence[tuple[jax.Array, Color]], background: Color = BACKGROUND
) -> jax.Array:
  """Paints coverage layers in order over a background; returns [S, S, 3] floats."""
  shape = layers[0][0].shape
  img = jnp.broadcast_to(jnp.asarray(background, jnp.float32), (*shape, 3))
  for alpha, color in layers:  # static Python list of layers
    a = alpha[..., None]  # [S, S, 1]
    img = img * (1.0 - a) + a * jnp.asarray(color, jnp.float32)
  return img


def to_uint8(img: jax.Array) -> jax.Array:
  """[..., 3] floats in [0, 1] -> uint8 in [0, 255]."""
  return jnp.round(jnp.clip(img, 0.0, 1.0) * 255.0).astype(jnp.uint8)


def render_cartpole(
    x: jax.Array,
    cos_theta: jax.Array,
    sin_theta: jax.Array,
    *,
    size: int,
    pole_length: float,
    half_width: float,
    center: tuple[float, float] = (0.0, 0.0),
    cart_half_extents: tuple[float, float] = (0.2, 0.12),
    pole_radius: float | None = None,
) -> jax.Array:
  """Cart on a rail at height 0 with a pole from the cart centre.

  The pole tip is at (x + pole_length * sin(theta), pole_length * cos(theta)),
  i.e. theta = 0 is upright and positive theta leans towards +x (gym convention).

  Args:
    x: cart position, [].
    cos_theta, sin_theta: pole angle, [] each.
    size: image side in pixels.
    pole_length: full pole length (pivot to tip), world units.
    half_width: half side of the fixed (non-tracking) square view.
    center: world point at the image centre.
    cart_half_extents: cart half width and half height.
    pole_radius: pole half thickness; default max(0.04, 0.6 pixel).

  Returns:
    uint8 image [size, size, 3].
  """
  u, v, px = pixel_grid(size, center, half_width)
  if pole_radius is None:
    pole_radius = max(0.04, 0.6 * px)
  rail = segment_alpha(
      u, v, jnp.array([-1e3, 0.0]), jnp.array([1e3, 0.0]), 0.5 * px, px
  )
  pivot = jnp.stack([x, jnp.zeros_like(x)]).astype(jnp.float32)  # [2]
  tip = pivot + pole_length * jnp.stack([sin_theta, cos_theta])  # [2]
  cart = box_alpha(u, v, pivot, cart_half_extents, px)
  pole = segment_alpha(u, v, pivot, tip, pole_radius, px)
  axle = segment_alpha(u, v, pivot, pivot, max(0.5 * pole_radius, 0.6 * px), px)
  img = composite([(rail, RAIL), (cart, CART), (pole, POLE), (axle, AXLE)])
  return to_uint8(img)


def render_pendulum(
    cos_theta: jax.Array,
    sin_theta: jax.Array,
    *,
    size: int,
    length: float = 1.0,
    half_width: float = 1.2,
) -> jax.Array:
  """Rod from the origin to (-length sin(theta), length cos(theta)) (gym's picture).

  theta = 0 is upright; the pivot is at the image centre. Returns uint8 [S, S, 3].
  """
  u, v, px = pixel_grid(size, (0.0, 0.0), half_width)
  radius = max(0.1 * length, 0.6 * px)
  pivot = jnp.zeros((2,), jnp.float32)
  tip = length * jnp.stack([-sin_theta, cos_theta]).astype(jnp.float32)  # [2]
  rod = segment_alpha(u, v, pivot, tip, radius, px)
  axle = segment_alpha(u, v, pivot, pivot, 0.5 * radius, px)
  return to_uint8(composite([(rod, POLE), (axle, AXLE)]))
