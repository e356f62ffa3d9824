"""Imagination actor-critic: lambda-returns, replay returns, the return normaliser, the
slow-critic regulariser, the clipped-Gaussian likelihood and DreamerV3's optimizer against
hand-computed values; the whole update (defaults and DreamerV3's options) against a slow
reference; the slow critic's EMA; learning on a toy latent world; the `dreamerv3` Dreamer
preset runs train steps."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mbrl_jax.models import transforms
from mbrl_jax.models.networks import MLP
from mbrl_jax.policies import imagination as im


def test_lambda_returns_hand_values():
  r = jnp.array([1.0, 2.0, 3.0])
  d = jnp.array([0.9, 0.9, 0.5])
  v = jnp.array([10.0, 20.0, 30.0])
  # G2 = 3 + .5 * 30 = 18; G1 = 2 + .9 * (.5 * 20 + .5 * 18) = 19.1;
  # G0 = 1 + .9 * (.5 * 10 + .5 * 19.1) = 14.095
  np.testing.assert_allclose(jax.jit(im.lambda_returns)(r, d, v, 0.5), [14.095, 19.1, 18.0],
                             rtol=1e-6)
  # lambda = 0: one-step targets; lambda = 1: discounted sums bootstrapped at the end.
  np.testing.assert_allclose(im.lambda_returns(r, d, v, 0.0), r + d * v, rtol=1e-6)
  g2 = 3 + 0.5 * 30
  g1 = 2 + 0.9 * g2
  np.testing.assert_allclose(im.lambda_returns(r, d, v, 1.0), [1 + 0.9 * g1, g1, g2],
                             rtol=1e-6)
  # Unbatched; the caller vmaps.
  batch = jax.vmap(im.lambda_returns, in_axes=(0, 0, 0, None))(
      jnp.stack([r, 2 * r]), jnp.stack([d, d]), jnp.stack([v, v]), 0.5)
  np.testing.assert_allclose(batch[0], [14.095, 19.1, 18.0], rtol=1e-6)
  with pytest.raises(AssertionError):
    im.lambda_returns(r[None], d[None], v[None], 0.5)
  g = jax.grad(lambda v: im.lambda_returns(r, d, v, 0.5, stop_target_gradients=True).sum())(v)
  assert np.all(np.asarray(g) == 0.0)


def test_return_normaliser_ema_of_percentiles():
  state = im.init_return_norm()
  returns = jnp.arange(101.0)                         # 5th pct = 5, 95th pct = 95
  state = im.update_return_norm(state, returns, decay=0.99)
  np.testing.assert_allclose([state.low, state.high], [0.05, 0.95], rtol=1e-5)
  assert float(im.return_scale(state)) == 1.0         # max(1, 0.9): small ranges not scaled up
  for _ in range(2):
    state = im.update_return_norm(state, returns, decay=0.5)
  np.testing.assert_allclose([state.low, state.high],
                             [0.25 * 0.05 + 0.75 * 5, 0.25 * 0.95 + 0.75 * 95], rtol=1e-5)
  np.testing.assert_allclose(im.return_scale(state), 0.25 * 0.9 + 0.75 * 90, rtol=1e-5)
  # Outliers beyond the percentiles do not move it.
  spiky = returns.at[0].set(-1e6).at[-1].set(1e6)
  s2 = im.update_return_norm(state, spiky, decay=0.5)
  np.testing.assert_allclose([s2.low, s2.high], [0.5 * state.low + 2.5, 0.5 * state.high + 47.5],
                             rtol=1e-4)


def _toy_imagine(batch=64, horizon=10):
  """A 1-D latent world: feat = [x, 1], x' = x + 0.3 a, reward = -x'^2; never terminates."""

  def imagine_fn(key, policy_fn):
    x0 = jax.random.uniform(key, (batch,), minval=-2.0, maxval=2.0)

    def step(x, k):
      a = policy_fn(k, jnp.stack([x, jnp.ones_like(x)], -1))               # [N, 1]
      nx = x + 0.3 * a[:, 0]
      return nx, (nx, a)

    _, (xs, actions) = jax.lax.scan(step, x0, jax.random.split(jax.random.fold_in(key, 1),
                                                               horizon))
    xs = jnp.concatenate([x0[None], xs], 0).T                               # [N, H+1]
    feat = jnp.stack([xs, jnp.ones_like(xs)], -1)
    return im.Imagined(feat=feat, action=jnp.swapaxes(actions, 0, 1), reward=-xs[:, 1:] ** 2,
                       cont=jnp.ones((batch, horizon)))

  return imagine_fn


@pytest.mark.parametrize("actor_grad", ["dynamics", "reinforce"])
def test_actor_critic_learns_toy_world(actor_grad):
  config = im.ActorCriticConfig(hidden=32, layers=1, horizon=10, discount=0.9,
                                actor_lr=3e-3, critic_lr=3e-3, actor_grad=actor_grad,
                                entropy_scale=1e-4)
  ac = im.make_actor_critic(2, 1, config=config)
  imagine_fn = _toy_imagine()
  state0 = ac.init(jax.random.key(0))
  steps = 150 if actor_grad == "dynamics" else 300

  @jax.jit
  def train(state, key):
    def body(s, k):
      return ac.update(s, k, imagine_fn)
    return jax.lax.scan(body, state, jax.random.split(key, steps))

  state, metrics = train(state0, jax.random.key(1))
  m = jax.tree.map(np.asarray, metrics)
  assert np.all(np.isfinite(m["actor_loss"])) and np.all(np.isfinite(m["critic_loss"]))
  # The imagined return improves: the actor learnt to push x to 0.
  first, last = m["imag_return"][:10].mean(), m["imag_return"][-10:].mean()
  assert last > first + 0.3 * abs(first), (first, last)
  xs = jnp.linspace(-1.5, 1.5, 7)
  feat = jnp.stack([xs, jnp.ones_like(xs)], -1)
  a = ac.act(state.actor, jax.random.key(0), feat, deterministic=True)[:, 0]
  assert float(a[0]) > 0.3 and float(a[-1]) < -0.3         # push x towards 0
  assert float(jnp.corrcoef(xs, a)[0, 1]) < -0.8
  # The critic learnt that being far from 0 is worse (values decrease with |x|).
  v = ac.value(state.critic, feat)
  assert float(v[3]) > float(v[0]) and float(v[3]) > float(v[-1])
  assert int(state.updates) == steps
  # Sampled actions stay in [-1, 1].
  samples = ac.act(state.actor, jax.random.key(2), jnp.zeros((1000, 2)))
  assert float(jnp.abs(samples).max()) <= 1.0


def test_slow_critic_is_an_ema_and_returns_use_it():
  config = im.ActorCriticConfig(hidden=8, layers=1, horizon=4, slow_critic_decay=0.9)
  ac = im.make_actor_critic(2, 1, config=config)
  state = ac.init(jax.random.key(0))
  new, metrics = jax.jit(lambda s, k: ac.update(s, k, _toy_imagine(8, 4)))(
      state, jax.random.key(1))
  jax.tree.map(lambda s, old, c: np.testing.assert_allclose(s, 0.9 * old + 0.1 * c, rtol=1e-5,
                                                            atol=1e-7),
               new.slow_critic, state.slow_critic, new.critic)
  # The zero-initialised critic predicts 0, so the first returns are sums discounted by
  # gamma * lambda.
  traj = _toy_imagine(8, 4)(jax.random.key(5), lambda k, f: jnp.zeros((8, 1)))
  ret, weight = ac.returns(state.slow_critic, traj)
  disc = (0.99 * 0.95) ** np.arange(4)
  want = [np.sum(disc[: 4 - t] * np.asarray(traj.reward)[:, t:], axis=1) for t in range(4)]
  np.testing.assert_allclose(ret, np.stack(want, 1), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(weight, 1.0)
  # Termination stops the weights after the terminal transition.
  traj = traj._replace(cont=traj.cont.at[:, 1].set(0.0))
  _, weight = ac.returns(state.slow_critic, traj)
  np.testing.assert_allclose(weight[0], [1.0, 1.0, 0.0, 0.0])


def test_bad_config_names_the_field():
  with pytest.raises(ValueError, match="actor_grad"):
    im.make_actor_critic(4, 1, config=im.ActorCriticConfig(actor_grad="reparam"))
  with pytest.raises(ValueError, match="lambda_"):
    im.make_actor_critic(4, 1, config=im.ActorCriticConfig(lambda_=1.5))
  with pytest.raises(ValueError, match="action_size"):
    im.make_actor_critic(4, 0)


# --------------------------------------------------------------------------------------------
# DreamerV3's options.


def test_replay_returns_hand_values():
  boot = jnp.array([[10.0, 20.0, 30.0, 40.0]] * 3)
  reward = jnp.array([[100.0, 1.0, 2.0, 3.0]] * 3)           # step 0's reward is unused
  cont = jnp.array([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
  last = jnp.array([[0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0]], bool)
  ret = jax.jit(im.replay_returns, static_argnums=(4, 5))(boot, reward, cont, last, 0.5, 0.5)
  # Row 0: G2 = 3 + .5 * 40 = 23; G1 = 2 + .5 * (.5 * 30 + .5 * 23) = 15.25;
  #        G0 = 1 + .5 * (.5 * 20 + .5 * 15.25) = 9.8125.
  # Row 1 (step 2 terminal and last): G1 = 2; G0 = 1 + .5 * (.5 * 20 + .5 * 2) = 6.5.
  # Row 2 (step 2 truncated): G1 = 2 + .5 * 30 = 17; G0 = 1 + .5 * (.5 * 20 + .5 * 17) = 10.25.
  np.testing.assert_allclose(ret, [[9.8125, 15.25, 23.0], [6.5, 2.0, 23.0],
                                   [10.25, 17.0, 23.0]], rtol=1e-6)


def test_clipped_gaussian_likelihood_values_and_zero_mean_score():
  mean, std = jnp.array([0.2, 0.8, -0.5]), jnp.array([0.5, 0.5, 0.3])
  norm = jax.scipy.stats.norm
  action = jnp.array([0.3, 1.0, -1.0])
  want = (norm.logpdf(0.3, 0.2, 0.5) + np.log(1 - norm.cdf((1.0 - 0.8) / 0.5))
          + np.log(norm.cdf((-1.0 + 0.5) / 0.3)))
  np.testing.assert_allclose(im.clipped_gaussian_log_prob(action, mean, std), want, rtol=1e-5)
  # It is the likelihood of the clipped samples, so its score has mean zero under them
  # (an unbiased REINFORCE gradient); the Gaussian density at the clipped point is not.
  x = mean + std * jax.random.normal(jax.random.key(0), (200_000, 3))
  a = jnp.clip(x, -1.0, 1.0)
  score = jax.vmap(jax.grad(lambda m, a: im.clipped_gaussian_log_prob(a, m, std)),
                   in_axes=(None, 0))(mean, a)
  np.testing.assert_allclose(score.mean(0), 0.0, atol=0.02)
  density = lambda m, a: jnp.sum(norm.logpdf(a, m, std))
  biased = jax.vmap(jax.grad(density), in_axes=(None, 0))(mean, a).mean(0)
  assert float(biased[1]) < -0.3, biased          # mean 0.8: 34% of the samples clip at 1


def test_agc_hand_values():
  agc = im.clip_by_agc(0.3)
  params = {"a": jnp.array([[3.0, 4.0]]), "b": jnp.array([3.0, 4.0]), "z": jnp.zeros(2)}
  grads = {"a": jnp.array([[0.0, 6.0]]), "b": jnp.array([0.3, 0.4]), "z": jnp.array([1.0, 0.0])}
  out, _ = agc.update(grads, agc.init(params), params)
  np.testing.assert_allclose(out["a"], [[0.0, 1.5]], rtol=1e-6)   # |g| 6 -> 0.3 * |p| = 1.5
  np.testing.assert_allclose(out["b"], [0.3, 0.4], rtol=1e-6)     # |g| 0.5 < 1.5: unchanged
  np.testing.assert_allclose(out["z"], [3e-4, 0.0], rtol=1e-6)    # |p| = 0: 0.3 * 1e-3
  off = im.clip_by_agc(0.0)
  np.testing.assert_allclose(off.update(grads, off.init(params), params)[0]["a"], grads["a"])


def test_laprop_matches_a_numpy_reference():
  lr, b1, b2, eps, clip, warmup = 1e-2, 0.9, 0.999, 1e-20, 0.3, 3
  opt = im.laprop(lr, agc=clip, eps=eps, b1=b1, b2=b2, warmup=warmup)
  rng = np.random.default_rng(0)
  params = {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)}
  state = opt.init(params)
  step = jax.jit(opt.update)
  p = np.asarray(params["w"], np.float64)
  nu, mu = np.zeros_like(p), np.zeros_like(p)
  for k in range(1, 7):
    g = rng.normal(size=p.shape) * (10.0 if k == 2 else 1.0)      # step 2 gets clipped
    updates, state = step({"w": jnp.asarray(g, jnp.float32)}, state, params)
    params = optax.apply_updates(params, updates)
    g = g / max(1.0, np.linalg.norm(g) / (clip * max(1e-3, np.linalg.norm(p))))
    nu = b2 * nu + (1 - b2) * g ** 2
    u = g / (np.sqrt(nu / (1 - b2 ** k)) + eps)
    mu = b1 * mu + (1 - b1) * u
    p = p - lr * min(1.0, (k - 1) / warmup) * mu / (1 - b1 ** k)
    np.testing.assert_allclose(params["w"], p, rtol=1e-5, atol=1e-7)
  assert not np.allclose(p, rng.normal(size=p.shape))


def _toy_imagine_v3(batch=8, horizon=4):
  """`_toy_imagine` with continuation probabilities below 1 and a start continuation."""
  base = _toy_imagine(batch, horizon)

  def imagine_fn(key, policy_fn):
    traj = base(key, policy_fn)
    x = traj.feat[..., 0]
    return traj._replace(cont=0.9 - 0.3 * jnp.tanh(x[:, 1:] ** 2),
                         start_cont=0.8 + 0.1 * jnp.tanh(x[:, 0]))

  return imagine_fn


def _reference_update(c, state, key, imagine_fn, replay=None):
  """A slow re-implementation of the update, written from DreamerV3's `imag_loss` and
  `repl_loss` (loops over time; its own networks and optimizer chain): (new state, actor
  loss, critic loss)."""
  sg = jax.lax.stop_gradient
  hidden = (c.hidden,) * c.layers
  actor_net = MLP(hidden, 2, activation=nn.silu, layer_norm=True)
  critic_net = MLP(hidden, c.num_bins, activation=nn.silu, layer_norm=True,
                   zero_init_output=True)
  bins = transforms.symlog_bins(c.num_bins)
  value = lambda p, f: transforms.twohot_decode(critic_net.apply(p, f), bins)
  norm = jax.scipy.stats.norm

  def dist(p, f):
    mean, raw = jnp.split(actor_net.apply(p, f), 2, -1)
    return jnp.tanh(mean), (c.max_std - c.min_std) * jax.nn.sigmoid(raw + 2.0) + c.min_std

  def policy(p, k, f):
    mean, std = dist(p, f)
    x = mean + std * jax.random.normal(k, mean.shape)
    return x + sg(jnp.clip(x, -1, 1) - x)

  tar = state.critic if c.return_critic == "fast" else state.slow_critic

  def lambda_loop(reward, disc, boot, lam):     # G_t over t = 0..T-2 from step t + 1 on
    g, out = boot[:, -1], []
    for t in reversed(range(reward.shape[1] - 1)):
      g = reward[:, t + 1] + disc[:, t + 1] * ((1 - lam[:, t + 1]) * boot[:, t + 1]
                                               + lam[:, t + 1] * g)
      out.append(g)
    return jnp.stack(out[::-1], 1)

  def imag_returns(traj):
    n, h = traj.reward.shape
    pad = lambda x: jnp.concatenate([jnp.zeros((n, 1)), x], 1)       # V3's [N, H + 1]
    v = value(tar, traj.feat)
    ret = lambda_loop(pad(traj.reward), pad(c.discount * traj.cont), v,
                      jnp.full((n, h + 1), c.lambda_))
    if c.weights == "alive":
      w = [jnp.prod(traj.cont[:, :t], 1) for t in range(h)]
    else:
      w = [jnp.prod(c.discount * traj.cont[:, :t], 1) * traj.start_cont for t in range(h)]
    return ret, sg(jnp.stack(w, 1))                  # V3: sg(weight)

  def actor_loss(p):
    traj = imagine_fn(key, lambda k, f: policy(p, k, f))
    if c.actor_grad == "reinforce":
      traj = sg(traj)
    ret, w = imag_returns(traj)
    lo, hi = jnp.percentile(sg(ret), jnp.array([c.return_norm_low, c.return_norm_high]))
    low = c.return_norm_decay * state.return_norm.low + (1 - c.return_norm_decay) * lo
    high = c.return_norm_decay * state.return_norm.high + (1 - c.return_norm_decay) * hi
    scale = jnp.maximum(c.return_norm_limit, high - low)
    mean, std = dist(p, sg(traj.feat[:, :-1]))
    if c.actor_grad == "dynamics":
      obj = ret / scale
    else:
      a = sg(traj.action)
      logp = jnp.where(a >= 1, norm.logsf((1 - mean) / std),
                       jnp.where(a <= -1, norm.logcdf((-1 - mean) / std),
                                 norm.logpdf(a, mean, std))).sum(-1)
      obj = logp * sg((ret - value(tar, traj.feat[:, :-1])) / scale)
    ent = jnp.sum(0.5 * jnp.log(2 * jnp.pi * std ** 2) + 0.5, -1)
    return -jnp.mean(w * (obj + c.entropy_scale * ent)), (sg(traj), sg(ret), w, low, high)

  (a_loss, (traj, ret, w, low, high)), a_grad = jax.value_and_grad(
      actor_loss, has_aux=True)(state.actor)

  def critic_loss(p):
    f = traj.feat[:, :-1]
    nll = lambda f, y: transforms.twohot_loss(critic_net.apply(p, f), y, bins)
    loss = jnp.mean(w * (nll(f, ret) + c.slow_reg * nll(f, value(state.slow_critic, f))))
    if replay is not None:
      b, t = replay.reward.shape
      if replay.start_index is None:
        boot = ret[:, 0].reshape(b, t)
      else:
        boot = value(tar, replay.feat).reshape(-1).at[replay.start_index].set(ret[:, 0])
        boot = boot.reshape(b, t)
      last = replay.last.astype(jnp.float32)
      rret = lambda_loop(replay.reward, c.discount * replay.cont, boot, c.lambda_ * (1 - last))
      rf = replay.feat[:, :-1]
      loss += c.replay_scale * jnp.mean((1 - last[:, :-1]) * (
          nll(rf, rret) + c.slow_reg * nll(rf, value(state.slow_critic, rf))))
    return loss

  c_loss, c_grad = jax.value_and_grad(critic_loss)(state.critic)
  if c.optimizer == "adam":
    make = lambda lr: optax.chain(optax.clip_by_global_norm(c.grad_clip), optax.adam(lr, eps=1e-5))
  else:
    make = lambda lr: im.laprop(lr, agc=c.agc, warmup=c.warmup)
  a_up, a_opt = make(c.actor_lr).update(a_grad, state.actor_opt, state.actor)
  c_up, c_opt = make(c.critic_lr).update(c_grad, state.critic_opt, state.critic)
  critic = optax.apply_updates(state.critic, c_up)
  d = c.slow_critic_decay
  new = im.ActorCriticState(
      actor=optax.apply_updates(state.actor, a_up), critic=critic,
      slow_critic=jax.tree.map(lambda s, p: d * s + (1 - d) * p, state.slow_critic, critic),
      actor_opt=a_opt, critic_opt=c_opt, return_norm=im.ReturnNormState(low=low, high=high),
      updates=state.updates + 1)
  return new, a_loss, c_loss


def _replay_for(key, b, t, start_index=None):
  """Replayed trajectories [b, t] whose steps at `start_index` (default all) are the toy
  starts drawn from `key`."""
  k1, k2, k3 = jax.random.split(jax.random.fold_in(key, 7), 3)
  x = jax.random.uniform(k1, (b * t,), minval=-2.0, maxval=2.0)
  x0 = jax.random.uniform(key, (8,), minval=-2.0, maxval=2.0)       # `_toy_imagine`'s starts
  x = x0 if start_index is None else x.at[start_index].set(x0)
  feat = jnp.stack([x, jnp.ones_like(x)], -1).reshape(b, t, 2)
  last = jax.random.bernoulli(k2, 0.2, (b, t))
  cont = jnp.where(last & jax.random.bernoulli(k3, 0.5, (b, t)), 0.0, 1.0)
  return im.Replayed(feat=feat, reward=-feat[..., 0] ** 2, cont=cont, last=last,
                     start_index=start_index)


V3_OPTIONS = dict(return_critic="fast", slow_reg=1.0, weights="discounted", replay_scale=0.3,
                  optimizer="laprop", warmup=2, discount=1 - 1 / 333, return_norm_low=10.0,
                  return_norm_high=90.0, return_norm_limit=0.5, actor_lr=1e-2,
                  critic_lr=1e-2)


@pytest.mark.parametrize("case", ["defaults", "reinforce", "v3", "v3_subset_dynamics"])
def test_update_matches_the_slow_reference(case):
  base = dict(hidden=8, layers=1, horizon=4, slow_critic_decay=0.5)
  options = {"defaults": {}, "reinforce": dict(actor_grad="reinforce"),
             "v3": dict(actor_grad="reinforce", **V3_OPTIONS),
             "v3_subset_dynamics": V3_OPTIONS}[case]
  config = im.ActorCriticConfig(**base, **options)
  ac = im.make_actor_critic(2, 1, config=config)
  imagine_fn = _toy_imagine_v3() if case.startswith("v3") else _toy_imagine(8, 4)
  start_index = jnp.array([3, 0, 11, 5, 7, 1, 9, 4]) if case == "v3_subset_dynamics" else None
  replay_shape = (2, 4) if start_index is None else (3, 4)

  def both(state, key):
    replay = _replay_for(key, *replay_shape, start_index) if case.startswith("v3") else None
    new, metrics = ac.update(state, key, imagine_fn, replay)
    return new, metrics, _reference_update(config, state, key, imagine_fn, replay)

  both = jax.jit(both)
  state = ac.init(jax.random.key(0))
  # LaProp divides by the gradient's RMS with eps 1e-20, so float noise in tiny gradients
  # reaches the parameters at the step size's scale (1e-2): compare them to 1% of it, and the
  # losses, which no optimizer normalises, tightly.
  atol = 1e-4 if config.optimizer == "laprop" else 1e-6
  for i in range(3):          # three updates: the critic, slow critic and optimizers differ
    new, metrics, (want, a_loss, c_loss) = both(state, jax.random.key(i + 1))
    np.testing.assert_allclose(metrics["actor_loss"], a_loss, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(metrics["critic_loss"], c_loss, rtol=1e-5)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-5, atol=atol),
                 new, want)
    state = new
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()),
                                       state.critic, ac.init(jax.random.key(0)).critic))
  assert max(moved) > 1e-4                               # the updates did something
  assert ("replay_value_loss" in metrics) == case.startswith("v3")
  assert ("critic_slow_reg" in metrics) == case.startswith("v3")


def test_slow_regulariser_and_replay_loss_hand_values_at_init():
  # The zero-initialised critic's logits are uniform, so every two-hot loss is log(K): the
  # regulariser term is the mean weight times log K, the replay loss the mean of
  # (1 - last) * (1 + slow_reg) * log K.
  config = im.ActorCriticConfig(hidden=8, layers=1, horizon=4, slow_reg=1.0, replay_scale=0.3)
  ac = im.make_actor_critic(2, 1, config=config)
  state = ac.init(jax.random.key(0))
  replay = _replay_for(jax.random.key(1), 2, 4)
  _, m = jax.jit(lambda s, k, r: ac.update(s, k, _toy_imagine(8, 4), r))(
      state, jax.random.key(1), replay)
  log_k = np.log(config.num_bins)
  np.testing.assert_allclose(m["critic_slow_reg"], log_k, rtol=1e-5)    # weights are 1
  want = np.mean(1.0 - np.asarray(replay.last[:, :-1], np.float32)) * 2 * log_k
  np.testing.assert_allclose(m["replay_value_loss"], want, rtol=1e-5)
  np.testing.assert_allclose(m["critic_loss"], log_k + log_k + 0.3 * want, rtol=1e-5)


def test_fast_critic_bootstraps_the_returns():
  results = {}
  for which in ("slow", "fast"):
    config = im.ActorCriticConfig(hidden=8, layers=1, horizon=4, slow_critic_decay=0.9,
                                  critic_lr=1e-2, return_critic=which)
    ac = im.make_actor_critic(2, 1, config=config)
    update = jax.jit(lambda s, k: ac.update(s, k, _toy_imagine(8, 4)))
    state = ac.init(jax.random.key(0))
    for i in range(3):
      state, _ = update(state, jax.random.key(i))
    key = jax.random.key(9)
    _, metrics = update(state, key)
    traj = _toy_imagine(8, 4)(key, lambda k, f: ac.act(state.actor, k, f))
    results[which] = [float(metrics["imag_return"]),
                      float(ac.returns(state.critic, traj)[0].mean()),
                      float(ac.returns(state.slow_critic, traj)[0].mean())]
  for which, (got, fast, slow) in results.items():
    assert abs(fast - slow) > 1e-3                  # the two critics disagree by now
    np.testing.assert_allclose(got, fast if which == "fast" else slow, rtol=1e-5)


def test_discounted_weights_and_new_fields_validate():
  config = im.ActorCriticConfig(hidden=8, layers=1, horizon=3, weights="discounted",
                                discount=0.5)
  ac = im.make_actor_critic(2, 1, config=config)
  traj = im.Imagined(feat=jnp.zeros((1, 4, 2)), action=jnp.zeros((1, 3, 1)),
                     reward=jnp.zeros((1, 3)), cont=jnp.array([[0.8, 0.5, 1.0]]),
                     start_cont=jnp.array([0.9]))
  _, weight = ac.returns(ac.init(jax.random.key(0)).critic, traj)
  np.testing.assert_allclose(weight, [[0.9, 0.9 * 0.5 * 0.8, 0.9 * 0.25 * 0.8 * 0.5]],
                             rtol=1e-6)
  for field, bad in (("return_critic", "target"), ("weights", "uniform"),
                     ("optimizer", "sgd"), ("slow_reg", -1.0), ("replay_scale", -0.1),
                     ("return_norm_high", 3.0), ("return_norm_limit", 0.0), ("warmup", -1)):
    with pytest.raises(ValueError, match=field):
      im.make_actor_critic(4, 1, config=im.ActorCriticConfig(**{field: bad}))


def test_dreamerv3_preset_validates_and_trains_two_steps():
  from mbrl_jax.algorithms import dreamer
  from mbrl_jax.models import rssm

  preset = dreamer.PRESETS["dreamerv3"]
  ac_config = preset.actor_critic
  assert (ac_config.actor_grad, ac_config.return_critic, ac_config.optimizer) == (
      "reinforce", "fast", "laprop")
  assert preset.imag_starts is None and preset.model_optimizer == "laprop"
  assert ac_config.replay_scale == 0.3 and ac_config.slow_reg == 1.0
  np.testing.assert_allclose(ac_config.discount, 1 - 1 / 333)
  # The preset's learning side on tiny networks and a tiny batch.
  config = dataclasses.replace(
      preset, env_steps=40 + 20, prefill=40, chunk_steps=20, train_every=10, batch_size=2,
      seq_len=8, eval_episodes=1,
      world_model=rssm.WorldModelConfig(deter=16, stoch=4, classes=4, hidden=16,
                                        mlp_layers=1),
      actor_critic=dataclasses.replace(ac_config, hidden=16, layers=1, horizon=4, warmup=1))
  with pytest.raises(ValueError, match="model_optimizer"):
    dataclasses.replace(config, model_optimizer="sgd")
  parts = dreamer.make_parts(config)
  state = dreamer.init(jax.random.key(0), config, parts)
  step = jax.jit(dreamer.make_train_step(config, parts))
  params, opt, ac_state = state.model_params, state.model_opt, state.ac
  history = []
  for i in range(2):
    params, opt, ac_state, metrics = step(params, opt, ac_state, state.buffer,
                                          jax.random.key(i))
    history.append((params, ac_state, metrics))
  for _, _, m in history:
    assert all(np.isfinite(float(v)) for v in m.values()), m
    assert "actor_critic/replay_value_loss" in m and "actor_critic/critic_slow_reg" in m
  assert int(ac_state.updates) == 2
  # The warm-up of 1 update makes the first step's learning rate 0 and the second's 4e-5.
  change = lambda a, b: max(float(jnp.abs(x - y).max())
                            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert change(history[0][0], state.model_params) == 0.0
  assert change(history[0][1].critic, state.ac.critic) == 0.0
  assert 0.0 < change(history[1][0], history[0][0]) <= 1.5 * 4e-5
  assert 0.0 < change(history[1][1].critic, history[0][1].critic) <= 1.5 * 4e-5
