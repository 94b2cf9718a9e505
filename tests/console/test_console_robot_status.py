"""The robot's mode, loop rate and warnings reach the console from every backend, and stay live
while the actor loop holds: the status normaliser (``robot_fields``), the 10 Hz status forwarder,
the in-process twin's ``robot_status`` and a robot server's state meta."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np
import pytest
from robot_rl.controllers.targets import CartesianTarget

from robot_rl.console.forwarder import RobotStatusForwarder
from robot_rl.console.hub import ConsoleHub
from robot_rl.console.robot_status import MODES, robot_fields
from robot_rl.envs.remote_env import RobotClientBackend
from robot_rl.envs.twin_env import TwinEnv, TwinEnvConfig
from robot_rl.transport.robot_status import RecentWarnings, TickRate
from tests.netutil import served_twin

pytestmark = pytest.mark.timeout(120)


def test_robot_fields_rank_fault_over_stop_over_the_watchdog() -> None:
    assert MODES == ("active", "hold", "damp", "fault")  # ControlMode's order
    assert robot_fields({"mode": 0})["robot_mode"] == "active"
    assert robot_fields({"mode": 1})["robot_mode"] == "hold"
    # a latched software stop damps (mode 2) but the operator must read "stopped"
    assert robot_fields({"mode": 2, "stopped": True})["robot_mode"] == "stopped"
    assert robot_fields({"mode": 3, "stopped": True})["robot_mode"] == "fault"
    franka = robot_fields({"mode": 0, "fault_text": "reflex: joint 4 torque", "connected": True,
                           "control": "torque", "recoveries": 2})  # fmt: skip
    assert franka["robot_mode"] == "fault" and franka["robot_fault_text"].startswith("reflex")
    assert franka["robot_control"] == "torque" and franka["robot_recoveries"] == 2.0
    unplugged = robot_fields({"mode": 1, "connected": False})
    assert unplugged["robot_mode"] == "fault" and "not connected" in unplugged["robot_fault_text"]


def test_a_silent_robot_server_is_a_fault_not_the_last_mode_seen() -> None:
    assert "no robot state yet" in robot_fields({"no_state": True})["robot_fault_text"]
    old = robot_fields({"mode": 0, "state_age_s": 2.5})
    assert old["robot_mode"] == "fault" and "2.5 s" in old["robot_fault_text"]
    fresh = robot_fields({"mode": 0, "state_age_s": 0.01})
    assert fresh["robot_mode"] == "active" and fresh["robot_fault_text"] == ""


def test_robot_fields_bound_warnings_and_drop_values_of_the_wrong_type() -> None:
    warnings = [f"warning {i} " + "x" * 500 for i in range(9)] + [7, None]
    fields = robot_fields({"mode": True, "loop_hz": "fast", "loop_hz_target": float("nan"),
                           "warnings": warnings, "control": 5, "connected": "yes"})  # fmt: skip
    assert "robot_mode" not in fields  # a bool is not a mode
    assert "robot_loop_hz" not in fields and "robot_loop_hz_target" not in fields
    assert "robot_control" not in fields and "robot_connected" not in fields
    lines = fields["robot_warnings"]
    assert len(lines) == 5
    assert lines[0].startswith("warning 4") and lines[-1].startswith("warning 8")
    assert all(len(line) <= 200 for line in lines)
    assert robot_fields({"warnings": "not a list"})["robot_warnings"] == []


def test_tick_rate_measures_a_counter_and_restarts_when_it_goes_back() -> None:
    rate = TickRate(window_s=1.0)
    assert rate.update(0, now_s=10.0) is None  # one reading is no rate
    hz = None
    for i in range(1, 21):  # 1000 ticks per second, read every 0.1 s
        hz = rate.update(100 * i, now_s=10.0 + 0.1 * i)
    assert hz == pytest.approx(1000.0)
    assert rate.update(5, now_s=12.1) is None  # a restarted loop's counter starts over
    with pytest.raises(ValueError, match="window_s"):
        TickRate(window_s=0.0)


def test_recent_warnings_keep_the_newest_lines_while_attached() -> None:
    recent = RecentWarnings(keep=2, max_chars=40, loggers=("robot_rl.tests.status",)).attach()
    log = logging.getLogger("robot_rl.tests.status")
    try:
        log.info("not a warning")
        for i in range(3):
            log.warning("target %d rejected %s", i, "y" * 100)
        assert [line[9:27] for line in recent.lines()] == ["target 1 rejected ",
                                                            "target 2 rejected "]  # fmt: skip
        assert recent.total == 3 and all(len(line) <= 40 for line in recent.lines())
    finally:
        recent.detach()
    log.warning("after detach")
    assert recent.total == 3


def test_the_status_forwarder_updates_the_hub_with_nobody_stepping_and_survives_errors() -> None:
    hub = ConsoleHub()
    calls = {"n": 0}
    twice = threading.Event()

    def read() -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("robot client closed")
        if calls["n"] >= 4:
            twice.set()
        return {"mode": 2 if calls["n"] >= 3 else 0, "loop_hz": 990.0, "loop_hz_target": 1000.0,
                "warnings": ["12:00:00 no target for 500 ms: damping"]}  # fmt: skip

    forwarder = RobotStatusForwarder(read, hub, period_s=0.01).start()
    try:
        assert twice.wait(10)
    finally:
        forwarder.stop()
    state = hub.snapshot()
    assert state["robot_mode"] == "damp" and state["robot_loop_hz"] == 990.0
    assert state["robot_warnings"] == ["12:00:00 no target for 500 ms: damping"]
    assert forwarder.failures == 1 and forwarder.updates >= 3
    with pytest.raises(ValueError, match="period_s"):
        RobotStatusForwarder(read, hub, period_s=0.0)


def test_the_in_process_twin_reports_mode_stop_loop_and_warnings() -> None:
    env = TwinEnv(TwinEnvConfig(task="reach", obs="state"))
    try:
        env.reset(seed=0)
        env.step(np.zeros(env.action_space.shape, np.float32))
        status = env.robot_status()
        fields = robot_fields(status)
        assert fields["robot_mode"] == "active"
        assert fields["robot_loop_clock"] == "lockstep"
        assert fields["robot_loop_hz"] == fields["robot_loop_hz_target"] == 1000.0
        env.software_stop(True)  # the operator's stop, with the loop not stepping
        assert robot_fields(env.robot_status())["robot_mode"] == "stopped"
        env.software_stop(False)
        assert robot_fields(env.robot_status())["robot_mode"] == "active"
        logging.getLogger("robot_rl.controllers.loop").warning("joint 3 near its limit")
        assert robot_fields(env.robot_status())["robot_warnings"][-1].endswith("near its limit")
    finally:
        env.close()


def test_a_robot_server_sends_its_loop_rate_and_warnings_and_the_client_sees_a_stop() -> None:
    with served_twin("reach") as (server, client):
        backend = RobotClientBackend(TwinEnvConfig(task="reach", obs="state"), client)

        def fields_when(condition: Any, timeout_s: float = 30.0) -> dict[str, Any]:
            """The newest fields once ``condition`` holds (a loaded machine may starve the
            state stream for a while: then the fields say fault, and the wait goes on)."""
            deadline = time.monotonic() + timeout_s
            fields = robot_fields(backend.robot_status())
            while not condition(fields) and time.monotonic() < deadline:
                time.sleep(0.02)
                fields = robot_fields(backend.robot_status())
            return fields

        # nobody sends targets: the watchdog holds after 100 ms, damps after 500 ms
        fields = fields_when(lambda f: "robot_loop_hz" in f and f.get("robot_mode") == "damp")
        assert fields["robot_mode"] == "damp"
        # the server thread's measured rate, against its nominal 1 kHz (any machine speed)
        assert fields["robot_loop_hz_target"] == 1000.0 and fields["robot_loop_hz"] > 0
        assert len(fields["tcp_pos_m"]) == 3 and fields["gripper_width_m"] > 0
        pose = client.latest().state
        client.send_target(CartesianTarget(np.array([np.nan, 0.0, 0.3]), pose.ee_quat_xyzw))
        fields = fields_when(lambda f: any("rejected" in w for w in f["robot_warnings"]))
        assert any("rejected" in w for w in fields["robot_warnings"])
        client.software_stop(True)
        assert fields_when(lambda f: f.get("robot_mode") == "stopped")["robot_mode"] == "stopped"
        client.software_stop(False)
    assert server.warnings.total >= 1
