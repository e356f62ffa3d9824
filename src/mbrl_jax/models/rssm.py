"""A recurrent state-space world model (RSSM) with DreamerV3's techniques.

The latent state of step t is a deterministic GRU state h_t plus G categorical latents of C
classes each, z_t (one-hot, sampled with straight-through gradients):

  prior      h_t = GRU(h_{t-1}, [z_{t-1}, a_{t-1}]),   z_t ~ p(z_t | h_t)
  posterior  z_t ~ q(z_t | h_t, embed(o_t))
  heads      o_t ~ decoder(h_t, z_t),  r_{t-1} ~ reward(h_t, z_t),  c_{t-1} ~ cont(h_t, z_t)

following Hafner et al. 2023 ("Mastering Diverse Domains through World Models", DreamerV3):
vector observations enter through symlog and are reconstructed in symlog space; pixels
(uint8 images from `mbrl_jax.envs.PixelObservation`) go through a small strided CNN and back
(4 x 4 stride-2 convolutions and transposed convolutions, computed as `Down` and `Up`);
the reward head is a two-hot symexp head (`mbrl_jax.models.transforms`); the continuation
head is a Bernoulli; the categoricals mix in 1% of a uniform distribution; the KL terms are
balanced (dynamics 1.0 into the prior, representation 0.1 into the posterior) with free bits
(1 nat, clipping each step's KL from below).

Everything is a pure function of an opaque `params` pytree; the component is a factory:

  >>> from mbrl_jax.types import Transition
  >>> config = WorldModelConfig(deter=16, stoch=4, classes=4, hidden=16)
  >>> wm = make_world_model(obs_shape=(3,), action_size=1, config=config)
  >>> params = jax.jit(wm.init)(jax.random.key(0))      # each call jitted, as a user would
  >>> B, L = 2, 5
  >>> window = Transition(obs=jnp.zeros((B, L, 3)), action=jnp.zeros((B, L, 1)),
  ...                     reward=jnp.zeros((B, L)), next_obs=jnp.zeros((B, L, 3)),
  ...                     terminated=jnp.zeros((B, L)), truncated=jnp.zeros((B, L)))
  >>> loss, aux = jax.jit(wm.loss)(params, jax.random.key(1), window)
  >>> is_first = jnp.zeros((B, L), bool).at[:, 0].set(True)
  >>> post, prior = jax.jit(wm.observe)(params, jax.random.key(2), window.obs, window.action,
  ...                                    is_first)
  >>> start = jax.tree.map(lambda x: x[:, -1], post)                        # [B, ...]
  >>> policy_fn = lambda key, feat: jnp.zeros((feat.shape[0], 1))
  >>> imagine = jax.jit(lambda p, k, s: wm.imagine(p, k, s, policy_fn, horizon=4))
  >>> states, actions = imagine(params, jax.random.key(3), start)
  >>> wm.features(states).shape, actions.shape                              # [B, H + 1, F]
  ((2, 5, 32), (2, 4, 1))

Time convention: a window of L transitions (o_t, a_t, r_t, o_{t+1}, terminated_t) becomes
L + 1 model steps. Step 0 observes o_0 from the initial (zero) state with a zero action
(`is_first`); step t + 1 observes o_{t+1} after a_t, and its reward and continuation heads
predict r_t and 1 - terminated_t. A window may cross into a new episode: `loss`'s per-step
`is_first` resets the state where one starts. Acting filters the same way: reset to the
initial state at the first observation of an episode, then one `obs_step` per env step.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mbrl_jax.models import transforms
from mbrl_jax.models.networks import MLP
from mbrl_jax.types import PRNGKey, Transition


@dataclasses.dataclass(frozen=True)
class WorldModelConfig:
  """Sizes and loss weights of the world model.

  Attributes:
    deter: GRU state size D.
    stoch: number of categorical latents G.
    classes: classes per categorical C.
    hidden: width of the RSSM's hidden layers and of the MLP encoder/decoder/heads.
    mlp_layers: hidden layers of the MLP encoder, decoder and reward/continuation heads.
    cnn_depth: channels of the first CNN stage (doubling per stage) for pixel observations.
    unimix: weight of the uniform distribution mixed into every categorical.
    free_nats: free bits: each step's (group-summed) KL term is clipped below at this value.
    dyn_scale: weight of the dynamics KL term (trains the prior).
    rep_scale: weight of the representation KL term (trains the posterior / encoder).
    recon_scale, reward_scale, cont_scale: weights of the prediction terms.
    num_bins: bins of the two-hot reward head (symlog space, in [-20, 20]).
  """

  deter: int = 128
  stoch: int = 16
  classes: int = 16
  hidden: int = 128
  mlp_layers: int = 2
  cnn_depth: int = 16
  unimix: float = 0.01
  free_nats: float = 1.0
  dyn_scale: float = 1.0
  rep_scale: float = 0.1
  recon_scale: float = 1.0
  reward_scale: float = 1.0
  cont_scale: float = 1.0
  num_bins: int = transforms.NUM_BINS


PRESETS: dict[str, WorldModelConfig] = {
    # Small enough to train at a few hundred updates per minute on a 2-core CPU.
    "cpu": WorldModelConfig(),
    # DreamerV3's "S"-like size, for accelerators.
    "large": WorldModelConfig(deter=512, stoch=32, classes=32, hidden=512, mlp_layers=2,
                              cnn_depth=32),
}


def validate_config(config: WorldModelConfig, prefix: str = "world model config") -> None:
  """Raises ValueError naming the first invalid field."""
  for name in ("deter", "stoch", "classes", "hidden", "cnn_depth"):
    value = getattr(config, name)
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"{prefix}: {name} must be a positive int, got {value!r}")
  if not isinstance(config.mlp_layers, int) or config.mlp_layers < 0:
    raise ValueError(f"{prefix}: mlp_layers must be an int >= 0, got {config.mlp_layers!r}")
  if config.classes < 2:
    raise ValueError(f"{prefix}: classes must be >= 2, got {config.classes}")
  if not 0.0 <= config.unimix < 1.0:
    raise ValueError(f"{prefix}: unimix must be in [0, 1), got {config.unimix}")
  for name in ("free_nats", "dyn_scale", "rep_scale", "recon_scale", "reward_scale",
               "cont_scale"):
    if getattr(config, name) < 0:
      raise ValueError(f"{prefix}: {name} must be >= 0, got {getattr(config, name)}")
  if not isinstance(config.num_bins, int) or config.num_bins < 2:
    raise ValueError(f"{prefix}: num_bins must be an int >= 2, got {config.num_bins!r}")


class RSSMState(NamedTuple):
  """A latent state (leading axes are batch/time axes).

  Attributes:
    deter: deterministic GRU state h.                                    # [..., D]
    stoch: one-hot sample z (straight-through: gradients reach `logits`). # [..., G, C]
    logits: log-probabilities of z's distribution (uniform mix included). # [..., G, C]
  """

  deter: jax.Array
  stoch: jax.Array
  logits: jax.Array


class WorldModel(NamedTuple):
  """The world model's pure functions (see `make_world_model`)."""

  init: Callable[[PRNGKey], Any]
  initial_state: Callable[..., RSSMState]
  features: Callable[[RSSMState], jax.Array]
  embed: Callable[..., jax.Array]
  img_step: Callable[..., RSSMState]
  obs_step: Callable[..., tuple[RSSMState, RSSMState]]
  observe: Callable[..., tuple[RSSMState, RSSMState]]
  imagine: Callable[..., tuple[RSSMState, jax.Array]]
  decode: Callable[..., jax.Array]
  open_loop: Callable[..., tuple[jax.Array, jax.Array]]
  reward: Callable[..., jax.Array]
  cont: Callable[..., jax.Array]
  loss: Callable[..., tuple[jax.Array, "LossAux"]]
  feature_size: int
  obs_shape: tuple[int, ...]
  action_size: int
  pixels: bool
  config: WorldModelConfig


class LossAux(NamedTuple):
  """What `WorldModel.loss` returns beside the scalar loss.

  Attributes:
    metrics: scalar diagnostics (loss terms, KL before clipping, entropies).
    post: posterior states of the window.                          # [B, L + 1, ...]
  """

  metrics: dict[str, jax.Array]
  post: RSSMState


# --------------------------------------------------------------------------------------------
# Distributions.


def unimix_logits(logits: jax.Array, unimix: float) -> jax.Array:
  """log((1 - unimix) * softmax(logits) + unimix / C) over the last axis."""
  if unimix == 0.0:
    return jax.nn.log_softmax(logits, axis=-1)
  probs = jax.nn.softmax(logits, axis=-1)
  probs = (1.0 - unimix) * probs + unimix / logits.shape[-1]
  return jnp.log(probs)


def sample_straight_through(key: PRNGKey, logits: jax.Array) -> jax.Array:
  """A one-hot sample over the last axis whose gradient is that of the probabilities."""
  idx = jax.random.categorical(key, logits, axis=-1)
  one_hot = jax.nn.one_hot(idx, logits.shape[-1], dtype=logits.dtype)
  probs = jax.nn.softmax(logits, axis=-1)
  return one_hot + probs - jax.lax.stop_gradient(probs)


def categorical_kl(p_logits: jax.Array, q_logits: jax.Array) -> jax.Array:
  """KL(p || q) of G independent categoricals, summed over groups: [..., G, C] -> [...]."""
  log_p = jax.nn.log_softmax(p_logits, axis=-1)
  log_q = jax.nn.log_softmax(q_logits, axis=-1)
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=(-2, -1))


def kl_loss(post_logits: jax.Array, prior_logits: jax.Array, *, free_nats: float = 1.0,
            dyn_scale: float = 1.0, rep_scale: float = 0.1,
            ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """DreamerV3's balanced KL with free bits, per step.

    dyn = max(free_nats, KL(sg(post) || prior))     trains the prior only
    rep = max(free_nats, KL(post || sg(prior)))     trains the posterior only
    loss = dyn_scale * dyn + rep_scale * rep

  Args:
    post_logits, prior_logits: [..., G, C] log-probabilities.

  Returns:
    (loss [...], {"dyn": [...], "rep": [...], "kl": [...] unclipped KL(post || prior)}).
  """
  sg = jax.lax.stop_gradient
  dyn_kl = categorical_kl(sg(post_logits), prior_logits)
  rep_kl = categorical_kl(post_logits, sg(prior_logits))
  dyn = jnp.maximum(dyn_kl, free_nats)
  rep = jnp.maximum(rep_kl, free_nats)
  return dyn_scale * dyn + rep_scale * rep, {"dyn": dyn, "rep": rep, "kl": sg(dyn_kl)}


# --------------------------------------------------------------------------------------------
# Networks.


def _mlp(hidden: int, layers: int, out: int | None = None, **kwargs) -> MLP:
  """DreamerV3's MLP: `layers` x (Dense -> LayerNorm -> SiLU), then a linear output if `out`."""
  return MLP(hidden_sizes=(hidden,) * layers, out_size=out, activation=nn.silu,
             layer_norm=True, **kwargs)


class _GRU(nn.Module):
  """DreamerV3's GRU cell: one Dense over [x, h], LayerNorm, update gate biased to keep h."""

  size: int

  @nn.compact
  def __call__(self, x: jax.Array, h: jax.Array) -> jax.Array:
    parts = nn.LayerNorm(epsilon=1e-3)(nn.Dense(3 * self.size)(jnp.concatenate([x, h], -1)))
    reset, cand, update = jnp.split(parts, 3, axis=-1)
    reset = jax.nn.sigmoid(reset)
    cand = jnp.tanh(reset * cand)
    update = jax.nn.sigmoid(update - 1.0)
    return update * cand + (1.0 - update) * h


def cnn_stages(size: int) -> int:
  """Stride-2 stages taking a size x size image down to 4 x 4 (`ConvEncoder`'s `stages`);
  raises ValueError unless size is 4 * 2^k, k >= 1."""
  stages = int(round(math.log2(size / 4))) if size >= 8 else 0
  if stages < 1 or 4 * 2 ** stages != size:
    raise ValueError(f"pixel observations must be square with side 4 * 2^k (8, 16, 32, 64, "
                     f"...), got side {size}")
  return stages


def space_to_depth(x: jax.Array) -> jax.Array:
  """[N, H, W, C] -> [N, H/2, W/2, 4C]: each 2 x 2 block of pixels becomes one pixel, its
  channels ordered (row in block, column in block, channel)."""
  n, h, w, c = x.shape
  x = x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, h // 2, w // 2, 4 * c)


def depth_to_space(x: jax.Array) -> jax.Array:
  """The inverse of `space_to_depth`: [N, H, W, 4C] -> [N, 2H, 2W, C]."""
  n, h, w, c = x.shape
  x = x.reshape(n, h, w, 2, 2, c // 4).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, 2 * h, 2 * w, c // 4)


def _neighbourhoods(x: jax.Array, pad: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  """[N, H, W, C] -> [N, H, W, 4C]: each pixel's 2 x 2 neighbourhood of `x` zero-padded by
  `pad` ((top, bottom), (left, right)), channels ordered (row, column, channel)."""
  _, h, w, _ = x.shape
  x = jnp.pad(x, ((0, 0), pad[0], pad[1], (0, 0)))
  return jnp.concatenate([x[:, i:i + h, j:j + w] for i in (0, 1) for j in (0, 1)], axis=-1)


class Down(nn.Module):
  """A 4 x 4 stride-2 convolution (zero padding 2 before, 0 after), computed as a dense layer
  on the 2 x 2 neighbourhoods of `space_to_depth(x)`.

  The same function class as the convolution (a test maps one kernel onto the other), without
  convolution ops: XLA's CPU backend runs convolutions (and their gradients) with trainable
  kernels inside `lax.scan` ~15-20x slower than in a plain jitted call, which made a Dreamer
  chunk (a scan of train steps) on pixels that much slower. Shifts and a matmul are fast in
  both places.
  """

  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.Dense(self.features)(_neighbourhoods(space_to_depth(x), ((1, 0), (1, 0))))


class Up(nn.Module):
  """A 4 x 4 stride-2 transposed convolution (the adjoint of `Down`'s convolution), computed
  as a dense layer on 2 x 2 neighbourhoods to 4 x features channels and `depth_to_space`:
  output pixel 2m + r reads inputs m and m + 1 for both phases r, so this is exact, with no
  convolution ops (see `Down`)."""

  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return depth_to_space(nn.Dense(4 * self.features)(_neighbourhoods(x, ((0, 1), (0, 1)))))


class ConvEncoder(nn.Module):
  """`stages` x (`Down` -> LayerNorm -> SiLU), channels depth, 2 depth, 4 depth, ..., then
  flattened: images [N, S, S, C] (floats, e.g. in [-0.5, 0.5]) -> [N, 4 * 4 * top], with
  S = 4 * 2^stages (see `cnn_stages`) and top = depth * 2^(stages - 1). The world model's and
  World Models' VAE's (`mbrl_jax.models.vae`) image encoder."""

  depth: int
  stages: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:   # [N, S, S, 3] in [-0.5, 0.5] -> [N, E]
    for i in range(self.stages):
      x = Down(self.depth * 2 ** i)(x)
      x = nn.silu(nn.LayerNorm(epsilon=1e-3)(x))
    return x.reshape(x.shape[0], -1)


class ConvDecoder(nn.Module):
  """The mirror of `ConvEncoder`: a Dense to a 4 x 4 x top map, then `Up` stages halving the
  channels, the last one linear to `channels`: [N, F] -> [N, S, S, channels]."""

  depth: int
  stages: int
  channels: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:   # [N, F] -> [N, S, S, channels]
    top = self.depth * 2 ** (self.stages - 1)
    x = nn.Dense(4 * 4 * top)(x).reshape(x.shape[0], 4, 4, top)
    for i in reversed(range(1, self.stages)):
      x = Up(self.depth * 2 ** (i - 1))(x)
      x = nn.silu(nn.LayerNorm(epsilon=1e-3)(x))
    return Up(self.channels)(x)


class _Net(nn.Module):
  """All the world model's networks, with one method per use (params are one pytree)."""

  config: WorldModelConfig
  obs_shape: tuple[int, ...]
  pixels: bool

  def setup(self):
    c = self.config
    if self.pixels:
      stages = cnn_stages(self.obs_shape[0])
      self.encoder = ConvEncoder(c.cnn_depth, stages)
      self.decoder = ConvDecoder(c.cnn_depth, stages, self.obs_shape[-1])
    else:
      self.encoder = _mlp(c.hidden, c.mlp_layers)
      self.decoder = _mlp(c.hidden, c.mlp_layers, self.obs_shape[0])
    self.img_in = _mlp(c.hidden, 1)
    self.gru = _GRU(c.deter)
    self.prior_net = _mlp(c.hidden, 1, c.stoch * c.classes)
    self.post_net = _mlp(c.hidden, 1, c.stoch * c.classes)
    self.reward_net = _mlp(c.hidden, c.mlp_layers, c.num_bins, zero_init_output=True)
    self.cont_net = _mlp(c.hidden, c.mlp_layers, 1)

  def embed(self, obs: jax.Array) -> jax.Array:   # [N, *obs] (preprocessed) -> [N, E]
    return self.encoder(obs)

  def decode(self, feat: jax.Array) -> jax.Array:
    return self.decoder(feat)

  def gru_step(self, deter: jax.Array, stoch_flat: jax.Array, action: jax.Array):
    x = self.img_in(jnp.concatenate([stoch_flat, action], -1))
    deter = self.gru(x, deter)
    return deter, self.prior_net(deter)

  def posterior(self, deter: jax.Array, embed: jax.Array) -> jax.Array:
    return self.post_net(jnp.concatenate([deter, embed], -1))

  def reward(self, feat: jax.Array) -> jax.Array:
    return self.reward_net(feat)

  def cont(self, feat: jax.Array) -> jax.Array:
    return self.cont_net(feat)[..., 0]

  def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
    """Touches every network once (for `init`)."""
    c = self.config
    n = obs.shape[0]
    embed = self.embed(obs)
    deter, _ = self.gru_step(jnp.zeros((n, c.deter)), jnp.zeros((n, c.stoch * c.classes)),
                             action)
    post = self.posterior(deter, embed)
    feat = jnp.concatenate([deter, post], -1)
    return self.decode(feat).sum() + self.reward(feat).sum() + self.cont(feat).sum()


# --------------------------------------------------------------------------------------------
# The factory.


def make_world_model(obs_shape: int | Sequence[int], action_size: int, *,
                     config: WorldModelConfig = WorldModelConfig()) -> WorldModel:
  """Builds an RSSM world model for vector ([O]) or pixel ([S, S, 3] uint8) observations.

  Args:
    obs_shape: O (or (O,)) for vector observations; (S, S, channels) for images, with S one
      of 8, 16, 32, 64, ... (images are uint8 and are scaled to [-0.5, 0.5] inside).
    action_size: A.
    config: sizes and loss weights (see `PRESETS`).

  Returns:
    A `WorldModel` of pure functions; `feature_size` = D + G * C is the size of the features
    (`[h, flatten(z)]`) that the heads, and an actor and critic, read.
  """
  obs_shape = (obs_shape,) if isinstance(obs_shape, int) else tuple(int(s) for s in obs_shape)
  if len(obs_shape) not in (1, 3) or any(s < 1 for s in obs_shape):
    raise ValueError(f"make_world_model: obs_shape must be (O,) or (S, S, channels), got "
                     f"{obs_shape}")
  if not isinstance(action_size, int) or action_size < 1:
    raise ValueError(f"make_world_model: action_size must be a positive int, got "
                     f"{action_size!r}")
  validate_config(config, "make_world_model: config")
  pixels = len(obs_shape) == 3
  if pixels:
    if obs_shape[0] != obs_shape[1]:
      raise ValueError(f"make_world_model: images must be square, got {obs_shape}")
    cnn_stages(obs_shape[0])
  c = config
  G, C, D = c.stoch, c.classes, c.deter
  feature_size = D + G * C
  net = _Net(config=c, obs_shape=obs_shape, pixels=pixels)
  bins = transforms.symlog_bins(c.num_bins)
  nobs = len(obs_shape)

  def _preprocess(obs: jax.Array) -> jax.Array:
    if pixels:
      return obs.astype(jnp.float32) / 255.0 - 0.5
    return transforms.symlog(obs.astype(jnp.float32))

  def _flat_apply(params, method, x: jax.Array, event_dims: int) -> jax.Array:
    """Applies a network method to x [..., *event] with any leading axes."""
    lead = x.shape[:x.ndim - event_dims]
    flat = x.reshape((-1,) + x.shape[x.ndim - event_dims:])
    out = net.apply(params, flat, method=method)
    return out.reshape(lead + out.shape[1:])

  def init(key: PRNGKey):
    obs = jnp.zeros((1,) + obs_shape, jnp.float32)
    return net.init(key, obs, jnp.zeros((1, action_size)))

  def initial_state(batch_shape: Sequence[int] = ()) -> RSSMState:
    """The state before an episode's first observation: zeros, uniform logits."""
    batch_shape = tuple(batch_shape)
    return RSSMState(deter=jnp.zeros(batch_shape + (D,)),
                     stoch=jnp.zeros(batch_shape + (G, C)),
                     logits=jnp.full(batch_shape + (G, C), -math.log(C)))

  def features(state: RSSMState) -> jax.Array:
    """[h, flatten(z)]: [..., D + G * C]."""
    lead = state.stoch.shape[:-2]
    return jnp.concatenate([state.deter, state.stoch.reshape(lead + (G * C,))], -1)

  def embed(params, obs: jax.Array) -> jax.Array:
    """Encodes raw observations [..., *obs_shape] -> [..., E]."""
    return _flat_apply(params, _Net.embed, _preprocess(obs), nobs)

  def _latent(key: PRNGKey, raw_logits: jax.Array, deter: jax.Array) -> RSSMState:
    logits = unimix_logits(raw_logits.reshape(raw_logits.shape[:-1] + (G, C)), c.unimix)
    return RSSMState(deter=deter, stoch=sample_straight_through(key, logits), logits=logits)

  def img_step(params, key: PRNGKey, state: RSSMState, action: jax.Array) -> RSSMState:
    """One prior step: state [N] (any leading axes), action [N, A] -> prior state [N]."""
    lead = state.deter.shape[:-1]
    deter, raw = net.apply(params, state.deter, state.stoch.reshape(lead + (G * C,)),
                           action.astype(jnp.float32), method=_Net.gru_step)
    return _latent(key, raw, deter)

  def _obs_step_embedded(params, key, state, prev_action, embedding, is_first):
    """Posterior (and prior) after `prev_action`, given the current observation's embedding;
    where is_first, the state and action are reset first."""
    is_first = jnp.asarray(is_first, bool)

    def reset(s, i):
      f = is_first.reshape(is_first.shape + (1,) * (s.ndim - is_first.ndim))
      return jnp.where(f, i, s)

    state = jax.tree.map(reset, state, initial_state(state.deter.shape[:-1]))
    prev_action = reset(prev_action, jnp.zeros_like(prev_action))
    prior_key, post_key = jax.random.split(key)
    prior = img_step(params, prior_key, state, prev_action)
    raw = net.apply(params, prior.deter, embedding, method=_Net.posterior)
    return _latent(post_key, raw, prior.deter), prior

  def obs_step(params, key: PRNGKey, state: RSSMState, prev_action: jax.Array,
               obs: jax.Array, is_first: jax.Array) -> tuple[RSSMState, RSSMState]:
    """Filters one observation: (state [N], prev_action [N, A], obs [N, *obs_shape],
    is_first [N] bool) -> (posterior [N], prior [N]); leading axes may also be empty."""
    return _obs_step_embedded(params, key, state, prev_action, embed(params, obs), is_first)

  def observe(params, key: PRNGKey, obs: jax.Array, prev_action: jax.Array,
              is_first: jax.Array, state: RSSMState | None = None,
              ) -> tuple[RSSMState, RSSMState]:
    """Filters sequences with a scan over time.

    Args:
      params: world-model parameters.
      key: PRNG key.
      obs: observations [B, T, *obs_shape].
      prev_action: the action before each observation [B, T, A] (ignored where is_first).
      is_first: [B, T] bool, True at an episode's first observation (the state resets).
      state: the state before obs[:, 0] ([B]); default the initial state.

    Returns:
      (posterior, prior) states [B, T, ...].
    """
    B, T = obs.shape[:2]
    if state is None:
      state = initial_state((B,))
    embeds = embed(params, obs)                                        # [B, T, E]
    swap = lambda x: jnp.swapaxes(x, 0, 1)
    keys = jax.random.split(key, T)

    def step(state, inputs):
      k, a, e, f = inputs
      post, prior = _obs_step_embedded(params, k, state, a, e, f)
      return post, (post, prior)

    _, (post, prior) = jax.lax.scan(
        step, state, (keys, swap(prev_action.astype(jnp.float32)), swap(embeds),
                      swap(is_first)))
    return jax.tree.map(swap, post), jax.tree.map(swap, prior)

  def imagine(params, key: PRNGKey, start: RSSMState,
              policy_fn: Callable[[PRNGKey, jax.Array], jax.Array], horizon: int,
              ) -> tuple[RSSMState, jax.Array]:
    """Rolls the prior forward from `start` with actions from `policy_fn`.

    Args:
      params: world-model parameters (close over actor parameters in `policy_fn`; gradients
        reach them through the straight-through samples).
      key: PRNG key.
      start: start states [N].
      policy_fn: `policy_fn(key, features [N, F]) -> actions [N, A]`.
      horizon: H, a static int.

    Returns:
      (states [N, H + 1] with the start first, actions [N, H, A]: action t leads from
      state t to state t + 1).
    """
    def step(state, k):
      policy_key, model_key = jax.random.split(k)
      action = policy_fn(policy_key, features(state))
      nxt = img_step(params, model_key, state, action)
      return nxt, (nxt, action)

    _, (states, actions) = jax.lax.scan(step, start, jax.random.split(key, horizon))
    states = jax.tree.map(lambda s0, s: jnp.concatenate([s0[None], s], 0), start, states)
    swap = lambda x: jnp.swapaxes(x, 0, 1)
    return jax.tree.map(swap, states), swap(actions)

  def _decode_raw(params, feat: jax.Array) -> jax.Array:
    return _flat_apply(params, _Net.decode, feat, 1)

  def decode(params, feat: jax.Array) -> jax.Array:
    """The reconstructed observation [..., *obs_shape] from features [..., F]: vector
    observations in their original units, images as floats in [0, 1]."""
    out = _decode_raw(params, feat)
    if pixels:
      return jnp.clip(out + 0.5, 0.0, 1.0)
    return transforms.symexp(out)

  def reward_logits(params, feat: jax.Array) -> jax.Array:
    return _flat_apply(params, _Net.reward, feat, 1)

  def reward(params, feat: jax.Array) -> jax.Array:
    """Predicted reward of the transition into each state: [..., F] -> [...]."""
    return transforms.twohot_decode(reward_logits(params, feat), bins)

  def cont_logit(params, feat: jax.Array) -> jax.Array:
    return _flat_apply(params, _Net.cont, feat, 1)

  def cont(params, feat: jax.Array) -> jax.Array:
    """Predicted probability that the episode continues after the transition into each
    state: [..., F] -> [...]."""
    return jax.nn.sigmoid(cont_logit(params, feat))

  def open_loop(params, key: PRNGKey, obs: jax.Array, prev_action: jax.Array,
                actions: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Open-loop prediction: filter a context, then roll the prior with given actions.

    Args:
      params: world-model parameters.
      key: PRNG key.
      obs: context observations [B, T0, *obs_shape], the first one an episode start.
      prev_action: the action before each context observation [B, T0, A] (the first is
        ignored).
      actions: actions to take after the last context observation [B, H, A].

    Returns:
      (decoded observations [B, H, *obs_shape] after each action, predicted rewards [B, H]);
      decoded as in `decode`.
    """
    B, T0 = obs.shape[:2]
    observe_key, imagine_key = jax.random.split(key)
    is_first = jnp.zeros((B, T0), bool).at[:, 0].set(True)
    post, _ = observe(params, observe_key, obs, prev_action, is_first)
    start = jax.tree.map(lambda x: x[:, -1], post)

    def step(state, inputs):
      k, a = inputs
      nxt = img_step(params, k, state, a)
      return nxt, features(nxt)

    H = actions.shape[1]
    _, feat = jax.lax.scan(step, start, (jax.random.split(imagine_key, H),
                                         jnp.swapaxes(actions.astype(jnp.float32), 0, 1)))
    feat = jnp.swapaxes(feat, 0, 1)                                        # [B, H, F]
    return decode(params, feat), reward(params, feat)

  def loss(params, key: PRNGKey, window: Transition, valid: jax.Array | None = None,
           is_first: jax.Array | None = None) -> tuple[jax.Array, LossAux]:
    """The world-model loss on a batch of windows.

    Args:
      params: world-model parameters.
      key: PRNG key.
      window: transitions [B, L, ...]: L + 1 model steps, step 0 observing obs[:, 0] and
        step t + 1 next_obs[:, t] after action[:, t].
      valid: optional [] or [B] bool/float weight (e.g. the `valid` of `sample_sequences`).
      is_first: optional [B, L + 1] bool per model step: that step's observation starts an
        episode, so the state and previous action reset there (DreamerV3's replay windows
        cross episode boundaries this way). Every step still counts in the loss: the
        transition into a first step is scored on window.reward and 1 - window.terminated
        as any other (a replay stores 0 and 0 there). Step 0 always starts from the initial
        state. None: only step 0 (a window within one episode, ending at most at its end).

    Returns:
      (scalar loss, LossAux(metrics, posterior states [B, L + 1])).
    """
    B, L = window.action.shape[:2]
    obs = jnp.concatenate([window.obs[:, :1], window.next_obs], 1)          # [B, L+1, ...]
    prev_action = jnp.concatenate(
        [jnp.zeros((B, 1, action_size)), window.action.astype(jnp.float32)], 1)
    if is_first is None:
      is_first = jnp.zeros((B, L + 1), bool)
    elif is_first.shape != (B, L + 1):
      raise ValueError(f"WorldModel.loss: is_first must be [B, L + 1] = {(B, L + 1)}, got "
                       f"{is_first.shape}")
    is_first = jnp.asarray(is_first, bool).at[:, 0].set(True)
    post, prior = observe(params, key, obs, prev_action, is_first)
    feat = features(post)                                                  # [B, L+1, F]

    pred = _decode_raw(params, feat)
    target = _preprocess(obs)
    recon = jnp.sum((pred - target) ** 2, axis=tuple(range(2, 2 + nobs)))  # [B, L+1]
    reward_nll = transforms.twohot_loss(reward_logits(params, feat[:, 1:]),
                                        window.reward.astype(jnp.float32), bins)  # [B, L]
    cont_target = 1.0 - window.terminated.astype(jnp.float32)
    logit = cont_logit(params, feat[:, 1:])
    cont_nll = (jnp.logaddexp(0.0, logit) - cont_target * logit)               # [B, L]
    kl, kl_terms = kl_loss(post.logits, prior.logits, free_nats=c.free_nats,
                           dyn_scale=c.dyn_scale, rep_scale=c.rep_scale)      # [B, L+1]

    weight = jnp.ones((B,)) if valid is None else jnp.broadcast_to(
        jnp.asarray(valid, jnp.float32), (B,))
    denom = jnp.maximum(weight.sum(), 1.0)
    mean = lambda x: jnp.sum(jnp.mean(x, axis=1) * weight) / denom
    total = (c.recon_scale * mean(recon) + c.reward_scale * mean(reward_nll)
             + c.cont_scale * mean(cont_nll) + mean(kl))
    probs = lambda logits: jnp.exp(logits)
    ent = lambda logits: -jnp.sum(probs(logits) * logits, axis=(-2, -1))
    reward_pred = transforms.twohot_decode(jax.lax.stop_gradient(
        reward_logits(params, feat[:, 1:])), bins)
    metrics = {
        "wm_loss": total,
        "wm_recon": mean(recon),
        "wm_reward_nll": mean(reward_nll),
        "wm_cont_nll": mean(cont_nll),
        "wm_dyn": mean(kl_terms["dyn"]),
        "wm_rep": mean(kl_terms["rep"]),
        "wm_kl": mean(kl_terms["kl"]),
        "wm_post_entropy": mean(ent(post.logits)),
        "wm_prior_entropy": mean(ent(prior.logits)),
        "wm_reward_mae": mean(jnp.abs(reward_pred - window.reward)),
    }
    metrics = jax.tree.map(jax.lax.stop_gradient, metrics)
    return total, LossAux(metrics=metrics, post=post)

  return WorldModel(
      init=init, initial_state=initial_state, features=features, embed=embed,
      img_step=img_step, obs_step=obs_step, observe=observe, imagine=imagine, decode=decode,
      open_loop=open_loop, reward=reward, cont=cont, loss=loss, feature_size=feature_size,
      obs_shape=obs_shape,
      action_size=action_size, pixels=pixels, config=c)
