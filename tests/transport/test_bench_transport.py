"""`robot-rl bench transport`: the byte counts of both wires are what each wire must carry (checked
against sizes computed here), every step sent reaches the replay buffers, and the ratios are the
reported figures' ratios. Times are only checked to be measured, not fast."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import lz4.frame
import pytest

from robot_rl import cli
from robot_rl.bench import transport as bench

FRAME_BYTES = 128 * 128 * 3  # one uint8 camera frame
STEP_FRAMES = 2 * FRAME_BYTES  # two cameras


def _wire(message: object) -> int:
    """Bytes of one agentlace message: pickled, then one lz4 frame."""
    return len(lz4.frame.compress(pickle.dumps(message)))


def _as_peer(step: bench.Transition, obs: dict, next_obs: dict) -> dict:
    return {"observations": obs, "actions": step.action, "next_observations": next_obs,
            "rewards": step.reward, "masks": 1.0 - float(step.terminated),
            "dones": step.terminated or step.truncated}  # fmt: skip


def test_each_wire_carries_what_it_must(tmp_path: Path) -> None:
    steps = bench._stream(1)
    assert len(steps) == bench.EPISODE_STEPS and steps[-1].truncated
    # Ours: each frame crosses once, so a 16-step batch carries 17 frames of each camera.
    ours = bench._our_bytes(steps)
    assert 17 / 16 * STEP_FRAMES <= ours <= 1.1 * 17 / 16 * STEP_FRAMES

    # The peer, one transition per request: obs and next_obs both cross in every message, after
    # the get_last_update_id round trip.
    rate, per_step, stored = bench._agentlace_intake(steps, True, tmp_path)
    ask = {"type": "get_last_update_id", "payload": {"store_name": "a"}}
    expected = sum(
        _wire(ask) + _wire({"type": "datastore", "store_name": "a", "payload": {
            "data": [_as_peer(s, dict(s.obs), dict(s.next_obs))], "last_id": i}})
        for i, s in enumerate(steps)
    ) / len(steps)  # fmt: skip
    assert per_step == pytest.approx(expected, rel=1e-6)
    assert per_step > 1.8 * STEP_FRAMES  # lz4 gains little on noisy frames; both are there
    assert stored == len(steps) and rate > 0

    # The peer as HIL-SERL runs it, one request per episode: a frame shared by one step's
    # next_obs and the next step's obs is pickled once.
    rate, per_episode, stored = bench._agentlace_intake(steps, False, tmp_path / "ep")
    obs, data = dict(steps[0].obs), []
    for step in steps:
        next_obs = dict(step.next_obs)
        data.append(_as_peer(step, obs, next_obs))
        obs = next_obs
    batch = {"type": "datastore", "store_name": "a",
             "payload": {"data": data, "last_id": len(steps) - 1}}  # fmt: skip
    assert per_episode == pytest.approx((_wire(ask) + _wire(batch)) / len(steps), rel=1e-6)
    assert per_episode < 0.6 * per_step
    assert stored == len(steps) and rate > 0


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_bench_transport_quick(tmp_path: Path) -> None:
    path = tmp_path / "transport.json"
    assert cli.main(["bench", "transport", "--quick", "--json", str(path)]) == 0
    r = json.loads(path.read_text())
    for key in ("frame_latency_ms_p50", "frame_latency_ms_p99", "frame_throughput_mb_s",
                "frame_latency_ms_p50_plaintext", "transitions_per_s",
                "transitions_per_s_plaintext", "agentlace_transitions_per_s",
                "weights_broadcast_ms", "weights_load_ms"):  # fmt: skip
        assert r[key] > 0, key
    assert "curve" not in r  # both settings are measured and named instead
    # Every step sent reached each receiver's replay buffer.
    for key in ("transitions_stored", "transitions_stored_plaintext"):
        assert r[key] == r["transitions_sent"], key
    assert r["agentlace_transitions_stored"] == r["transitions_sent"]
    one = r["agentlace_transitions_stored_per_transition"]
    assert one == r["agentlace_transitions_sent_per_transition"] > 0
    assert r["bytes_ratio_vs_agentlace"] == pytest.approx(
        r["agentlace_bytes_per_transition"] / r["transition_bytes"]
    )
    assert r["intake_ratio_vs_agentlace"] == pytest.approx(
        r["transitions_per_s_plaintext"] / r["agentlace_transitions_per_s"]
    )
    assert r["transition_bytes_ratio_vs_pickle_f32"] == pytest.approx(
        r["transition_bytes_pickle_f32"] / r["transition_bytes"]
    )
    # The broadcast time includes loading the weights into the actor's policy.
    assert r["weights_broadcast_ms"] >= r["weights_load_ms"]
    assert r["frame_latency_ms_p99"] >= r["frame_latency_ms_p50"]
