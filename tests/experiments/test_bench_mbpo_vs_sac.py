"""experiments/bench_mbpo_vs_sac.py: the sample-efficiency ratio from saved curves (no training:
an MBPO run directory and cached Brax SAC curves are written by hand)."""

import json
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import bench_mbpo_vs_sac as bench  # noqa: E402


def _mbpo_run(path, returns_by_seed):
  path.mkdir()
  rows = [{"seed": s, "epoch": e, "env_steps": 6000 + 1000 * e, "eval/return": r, "wall_s": 2.0}
          for s, returns in enumerate(returns_by_seed) for e, r in enumerate(returns)]
  (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _brax(cache, seed, steps, returns, budget_steps):
  cache.mkdir(exist_ok=True)
  (cache / f"hopper_{budget_steps}_seed{seed}.json").write_text(json.dumps(
      {"env_steps": steps, "return": returns, "wall_s": [10.0 * i for i in range(len(steps))]}))


def test_ratio_from_saved_curves(tmp_path, capsys):
  # MBPO (2 seeds) ends at 10k env steps with mean return (300 + 500) / 2 = 400.
  _mbpo_run(tmp_path / "mbpo", [[100, 200, 250, 300, 350, 300], [100, 150, 300, 400, 450, 500]])
  cache = tmp_path / "brax"
  steps = [0, 10_000, 20_000, 30_000, 40_000, 50_000]
  _brax(cache, 0, steps, [0, 100, 200, 380, 500, 600], 50_000)
  _brax(cache, 1, steps, [0, 100, 300, 390, 300, 600], 50_000)   # mean >= 400 first at 40k
  ours = tmp_path / "ours"
  ours.mkdir()
  (ours / "hopper_20000_seeds2.json").write_text(json.dumps(
      {"env_steps": [10_000, 15_000, 20_000], "returns": [[0, 0], [390, 420], [500, 500]],
       "seconds_per_env_step": 0.01}))
  result = bench.main(["--env", "hopper", "--budget", "10000", "--seeds", "2",
                       "--mbpo-run", str(tmp_path / "mbpo"), "--brax-results", str(cache),
                       "--our-sac-steps", "20000", "--our-sac-results", str(ours),
                       "--out", str(tmp_path / "out.json")])
  assert result["target"] == 400.0
  # R_smooth: the mean of the last 3 evaluation means, (275 + 350 + 400) / 3; Brax's mean
  # curve is 0, 100, 250, 385, 400, 600, so it first reaches R_smooth at 30k.
  assert result["target_smoothed"] == pytest.approx(1025 / 3)
  mbpo, brax, our_sac = result["rows"]
  assert brax["steps_to_target_smoothed"] == 30_000 and brax["ratio_smoothed"] == 3.0
  assert our_sac["steps_to_target_smoothed"] == 15_000 and our_sac["ratio_smoothed"] == 1.5
  assert our_sac["steps_to_target"] == 15_000 and our_sac["ratio"] == 1.5
  assert mbpo["env_steps"] == [6000, 7000, 8000, 9000, 10000]    # the 11k epoch is past budget
  assert mbpo["seconds_per_env_step"] == 2.0 / 1000
  # (50 - 10) s over (50k - 10k) steps: the first evaluation (compilation) is excluded.
  assert brax["steps_to_target"] == 40_000 and brax["ratio"] == 4.0
  assert brax["seconds_per_env_step"] == 40.0 / 40_000
  assert json.loads((tmp_path / "out.json").read_text())["rows"][1]["ratio"] == 4.0
  assert (tmp_path / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  printed = capsys.readouterr().out
  assert "4.0x" in printed and "3.0x" in printed


def test_ratio_when_sac_never_reaches(tmp_path):
  _mbpo_run(tmp_path / "mbpo", [[500, 900]])
  _brax(tmp_path / "brax", 0, [0, 14_000, 21_000], [0, 100, 800], 21_000)
  result = bench.main(["--env", "hopper", "--budget", "7000", "--sac-factor", "3",
                       "--mbpo-run", str(tmp_path / "mbpo"), "--brax-results",
                       str(tmp_path / "brax"), "--our-sac-steps", "0",
                       "--out", str(tmp_path / "out.json")])
  brax = result["rows"][1]
  assert brax["steps_to_target"] is None and brax["ratio"] == "> 3.0"
  # R_smooth = (500 + 900) / 2 = 700 (only two evaluations): Brax reaches it at 21k.
  assert result["target_smoothed"] == 700.0 and brax["ratio_smoothed"] == 3.0


def test_budget_before_first_evaluation_is_refused(tmp_path):
  _mbpo_run(tmp_path / "mbpo", [[500, 900]])
  with pytest.raises(SystemExit, match="no evaluation at or before the budget 1000"):
    bench.main(["--budget", "1000", "--mbpo-run", str(tmp_path / "mbpo"), "--brax-results",
                str(tmp_path / "brax"), "--our-sac-steps", "0"])


def test_a_longer_cached_brax_run_is_cut_and_reused(tmp_path):
  _mbpo_run(tmp_path / "mbpo", [[500, 900]])
  # Only a 40k-step curve is cached; the bench needs 3 x 7k = 21k steps of it.
  _brax(tmp_path / "brax", 0, [0, 14_000, 21_000, 35_000], [0, 100, 950, 2000], 40_000)
  result = bench.main(["--env", "hopper", "--budget", "7000", "--sac-factor", "3",
                       "--mbpo-run", str(tmp_path / "mbpo"), "--brax-results",
                       str(tmp_path / "brax"), "--our-sac-steps", "0",
                       "--out", str(tmp_path / "out.json")])
  brax = result["rows"][1]
  assert brax["env_steps"] == [0, 14_000, 21_000]
  assert brax["steps_to_target"] == 21_000 and brax["ratio"] == 3.0
