"""Fitting: learning on toy problems, uncertainty, early stopping, compile-once, bad input."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_jax.models import FitConfig, check_fit, make_ensemble, make_trainer
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


def test_weight_decay_shrinks_kernels(small):
  ens, data, mask = small
  norms = {}
  for wd in (0.0, 10.0):  # AdamW: each step shrinks kernels by lr * wd = 1%
    trainer = make_trainer(ens, FitConfig(max_epochs=10, patience=None, weight_decay=wd))
    state, _ = jax.jit(trainer.fit)(jax.random.key(0), trainer.init(ens.init(jax.random.key(0))),
                                    data, mask)
    norms[wd] = float(sum(jnp.sum(p["kernel"] ** 2) for p in state.params.net["params"].values()))
  assert norms[10.0] < 0.6 * norms[0.0]


def test_fit_vmaps_over_seeds(small):
  ens, data, mask = small
  trainer = make_trainer(ens, FitConfig(max_epochs=3))
  keys = jax.random.split(jax.random.key(0), 3)
  states = jax.vmap(lambda k: trainer.init(ens.init(k)))(keys)
  states, metrics = jax.jit(jax.vmap(trainer.fit, in_axes=(0, 0, None, None)))(
      keys, states, data, mask)
  assert metrics.best_holdout_mse.shape == (3, 3)
  single, m0 = jax.jit(trainer.fit)(keys[1], trainer.init(ens.init(keys[1])), data, mask)
  np.testing.assert_allclose(metrics.best_holdout_mse[1], m0.best_holdout_mse, rtol=1e-4)


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
    ("patience", 0), ("weight_decay", -1.0)])
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
