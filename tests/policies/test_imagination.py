"""Imagination actor-critic: lambda-returns and the return normaliser against hand-computed
values; the slow critic's EMA; learning on a toy latent world."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
