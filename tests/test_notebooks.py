"""Every notebook under notebooks/ runs top to bottom with a tiny configuration.

Each notebook keeps its sizes in one cell tagged `parameters`; the test inserts a cell right
after it that overrides them (papermill-style injection, by hand with nbformat) and executes the
notebook with nbclient in a kernel that runs this interpreter (`sys.executable`), whatever
Jupyter kernels the machine has installed.
"""

import json
import math
import os
import pathlib
import re
import sys

import nbclient
import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

# Tiny overrides of each notebook's `parameters` cell (notebook file name -> {name: value});
# a notebook not listed here runs with {} (its own parameters).
TINY: dict[str, dict] = {
    "pets.ipynb": dict(TRIALS=2, EPISODE_LENGTH=30, HORIZON=5, POPULATION=30, CEM_ITERATIONS=2,
                       PARTICLES=5, MEMBERS=5, HIDDEN=(32, 32), EPOCHS=5),
    "dreamer.ipynb": dict(EPISODE_LENGTH=40, TRAIN_EPISODES=3, TEST_EPISODES=2, DETER=16,
                          STOCH=4, CLASSES=4, HIDDEN=16, MLP_LAYERS=1, TRAIN_STEPS=20,
                          STEPS_PER_CALL=10, BATCH_SIZE=4, SEQ_LEN=8, CONTEXT=3, HORIZON=6,
                          IMAGE_SIZE=16, CNN_DEPTH=4, PIXEL_EPISODES=2, PIXEL_TRAIN_STEPS=10,
                          PIXEL_BATCH_SIZE=2, PIXEL_SEQ_LEN=8),
    "classic.ipynb": dict(RUNS=2, EPISODES=3, PLANNING_STEPS=(0, 50), BLOCKING_STEPS=1100,
                          DEEP_ENV_STEPS=1500, DEEP_EPOCH=500, DEEP_SEEDS=1,
                          DEEP_VARIANTS=("Deep Dyna",)),
    "control.ipynb": dict(PLAN_ITERATIONS=5, MPC_HORIZON=10, MPC_ITERATIONS=3, EPISODE_LENGTH=40,
                          PILCO_PRESET="quick", PILCO_OVERRIDES=dict(trials=1)),
    "search.ipynb": dict(NUM_SIMULATIONS=16, ZERO_VALUE_SIMULATIONS=16, MAX_STEPS=20,
                         MUZERO_ENV_STEPS=256, MUZERO_STEPS_PER_CHUNK=128,
                         MUZERO_SIMULATIONS=2, MUZERO_UNROLL=2, MUZERO_HIDDEN=16,
                         MUZERO_SEEDS=1),
    "mbpo.ipynb": dict(RANDOM_STEPS=200, MEMBERS=3, ELITES=2, HIDDEN=(16, 16), FIT_EPOCHS=3,
                       FIT_BATCH=16, SAC_HIDDEN=(16, 16), SAC_BATCH=16, SAC_UPDATES=20,
                       ROLLOUT_LENGTH=3, MAX_LENGTH=5, NUM_ROLLOUTS=20, TRAJ_LENGTH=20,
                       BRANCH_EVERY=5, TRAIN_EPOCHS=2, EPOCH_LENGTH=20, INIT_STEPS=40,
                       MODEL_TRAIN_EVERY=10, ROLLOUTS_PER_STEP=2, UPDATES_PER_STEP=2,
                       EPISODE_LENGTH=30, EVAL_EPISODES=2),
    "world_models.ipynb": dict(IMAGE_SIZE=8, EPISODE_LENGTH=6, RANDOM_EPISODES=2, LATENT=2,
                               DEPTH=2, VAE_STEPS=2, VAE_BATCH=2, HIDDEN=3, MIXTURES=2,
                               MDN_STEPS=2, MDN_BATCH=2, MDN_SEQ_LEN=4, GENERATIONS=2,
                               POPULATION=4, ROLLOUTS=1, EVAL_EPISODES=1),
    "offline.ipynb": dict(KIND="random", SIZE=1000, EXPERT_REFERENCE=False, MEMBERS=3,
                          ELITES=2, HIDDEN=(16, 16), FIT_EPOCHS=3, SAC_HIDDEN=(16, 16),
                          SAC_BATCH=32, ROLLOUT_LENGTH=2, ROLLOUT_BATCH=50, EPOCHS=1,
                          EPOCH_LENGTH=20, EVAL_EPISODES=1, ALGOS=("mopo",), DATA_DIR="temp",
                          COMBO_RAMBO=("combo",), CQL_ACTIONS=2, ADV_STEPS=10, BC_EPOCHS=1,
                          MOREC_ITERATIONS=20, MOREC_HIDDEN=(16,), MOREC_CANDIDATES=2),
}
CELL_TIMEOUT_S = 300
KERNEL_NAME = "mbrl-jax-test-python"


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory):
  """A kernelspec whose argv is this interpreter, first on JUPYTER_PATH for the test."""
  root = tmp_path_factory.mktemp("jupyter")
  spec_dir = root / "kernels" / KERNEL_NAME
  spec_dir.mkdir(parents=True)
  (spec_dir / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "mbrl_jax test (this interpreter)",
      "language": "python",
  }))
  old = os.environ.get("JUPYTER_PATH")
  os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(root), old]))
  try:
    yield KERNEL_NAME
  finally:
    if old is None:
      os.environ.pop("JUPYTER_PATH", None)
    else:
      os.environ["JUPYTER_PATH"] = old


def inject_parameters(nb, overrides: dict) -> None:
  """Inserts a cell assigning `overrides` right after the cell tagged `parameters`."""
  index = [i for i, c in enumerate(nb.cells)
           if "parameters" in c.get("metadata", {}).get("tags", [])]
  assert len(index) == 1, "a notebook needs exactly one cell tagged 'parameters'"
  if not overrides:
    return
  source = "# Injected by tests/test_notebooks.py\n" + "\n".join(
      f"{name} = {value!r}" for name, value in overrides.items())
  cell = nbformat.v4.new_code_cell(source)
  cell.metadata["tags"] = ["injected-parameters"]
  nb.cells.insert(index[0] + 1, cell)


def stdout_of(nb) -> str:
  return "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                 for out in cell.get("outputs", [])
                 if out.get("output_type") == "stream" and out.get("name") == "stdout")


def run_notebook(path: pathlib.Path, overrides: dict, kernel_name: str, workdir):
  nb = nbformat.read(path, as_version=4)
  inject_parameters(nb, overrides)
  # Inline figures (rendered to PNG outputs, no display needed), even where MPLBACKEND is set.
  env_vars = {"MPLBACKEND": "module://matplotlib_inline.backend_inline"}
  old = {k: os.environ.get(k) for k in env_vars}
  os.environ.update(env_vars)
  try:
    client = nbclient.NotebookClient(
        nb, kernel_name=kernel_name, timeout=CELL_TIMEOUT_S, allow_errors=False,
        resources={"metadata": {"path": str(workdir)}})
    client.execute()
  finally:
    for k, v in old.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
  return nb


def test_notebooks_are_found_and_stored_without_outputs():
  assert any(p.name == "pets.ipynb" for p in NOTEBOOKS)
  for path in NOTEBOOKS:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
      if cell.cell_type == "code":
        assert not cell.outputs and cell.execution_count is None, (
            f"{path.name}: store notebooks without outputs")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, kernel_name, tmp_path):
  overrides = TINY.get(path.name, {})
  nb = run_notebook(path, overrides, kernel_name, tmp_path)
  out = stdout_of(nb)
  if path.name == "pets.ipynb":
    match = re.search(r"^RETURNS_JSON (.*)$", out, re.M)
    assert match, f"pets.ipynb printed no RETURNS_JSON line; stdout:\n{out[-2000:]}"
    returns = json.loads(match.group(1))
    assert len(returns) == overrides["TRIALS"]
    limit = overrides["EPISODE_LENGTH"]
    for r in returns:
      assert isinstance(r, (int, float)) and math.isfinite(r) and 0 <= r <= limit, returns
    # The notebook draws its two figures.
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 2
  if path.name == "dreamer.ipynb":
    match = re.search(r"^OPEN_LOOP_JSON (.*)$", out, re.M)
    assert match, f"dreamer.ipynb printed no OPEN_LOOP_JSON line; stdout:\n{out[-2000:]}"
    errors = json.loads(match.group(1))
    assert set(errors) == {"model_mse", "no_change_mse", "pixel_model_mse",
                           "pixel_no_change_mse"}, errors
    for v in errors.values():
      assert isinstance(v, float) and math.isfinite(v) and v >= 0, errors
    # Pixel MSEs are of images in [0, 1]; the start frames differ from later ones.
    assert errors["pixel_model_mse"] <= 1 and 0 < errors["pixel_no_change_mse"] <= 1, errors
    assert errors["no_change_mse"] > 0, errors
    # Loss curves, open-loop traces, error per step and the pixel image strip.
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 4
    # Training ran the requested number of updates (2 calls of 10; 10 calls of 1).
    assert re.search(r"^vector: +20 updates", out, re.M), out[-2000:]
    assert re.search(r"^pixels: +10 updates", out, re.M), out[-2000:]
  if path.name == "classic.ipynb":
    match = re.search(r"^DYNA_JSON (.*)$", out, re.M)
    assert match, f"classic.ipynb printed no DYNA_JSON line; stdout:\n{out[-2000:]}"
    result = json.loads(match.group(1))
    steps = result["steps_per_episode"]
    assert sorted(steps) == ["0", "50"] and all(len(c) == 3 for c in steps.values()), steps
    # Planning pays off within three episodes: with n = 50 the third episode is near the
    # 14-step path; without planning it still wanders (hundreds of steps).
    assert steps["50"][2] < 40 and steps["0"][2] > 100, steps
    assert set(result["blocking_final"]) == {"dyna_q", "dyna_q_plus"}, result
    match = re.search(r"^DEEP_DYNA_JSON (.*)$", out, re.M)
    assert match, f"classic.ipynb printed no DEEP_DYNA_JSON line; stdout:\n{out[-2000:]}"
    deep = json.loads(match.group(1))
    # 500 random steps, then two 500-step epochs, each with model rollouts in the buffer.
    assert deep["Deep Dyna"]["env_steps"] == [1000.0, 1500.0], deep
    assert all(t > 0 for t in deep["rollout_transitions"]), deep
    assert all(0 < r <= 500 for r in deep["Deep Dyna"]["eval_return"]), deep
  if path.name == "search.ipynb":
    match = re.search(r"^SEARCH_JSON (.*)$", out, re.M)
    assert match, f"search.ipynb printed no SEARCH_JSON line; stdout:\n{out[-2000:]}"
    result = json.loads(match.group(1))
    # MCTS on the true maze model with the optimal leaf value walks the 14-step shortest path.
    assert result["reached"] and result["steps"] == 14, result
    match = re.search(r"^MUZERO_JSON (.*)$", out, re.M)
    assert match, f"search.ipynb printed no MUZERO_JSON line; stdout:\n{out[-2000:]}"
    muzero = json.loads(match.group(1))
    assert muzero["env_steps"] == [128, 256], muzero
    assert all(-1 <= r <= 1 for r in muzero["eval_return"]), muzero   # Catch: +-1 per episode
    assert all(math.isfinite(v) for v in muzero["loss"]), muzero
  if path.name == "world_models.ipynb":
    match = re.search(r"^WORLD_MODELS_JSON (.*)$", out, re.M)
    assert match, f"world_models.ipynb printed no WORLD_MODELS_JSON line; stdout:\n{out[-2000:]}"
    result = json.loads(match.group(1))
    assert result["generations"] == overrides["GENERATIONS"], result
    # A pendulum episode scores between -16.3 per step and 0; the fits' losses are finite.
    limit = -16.3 * overrides["EPISODE_LENGTH"]
    assert limit <= result["final_eval_return"] <= 0, result
    assert all(math.isfinite(result[k]) for k in ("vae_recon", "mdn_nll", "best_dream_fitness"))
  if path.name == "mbpo.ipynb":
    match = re.search(r"^MBPO_JSON (.*)$", out, re.M)
    assert match, f"mbpo.ipynb printed no MBPO_JSON line; stdout:\n{out[-2000:]}"
    result = json.loads(match.group(1))
    # The pendulum never terminates: every rollout keeps exactly k steps.
    assert result["rollout_transitions"] == overrides["NUM_ROLLOUTS"] * overrides["ROLLOUT_LENGTH"]
    errors = result["error_per_step"]
    assert len(errors) == overrides["ROLLOUT_LENGTH"], errors
    assert result["one_step_mse"] == errors[0]
    for v in errors:
      assert isinstance(v, float) and math.isfinite(v) and v >= 0, errors
    # One deterministic evaluation return per epoch; pendulum rewards lie in [-16.3, 0].
    returns = result["returns"]
    assert len(returns) == overrides["TRAIN_EPOCHS"], returns
    for r in returns:
      assert math.isfinite(r) and -16.3 * overrides["EPISODE_LENGTH"] <= r <= 0, returns
    assert len(re.findall(r"^epoch \d+: env steps", out, re.M)) == overrides["TRAIN_EPOCHS"]
    # The error/mask figure, the branches off a real trajectory and the learning curve.
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 3
  print(out)
