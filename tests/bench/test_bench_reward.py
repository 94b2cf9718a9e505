"""`robot-rl bench reward --quick` end to end: collects, trains, judges and times a classifier
per task and writes every key the issue names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from robot_rl import cli

ISSUE_KEYS = ("precision", "recall", "episode_recall", "episode_false_success_rate", "auroc",
              "ece", "head_latency_ms_p95", "frame_latency_ms_p95", "backbone")  # fmt: skip


@pytest.mark.integration  # minutes on 2 cores: collects, trains and judges per task
@pytest.mark.timeout(600)
def test_bench_reward_quick_writes_the_issue_keys(tmp_path: Path) -> None:
    out = tmp_path / "reward.json"
    argv = ["bench", "reward", "--quick", "--run-dir", str(tmp_path / "cache"), "--json", str(out)]
    assert cli.main(argv) == 0
    results = json.loads(out.read_text())
    assert set(ISSUE_KEYS) <= set(results)
    for task in ("pick_cube", "peg_insert"):
        assert results[f"{task}_train_positives"] <= 200
        assert 0.0 <= results[f"{task}_precision"] <= 1.0
        assert results[f"{task}_tp"] + results[f"{task}_fn"] > 0  # test episodes hold successes
    # The headline is the worse task.
    assert results["recall"] == min(results["pick_cube_recall"], results["peg_insert_recall"])
    assert results["ece"] == max(results["pick_cube_ece"], results["peg_insert_ece"])
    assert 0 < results["head_latency_ms_p95"] < results["frame_latency_ms_p95"]
    assert "CNN" in results["backbone"]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        "peg_insert_e6_s0.npz", "pick_cube_e6_s0.npz"]  # fmt: skip
