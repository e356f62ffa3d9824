"""Fitting: learning on toy problems, uncertainty, early stopping, compile-once, bad input."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax.models import FitConfig, check_fit, make_ensemble, make_trainer, normalizer
from mbrl_jax.types import Transition
from tests.conftest import count_compilations


def _regression_data(x, y, capacity=None):
  """1-D regression as transitions: obs = x, delta = y; the action is a constant 0 (a
  zero-variance input, which the normaliser must survive)."""
  n = x.shape[0]
  capacity = capacity or n
  pad = lambda a: np.concatenate([a, np.zeros((capacity - n, *a.shape[1:]), a.dtype)])
  obs = pad(x[:, None].astype(np.float32))
  nxt = pad((x + y)[:, None].astype(np.float32))
  zeros = np.zeros(capacity, np.float32)
  data = Transition(jnp.asarray(obs), jnp.zeros((capacity, 1)), jnp.asarray(zeros),
                    jnp.asarray(nxt), jnp.asarray(zeros), jnp.asarray(zeros))
  return data, jnp.arange(capacity) < n


def _noise_std(x):
  return 0.05 + 0.25 * np.abs(x)


def _hetero_sample(rng, n, lo=-3.0, hi=3.0):
  x = rng.uniform(lo, hi, n)
  return x, x * np.sin(x) + _noise_std(x) * rng.normal(size=n)


FIT = FitConfig(learning_rate=3e-3, batch_size=64, max_epochs=150, holdout_ratio=0.1,
                patience=None, weight_decay=0.0)


@pytest.fixture(scope="module")
def hetero_fits():
  rng = np.random.default_rng(0)
  data, mask = _regression_data(*_hetero_sample(rng, 2000))
  fits = {}
  for probabilistic in (True, False):
    ens = make_ensemble(1, 1, num_members=5, hidden_sizes=(64, 64), probabilistic=probabilistic)
    trainer = make_trainer(ens, FIT)
    state, metrics = jax.jit(trainer.fit)(jax.random.key(1), trainer.init(ens.init(
        jax.random.key(2))), data, mask)
    check_fit(metrics)
    fits[probabilistic] = (ens, state.params, metrics, data, mask)
  return fits


def _gaussian_nll(y, mean, var):
  return 0.5 * np.mean(np.log(2 * np.pi * var) + (y - mean) ** 2 / var)


def test_probabilistic_beats_deterministic_on_heldout_nll(hetero_fits):
  rng = np.random.default_rng(10)
  x, y = _hetero_sample(rng, 4000)
  obs, act = jnp.asarray(x[:, None], jnp.float32), jnp.zeros((len(x), 1))
  ens_p, params_p, *_ = hetero_fits[True]
  u = ens_p.uncertainty(params_p, obs, act)
  var_p = np.asarray(u.aleatoric + u.epistemic)[:, 0]
  nll_p = _gaussian_nll(y, np.asarray(u.mean)[:, 0], var_p)
  # The deterministic ensemble gets the best constant variance: its training residual variance.
  ens_d, params_d, _, data, mask = hetero_fits[False]
  train_pred = np.asarray(ens_d.uncertainty(params_d, data.obs, data.action).mean)[:, 0]
  resid_var = np.var((np.asarray(data.next_obs - data.obs)[:, 0] - train_pred)[np.asarray(mask)])
  u_d = ens_d.uncertainty(params_d, obs, act)
  nll_d = _gaussian_nll(y, np.asarray(u_d.mean)[:, 0], resid_var + np.asarray(u_d.epistemic)[:, 0])
  print(f"held-out NLL: probabilistic {nll_p:.3f}, deterministic {nll_d:.3f}")
  assert nll_p < nll_d - 0.1


def test_predicted_variance_tracks_the_noise(hetero_fits):
  ens, params, *_ = hetero_fits[True]
  x = np.linspace(-2.8, 2.8, 57)
  u = ens.uncertainty(params, jnp.asarray(x[:, None], jnp.float32), jnp.zeros((57, 1)))
  pred_std = np.sqrt(np.asarray(u.aleatoric)[:, 0])
  true_std = _noise_std(x)
  corr = np.corrcoef(pred_std, true_std)[0, 1]
  ratio = pred_std / true_std
  print(f"corr(predicted std, true std) = {corr:.3f}; ratio median {np.median(ratio):.2f}")
  assert corr > 0.9
  assert 0.6 < np.median(ratio) < 1.5


def test_member_disagreement_grows_away_from_the_data(hetero_fits):
  ens, params, *_ = hetero_fits[True]
  inside = np.linspace(-2.5, 2.5, 50)
  outside = np.concatenate([np.linspace(-9, -6, 25), np.linspace(6, 9, 25)])
  epi = lambda x: np.asarray(ens.uncertainty(params, jnp.asarray(x[:, None], jnp.float32),
                                             jnp.zeros((len(x), 1))).epistemic)[:, 0]
  print(f"epistemic variance inside {epi(inside).mean():.2e}, outside {epi(outside).mean():.2e}")
  assert epi(outside).mean() > 20 * epi(inside).mean()


def test_loss_falls_and_elites_are_the_best_members(hetero_fits):
  for probabilistic in (True, False):
    _, params, metrics, *_ = hetero_fits[probabilistic]
    loss = np.asarray(metrics.train_loss)
    assert int(metrics.epochs) == FIT.max_epochs          # patience=None trains every epoch
    assert (loss[-10:].mean(0) < loss[:3].mean(0)).all()
    best = np.asarray(metrics.best_holdout_mse)
    np.testing.assert_array_equal(params.elites, np.argsort(best))
    held = np.asarray(metrics.holdout_mse)
    assert (best <= held.min(0) * (1 + FIT.improvement_threshold) + 1e-9).all()


@pytest.fixture(scope="module")
def small():
  ens = make_ensemble(2, 1, num_members=3, num_elites=2, hidden_sizes=(32,))
  rng = np.random.default_rng(0)
  n, capacity = 300, 512
  obs = rng.normal(size=(capacity, 2)).astype(np.float32)
  act = rng.uniform(-1, 1, size=(capacity, 1)).astype(np.float32)
  nxt = obs + 0.5 * np.tanh(obs) + 0.3 * act
  z = np.zeros(capacity, np.float32)
  data = Transition(*map(jnp.asarray, (obs, act, z, nxt, z, z)))
  return ens, data, jnp.arange(capacity) < n


def test_fitting_twice_with_new_data_compiles_once(small):
  ens, data, mask = small
  trainer = make_trainer(ens, FitConfig(max_epochs=5))
  fit = jax.jit(trainer.fit)
  state = trainer.init(ens.init(jax.random.key(0)))
  state, _ = fit(jax.random.key(1), state, data, mask)          # first fit compiles
  new_data = jax.tree.map(lambda a: a * 1.5, data)
  new_mask = jnp.arange(mask.shape[0]) < 480                     # more data, same capacity
  key = jax.random.key(2)
  with count_compilations() as c:
    state, metrics = fit(key, state, new_data, new_mask)
    jax.block_until_ready(state)
  assert c.count == 0
  assert int(metrics.num_train) + int(metrics.num_holdout) == 480


def test_early_stopping_stops_when_holdout_stalls(small):
  ens, data, mask = small
  # Pure noise targets: nothing to learn, so the holdout error stops improving quickly.
  rng = np.random.default_rng(3)
  noise = data._replace(next_obs=data.obs + jnp.asarray(rng.normal(size=data.obs.shape),
                                                        jnp.float32))
  trainer = make_trainer(ens, FitConfig(max_epochs=200, patience=3))
  _, metrics = jax.jit(trainer.fit)(jax.random.key(0), trainer.init(ens.init(jax.random.key(0))),
                                    noise, mask)
  epochs = int(metrics.epochs)
  assert 3 < epochs < 200
  assert np.isfinite(np.asarray(metrics.train_loss)[:epochs]).all()
  assert np.isnan(np.asarray(metrics.train_loss)[epochs:]).all()


@pytest.mark.parametrize("bootstrap", [True, False])
def test_bootstrap_and_permutation_both_learn(small, bootstrap):
  ens, data, mask = small
  trainer = make_trainer(ens, FitConfig(max_epochs=30, patience=None, bootstrap=bootstrap))
  _, metrics = jax.jit(trainer.fit)(jax.random.key(0), trainer.init(ens.init(jax.random.key(0))),
                                    data, mask)
  held = np.asarray(metrics.holdout_mse)
  assert (held[-1] < 0.2 * held[0]).all()


@pytest.mark.parametrize("mode,bound", [("decoupled", 0.6), ("l2", 0.85)])
def test_weight_decay_shrinks_kernels(small, mode, bound):
  # decoupled: each step shrinks kernels by lr * wd = 1%; l2: the gradient is dominated by
  # wd * w, and Adam's normalisation turns that into ~lr = 1e-3 towards 0 per entry per step
  # (80 steps here, on kernels with entries of std 0.2-0.6).
  wd = 10.0
  ens, data, mask = small
  norms = {}
  for w in (0.0, wd):
    trainer = make_trainer(ens, FitConfig(max_epochs=10, patience=None, weight_decay=w,
                                          weight_decay_mode=mode))
    state, _ = jax.jit(trainer.fit)(jax.random.key(0), trainer.init(ens.init(jax.random.key(0))),
                                    data, mask)
    norms[w] = float(sum(jnp.sum(p["kernel"] ** 2) for p in state.params.net["params"].values()))
  print(f"{mode}: kernel norm^2 {norms[0.0]:.2f} without decay, {norms[wd]:.2f} with")
  assert norms[wd] < bound * norms[0.0]


def _numpy_adam(w, g, m, v, t, *, lr, wd, decay, mode, b1=0.9, b2=0.999, eps=1e-8):
  """One step of torch's Adam(weight_decay=wd) ("l2") or AdamW ("decoupled") on one array."""
  if decay and mode == "l2":
    g = g + wd * w
  m = b1 * m + (1 - b1) * g
  v = b2 * v + (1 - b2) * g * g
  step = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
  if decay and mode == "decoupled":
    step = step + wd * w
  return w - lr * step, m, v


@pytest.mark.parametrize("mode", ["l2", "decoupled"])
def test_weight_decay_steps_match_numpy(mode):
  """Two Adam steps (two one-step fits on the same data) against the NumPy formulas, with
  the gradient of the ensemble's loss on the whole (normalised) dataset."""
  ens = make_ensemble(1, 1, num_members=2, hidden_sizes=(3,))
  rng = np.random.default_rng(4)
  n = 16
  obs = rng.normal(size=(n, 1)).astype(np.float32)
  act = rng.uniform(-1, 1, size=(n, 1)).astype(np.float32)
  z = np.zeros(n, np.float32)
  data = Transition(*map(jnp.asarray, (obs, act, z, obs + np.sin(3 * obs) + act, z, z)))
  mask = jnp.ones(n, bool)
  lr, wd = 1e-2, 0.5
  config = FitConfig(learning_rate=lr, weight_decay=wd, weight_decay_mode=mode, batch_size=n,
                     max_epochs=1, holdout_ratio=0.0, patience=None, bootstrap=False,
                     normalize_targets=False)
  trainer = make_trainer(ens, config)
  fit = jax.jit(trainer.fit)
  state = trainer.init(ens.init(jax.random.key(0)))

  params = state.params
  x = np.concatenate([obs, act], -1)
  x = normalizer.normalize(normalizer.fit(jnp.asarray(x)), jnp.asarray(x))
  y = ens.targets(data.obs, data.action, data.reward, data.next_obs)    # raw targets
  xe, ye = jnp.broadcast_to(x, (2, n, 2)), jnp.broadcast_to(y, (2, n, 1))

  def total(trainable):          # what the trainer differentiates: the members' summed loss
    net, lo, hi = trainable
    p = params._replace(net=net, min_logvar=lo, max_logvar=hi)
    return ens.loss(p, xe, ye, jnp.ones((2, n)))[0].sum()

  trainable = (params.net, params.min_logvar, params.max_logvar)
  flat, treedef = jax.tree_util.tree_flatten_with_path(trainable)
  paths = [jax.tree_util.keystr(path) for path, _ in flat]
  decay = ["kernel" in path for path in paths]          # kernels only, not biases or bounds
  w = [np.asarray(leaf, np.float64) for _, leaf in flat]
  m = [np.zeros_like(a) for a in w]
  v = [np.zeros_like(a) for a in w]
  other = "decoupled" if mode == "l2" else "l2"
  for t in (1, 2):
    at_w = jax.tree.unflatten(treedef, [jnp.asarray(a, jnp.float32) for a in w])
    g = [np.asarray(a, np.float64) for a in jax.tree.leaves(jax.grad(total)(at_w))]
    if t == 1:   # the two modes really differ here (wd * w is comparable to the gradient)
      gap = max(np.abs(_numpy_adam(w[i], g[i], m[i], v[i], t, lr=lr, wd=wd, decay=True,
                                   mode=mode)[0]
                       - _numpy_adam(w[i], g[i], m[i], v[i], t, lr=lr, wd=wd, decay=True,
                                     mode=other)[0]).max()
                for i in range(len(w)) if decay[i])
      assert gap > 1e-3
    for i in range(len(w)):
      w[i], m[i], v[i] = _numpy_adam(w[i], g[i], m[i], v[i], t, lr=lr, wd=wd, decay=decay[i],
                                     mode=mode)
    state, _ = fit(jax.random.key(t), state, data, mask)
    got = jax.tree.leaves((state.params.net, state.params.min_logvar, state.params.max_logvar))
    for path, a, b in zip(paths, got, w):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"step {t} {path}")


def _counting(ens, calls):
  """`ens` whose loss reports every call (a grad step or a holdout batch) to `calls`; under
  vmap the report comes once per seed."""
  def loss(params, x, y, w):
    jax.debug.callback(lambda _: calls.append(1), params.max_logvar)
    return ens.loss(params, x, y, w)
  return ens._replace(loss=loss)


@pytest.fixture(scope="module")
def stopped_fits(small):
  """Two seeds fitted on noise with patience, vmapped together and one at a time."""
  ens, data, mask = small
  rng = np.random.default_rng(3)
  noise = data._replace(next_obs=data.obs + jnp.asarray(rng.normal(size=data.obs.shape),
                                                        jnp.float32))
  config = FitConfig(max_epochs=60, patience=2, improvement_threshold=0.02)
  keys = jax.random.split(jax.random.key(5), 2)
  out = {}
  calls = []
  trainer = make_trainer(_counting(ens, calls), config)
  states = jax.vmap(lambda k: trainer.init(ens.init(k)))(keys)
  out["vmap"] = jax.jit(jax.vmap(trainer.fit, in_axes=(0, 0, None, None)))(
      keys, states, noise, mask)
  jax.effects_barrier()
  out["vmap_calls"] = len(calls)
  fit = jax.jit(trainer.fit)
  for i in range(2):
    calls.clear()
    out[i] = fit(keys[i], trainer.init(ens.init(keys[i])), noise, mask)
    jax.effects_barrier()
    out[f"calls_{i}"] = len(calls)
  out["config"] = config
  return out


def test_epochs_after_the_stop_are_not_run(stopped_fits):
  """Each seed stops early, and the vmapped pair runs only as many epochs as the longer one
  needs (a scan of max_epochs with a cond would run all 60 for both under vmap)."""
  f = stopped_fits
  epochs = [int(f[i][1].epochs) for i in range(2)]
  print(f"epochs {epochs}; loss calls {f['calls_0']}, {f['calls_1']}, vmapped {f['vmap_calls']}")
  assert max(epochs) < f["config"].max_epochs
  assert epochs[0] != epochs[1]            # so the vmapped pair has a seed that stops first
  # Calls per epoch are the same for every epoch (same data), so calls count epochs.
  per_epoch = f["calls_0"] // epochs[0]
  assert f["calls_0"] == per_epoch * epochs[0] and f["calls_1"] == per_epoch * epochs[1]
  assert f["vmap_calls"] == 2 * per_epoch * max(epochs)
  for i in range(2):
    loss = np.asarray(f[i][1].train_loss)
    assert np.isfinite(loss[:epochs[i]]).all() and np.isnan(loss[epochs[i]:]).all()


def test_vmapped_fits_equal_unbatched_fits(stopped_fits):
  """The seed that stops first keeps its parameters, optimizer state and NaN metrics while
  the other one trains on."""
  f = stopped_fits
  for i in range(2):
    batched = jax.tree.map(lambda a: a[i], f["vmap"])
    flat_b = jax.tree_util.tree_flatten_with_path(batched)[0]
    flat_u = jax.tree.leaves(f[i])
    assert len(flat_b) == len(flat_u)
    for (path, a), b in zip(flat_b, flat_u):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5,
                                 err_msg=f"seed {i} {jax.tree_util.keystr(path)}")


@pytest.mark.parametrize("normalize_targets", [False, True])
def test_target_normalisation_is_an_option(small, normalize_targets):
  """Off (as PETS and mbrl-lib): the target normaliser is the identity and the scored MSE is
  in the targets' own units; on (the default): both are standardised."""
  ens, data, mask = small
  data = data._replace(next_obs=data.obs + 3.0 * (data.next_obs - data.obs) + 1.0)
  trainer = make_trainer(ens, FitConfig(max_epochs=2, holdout_ratio=0.0, patience=None,
                                        normalize_targets=normalize_targets))
  state, metrics = jax.jit(trainer.fit)(jax.random.key(0),
                                        trainer.init(ens.init(jax.random.key(0))), data, mask)
  p = state.params
  y = np.asarray(ens.targets(data.obs, data.action, data.reward, data.next_obs))[np.asarray(mask)]
  if normalize_targets:
    np.testing.assert_allclose(p.output_norm.mean, y.mean(0), rtol=1e-4)
    np.testing.assert_allclose(p.output_norm.std, y.std(0), rtol=1e-4)
    scale = y.std(0)
  else:
    np.testing.assert_array_equal(p.output_norm.mean, 0.0)
    np.testing.assert_array_equal(p.output_norm.std, 1.0)
    scale = np.ones(y.shape[-1])
  # holdout_ratio=0 scores the training rows (all valid rows): the same MSE from `apply`.
  pred = np.asarray(ens.apply(p, data.obs[np.asarray(mask)], data.action[np.asarray(mask)]).mean)
  mse = (((pred - y) / scale) ** 2).mean(axis=(1, 2))                  # [E]
  np.testing.assert_allclose(metrics.best_holdout_mse, mse, rtol=2e-3)


def test_default_fit_config():
  c = FitConfig()
  assert c.weight_decay_mode == "l2"     # mbrl-lib's torch Adam(weight_decay=...)
  assert c.normalize_targets             # not mbrl-lib's: see FitConfig.normalize_targets


def test_nan_in_data_is_reported(small):
  ens, data, mask = small
  bad = data._replace(next_obs=data.next_obs.at[7, 1].set(jnp.nan))
  trainer = make_trainer(ens, FitConfig(max_epochs=2))
  _, metrics = jax.jit(trainer.fit)(jax.random.key(0), trainer.init(ens.init(jax.random.key(0))),
                                    bad, mask)
  with pytest.raises(FloatingPointError, match="NaN or Inf"):
    check_fit(metrics)
  # A NaN in a row that is masked out is not an error.
  ok = data._replace(next_obs=data.next_obs.at[400, 1].set(jnp.nan))
  _, metrics = jax.jit(trainer.fit)(jax.random.key(0), trainer.init(ens.init(jax.random.key(0))),
                                    ok, mask)
  check_fit(metrics)


def test_diverging_loss_is_reported(small):
  ens, data, mask = small
  huge = data._replace(next_obs=data.next_obs * 1e30)
  trainer = make_trainer(ens, FitConfig(max_epochs=2, learning_rate=1e30))
  _, metrics = jax.jit(trainer.fit)(jax.random.key(0), trainer.init(ens.init(jax.random.key(0))),
                                    huge, mask)
  with pytest.raises(FloatingPointError, match="loss"):
    check_fit(metrics)


@pytest.mark.parametrize("field,value", [
    ("batch_size", 0), ("max_epochs", -1), ("holdout_ratio", 1.0), ("learning_rate", 0.0),
    ("patience", 0), ("weight_decay", -1.0), ("weight_decay_mode", "adamw")])
def test_bad_config_names_the_field(field, value):
  with pytest.raises(ValueError, match=f"FitConfig.{field}"):
    dataclasses.replace(FitConfig(), **{field: value})


def test_mask_of_wrong_shape_is_refused(small):
  ens, data, _ = small
  trainer = make_trainer(ens, FitConfig(max_epochs=1))
  with pytest.raises(ValueError, match="mask has shape"):
    trainer.fit(jax.random.key(0), trainer.init(ens.init(jax.random.key(0))), data,
                jnp.ones((10,), bool))


def test_constant_dimension_is_predicted_exactly(small):
  """A dimension that never changes in the data (a goal position) must not drift in model
  rollouts: predicted exactly, whatever the inputs. A small output error there used to feed
  back through a near-constant input and blow a reacher rollout up by 1e20 in 15 steps."""
  ens, data, mask = small
  obs = data.obs.at[:, 1].set(0.25)
  const = data._replace(obs=obs, next_obs=data.next_obs.at[:, 1].set(0.25))
  trainer = make_trainer(ens, FitConfig(max_epochs=5))
  state, _ = jax.jit(trainer.fit)(jax.random.key(0), trainer.init(ens.init(jax.random.key(0))),
                                  const, mask)
  far = jax.random.normal(jax.random.key(1), (30, 2)) * 50
  act = jnp.ones((30, 1))
  for mode in ("tsinf", "ts1", "expectation"):
    step = ens.predict(state.params, jax.random.key(2), far, act, mode=mode, sample=True)
    np.testing.assert_array_equal(step.next_obs[:, 1], far[:, 1])
  np.testing.assert_array_equal(ens.uncertainty(state.params, far, act).aleatoric[:, 1], 0.0)


def test_holdout_batches_do_not_change_the_scores(small):
  # 60 holdout rows of a 512-row buffer, scored in one batch (the default 4096, capped at the
  # buffer) or in batches of 7 (9 batches, the last one partly masked): the same scores.
  ens, data, mask = small
  params = ens.init(jax.random.key(0))
  scores = []
  for eval_batch_size in (4096, 7):
    trainer = make_trainer(ens, FitConfig(max_epochs=3, patience=None,
                                          eval_batch_size=eval_batch_size))
    _, metrics = jax.jit(trainer.fit)(jax.random.key(1), trainer.init(params), data, mask)
    assert int(metrics.num_holdout) == 60
    scores.append(np.asarray(metrics.holdout_mse)[:3])
  np.testing.assert_allclose(scores[0], scores[1], rtol=1e-5)
