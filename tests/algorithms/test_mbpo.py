"""MBPO: rollout schedule, k-step branched rollouts into the model buffer (against a slow
masked reference, under vmap, without recompiling), the buffer's size, MBPO's fit settings,
a tiny end-to-end run (seeds vmapped), no recompilation across epochs, resume, and learning
on cart-pole."""

import contextlib
import dataclasses
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mbrl_jax import data
from mbrl_jax import envs
from mbrl_jax import models
from mbrl_jax import run as run_lib
from mbrl_jax.algorithms import mbpo
from mbrl_jax.envs import acting
from mbrl_jax.models import training
from mbrl_jax.types import Transition
from tests.conftest import count_compilations

pytestmark = pytest.mark.full_compile   # runtime-bound (tests/conftest.py)

# Cart-pole balancing with small networks: 200 random steps, then 4 epochs of 200 steps (k
# rising 1, 2, 4, 4), two seeds vmapped. Every end-to-end test shares its compiled epoch, and
# it learns: its evaluation return rises from the random policy's ~27 to 100-200 (measured).
TINY = mbpo.Config(
    env="cartpole_continuous", env_steps=200 + 4 * 200, epoch_length=200,
    init_exploration_steps=200, model_train_every=100, updates_per_step=10, real_ratio=0.1,
    episode_length=200, eval_episodes=2,
    model=mbpo.ModelConfig(num_members=4, num_elites=3, hidden_sizes=(32, 32)),
    fit=models.FitConfig(batch_size=32, max_epochs=50, holdout_ratio=0.2, patience=5,
                         weight_decay=(2.5e-5, 5e-5, 1e-4), max_holdout=5000),
    rollout=mbpo.RolloutConfig(schedule=(1, 3, 1, 4), rollouts_per_step=4, retain_epochs=1),
    sac=mbpo.SACConfig(hidden_sizes=(64, 64), actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3,
                       batch_size=128))


def test_rollout_length_follows_schedule():
  hopper = [int(mbpo.rollout_length((20, 100, 1, 15), e)) for e in (0, 18, 19, 20, 59, 99, 500)]
  # x = epoch + 1; k = 1 up to x = 20, then 1 + 14 (x - 20) / 80, truncated.
  assert hopper == [1, 1, 1, 1, 8, 15, 15]
  # MBPO's own hopper schedule: 1 + 14 (x - 20) / 130, truncated.
  assert [int(mbpo.rollout_length((20, 150, 1, 15), e)) for e in (24, 44, 84, 149)] == [1, 3, 8, 15]
  assert [int(mbpo.rollout_length((1, 3, 1, 3), e)) for e in range(5)] == [1, 2, 3, 3, 3]
  assert [int(mbpo.rollout_length((1, 15, 1, 1), e)) for e in range(20)] == [1] * 20
  jitted = jax.jit(lambda e: mbpo.rollout_length((20, 100, 1, 15), e))
  assert [int(jitted(e)) for e in (0, 59, 99)] == [1, 8, 15]
  # The static sizes use the same k as the traced schedule.
  epochs = jnp.arange(400)
  for schedule in [(20, 100, 1, 15), (20, 150, 1, 15), (1, 3, 1, 3), (5, 5, 2, 7), (3, 90, 1, 25)]:
    traced = np.asarray(jax.vmap(lambda e: mbpo.rollout_length(schedule, e))(epochs))
    np.testing.assert_array_equal(traced, [mbpo._length_at(schedule, e) for e in range(400)])


def test_model_buffer_is_sized_by_the_largest_k_the_run_reaches():
  hopper = mbpo.PRESETS["hopper"]
  sizes = {}
  for steps, k in ((30_000, 1), (50_000, 3), (125_000, 11)):
    config = dataclasses.replace(hopper, env_steps=steps)
    assert config.max_rollout_length == k == int(mbpo.rollout_length(
        config.rollout.schedule, config.epochs - 1))
    assert config.model_capacity == 400 * 250 * 4 * 1 * k
    shapes = jax.eval_shape(lambda: empty_buffer(config.model_capacity, 12, 3))
    sizes[steps] = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shapes))
  # 30 float32 per row (hopper obs 12, action 3, next obs 12, reward, terminated, truncated):
  # 48 MB at 30k env steps, 144 MB at 50k (720 MB for every run when sized by max_len 15).
  assert sizes[30_000] == 400_000 * 30 * 4 + 12 and sizes[50_000] == 3 * sizes[30_000] - 24


def counting_model(key, obs, action):
  """next = obs + 1, reward = obs[0] (deterministic)."""
  del key, action
  return models.ModelStep(next_obs=obs + 1.0, reward=obs[:, 0])


def noisy_model(key, obs, action):
  """A random model (so that the keys matter): next = obs + action + noise."""
  next_obs = obs + action + 0.1 * jax.random.normal(key, obs.shape)
  return models.ModelStep(next_obs=next_obs, reward=next_obs[:, 0] - obs[:, 0])


def noisy_policy(key, obs):
  return jnp.tanh(obs[:, :1] + jax.random.normal(key, (obs.shape[0], 1)))


def empty_buffer(capacity, obs_size=1, action_size=1):
  return data.init(capacity, Transition.zeros((obs_size,), action_size))


def reference_rollout(predict, policy, termination_fn, key, start_obs, length, max_length):
  """The former MBPO rollout, slowly: all `max_length` steps in Python, steps past k and past
  a termination masked, then the valid rows added step-major, row by row."""
  n = start_obs.shape[0]
  obs, alive = start_obs.astype(jnp.float32), np.ones(n, bool)
  rows = []
  for t in range(max_length):
    k_act, k_model = jax.random.split(jax.random.fold_in(key, t))
    action = policy(k_act, obs)
    out = predict(k_model, obs, action)
    done = np.asarray(termination_fn(obs, action, out.next_obs), np.float32)
    valid = alive & (t < length)
    for i in np.flatnonzero(valid):
      rows.append(Transition(obs=obs[i], action=action[i], reward=out.reward[i],
                             next_obs=out.next_obs[i], terminated=done[i],
                             truncated=jnp.zeros(())))
    obs, alive = out.next_obs, valid & (done < 0.5)
  return rows


def test_rollouts_write_what_the_masked_reference_writes_and_run_only_k_steps():
  start = jax.random.normal(jax.random.key(3), (6, 1))
  terminate = lambda o, a, n: (jnp.abs(n[..., 0]) > 1.5).astype(jnp.float32)
  calls = []

  def counted_policy(key, obs):
    jax.debug.callback(lambda: calls.append(1))
    return noisy_policy(key, obs)

  run = jax.jit(lambda key, k, buf: mbpo.branched_rollout(noisy_model, counted_policy, terminate,
                                                          key, start, k, buf))
  ended_early = 0
  for seed, k in ((0, 4), (1, 2), (2, 7)):
    key, buf, k = jax.random.key(seed), empty_buffer(64), jnp.asarray(k)
    calls.clear()
    with count_compilations() as c:
      buf, stats = run(key, k, buf)
      jax.block_until_ready(buf)
    assert c.count == (1 if seed == 0 else 0)            # a new k compiles nothing
    rows = reference_rollout(noisy_model, noisy_policy, terminate, key, start, k, 10)
    ended_early += 6 * int(k) - len(rows)
    assert int(buf.size) == len(rows) == int(stats.transitions)
    assert len(calls) <= int(k)                          # k steps at most, not 10
    for field in Transition._fields:
      want = np.stack([np.asarray(getattr(r, field)) for r in rows])
      np.testing.assert_allclose(np.asarray(getattr(buf.data, field))[:len(rows)], want,
                                 rtol=1e-6, atol=1e-6, err_msg=field)
    np.testing.assert_allclose(float(stats.reward_sum), sum(float(r.reward) for r in rows),
                               rtol=1e-5, atol=1e-5)
  assert ended_early > 0                                 # terminations did stop rollouts


def test_branched_rollouts_stop_at_termination_and_length():
  start = jnp.array([[0.0], [1.0], [2.0], [5.0], [-10.0]])
  terminate = lambda o, a, n: (n[..., 0] >= 3.0).astype(jnp.float32)
  policy = lambda k, obs: jnp.zeros((obs.shape[0], 1))
  run = jax.jit(lambda k, n: mbpo.branched_rollout(counting_model, policy, terminate, k, start,
                                                   n, empty_buffer(30)))
  buf, stats = run(jax.random.key(0), 4)
  # Rows reach 3 after 3, 2, 1, 1 steps and then stop; the last row runs the full length 4.
  lengths = [3, 2, 1, 1, 4]
  assert int(stats.transitions) == int(buf.size) == sum(lengths)
  obs = np.asarray(buf.data.obs[:buf.size, 0])
  # Step-major: step 0 of every row, then step 1 of the rows still running, ...
  np.testing.assert_array_equal(obs, [0, 1, 2, 5, -10, 1, 2, -9, 2, -8, -7])
  np.testing.assert_array_equal(buf.data.terminated[:buf.size],
                                [0, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0])
  np.testing.assert_array_equal(buf.data.reward[:buf.size], obs)
  assert float(stats.reward_sum) == obs.sum()
  # All rows terminated: the loop stops even though k is 100 (the buffer holds 30 rows).
  start_high = jnp.array([[2.0], [3.0]])
  buf, stats = jax.jit(lambda k: mbpo.branched_rollout(
      counting_model, policy, terminate, k, start_high, 100, empty_buffer(30)))(
          jax.random.key(1))
  assert int(stats.transitions) == 2 and int(buf.total_added) == 2


def test_vmapped_rollouts_equal_each_seed_alone():
  """Seeds with different k and terminations, vmapped, give each seed's own result."""
  terminate = lambda o, a, n: (jnp.abs(n[..., 0]) > 1.5).astype(jnp.float32)
  starts = jax.random.normal(jax.random.key(5), (3, 8, 1))
  keys = jax.random.split(jax.random.key(6), 3)
  ks = jnp.array([1, 5, 3])
  one = lambda key, start, k: mbpo.branched_rollout(noisy_model, noisy_policy, terminate, key,
                                                    start, k, empty_buffer(48))
  bufs, stats = jax.jit(jax.vmap(one))(keys, starts, ks)
  # The loop's predicate stays one scalar under vmap (a batched one makes the while loop's
  # lowering select every carry, the model buffer included, at every step).
  jaxpr = jax.make_jaxpr(jax.vmap(one))(keys, starts, ks).jaxpr
  loops = [e for e in jaxpr.eqns if e.primitive.name == "while"]
  assert len(loops) == 1
  assert loops[0].params["cond_jaxpr"].jaxpr.outvars[0].aval.shape == ()
  for s in range(3):
    buf, st = jax.jit(one)(keys[s], starts[s], ks[s])
    assert int(st.transitions) == int(stats.transitions[s]) == int(buf.size)
    for a, b in zip(jax.tree.leaves(buf), jax.tree.leaves(jax.tree.map(lambda x: x[s], bufs))):
      np.testing.assert_array_equal(a, b)


def test_mbpo_fit_settings_per_layer_decay_and_holdout_cap():
  fit = mbpo.PRESETS["hopper"].fit
  assert fit is mbpo.MBPO_FIT and fit.max_holdout == 5000 and fit.patience == 6
  assert fit.weight_decay == (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4) and fit.max_epochs == 1000
  for name in ("inverted_pendulum", "hopper", "walker2d", "halfcheetah"):
    assert mbpo.PRESETS[name].fit == fit
  assert mbpo.PRESETS["hopper"].rollout.schedule == (20, 150, 1, 15)
  assert mbpo.PRESETS["inverted_pendulum"].updates_per_step == 10
  # Per-layer coupled L2: each kernel's gradient gets its own layer's rate times the weight
  # before Adam (a slow reference built from optax's pieces); biases and bounds get none.
  ens = models.make_ensemble(3, 1, num_members=2, num_elites=1, hidden_sizes=(8, 8))
  rates = (0.5, 0.0, 2.0)
  config = models.FitConfig(learning_rate=0.1, weight_decay=rates)
  adam = optax.chain(optax.scale_by_adam(), optax.scale_by_learning_rate(0.1))
  opt = training.make_optimizer(config)

  @jax.jit
  def both(trainable):
    grads = jax.tree.map(lambda x: jax.random.normal(jax.random.key(1), x.shape), trainable)
    updates, _ = opt.update(grads, opt.init(trainable), trainable)
    decayed = (jax.tree_util.tree_map_with_path(
        lambda path, g, w: g + (rates[int(path[-2].key.split("_")[1])] * w
                                if path[-1].key == "kernel" else 0.0),
        grads[0], trainable[0]), grads[1], grads[2])
    return updates, adam.update(decayed, adam.init(trainable), trainable)[0]

  params = jax.jit(ens.init)(jax.random.key(0))
  trainable = training.trainable(params)
  updates, want = both(trainable)
  for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  with pytest.raises(ValueError, match="weight_decay has 2 per-layer rates; this ensemble has 3"):
    models.make_trainer(ens, models.FitConfig(weight_decay=(0.1, 0.1)))
  # The holdout cap: 100 rows, 50 % held out but at most 7.
  obs = jax.random.normal(jax.random.key(2), (100, 3))
  rows = Transition(obs=obs, action=jnp.zeros((100, 1)), reward=obs[:, 0], next_obs=obs,
                    terminated=jnp.zeros(100), truncated=jnp.zeros(100))
  trainer = models.make_trainer(ens, models.FitConfig(max_epochs=1, holdout_ratio=0.5,
                                                      max_holdout=7, weight_decay=rates))
  _, metrics = jax.jit(trainer.fit)(jax.random.key(3), trainer.init(params), rows,
                                    jnp.ones(100, bool))
  assert int(metrics.num_holdout) == 7 and int(metrics.num_train) == 93


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """Two seeds vmapped, checkpointed after every epoch (the newest two are kept); counts the
  compilations after the first epoch's progress call."""
  checkpoints = tmp_path_factory.mktemp("mbpo_checkpoints")
  epochs = []
  with contextlib.ExitStack() as stack:
    counter = []

    def progress(epoch, metrics):
      epochs.append(epoch)
      if epoch == 0:
        counter.append(stack.enter_context(count_compilations()))

    keys = jnp.stack([jax.random.key(0), jax.random.key(1)])
    state, history = run_lib.train(mbpo.make(TINY), keys, progress_fn=progress,
                                   checkpoint_dir=str(checkpoints))
    compiles_after_first_epoch = counter[0].count
  return state, history, epochs, compiles_after_first_epoch, checkpoints


def test_tiny_run_follows_schedule_and_counts(tiny_run):
  state, history, epochs, _, _ = tiny_run
  assert TINY.epochs == 4 and epochs == [0, 1, 2, 3]
  assert history["eval/return"].shape == (4, 2)
  np.testing.assert_array_equal(history["rollout/length"], [[1, 1], [2, 2], [4, 4], [4, 4]])
  assert TINY.max_rollout_length == 4
  assert state.model_buffer.data.obs.shape == (2, TINY.model_capacity, 4)
  # Cart-pole rollouts end at k steps or at a termination; each refit's rows all reach the
  # buffer, and the mean length is their number per rollout.
  k = np.broadcast_to(np.array([1, 2, 4, 4])[:, None], (4, 2))
  transitions = history["rollout/transitions"]                   # mean over an epoch's refits
  assert np.all(transitions <= TINY.rollout_batch * k)
  assert np.all(transitions > 0.5 * TINY.rollout_batch * k)
  np.testing.assert_allclose(history["rollout/mean_length"], transitions / TINY.rollout_batch)
  refits = TINY.epoch_length // TINY.model_train_every
  np.testing.assert_array_equal(state.model_buffer.total_added, refits * transitions.sum(0))
  np.testing.assert_array_equal(history["env_steps"], [[400] * 2, [600] * 2, [800] * 2,
                                                       [1000] * 2])
  assert (np.asarray(state.real.size) == 1000).all()
  assert (np.asarray(state.sac.steps) == 4 * TINY.epoch_length * TINY.updates_per_step).all()
  # The fits run to patience or to the 50-epoch cap, never past it.
  assert np.all(history["model/epochs"] >= 1) and np.all(history["model/epochs"] <= 50)
  assert np.all((history["eval/return"] >= 1) & (history["eval/return"] <= 200))
  assert np.all(np.isfinite(history["model/holdout_mse"]))
  assert np.all(np.isfinite(history["sac/critic_loss"]))
  # Seeds differ.
  assert not np.array_equal(history["sac/critic_loss"][:, 0], history["sac/critic_loss"][:, 1])


def test_mbpo_learns_to_balance_the_cart_pole(tiny_run):
  """The deterministic evaluation return of the last two epochs, per seed, is at least three
  times the uniformly random policy's mean return (about 27 of 200). With every SAC learning
  rate set to 1e-12 (0 is refused) the same run evaluated 30.5 and 31.75, and this failed."""
  _, history, _, _, _ = tiny_run
  env = envs.make(TINY.env, episode_length=TINY.episode_length)
  random_returns = acting.evaluate(env, acting.uniform_random(env.action_size),
                                   jax.random.key(9), 10, TINY.episode_length).returns
  baseline = float(random_returns.mean())
  assert 10 < baseline < 50
  learned = history["eval/return"][-2:].mean(0)                                # [seeds]
  assert np.all(learned >= 3 * baseline), (learned, baseline)


def test_later_epochs_do_not_recompile(tiny_run):
  """Epochs 1 and 2 (rollout lengths 2 and 3) reuse epoch 0's program."""
  assert tiny_run[3] == 0


def test_resume_after_an_interruption_equals_an_uninterrupted_run(tiny_run, tmp_path):
  """A run killed during its last epoch (its latest checkpoint is after epoch 2) resumes and
  ends exactly as the uninterrupted run."""
  full_state, full, _, _, checkpoints = tiny_run
  keys = jnp.stack([jax.random.key(0), jax.random.key(1)])
  shutil.copytree(checkpoints, tmp_path / "run")
  assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name.isdigit()) == ["3", "4"]
  shutil.rmtree(tmp_path / "run" / "4")        # the checkpoint the kill did not let it write
  seen = []
  state, history = run_lib.train(mbpo.make(TINY), keys, checkpoint_dir=str(tmp_path / "run"),
                                 resume=True, progress_fn=lambda e, m: seen.append(e))
  assert seen == [3]
  for name in full:
    np.testing.assert_array_equal(history[name], full[name], err_msg=name)
  for a, b in zip(jax.tree.leaves(state.sac.params), jax.tree.leaves(full_state.sac.params)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(state.model_buffer.data.obs, full_state.model_buffer.data.obs)


@pytest.mark.parametrize("change,message", [
    (lambda: dict(env="pendulum_wobbly"), r"mbpo.Config.env 'pendulum_wobbly' is unknown"),
    (lambda: dict(env="ant"), "no termination function"),
    (lambda: dict(model_train_every=7), r"mbpo.Config.model_train_every \(7\) must divide"),
    (lambda: dict(env_steps=10), r"mbpo.Config.env_steps \(10\) leaves no epoch"),
    (lambda: dict(init_exploration_steps=0), "init_exploration_steps must be >= 1"),
    (lambda: dict(real_ratio=1.5), r"mbpo.Config.real_ratio must be in \[0, 1\]"),
    (lambda: dict(rollout=mbpo.RolloutConfig(schedule=(1, 3, 4, 2))),
     r"mbpo.RolloutConfig.schedule lengths must satisfy"),
    (lambda: dict(model=mbpo.ModelConfig(num_members=2, num_elites=3)),
     r"mbpo.ModelConfig.num_elites must be in \[1, num_members=2\]"),
    (lambda: dict(sac=mbpo.SACConfig(tau=0.0)), "mbpo.SACConfig: tau"),
    (lambda: dict(fit=models.FitConfig(weight_decay=(1e-5, 1e-5))),
     r"mbpo.Config.fit has 2 per-layer weight decays; the model has 3 dense layers"),
    (lambda: dict(sac=mbpo.SACConfig(target_update_every=0)),
     "mbpo.SACConfig: target_update_every must be a positive int"),
])
def test_bad_config_is_refused_before_compiling(change, message):
  # A config validates itself when built; what only a model run needs, when made.
  with count_compilations() as c:
    with pytest.raises(ValueError, match=message):
      mbpo.make(dataclasses.replace(TINY, **change()))
  assert c.count == 0


def test_model_free_sac_runs_on_the_same_loop():
  from mbrl_jax.algorithms import sac as sac_algo
  config = sac_algo.Config(env="pendulum", env_steps=60, epoch_length=20,
                           init_exploration_steps=20, updates_per_step=2, episode_length=25,
                           eval_episodes=1, sac=mbpo.SACConfig(hidden_sizes=(8,), batch_size=8,
                                                               normalize_observations=True))
  state, history = run_lib.train(sac_algo.make(config), jax.random.key(0))
  # The observation statistics cover exactly the real observations (exploration included).
  real_obs = np.asarray(state.real.data.obs)
  assert float(state.sac.params.obs_stats.count) == 60
  np.testing.assert_allclose(state.sac.params.obs_stats.mean, real_obs.mean(0), atol=1e-5)
  np.testing.assert_allclose(state.sac.params.obs_stats.var, real_obs.var(0), rtol=1e-4)
  assert state.model_buffer is None and state.fit_state is None
  assert "model/holdout_mse" not in history and "rollout/length" not in history
  np.testing.assert_array_equal(history["env_steps"], [40, 60])
  assert int(state.sac.steps) == 2 * 20 * 2 and int(state.real.size) == 60
  assert np.all(np.isfinite(history["sac/critic_loss"])) and np.all(history["eval/return"] < 0)
  with pytest.raises(ValueError, match="sac.Config.env_steps"):
    dataclasses.replace(config, env_steps=5)
