"""mbrl_jax.run.cli: --resume with the original command, mistakes on the command line as one-line
errors, help text as paragraphs, and the silenced mujoco-mjx import message. Nothing here
compiles: every case stops in `parse` or before `start` builds the seed keys."""

import dataclasses
import importlib.util
import json
import subprocess
import sys

import pytest

from mbrl_jax import _quiet_imports
from mbrl_jax.run import cli as run_cli


@dataclasses.dataclass(frozen=True)
class ToyPlanner:
  """A planner.

  Attributes:
    horizon: planning horizon, the number of steps each candidate sequence looks ahead of
      (`now`), counted in env steps.
    num_particles: particles per sequence.
    min_std, max_std: bounds of the sampling
      standard deviation.
  """

  horizon: int = 15
  num_particles: int = 10
  min_std: float = 0.1
  max_std: float = 1.0


@dataclasses.dataclass(frozen=True)
class ToyConfig:
  """A toy run.

  Attributes:
    env: environment name, which must be one of the registered ones
      (see the registry) and have task functions.
    hidden_sizes: widths.
    planner: the planner.
  """

  env: str = "pendulum"
  hidden_sizes: tuple[int, ...] = (8, 8)
  planner: ToyPlanner = ToyPlanner()


PRESETS = {"small": ToyConfig(), "big": ToyConfig(hidden_sizes=(64, 64))}


def parse(argv):
  return run_cli.parse(argv, config_cls=ToyConfig, presets=PRESETS, default_preset="small",
                       description="Toy.")


def saved_run(tmp_path, argv):
  """A run directory as `start` leaves it (config.json only), started with `argv`."""
  out = tmp_path / "run"
  args = parse(argv + ["--out", str(out)])
  out.mkdir()
  (out / "config.json").write_text(json.dumps(run_cli.saved_record(args, "toy")))
  return out, args


ORIGINAL = ["--preset", "big", "--planner.horizon", "20", "--seeds", "2", "--seed", "3"]


def test_resume_alone_and_the_original_command_with_resume_give_the_saved_run(tmp_path):
  out, started = saved_run(tmp_path, ORIGINAL)
  expected = dataclasses.replace(started, resume=out)
  assert parse(["--resume", str(out)]) == expected
  assert parse(ORIGINAL + ["--out", str(out), "--resume", str(out)]) == expected
  assert parse(["--resume", str(out)] + ORIGINAL) == expected           # any order
  assert parse(["--seeds", "2", "--resume", str(out)]) == expected      # a matching subset
  assert parse(["--out", str(out / ".." / "run"), "--resume", str(out)]) == expected
  assert parse(["--resume", str(out), "--distributed"]).distributed   # per launch, not saved


@pytest.mark.parametrize("argv,message", [
    (["--planner.horizon", "15"], "--planner.horizon is 15 here but 20 in the saved run"),
    (["--planner.num-particles", "3"], "--planner.num-particles is 3 here but 10 in the saved"),
    (["--hidden-sizes", "8", "8"], "--hidden-sizes is 8 8 here but 64 64 in the saved run"),
    (["--preset", "small"], "--preset is small here but big in the saved run"),
    (["--seeds", "4"], "--seeds is 4 here but 2 in the saved run"),
    (["--checkpoint-every", "5"], "--checkpoint-every is 5 here but 1 in the saved run"),
])
def test_resume_names_each_option_that_differs_from_the_saved_run(tmp_path, argv, message):
  out, _ = saved_run(tmp_path, ORIGINAL)
  with pytest.raises(SystemExit) as exit_info:
    parse(ORIGINAL + argv + ["--resume", str(out)])
  said = str(exit_info.value)
  assert said.startswith(f"error: --resume {out}: ") and message in said
  assert "\n" not in said


def test_resume_lists_every_difference_on_one_line(tmp_path):
  out, _ = saved_run(tmp_path, ORIGINAL)
  with pytest.raises(SystemExit) as exit_info:
    parse(["--planner.horizon", "5", "--seeds", "1", "--resume", str(out)])
  said = str(exit_info.value)
  assert "--planner.horizon is 5 here but 20" in said and "--seeds is 1 here but 2" in said
  assert "\n" not in said


def test_resume_refuses_another_out(tmp_path):
  out, _ = saved_run(tmp_path, ORIGINAL)
  with pytest.raises(SystemExit, match=r"--out is .*other here; a resumed run stays in"):
    parse(["--out", str(tmp_path / "other"), "--resume", str(out)])


def test_resume_of_what_is_not_a_run_is_one_line(tmp_path):
  (tmp_path / "file").write_text("x")
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "config.json").write_text("{not json")
  (tmp_path / "other").mkdir()
  (tmp_path / "other" / "config.json").write_text(json.dumps(
      {"algorithm": "pets", "preset": "quick", "seed": 0, "seeds": 1,
       "config": {"trials": 5}}))
  for where, message in [("nope", "no such directory"), ("file", "not a directory"),
                         (".", "no config.json there"), ("bad", "config.json is not JSON"),
                         ("other", "that is a pets run, not a ")]:
    with pytest.raises(SystemExit) as exit_info:
      parse(["--resume", str(tmp_path / where), "--seeds", "2"])
    assert message in str(exit_info.value) and "\n" not in str(exit_info.value)


def start(args):
  return run_cli.start(args, name="toy", validate=lambda config: None)


def test_out_naming_a_file_is_one_line_and_writes_nothing(tmp_path):
  path = tmp_path / "results.txt"
  path.write_text("mine")
  with pytest.raises(SystemExit) as exit_info:
    start(parse(["--out", str(path)]))
  assert str(exit_info.value) == f"error: --out {path} is a file; give a directory (nothing " \
                                 "was written)"
  with pytest.raises(SystemExit, match="cannot create it"):
    start(parse(["--out", str(path / "run")]))
  assert path.read_text() == "mine" and sorted(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("argv,message", [
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--seed", "-1"], "--seed must be in [0, 2**32 - seeds]"),
    (["--seed", str(2**32)], "--seed must be in [0, 2**32 - seeds]"),
    (["--checkpoint-every", "0"], "--checkpoint-every must be >= 1"),
])
def test_bad_run_options_are_one_line(tmp_path, argv, message):
  with pytest.raises(SystemExit) as exit_info:
    start(parse(argv + ["--out", str(tmp_path / "x")]))
  assert message in str(exit_info.value)
  assert not (tmp_path / "x").exists()


def test_help_shows_each_docstring_as_one_paragraph(capsys, monkeypatch):
  monkeypatch.setenv("COLUMNS", "240")
  with pytest.raises(SystemExit) as exit_info:
    parse(["--help"])
  assert exit_info.value.code == 0
  lines = capsys.readouterr().out.splitlines()

  def line_with(text):
    return next(line for line in lines if text in line)

  # Hard-wrapped in the source before "(`now`)", "(see" and "there are several"; at 240
  # columns each is one line of help.
  assert "(`now`), counted in env steps." in line_with("planning horizon, the number")
  assert "(see the registry) and have task functions." in line_with("environment name,")
  assert "when there are several)." in line_with("Number of seeds, vmapped")
  # An entry naming several fields documents each of them.
  for flag in ("--planner.min-std", "--planner.max-std"):
    at = next(i for i, line in enumerate(lines) if flag in line)
    assert "bounds of the sampling standard deviation. (default: " in " ".join(lines[at:at + 2])


def test_one_paragraph_keeps_paragraphs_and_list_items():
  text = "A long\n  sentence (wrapped)\n\nSecond `one`\n- item one\n- item two\n  continued"
  assert run_cli._one_paragraph(text) == (
      "A long sentence (wrapped)\n\nSecond `one`\n- item one\n- item two continued")
  assert run_cli._one_paragraph(None) is None


def test_quiet_loader_drops_only_the_warp_lines(tmp_path, capsys):
  source = tmp_path / "noisy.py"
  source.write_text("print(\"Failed to import warp: No module named 'warp'\")\n"
                    "print('Failed to import warp: libcuda.so not found')\n"
                    "print(\"Failed to import mujoco_warp: No module named 'warp'\")\n"
                    "print('something else')\n"
                    "import warnings; warnings.warn('a warning')\n")
  spec = importlib.util.spec_from_file_location("noisy", source)
  spec.loader = _quiet_imports._QuietLoader(spec.loader)
  module = importlib.util.module_from_spec(spec)
  with pytest.warns(UserWarning, match="a warning"):
    spec.loader.exec_module(module)
  assert capsys.readouterr().out == ("Failed to import warp: libcuda.so not found\n"
                                     "something else\n")


def test_importing_mbrl_jax_stays_light():
  # The hook only waits for mujoco.mjx.warp; it imports nothing itself.
  code = "import sys, mbrl_jax; print(sorted({'jax', 'mujoco', 'brax'} & set(sys.modules)))"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout == "[]\n" and out.stderr == ""


def test_resume_before_the_first_checkpoint_says_the_run_starts_over(tmp_path, capsys):
  out, _ = saved_run(tmp_path, ORIGINAL)
  run = start(parse(["--resume", str(out)]))
  try:
    assert run.resume_from is None and run.seeds == [3, 4]
    assert "no checkpoint there yet, so the run starts over" in capsys.readouterr().out
  finally:
    run.close()
