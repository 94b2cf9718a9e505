"""`bench learning`: the task's config drives it; figures over seeds; time split; the curve."""

from __future__ import annotations

import pytest

from robot_rl.bench.learning import run_learning_bench, task_config


def test_settings_come_from_the_shipped_task_config():
    config = task_config("reach", "state")
    # reach_state.yaml's own values (the bench keeps no copy of them).
    assert (config.agent.utd_ratio, config.agent.discount, config.env_steps) == (8, 0.8, 2000)
    assert task_config("reach", "pixels").env.obs == "pixels"


def test_set_overrides_the_shipped_config_for_an_ablation():
    from robot_rl.bench.learning import bench_config

    config = bench_config("reach", "state", overrides=["demo_pretrain_updates=300",
                                                       "agent.utd_ratio=2"])  # fmt: skip
    assert (config.demo_pretrain_updates, config.agent.utd_ratio) == (300, 2)
    assert config.agent.discount == 0.8  # the rest stays reach_state.yaml's
    with pytest.raises(ValueError, match=r"agent\.utd_rato"):
        task_config("reach", "state", ["agent.utd_rato=3"])
    with pytest.raises(ValueError, match="demo_pretrain_updates"):
        task_config("reach", "state", ["demo_pretrain_updates=-1"])


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
    # One seed after another: the bench's wall time holds every seed's setup and run.
    assert result["elapsed_s"] >= result["wall_s"] > 0.0
    assert (tmp_path / "bench-reach-state-3").is_dir() and (
        tmp_path / "bench-reach-state-4"
    ).is_dir()
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000


def test_cores_split_into_disjoint_groups_one_per_parallel_seed():
    from robot_rl.bench.learning import cpu_groups

    assert cpu_groups([0, 1], 2) == [({0}, 1), ({1}, 1)]
    assert cpu_groups([0, 1, 2, 3, 4], 2) == [({0, 2, 4}, 3), ({1, 3}, 2)]
    assert cpu_groups([7], 1) == [({7}, 1)]
    # More seeds at once than cores: all of them run, sharing every core, one torch thread each.
    assert cpu_groups([0, 1], 3) == [({0, 1}, 1)] * 3
    with pytest.raises(ValueError, match="jobs=0"):
        run_learning_bench(quick=True, jobs=0)


def test_a_seed_computes_on_the_torch_threads_it_is_given(tmp_path):
    # The worker of a parallel seed passes its slot's thread count to the session; the learner's
    # updates must run on exactly that many threads, and the caller's count comes back after.
    import torch

    from robot_rl.bench.learning import _seed_config, bench_config
    from robot_rl.runtime.train import TrainingSession

    base = bench_config("reach", "state", steps=30, quick=True)
    before = torch.get_num_threads()
    for cpus in (1, 2):
        session = TrainingSession(_seed_config(base, "reach", "state", 0, tmp_path / str(cpus)),
                                  cpus=cpus)  # fmt: skip
        seen: list[int] = []
        learn = session.core.learn_once

        def counting(*args, _learn=learn, _seen=seen, **kwargs):
            _seen.append(torch.get_num_threads())
            return _learn(*args, **kwargs)

        session.core.learn_once = counting
        session.run()
        assert seen and set(seen) == {cpus}
        assert torch.get_num_threads() == before


@pytest.mark.integration
def test_parallel_seeds_give_the_figures_of_one_after_another(tmp_path):
    # Each seed's run is deterministic, so training seeds in worker processes (pinned to their
    # cores, figures back as JSON) must reproduce the sequential figures exactly.
    # An override must reach the workers too: UTD 2 instead of reach's 8 changes the update count.
    kwargs = dict(seed=5, quick=True, task="reach", obs="state", steps=40, seeds=3,
                  overrides=["agent.utd_ratio=2"])  # fmt: skip
    alone = run_learning_bench(**kwargs, run_dir=str(tmp_path / "alone"))
    together = run_learning_bench(**kwargs, run_dir=str(tmp_path / "together"), jobs=2)
    timing = ("wall_s", "setup_s", "act_s", "update_s", "eval_s", "act_s_per_env_step", "jobs",
              "elapsed_s")  # fmt: skip
    assert together["jobs"] == 2 and alone["jobs"] == 1
    assert together["utd_ratio"] == 2 and together["overrides"] == "agent.utd_ratio=2"
    assert {k: v for k, v in together.items() if k not in timing} == {
        k: v for k, v in alone.items() if k not in timing
    }
    for s in (5, 6, 7):
        assert (tmp_path / "together" / f"bench-reach-state-{s}").is_dir()
        assert (tmp_path / "together" / f"bench-reach-state-{s}.log").stat().st_size > 0
    assert (tmp_path / "together" / "learning_curve.png").stat().st_size > 1000
