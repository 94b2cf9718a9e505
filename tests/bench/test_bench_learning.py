"""`bench learning`: the task's config drives it; figures over seeds; time split; the curve."""

from __future__ import annotations

import pytest

from robot_rl.bench.learning import run_learning_bench, task_config


def test_settings_come_from_the_shipped_task_config():
    config = task_config("reach", "state")
    # reach_state.yaml's own values (the bench keeps no copy of them).
    assert (config.agent.utd_ratio, config.agent.discount, config.env_steps) == (8, 0.8, 2000)
    assert task_config("reach", "pixels").env.obs == "pixels"


def test_unknown_task_obs_or_seed_count_is_refused():
    with pytest.raises(ValueError, match=r"no config peg_insert_pixels\.yaml"):
        task_config("peg_insert", "pixels")
    with pytest.raises(ValueError, match="obs 'depth'"):
        task_config("reach", "depth")
    with pytest.raises(ValueError, match="seeds=0"):
        run_learning_bench(quick=True, seeds=0)


@pytest.mark.integration
def test_two_quick_seeds_report_mean_min_max_times_and_a_curve(tmp_path):
    result = run_learning_bench(seed=3, quick=True, task="reach", obs="state", steps=40,
                                run_dir=str(tmp_path), seeds=2)  # fmt: skip
    assert result["seeds"] == 2 and result["first_seed"] == 3 and result["env_steps"] == 40
    assert result["utd_ratio"] == 8  # from reach_state.yaml
    for key in ("success_rate", "success_at_20"):
        lo, mean, hi = (result[f"{key}_{s}"] for s in ("min", "mean", "max"))
        assert 0.0 <= lo <= mean <= hi <= 1.0
    for key in ("setup_s", "act_s", "update_s", "eval_s"):
        assert result[key] > 0.0, key
    assert (tmp_path / "bench-reach-state-3").is_dir() and (
        tmp_path / "bench-reach-state-4"
    ).is_dir()
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000
