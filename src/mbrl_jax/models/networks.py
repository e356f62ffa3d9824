"""The one MLP every model and learner builds on, and the activations it can use.

`MLP` is Dense -> [LayerNorm] -> activation per hidden layer, then an optional linear output.
Its parameter tree is flax's default naming, in creation order: `Dense_0`, `LayerNorm_0`,
`Dense_1`, ... with the output layer last (`Dense_{len(hidden_sizes)}`). Code that reads the
weights directly (the ensemble's per-layer forward pass, tests against NumPy) relies on it.

Its users: the dynamics ensemble's members (`ensemble`, vmapped over a member axis), the world
model's heads and encoders (`rssm`, layer norm), SAC's actor and critics (`policies.sac`) and the
imagination actor-critic (`policies.imagination`, layer norm, zero-initialised critic output).

Example:
  >>> mlp = MLP(hidden_sizes=(64, 64), out_size=3, activation=ACTIVATIONS["silu"])
  >>> params = mlp.init(jax.random.key(0), jnp.zeros((1, 5)))
  >>> mlp.apply(params, jnp.zeros((7, 5))).shape
  (7, 3)
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def _silu(x: jax.Array) -> jax.Array:
  """x * sigmoid(x), with sigmoid(x) = (1 + tanh(x / 2)) / 2: the same function, but XLA's CPU
  tanh is a cheap rational approximation where the logistic costs an exp and a divide; this
  is ~10% of a PETS-sized forward pass."""
  return x * (0.5 + 0.5 * jnp.tanh(0.5 * x))


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "silu": _silu, "relu": nn.relu, "tanh": jnp.tanh, "elu": nn.elu, "gelu": nn.gelu,
}
"""Hidden activations by name (the names configs use). "silu" is swish, as in PETS."""


class MLP(nn.Module):
  """A multilayer perceptron on the last axis: [..., in] -> [..., out_size].

  Attributes:
    hidden_sizes: widths of the hidden layers (empty: the output layer alone).
    out_size: width of the linear output layer; None ends on the last hidden layer's
      activation (a feature extractor).
    activation: applied after each hidden layer (after its layer norm, if any).
    layer_norm: a LayerNorm between each hidden Dense and its activation (DreamerV3).
    layer_norm_epsilon: that LayerNorm's epsilon.
    zero_init_output: the output kernel starts at zeros (its first predictions are the bias,
      0), as DreamerV3 does for its reward and value heads.
  """

  hidden_sizes: Sequence[int]
  out_size: int | None = None
  activation: Callable[[jax.Array], jax.Array] = nn.relu
  layer_norm: bool = False
  layer_norm_epsilon: float = 1e-3
  zero_init_output: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for size in self.hidden_sizes:
      x = nn.Dense(size)(x)
      if self.layer_norm:
        x = nn.LayerNorm(epsilon=self.layer_norm_epsilon)(x)
      x = self.activation(x)
    if self.out_size is None:
      return x
    init = nn.initializers.zeros if self.zero_init_output else nn.initializers.lecun_normal()
    return nn.Dense(self.out_size, kernel_init=init)(x)
