"""SAC: update math against an independent reference on a tiny case, the tanh-Gaussian
log-probability, Polyak averaging, scanned updates, and learning a one-step bandit."""


import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax.policies import sac as sac_lib
from mbrl_jax.types import Transition
from tests.conftest import count_compilations

O, A, B = 3, 2, 6
GAMMA, TAU, INIT_ALPHA, TARGET_H = 0.9, 0.3, 0.5, -1.5
LR = 1e-2


def make_tiny(**kw):
  args = dict(hidden_sizes=(4,), actor_lr=LR, critic_lr=LR, alpha_lr=LR, gamma=GAMMA, tau=TAU,
              init_alpha=INIT_ALPHA, target_entropy=TARGET_H)
  return sac_lib.make_sac(O, A, **{**args, **kw})


def tiny_batch(key):
  k = jax.random.split(key, 4)
  return Transition(
      obs=jax.random.normal(k[0], (B, O)), action=jax.random.uniform(k[1], (B, A), minval=-1.0),
      reward=jax.random.normal(k[2], (B,)), next_obs=jax.random.normal(k[3], (B, O)),
      terminated=jnp.array([0.0, 1.0, 0.0, 1.0, 0.0, 0.0]),
      truncated=jnp.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0]))


# ---- an independent reference: plain formulas on the flax parameter dicts -------------------

def mlp(p, x):
  h = np.maximum(x @ np.asarray(p["Dense_0"]["kernel"]) + np.asarray(p["Dense_0"]["bias"]), 0)
  return h @ np.asarray(p["Dense_1"]["kernel"]) + np.asarray(p["Dense_1"]["bias"])


def actor_ref(actor, obs):
  out = mlp(actor["params"], obs)
  mean, raw = out[:, :A], out[:, A:]
  log_std = -5.0 + 3.5 * (np.tanh(raw) + 1.0)                 # squashed into [-5, 2]
  return mean, log_std


def sample_ref(mean, log_std, eps):
  u = mean + np.exp(log_std) * eps
  a = np.tanh(u)
  normal = -0.5 * eps**2 - log_std - 0.5 * np.log(2 * np.pi)
  return a, (normal - np.log(1.0 - a**2)).sum(-1)             # change of variables, naively


def critics_ref(critic, obs, action):
  x = np.concatenate([obs, action], -1)
  return np.stack([mlp(jax.tree.map(lambda l: np.asarray(l)[i], critic["params"]), x)[:, 0]
                   for i in range(2)])


def losses_ref(params, batch, noise):
  b = jax.tree.map(lambda x: np.asarray(x, np.float64), batch)
  alpha = np.exp(float(params.log_alpha))
  m, s = actor_ref(params.actor, b.next_obs)
  a2, logp2 = sample_ref(m, s, np.asarray(noise.next, np.float64))
  qt = critics_ref(params.target_critic, b.next_obs, a2).min(0)
  y = b.reward + GAMMA * (1 - b.terminated) * (qt - alpha * logp2)     # truncation bootstraps
  q = critics_ref(params.critic, b.obs, b.action)
  critic_loss = ((q - y) ** 2).mean(1).sum()
  m, s = actor_ref(params.actor, b.obs)
  a, logp = sample_ref(m, s, np.asarray(noise.now, np.float64))
  actor_loss = (alpha * logp - critics_ref(params.critic, b.obs, a).min(0)).mean()
  alpha_loss = -(np.log(alpha) * (logp + TARGET_H)).mean()
  return dict(critic_loss=critic_loss, actor_loss=actor_loss, alpha_loss=alpha_loss,
              target=y, logp=logp)


@pytest.fixture(scope="module")
def tiny():
  sac = make_tiny()
  state = sac.init(jax.random.key(0))
  # Larger actor weights so the samples reach the saturating part of tanh.
  state = state._replace(params=state.params._replace(
      actor=jax.tree.map(lambda x: 2.0 * x, state.params.actor)))
  batch = tiny_batch(jax.random.key(1))
  key = jax.random.key(2)
  update = jax.jit(sac.update)
  new_state, metrics = update(state, batch, key)
  return sac, state, batch, key, new_state, metrics, update


def test_losses_match_reference(tiny):
  sac, state, batch, key, _, metrics, _ = tiny
  noise = sac.sample_noise(key, B)
  ref = losses_ref(state.params, batch, noise)
  for name in ("critic_loss", "actor_loss", "alpha_loss"):
    np.testing.assert_allclose(metrics[name], ref[name], rtol=2e-4, atol=1e-5, err_msg=name)
  np.testing.assert_allclose(metrics["target_q"], ref["target"].mean(), rtol=2e-4, atol=1e-5)
  np.testing.assert_allclose(metrics["alpha"], INIT_ALPHA, rtol=1e-6)
  # The terminated rows' targets are their rewards; the truncated row bootstraps.
  np.testing.assert_allclose(ref["target"][[1, 3]], np.asarray(batch.reward)[[1, 3]])
  assert abs(ref["target"][2] - float(batch.reward[2])) > 1e-3


def test_terminated_masks_bootstrap_in_update(tiny):
  sac, state, batch, key, _, metrics, update = tiny
  # Changing next_obs of terminated rows must not change the critic loss; of others it must.
  moved = batch.next_obs.at[jnp.array([1, 3])].add(5.0)
  _, m1 = update(state, batch._replace(next_obs=moved), key)
  np.testing.assert_allclose(m1["critic_loss"], metrics["critic_loss"], rtol=1e-6)
  moved = batch.next_obs.at[2].add(5.0)
  _, m2 = update(state, batch._replace(next_obs=moved), key)
  assert abs(float(m2["critic_loss"]) - float(metrics["critic_loss"])) > 1e-4


def test_gradient_steps_and_polyak(tiny):
  sac, state, batch, key, new, _, _ = tiny
  noise = sac.sample_noise(key, B)
  ref = losses_ref(state.params, batch, noise)
  # Adam's first step is -lr * g / (|g| + eps), i.e. -lr * sign(g) for the alpha loss, whose
  # gradient with respect to log_alpha is -mean(log pi + target entropy).
  g = -(ref["logp"] + TARGET_H).mean()
  np.testing.assert_allclose(new.params.log_alpha - state.params.log_alpha, -LR * np.sign(g),
                             rtol=1e-4)
  # Critic and actor moved by at most lr per coordinate, and did move.
  for old, upd in ((state.params.critic, new.params.critic),
                   (state.params.actor, new.params.actor)):
    d = np.concatenate([np.ravel(u - o) for o, u in zip(jax.tree.leaves(old),
                                                        jax.tree.leaves(upd))])
    assert np.abs(d).max() <= LR * (1 + 1e-4) and np.abs(d).max() > 0.5 * LR
  # Polyak: target <- tau * new critic + (1 - tau) * old target.
  for t_old, c_new, t_new in zip(jax.tree.leaves(state.params.target_critic),
                                 jax.tree.leaves(new.params.critic),
                                 jax.tree.leaves(new.params.target_critic)):
    np.testing.assert_allclose(t_new, TAU * c_new + (1 - TAU) * t_old, rtol=1e-6, atol=1e-7)
  assert int(new.steps) == 1


def test_critic_gradient_direction_matches_numeric(tiny):
  """The critic step goes downhill on the reference loss (checked by finite differences on
  a few coordinates of the first critic's kernel)."""
  sac, state, batch, key, new, _, _ = tiny
  noise = sac.sample_noise(key, B)
  kernel = np.asarray(state.params.critic["params"]["Dense_0"]["kernel"])
  step = np.asarray(new.params.critic["params"]["Dense_0"]["kernel"]) - kernel
  h = 1e-3
  for idx in [(0, 0, 0), (0, 2, 1), (1, 4, 3), (1, 1, 2)]:
    def loss_at(delta):
      k = kernel.copy()
      k[idx] += delta
      crit = jax.tree.map(lambda x: x, state.params.critic)
      crit["params"]["Dense_0"]["kernel"] = k
      return losses_ref(state.params._replace(critic=crit), batch, noise)["critic_loss"]
    grad = (loss_at(h) - loss_at(-h)) / (2 * h)
    if abs(grad) > 1e-3:
      assert np.sign(step[idx]) == -np.sign(grad), (idx, grad, step[idx])


def test_fixed_alpha_does_not_move():
  sac = make_tiny(learn_alpha=False)
  state = sac.init(jax.random.key(0))
  new, m = jax.jit(sac.update)(state, tiny_batch(jax.random.key(1)), jax.random.key(2))
  assert float(new.params.log_alpha) == float(state.params.log_alpha)
  np.testing.assert_allclose(m["alpha"], INIT_ALPHA, rtol=1e-6)


def test_tanh_gaussian_log_prob_matches_distrax():
  mean = jnp.array([[0.3, -1.0], [2.0, 0.1], [-3.0, 0.0]])
  log_std = jnp.array([[-1.0, 0.5], [0.2, -2.0], [0.0, 1.0]])
  noise = jax.random.normal(jax.random.key(3), mean.shape)
  action, logp = sac_lib.tanh_gaussian_sample(mean, log_std, noise)
  dist = distrax.Transformed(distrax.MultivariateNormalDiag(mean, jnp.exp(log_std)),
                             distrax.Block(distrax.Tanh(), ndims=1))
  np.testing.assert_allclose(action, jnp.tanh(mean + jnp.exp(log_std) * noise), rtol=1e-6)
  keep = np.abs(np.asarray(action)).max(-1) < 0.999        # distrax's inverse is exact only here
  assert keep.sum() >= 2
  np.testing.assert_allclose(np.asarray(logp)[keep], np.asarray(dist.log_prob(action))[keep],
                             rtol=1e-3, atol=1e-3)
  # Far in the tail the stable formula stays finite.
  _, far = sac_lib.tanh_gaussian_sample(jnp.array([[30.0]]), jnp.array([[-5.0]]),
                                        jnp.array([[0.0]]))
  assert np.isfinite(far).all()


def test_act_shapes_bounds_and_determinism(tiny):
  sac, state, *_ = tiny
  obs = jax.random.normal(jax.random.key(4), (5, O))
  a = sac.act(state.params, obs, jax.random.key(5))
  assert a.shape == (5, A) and np.all(np.abs(a) <= 1.0)
  d = sac.act(state.params, obs, jax.random.key(5), deterministic=True)
  mean, _ = sac.actor_dist(state.params.actor, obs)
  np.testing.assert_allclose(d, jnp.tanh(mean), rtol=1e-6)
  assert sac.act(state.params, obs[0], jax.random.key(6)).shape == (A,)


def test_update_many_is_sequential_updates_and_does_not_recompile(tiny):
  sac, state, *_ = tiny
  G = 3
  batches = jax.vmap(tiny_batch)(jax.random.split(jax.random.key(7), G))
  key = jax.random.key(8)
  many = jax.jit(sac.update_many)
  out, metrics = many(state, batches, key)
  seq = state
  for i, k in enumerate(jax.random.split(key, G)):
    seq, _ = sac.update(seq, jax.tree.map(lambda x: x[i], batches), k)
  for x, y in zip(jax.tree.leaves(out.params), jax.tree.leaves(seq.params)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  assert int(out.steps) == G and metrics["critic_loss"].shape == ()
  with count_compilations() as c:
    out2, m2 = many(out, batches, jax.random.key(9))
    jax.block_until_ready(m2)
  assert c.count == 0


def test_learns_a_one_step_bandit():
  """Reward -(a0 - 0.5)^2 - (a1 + 0.3)^2, every step terminal: the mean action goes to
  (0.5, -0.3)."""
  sac = sac_lib.make_sac(O, A, hidden_sizes=(32, 32), actor_lr=3e-3, critic_lr=3e-3,
                         alpha_lr=3e-3, init_alpha=0.1, target_entropy=-4.0)
  goal = jnp.array([0.5, -0.3])

  def batch(key):
    k1, k2 = jax.random.split(key)
    obs = jax.random.normal(k1, (64, O))
    action = jax.random.uniform(k2, (64, A), minval=-1.0, maxval=1.0)
    reward = -jnp.sum(jnp.square(action - goal), -1)
    return Transition(obs=obs, action=action, reward=reward, next_obs=obs,
                      terminated=jnp.ones((64,)), truncated=jnp.zeros((64,)))

  @jax.jit
  def train(key):
    state = sac.init(key)
    batches = jax.vmap(batch)(jax.random.split(key, 400))
    return sac.update_many(state, batches, jax.random.fold_in(key, 1))[0]

  state = train(jax.random.key(0))
  obs = jax.random.normal(jax.random.key(1), (32, O))
  action = sac.act(state.params, obs, jax.random.key(2), deterministic=True)
  np.testing.assert_allclose(action.mean(0), goal, atol=0.1)


def test_actor_and_target_update_intervals():
  """actor_update_every=2: actor, alpha and their Adam states move on updates 0 and 2 only;
  target_update_every=3: the Polyak step happens on updates 0 and 3 only; the critic steps
  every time."""
  sac = make_tiny(actor_update_every=2, target_update_every=3)
  update = jax.jit(sac.update)
  batch = tiny_batch(jax.random.key(1))
  states = [sac.init(jax.random.key(0))]
  for i in range(4):
    states.append(update(states[-1], batch, jax.random.key(10 + i))[0])

  def same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

  for i in range(4):
    old, new = states[i], states[i + 1]
    assert not same(old.params.critic, new.params.critic), i
    actor_moves = i % 2 == 0
    assert same(old.params.actor, new.params.actor) != actor_moves, i
    assert same(old.actor_opt, new.actor_opt) != actor_moves, i
    assert (float(old.params.log_alpha) == float(new.params.log_alpha)) != actor_moves, i
    if i % 3 == 0:
      for t_old, c_new, t_new in zip(jax.tree.leaves(old.params.target_critic),
                                     jax.tree.leaves(new.params.critic),
                                     jax.tree.leaves(new.params.target_critic)):
        np.testing.assert_allclose(t_new, TAU * c_new + (1 - TAU) * t_old, rtol=1e-6, atol=1e-7)
    else:
      assert same(old.params.target_critic, new.params.target_critic), i
  counts = lambda opt: [int(x) for x in jax.tree.leaves(opt) if np.ndim(x) == 0]
  assert set(counts(states[-1].actor_opt)) == {2}                  # Adam steps taken
  assert set(counts(states[-1].critic_opt)) == {4}


def test_observe_keeps_running_statistics():
  sac = make_tiny(normalize_observations=True)
  state = sac.init(jax.random.key(0))
  rows = np.asarray(jax.random.normal(jax.random.key(1), (50, O))) * [1.0, 3.0, 0.1] + [0, 5, -2]
  observe = jax.jit(sac.observe)
  for chunk in (rows[:7], rows[7:8], rows[8:]):               # chunks of 7, 1 and 42 rows
    state = observe(state, jnp.asarray(chunk))
  st = state.params.obs_stats
  assert float(st.count) == 50
  np.testing.assert_allclose(st.mean, rows.mean(0), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(st.var, rows.var(0), rtol=1e-4)
  plain = make_tiny()
  untouched = plain.init(jax.random.key(0))
  assert plain.observe(untouched, jnp.asarray(rows)) is untouched   # off: a no-op
  with pytest.raises(ValueError, match="observe: obs must be"):
    sac.observe(state, jnp.zeros((O,)))


def test_normalized_sac_is_plain_sac_on_standardised_observations():
  """With statistics (mean m, std s), acting and updating equal a SAC without normalisation
  given (obs - m) / s, from the same initial weights and keys."""
  norm, plain = make_tiny(normalize_observations=True), make_tiny()
  m, sd = jnp.array([0.5, -1.0, 2.0]), jnp.array([2.0, 0.5, 1e-5])   # the last one floored
  s_eff = jnp.maximum(sd, 1e-3)
  state_n = norm.init(jax.random.key(0))
  state_n = state_n._replace(params=state_n.params._replace(
      obs_stats=sac_lib.ObsStats(count=jnp.array(10.0), mean=m, var=sd**2)))
  state_p = plain.init(jax.random.key(0))
  batch = tiny_batch(jax.random.key(1))
  std_batch = batch._replace(obs=(batch.obs - m) / s_eff, next_obs=(batch.next_obs - m) / s_eff)
  np.testing.assert_allclose(norm.act(state_n.params, batch.obs, None, deterministic=True),
                             plain.act(state_p.params, std_batch.obs, None, deterministic=True),
                             rtol=1e-5, atol=1e-6)
  new_n, aux_n = jax.jit(norm.update)(state_n, batch, jax.random.key(2))
  new_p, aux_p = jax.jit(plain.update)(state_p, std_batch, jax.random.key(2))
  np.testing.assert_allclose(aux_n["critic_loss"], aux_p["critic_loss"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves((new_n.params.actor, new_n.params.critic)),
                  jax.tree.leaves((new_p.params.actor, new_p.params.critic))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  np.testing.assert_array_equal(new_n.params.obs_stats.mean, m)     # updates leave them


@pytest.mark.parametrize("kw,message", [
    (dict(tau=0.0), "tau"), (dict(gamma=1.5), "gamma"), (dict(actor_lr=0.0), "actor_lr"),
    (dict(hidden_sizes=()), "hidden_sizes"), (dict(init_alpha=-1.0), "init_alpha"),
    (dict(actor_update_every=0), "actor_update_every"),
    (dict(target_update_every=1.5), "target_update_every"),
    (dict(min_obs_std=0.0), "min_obs_std"),
])
def test_bad_arguments_are_named(kw, message):
  with pytest.raises(ValueError, match=message):
    make_tiny(**kw)
