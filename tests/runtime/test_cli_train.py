"""``robot-rl train``, ``eval``, ``record`` and ``bench learning`` through the real CLI."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from robot_rl import cli
from robot_rl.data.episodes import load_episodes


def tiny_flags(run_dir: Path, steps: int = 30) -> list[str]:
    sets = [
        f"run_dir={run_dir}", "env.max_episode_steps=15", "demos=1", "learning_starts=10",
        "batch_size=16", "eval_every=0", "eval_episodes=1", "checkpoint_every=0",
        "agent.hidden_dims=[32, 32]",
    ]  # fmt: skip
    flags = ["train", "--task", "reach", "--obs", "state", "--steps", str(steps), "--name", "t"]
    for item in sets:
        flags += ["--set", item]
    return flags


@pytest.mark.integration
def test_train_then_eval_then_resume(tmp_path: Path, capsys) -> None:
    assert cli.main(tiny_flags(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "final evaluation" in out and "success_rate" in out
    checkpoint = tmp_path / "t" / "checkpoints" / "latest.pt"
    assert checkpoint.is_file()

    assert cli.main(["eval", "--checkpoint", str(checkpoint), "--episodes", "1"]) == 0
    assert "success_rate" in capsys.readouterr().out

    flags = [*tiny_flags(tmp_path, steps=45), "--resume"]
    assert cli.main(flags) == 0
    assert "final evaluation" in capsys.readouterr().out
    # The resumed run kept the first run's episodes and added its own.
    steps = sum(len(e.transitions) for e in load_episodes(tmp_path / "t" / "episodes"))
    assert 15 < steps <= 45


def test_train_refuses_to_overwrite_a_run(tmp_path: Path, caplog) -> None:
    assert cli.main(tiny_flags(tmp_path, steps=12)) == 0
    with caplog.at_level(logging.ERROR):
        assert cli.main(tiny_flags(tmp_path, steps=12)) == 2
    assert "--resume" in caplog.text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "agent.nope=1"], "agent.nope"),
        (["--set", "batch_size=0"], "batch_size"),
        (["--task", "stack"], "stack"),
        (["--resume", "--name", "never"], "not a training run directory"),
    ],
)
def test_bad_train_arguments_are_clear_usage_errors(tmp_path, caplog, extra, message) -> None:
    with caplog.at_level(logging.ERROR):
        assert cli.main(tiny_flags(tmp_path) + extra) == 2
    assert message in caplog.text


def test_eval_of_a_missing_or_corrupt_checkpoint_is_a_usage_error(tmp_path, caplog) -> None:
    with caplog.at_level(logging.ERROR):
        assert cli.main(["eval", "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "not found" in caplog.text
    assert cli.main(tiny_flags(tmp_path, steps=12)) == 0
    checkpoint = tmp_path / "t" / "checkpoints" / "latest.pt"
    checkpoint.write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.ERROR):
        assert cli.main(["eval", "--checkpoint", str(checkpoint)]) == 2
    assert "corrupt" in caplog.text


def test_record_writes_successful_expert_episodes(tmp_path: Path, capsys, caplog) -> None:
    out = tmp_path / "demos"
    argv = ["record", "--task", "reach", "--obs", "state", "--episodes", "2", "--out", str(out)]
    assert cli.main(argv) == 0
    episodes = list(load_episodes(out))
    assert len(episodes) == 2
    assert all(e.transitions[-1].terminated and e.transitions[-1].reward == 1.0 for e in episodes)
    with caplog.at_level(logging.ERROR):
        assert cli.main(["record", "--task", "stack", "--out", str(out)]) == 2
    assert "stack" in caplog.text


@pytest.mark.integration
def test_bench_learning_quick_writes_the_issue_keys(tmp_path: Path) -> None:
    path = tmp_path / "learning.json"
    argv = [
        "bench",
        "learning",
        "--quick",
        "--task",
        "reach",
        "--obs",
        "state",
        "--json",
        str(path),
    ]
    assert cli.main(argv) == 0
    results = json.loads(path.read_text())
    for key in ("success_rate", "env_steps", "wall_s", "demos", "interventions"):
        assert key in results, key
    assert results["env_steps"] == 60.0
    # Two evaluation episodes (the quick default) under a sparse reward that ends an episode on
    # success: the rate is a count of whole episodes and the mean return equals it.
    assert results["eval_episodes"] == 2.0
    assert results["success_rate"] * 2 in (0.0, 1.0, 2.0)
    assert results["eval_return"] == pytest.approx(results["success_rate"])


def test_bench_options_a_bench_does_not_take_are_usage_errors(caplog) -> None:
    with caplog.at_level(logging.ERROR):
        assert cli.main(["bench", "control", "--task", "reach"]) == 2
    assert "takes no --task" in caplog.text
    with caplog.at_level(logging.ERROR):
        assert cli.main(["bench", "control", "--set", "seed=1"]) == 2
    assert "takes no --set" in caplog.text
    with caplog.at_level(logging.ERROR):  # refused before anything is trained
        assert cli.main(["bench", "learning", "--task", "reach", "--set", "agent.nope=1"]) == 2
    assert "agent.nope" in caplog.text
    with caplog.at_level(logging.ERROR):
        assert cli.main(["bench", "learning", "--quick", "--task", "stack"]) == 2
    assert "stack" in caplog.text


@pytest.mark.integration
def test_bench_learner_quick_reports_update_time_and_replay_bytes(tmp_path: Path) -> None:
    path = tmp_path / "learner.json"
    assert cli.main(["bench", "learner", "--quick", "--json", str(path)]) == 0
    results = json.loads(path.read_text())
    assert results["update_ms_p50"] > 0
    # The previous default is timed beside the current update in the same run, as a ratio.
    assert results["update_ratio_vs_previous_default"] == pytest.approx(
        results["update_ms_p50"] / results["update_ms_p50_previous_default"]
    )
    assert results["update_ratio_lean_conv"] == pytest.approx(
        results["update_ms_p50_lean_conv"] / results["update_ms_p50"]
    )
    assert results["threads_learner"] >= 1 and results["torch_threads"] >= 1
    # Each 128x128 frame is stored once as uint8: within 10% of two cameras' raw bytes.
    assert results["replay_bytes_ratio"] <= 1.1
    # Frozen ResNet-10 on a warm feature cache: no frame encoded twice; two 512x4x4 float16 maps
    # and an 8-byte stamp per frame; its ratio to the conv update timed alternately with it.
    assert results["frozen_resnet10_encodes_while_sampling"] == 0
    assert results["feature_cache_bytes_per_frame"] == 2 * 512 * 4 * 4 * 2 + 8
    assert results["update_ratio_frozen_resnet10_cached"] == pytest.approx(
        results["update_ms_p50_frozen_resnet10_cached"]
        / results["update_ms_p50_conv_beside_frozen"]
    )
