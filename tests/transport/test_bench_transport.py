"""`robot-rl bench transport --quick` runs end to end and reports the issue's keys (sizes are
asserted; times are only checked to be measured, not fast)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from robot_rl import cli

pytestmark = pytest.mark.timeout(120)


def test_bench_transport_quick(tmp_path: Path) -> None:
    path = tmp_path / "transport.json"
    assert cli.main(["bench", "transport", "--quick", "--json", str(path)]) == 0
    results = json.loads(path.read_text())
    for key in ("frame_latency_ms_p50", "frame_latency_ms_p99", "frame_throughput_mb_s",
                "transitions_per_s", "weights_broadcast_ms"):  # fmt: skip
        assert results[key] > 0, key
    # Each camera frame crosses the wire once as uint8: about 2 x 128 x 128 x 3 bytes a step.
    assert 98_304 <= results["transition_bytes"] <= 1.1 * 98_304
    assert results["transition_bytes_ratio_vs_pickle_f32"] >= 4.0
    assert results["frame_latency_ms_p99"] >= results["frame_latency_ms_p50"]
