"""MOREC's dynamics reward: a learned score d(s, a, s') in (0, 1) of how much a transition
looks like the real dynamics, trained by adversarial IRL on an offline dataset, and the
rollout filter that keeps, of N candidate next states, the one it scores highest.

Luo et al. 2024, "Reward-Consistent Dynamics Models are Strongly Generalizable for Offline
Reinforcement Learning" (MOREC), read from the paper's abstract and method description (the
authors' dynamics-reward code is not released; nothing here is copied). The paper views the
environment's transition function as an agent of a "dynamics MDP" whose state is (s, a) and
whose action is s', maximising a hidden dynamics reward; that reward is recovered by
adversarial IRL from the data and then used as a transition filter in any offline MBRL
method: for each (s, a) of a model rollout, N candidates are drawn from the ensemble and the
one with the highest dynamics reward is kept.

What is built here (one compiled call, `train`):

- The reward is a discriminator D_k(s, a, s') = sigmoid(f_k([s, a, s' - s])), f_k an MLP on
  inputs standardised with the training rows' statistics. Real dataset transitions are its
  positives (label 1); its negatives (label 0) are, in equal shares, samples of the
  generators and perturbed real transitions (below). Loss: binary cross-entropy.
- The generators are the fitted dynamics ensemble's Gaussian members (each row of a batch
  from a random member, the member's own noise), copied and trained adversarially against
  the current discriminator: reparameterised samples, loss -log D (the non-saturating GAN
  form; the dynamics MDP of one step makes the IRL policy step a conditional GAN step) plus
  `anchor` times the members' data negative log-likelihood (keeps them models of the data,
  not arbitrary fakes). `generator_lr` 0 keeps them fixed at the fit.
- The perturbed negatives are real s' + sigma * std(s' - s) * noise, sigma log-uniform in
  `perturb_scale`: hard negatives near the data that a well-fitted generator stops giving.
- The output reward is the mean of `snapshots` discriminators saved at evenly spaced
  iterations (the adversarial game's reward player averaged over its iterations, as the
  paper's IRL outputs an average reward rather than its last iterate), d = mean_k D_k.
- The threshold rule: a rollout stops (the step is not written, the row ends, it is not a
  terminal state) when the chosen candidate's d is below the `threshold_quantile` quantile
  of d on held-out real transitions (`threshold`, measured in `train`; 0 switches it off).

Where we had to choose (the paper's text available here gives no value or its code is
unreleased): the discriminator's inputs (s' - s rather than s'), its width and step counts,
the perturbed negatives and their scale range, the 1:1 negative mix, the NLL anchor, the
number of averaged snapshots, N = 10 candidates drawn as independent TS1 samples (a random
elite and its Gaussian noise each), argmax selection (no softmax temperature), and the
threshold as a data quantile instead of an absolute score.

Measured (quick preset on pendulum-medium-replay, 2,250 training rows): held-out real
transitions score 0.54, the fitted ensemble's samples 0.49, perturbed ones 0.25; real against
model is told apart 66 % of the time (69 % with fixed generators, `generator_lr=0`): the
ensemble is already close to the data there, and the filter's choice rests on small
differences. On that set neither MOREC variant beat its base method (see the report in
experiments/bench_offline.py's rows `morec-mopo`, `morec-mobile`).

Shapes: O observation size, A action size, N rows, C candidates per row, K snapshots.

Example (a tiny fit; `select` is plain indexing):
  >>> scores = jnp.array([[0.1, 0.9], [0.7, 0.2]])                 # [C=2, N=2]
  >>> cands = jnp.array([[[0.0], [1.0]], [[2.0], [3.0]]])          # [C, N, O=1]
  >>> best, idx, s = select(scores, cands)
  >>> best[:, 0].tolist(), idx.tolist()
  ([2.0, 1.0], [1, 0])
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mbrl_jax import checks
from mbrl_jax.models import normalizer as norm_lib
from mbrl_jax.models import training
from mbrl_jax.models.ensemble import Ensemble, EnsembleParams, sample_member
from mbrl_jax.models.networks import ACTIVATIONS, MLP
from mbrl_jax.types import PRNGKey, Transition


@dataclasses.dataclass(frozen=True)
class MorecConfig:
  """MOREC's dynamics reward and rollout filter (off unless `enabled`).

  Attributes:
    enabled: filter the model rollouts (MOREC-MOPO, MOREC-MOBILE, ...).
    num_candidates: N, candidate next states drawn per row and step.
    threshold_quantile: a rollout stops where the chosen candidate's dynamics reward is below
      this quantile of the reward on held-out real transitions (0: never stops).
    hidden_sizes: the discriminator's hidden widths.
    activation: its hidden activation.
    iterations: discriminator (and generator) updates in the fit.
    batch_size: real transitions per update (as many negatives).
    learning_rate: the discriminator's Adam step size.
    generator_lr: the generators' Adam step size (0: the fitted ensemble, unchanged).
    anchor: weight of the generators' data NLL beside their adversarial loss.
    snapshots: discriminators averaged into the reward (saved every iterations / snapshots).
    perturb_scale: (low, high) of the log-uniform noise scale of the perturbed negatives, in
      standard deviations of the data's s' - s.
    holdout_rows: real transitions kept out of the fit (the threshold and diagnostics).
  """

  enabled: bool = False
  num_candidates: int = 10
  threshold_quantile: float = 0.01
  hidden_sizes: tuple[int, ...] = (200, 200)
  activation: str = "relu"
  iterations: int = 5000
  batch_size: int = 256
  learning_rate: float = 3e-4
  generator_lr: float = 1e-4
  anchor: float = 1.0
  snapshots: int = 5
  perturb_scale: tuple[float, float] = (0.05, 2.0)
  holdout_rows: int = 1000

  def __post_init__(self):
    checks.positive_int(self, "num_candidates", "iterations", "batch_size", "snapshots",
                        "holdout_rows")
    checks.in_range(self, "threshold_quantile", 0.0, 1.0, high_open=True)
    checks.widths(self, "hidden_sizes")
    checks.one_of(self, "activation", sorted(ACTIVATIONS))
    checks.in_range(self, "learning_rate", 0.0, low_open=True)
    checks.in_range(self, "generator_lr", 0.0)
    checks.in_range(self, "anchor", 0.0)
    if self.iterations % self.snapshots:
      checks.fail(self, "snapshots", f"({self.snapshots}) must divide iterations "
                  f"({self.iterations})")
    lo_hi = self.perturb_scale
    if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1]:
      checks.fail(self, "perturb_scale", f"must be (low, high) with 0 < low <= high, got "
                  f"{lo_hi!r}")


class DynamicsRewardParams(NamedTuple):
  """A trained dynamics reward (K snapshots) and its calibration.

  Attributes:
    net: the K discriminators' flax parameters, stacked [K, ...].
    norm: the input normaliser of [s, a, s' - s].                                # [2O + A]
    threshold: the rollout-stop threshold on d (0 when off).                      # []
    real_score: mean d on the held-out real transitions.                          # []
    model_score: mean d on fitted-ensemble samples at the held-out (s, a).        # []
    perturbed_score: mean d on perturbed held-out transitions.                    # []
    accuracy: held-out accuracy of d > 0.5, real against ensemble samples.        # []
  """

  net: Any
  norm: norm_lib.Normalizer
  threshold: jax.Array
  real_score: jax.Array
  model_score: jax.Array
  perturbed_score: jax.Array
  accuracy: jax.Array


class DynamicsReward(NamedTuple):
  """Pure functions of a dynamics reward. Build with `make`.

  Attributes:
    config: its MorecConfig.
    score: `score(params, obs [..., O], action [..., A], next_obs [..., O]) -> d [...]`.
    train: `train(key, ensemble_params, data, holdout_rows) -> DynamicsRewardParams`;
      data a full `Transition` batch [M, ...] of real rows.
  """

  config: MorecConfig
  score: Callable[..., jax.Array]
  train: Callable[..., DynamicsRewardParams]


def select(scores: jax.Array, next_obs: jax.Array, *others: jax.Array
           ) -> tuple[jax.Array, ...]:
  """Per row, the candidate with the highest dynamics reward.

  Args:
    scores: d of each candidate, [C, N].
    next_obs: the candidates' next states, [C, N, O].
    others: more per-candidate arrays [C, N, ...] picked the same way (the reward, say).

  Returns:
    (next_obs [N, O], index [N] int32, best score [N], *others picked [N, ...]); ties go to
    the lowest candidate index.
  """
  if scores.ndim != 2 or next_obs.shape[:2] != scores.shape:
    raise ValueError(f"select: scores must be [C, N] and next_obs [C, N, O], got "
                     f"{scores.shape} and {next_obs.shape}")
  idx = jnp.argmax(scores, axis=0).astype(jnp.int32)
  pick = lambda x: jnp.take_along_axis(
      x, idx.reshape((1, -1) + (1,) * (x.ndim - 2)), axis=0)[0]
  return (pick(next_obs), idx, pick(scores), *(pick(x) for x in others))


def draw_candidates(ensemble: Ensemble, params: EnsembleParams, key: PRNGKey, obs: jax.Array,
                    action: jax.Array, num: int):
  """`num` independent TS1 samples of the ensemble at each row (a random elite and its own
  Gaussian noise each): `ModelStep` with next_obs [C, N, O] and reward [C, N]."""
  return jax.vmap(lambda k: ensemble.predict(params, k, obs, action, mode="ts1"))(
      jax.random.split(key, num))


def make(config: MorecConfig, ensemble: Ensemble) -> DynamicsReward:
  """The dynamics reward of `ensemble`'s env (its obs and action sizes), trained with
  `ensemble`'s fitted members as the initial generators."""
  spec = ensemble.spec
  O, A = spec.obs_size, spec.action_size
  if not spec.probabilistic or not spec.predict_reward:
    raise ValueError("dynamics_reward.make: needs a probabilistic ensemble that predicts the "
                     "reward (MOPO's / MOBILE's)")
  c = config
  mlp = MLP(hidden_sizes=c.hidden_sizes, out_size=1, activation=ACTIVATIONS[c.activation])
  K, B, steps = c.snapshots, c.batch_size, c.iterations // c.snapshots
  d_opt = optax.adam(c.learning_rate)
  g_opt = optax.adam(c.generator_lr)

  def features(obs, action, next_obs):
    lead = next_obs.shape[:-1]                # obs and action broadcast over candidates
    obs = jnp.broadcast_to(obs.astype(jnp.float32), (*lead, O))
    action = jnp.broadcast_to(action, (*lead, A))
    return jnp.concatenate([obs, action.astype(jnp.float32),
                            next_obs.astype(jnp.float32) - obs], axis=-1)

  def logits(net, norm, obs, action, next_obs):
    return mlp.apply(net, norm_lib.normalize(norm, features(obs, action, next_obs)))[..., 0]

  def score(params: DynamicsRewardParams, obs, action, next_obs) -> jax.Array:
    per = jax.vmap(lambda net: jax.nn.sigmoid(
        logits(net, params.norm, obs, action, next_obs)))(params.net)
    return per.mean(0)

  def sample_members(gen: EnsembleParams, key, obs, action):
    """Reparameterised next states from a random member per row ([N, O]), differentiable in
    the generators' parameters."""
    k_m, k_n = jax.random.split(key)
    out = ensemble.apply(gen, obs, action)                                # [E, N, D]
    return obs + sample_member(out, jnp.arange(spec.num_members), k_m, k_n, dims=O)

  def train(key: PRNGKey, ens_params: EnsembleParams, data: Transition,
            holdout_rows: int) -> DynamicsRewardParams:
    m = data.obs.shape[0]
    if not 0 < holdout_rows < m:
      raise ValueError(f"dynamics_reward.train: holdout_rows must be in (0, {m}), got "
                       f"{holdout_rows}")
    k_split, k_init, k_fit, k_eval = jax.random.split(key, 4)
    perm = jax.random.permutation(k_split, m)
    hold = jax.tree.map(lambda x: x[perm[:holdout_rows]], data)
    train_rows = perm[holdout_rows:]
    n_train = m - holdout_rows
    x_train = features(data.obs[train_rows], data.action[train_rows],
                       data.next_obs[train_rows])
    norm = norm_lib.fit(x_train)
    delta_std = jnp.std(x_train[:, O + A:], axis=0) + 1e-6
    net = mlp.init(k_init, jnp.zeros((1, 2 * O + A)))
    gen_net = ens_params.net

    def negatives(gen_net, key, batch):
      k_g, k_p, k_s = jax.random.split(key, 3)
      half = B // 2
      fake = sample_members(ens_params._replace(net=gen_net), k_g, batch.obs[:half],
                            batch.action[:half])
      sigma = jnp.exp(jax.random.uniform(k_s, (B - half, 1), minval=jnp.log(
          c.perturb_scale[0]), maxval=jnp.log(c.perturb_scale[1])))
      pert = batch.next_obs[half:] + sigma * delta_std * jax.random.normal(
          k_p, batch.next_obs[half:].shape)
      return jnp.concatenate([fake, pert.astype(jnp.float32)])

    def update(carry, k):
      net, d_state, gen_net, g_state = carry
      k_b, k_neg, k_gen = jax.random.split(k, 3)
      batch = jax.tree.map(lambda x: x[train_rows[jax.random.randint(k_b, (B,), 0, n_train)]],
                           data)
      neg = jax.lax.stop_gradient(negatives(gen_net, k_neg, batch))

      def d_loss(net):
        pos = logits(net, norm, batch.obs, batch.action, batch.next_obs)
        fake = logits(net, norm, batch.obs, batch.action, neg)
        return (optax.sigmoid_binary_cross_entropy(pos, 1.0).mean()
                + optax.sigmoid_binary_cross_entropy(fake, 0.0).mean())

      dl, g = jax.value_and_grad(d_loss)(net)
      upd, d_state = d_opt.update(g, d_state, net)
      net = optax.apply_updates(net, upd)
      if c.generator_lr > 0:
        def g_loss(gen_net):
          p = ens_params._replace(net=gen_net)
          s = sample_members(p, k_gen, batch.obs, batch.action)
          adv = optax.sigmoid_binary_cross_entropy(
              logits(net, norm, batch.obs, batch.action, s), 1.0).mean()
          return adv + c.anchor * training.data_nll(ensemble, p, batch).mean()
        upd, g_state = g_opt.update(jax.grad(g_loss)(gen_net), g_state, gen_net)
        gen_net = optax.apply_updates(gen_net, upd)
      return (net, d_state, gen_net, g_state), dl

    def snapshot(carry, k):
      carry, _ = jax.lax.scan(update, carry, jax.random.split(k, steps))
      return carry, carry[0]

    carry = (net, d_opt.init(net), gen_net, g_opt.init(gen_net))
    _, nets = jax.lax.scan(snapshot, carry, jax.random.split(k_fit, K))     # [K, ...]
    params = DynamicsRewardParams(net=nets, norm=norm, threshold=jnp.zeros(()),
                                  real_score=jnp.zeros(()), model_score=jnp.zeros(()),
                                  perturbed_score=jnp.zeros(()), accuracy=jnp.zeros(()))
    # Calibration and diagnostics on the held-out rows.
    k_m, k_p = jax.random.split(k_eval)
    real = score(params, hold.obs, hold.action, hold.next_obs)
    model_next = ensemble.predict(ens_params, k_m, hold.obs, hold.action, mode="ts1").next_obs
    model = score(params, hold.obs, hold.action, model_next)
    pert_next = hold.next_obs + delta_std * jax.random.normal(k_p, hold.next_obs.shape)
    pert = score(params, hold.obs, hold.action, pert_next)
    thr = (jnp.quantile(real, c.threshold_quantile) if c.threshold_quantile > 0
           else jnp.zeros(()))
    acc = 0.5 * (jnp.mean(real > 0.5) + jnp.mean(model <= 0.5))
    return params._replace(threshold=thr, real_score=real.mean(), model_score=model.mean(),
                           perturbed_score=pert.mean(), accuracy=acc)

  return DynamicsReward(config=config, score=score, train=train)
