"""The robot server over the twin on loopback: state stream, targets move the arm, bad targets
are rejected, requests honour deadlines, and the watchdog holds then damps a silent arm."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq
from robot_rl.controllers.targets import CartesianTarget
from robot_rl.controllers.watchdog import ControlMode

from robot_rl.transport.codec import encode
from robot_rl.transport.robot_server import RobotClient
from tests.netutil import PLAIN, loopback_endpoints, served_twin

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def served():
    with served_twin("reach") as pair:
        yield pair


def test_state_streams_with_task_extras(served) -> None:
    _server, client = served
    first = client.latest(timeout_s=2.0)
    later = client.latest(timeout_s=2.0, newer_than_seq=first.seq + 10)
    assert later.seq > first.seq + 10
    assert later.state.q_rad.shape == (7,) and np.isfinite(later.state.ee_pos_m).all()
    assert later.features is not None and later.features.shape == (3,)  # reach: goal - TCP
    assert later.meta["success"] in (True, False)
    assert later.state.stamp_s > first.state.stamp_s


def test_targets_move_the_arm_and_the_watchdog_holds_then_damps(served) -> None:
    _server, client = served
    client.reset(seed=3)
    start = client.latest(timeout_s=2.0)
    goal = start.state.ee_pos_m + np.array([0.05, 0.0, 0.0])
    target = CartesianTarget(goal, start.state.ee_quat_xyzw)
    t_end = time.monotonic() + 1.5
    while time.monotonic() < t_end:  # a 20 Hz target stream
        assert client.send_target(target)
        time.sleep(0.05)
    moved = client.latest(timeout_s=2.0)
    assert moved.meta["mode"] == ControlMode.ACTIVE
    assert np.linalg.norm(moved.state.ee_pos_m - start.state.ee_pos_m) > 0.02
    # Silence: hold after 100 ms, damp after 500 ms (sim time, which the server paces).
    seen = set()
    t_end = time.monotonic() + 3.0
    while time.monotonic() < t_end and ControlMode.DAMP not in seen:
        s = client.latest(timeout_s=1.0, newer_than_seq=client.latest().seq)
        seen.add(ControlMode(s.meta["mode"]))
    assert {ControlMode.HOLD, ControlMode.DAMP} <= seen
    assert s.meta["target_age_s"] >= 0.5 - 1e-6  # the watchdog damps from 500 ms


def test_bad_targets_and_messages_are_rejected_and_the_server_runs_on(served) -> None:
    server, client = served
    before = client.latest(timeout_s=2.0).meta["rejected_targets"]
    pose = client.latest().state
    client.send_target(CartesianTarget(np.array([np.nan, 0.0, 0.3]), pose.ee_quat_xyzw))
    client.send_target(CartesianTarget(pose.ee_pos_m, np.array([0.0, 0.0, 0.0, 3.0])))
    raw = zmq.Context.instance().socket(zmq.DEALER)
    raw.linger = 0
    raw.connect(server.commands_endpoint)
    raw.send_multipart([b"not a message"])
    raw.send_multipart(encode("robot_target", 1, {"gripper": "open"}))  # no pose arrays
    deadline = time.monotonic() + 3
    while server.stats.rejected_messages < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    raw.close()
    assert server.stats.rejected_messages >= 3
    after = client.latest(timeout_s=2.0, newer_than_seq=client.latest().seq).meta
    assert after["rejected_targets"] >= before + 2  # NaN and non-unit quaternion
    assert client.request("ping")["ok"]


def test_requests_have_deadlines_and_clear_refusals(served) -> None:
    _server, client = served
    assert client.reset(seed=7)["seed"] == 7
    with pytest.raises(RuntimeError, match="seed"):
        client.request("reset", options={"seed": "x"})
    with pytest.raises(RuntimeError, match="unknown op"):
        client.request("fly")
    # A request that is already late when the server reads it is refused, not run late.
    client._dealer.send_multipart(encode("request", 999, {"op": "reset", "deadline": 1.0}))
    reply = client._dealer.recv_multipart()
    from robot_rl.transport.codec import decode

    assert "deadline" in decode(reply).meta["error"]
    assert client.request("status")["ticks"] > 0


def test_client_without_a_server_times_out_clearly() -> None:
    client = RobotClient(loopback_endpoints(), PLAIN)
    try:
        with pytest.raises(TimeoutError, match="robot server"):
            client.request("ping", timeout_s=0.2)
        with pytest.raises(TimeoutError, match="publishing"):
            client.latest(timeout_s=0.2)
    finally:
        client.close()


def test_a_target_can_change_the_stiffness_and_bad_gains_are_rejected(served) -> None:
    server, client = served
    pose = client.latest(timeout_s=2.0).state
    soft = np.array([300.0, 300.0, 300.0, 30.0, 30.0, 30.0])
    client.send_target(CartesianTarget(pose.ee_pos_m, pose.ee_quat_xyzw, stiffness=soft))
    deadline = time.monotonic() + 3
    gains = server.backend.scene.loop.cartesian
    while time.monotonic() < deadline and not np.allclose(gains._stiffness_goal, soft):
        time.sleep(0.02)
    np.testing.assert_allclose(gains._stiffness_goal, soft)  # ramped toward, not jumped to
    before = client.latest().meta["rejected_targets"]
    bad = np.array([-1.0, 300.0, 300.0, 30.0, 30.0, 30.0])
    client.send_target(CartesianTarget(pose.ee_pos_m, pose.ee_quat_xyzw, stiffness=bad))
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and client.latest().meta["rejected_targets"] == before:
        time.sleep(0.02)
    assert client.latest().meta["rejected_targets"] == before + 1


def test_joint_mode_request_switches_the_law_and_a_pose_target_switches_back(served) -> None:
    _, client = served
    client.reset(seed=1)
    home = client.latest(timeout_s=2.0).state.q_rad.copy()
    home[6] += 0.2
    assert client.request("joint_mode", q_rad=[float(v) for v in home])["ok"]
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and client.latest().meta["law"] != "joint":
        time.sleep(0.02)
    assert client.latest().meta["law"] == "joint"
    with pytest.raises(RuntimeError, match="q_rad"):
        client.request("joint_mode", q_rad=[0.0, 1.0])
    pose = client.latest().state
    client.send_target(CartesianTarget(pose.ee_pos_m, pose.ee_quat_xyzw))
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and client.latest().meta["law"] != "cartesian":
        time.sleep(0.02)
    assert client.latest().meta["law"] == "cartesian"
