"""The Franka backend end to end against franky-sim (a MuJoCo FR3 speaking the libfranka protocol).

Each test starts its own simulator in a child process on its own loopback address, connects the
backend exactly as a lab would connect to a real arm, and checks behaviour through the backend's
public surface (the robot server's contract) and its own stamps, never with bare sleeps.

Bounds: franky-sim steps physics in Python. Started with SCHED_FIFO (``FrankySim``) it keeps
about 0.95x real time even on a busy 2-core machine; without it (a user who may not ask for
real-time scheduling) it falls to about 0.3x. Settling and trajectories are therefore timed on
the simulator's own clock (``sim_clock``); the watchdog, a wall-clock guarantee, on the wall
clock. The bounds were measured and carry a margin.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("franky")
pytest.importorskip("franky_sim")

from robot_rl.controllers.targets import CartesianTarget, InvalidTargetError
from robot_rl.controllers.torque_safety import FLAG_RATE_LIMITED
from robot_rl.controllers.watchdog import ControlMode
from robot_rl.hardware.franka import FrankaConfig, FrankaError
from robot_rl.hardware.franka_backend import FrankaBackend
from robot_rl.hardware.franka_sim import (
    SIM_FRICTION_COULOMB_NM,
    SIM_HOME_Q_RAD,
    FrankySim,
    sim_loop_config,
)

from robot_rl.bench.franka import (
    CIRCLE_RADIUS_M,
    hold_and_measure,
    sim_clock,
    stream,
    track_circle,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

MODES = ("torque", "tracker")
# A goal settles within 2 mm after 2 s. franky-sim compensates gravity with its Pinocchio model of
# the FR3 while MuJoCo's masses differ (about 6 N at the TCP), and its joints have Coulomb friction
# (1.1 Nm on joints 1-4): the spring alone left 1.7-3.1 mm; with the integral term the bench
# measures 0.06-0.13 mm static error after 4 s (2 s leaves some of its 0.5 s transient).
SETTLE_M = 2e-3


def _config(ip: str, mode: str) -> FrankaConfig:
    # As on a rig: the control loop asks for SCHED_FIFO (granted where the user may); franky-sim
    # gets it too (FrankySim), as the arm it stands in for is hard real time.
    # The sim rig's friction feedforward: 80 % of the simulator's joint friction.
    # franky's signal timeout is a real rig's default, 50 ms.
    return FrankaConfig(robot_ip=ip, control=mode, realtime="ignore",  # type: ignore[arg-type]
                        home_q_rad=SIM_HOME_Q_RAD,
                        friction_coulomb_nm=SIM_FRICTION_COULOMB_NM)  # fmt: skip


@pytest.fixture(autouse=True)
def stream_like_a_robot_server():
    """The test thread streams targets as the robot server's thread does in ``robot-rl
    robot-server --backend franka``: SCHED_FIFO below the control loop where allowed, so a busy
    machine cannot preempt it while it holds the GIL the loop needs (its own policy comes back)."""
    import os

    from robot_rl.hardware.franka_backend import realtime_setup

    policy = os.sched_getscheduler(0), os.sched_getparam(0)
    realtime_setup(None, 60)
    yield
    os.sched_setscheduler(0, *policy)


@pytest.fixture()
def sim():
    with FrankySim() as s:
        yield s


@pytest.fixture(params=MODES)
def arm(request, sim):
    backend = FrankaBackend(_config(sim.ip, request.param), sim_loop_config())
    backend.start()
    yield backend
    backend.close()


def _wait_for(predicate, timeout_s: float, what: str) -> float:
    """Poll ``predicate`` every 5 ms; return the monotonic time it became true."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.005)
    raise AssertionError(f"{what} did not happen within {timeout_s} s")


def _mode(backend: FrankaBackend) -> int:
    return int(backend.status()["mode"])


def test_hold_still_five_seconds_drifts_under_a_millimetre(arm):
    """The start pose streamed unchanged for 5 s: the TCP stays within 1 mm of it (measured
    0.13 mm in both modes)."""
    s0 = arm.state()
    errors = hold_and_measure(arm, s0.ee_pos_m, s0.ee_quat_xyzw, 5.0, 5.0)
    assert len(errors) > 100
    assert errors.max() <= 1e-3, f"drift {errors.max() * 1e3:.2f} mm"
    assert arm.status()["fault_text"] == ""


def test_step_and_circle_are_tracked(arm):
    """On the simulator's clock (so a slow simulator still gets the whole motion): a 5 cm step
    along y is within 2 mm after 2 s (was 0.9 / 1.2 mm, torque / tracker, before the integral
    term; the bench's static error is now 0.06-0.13 mm); a 5 cm-radius circle at 0.5 Hz, whose
    targets carry no velocity on this clock, stays within 6 mm of the circle on average and 12 mm
    at worst (bench, sim clock: tracker mean 3.0-3.4 mm, max 5.4-6.4 mm; torque mean 1.7-2.1 mm,
    max 4.4 mm since its acceleration feedforward stopped feeding the reference's own
    corrections forward, 2.1-4.1 mm and once 17.9 mm in CI before; with the velocity on the wall
    clock 1.4-2.0 / 1.9-2.5 mm mean, torque / tracker).

    Torque mode, the same circle with its velocity on the wall clock (smooth segments, the
    bench's headline circle): the torque-rate limit acts on under 30 % of its ticks (6 %
    measured; 99.7 % when the reference's own corrections were fed forward as acceleration and
    swung the torque by 20-40 Nm a tick), and the mean error stays within 6 mm (1.3-2.3 mm)."""
    s0 = arm.state()
    clock = sim_clock(arm)
    goal = s0.ee_pos_m + np.array([0.0, 0.05, 0.0])
    step = hold_and_measure(arm, goal, s0.ee_quat_xyzw, 2.0, 0.3, clock)
    assert step.mean() <= 2e-3, f"step error {step.mean() * 1e3:.2f} mm"
    center = s0.ee_pos_m
    start = center + np.array([CIRCLE_RADIUS_M, 0, 0])
    hold_and_measure(arm, start, s0.ee_quat_xyzw, 1.5, 0.1, clock)
    circle = track_circle(arm, center, s0.ee_quat_xyzw, revolutions=1, clock=clock)
    assert len(circle.path_error_m) > 100
    assert circle.path_error_m.mean() <= 6e-3, f"mean {circle.path_error_m.mean() * 1e3:.1f} mm"
    assert circle.path_error_m.max() <= 12e-3, f"max {circle.path_error_m.max() * 1e3:.1f} mm"
    if arm.control == "torque":
        hold_and_measure(arm, start, s0.ee_quat_xyzw, 1.0, 0.1, clock)
        ticks_before = arm.loop.telemetry.count
        smooth = track_circle(arm, center, s0.ee_quat_xyzw, revolutions=1)  # wall clock, twist
        ticks = arm.loop.telemetry.count - ticks_before
        flags = arm.loop.telemetry.column("safety_flags")[-ticks:]
        assert ticks > 1000
        rate_limited = float(np.mean(flags & FLAG_RATE_LIMITED > 0))
        assert rate_limited < 0.3, f"the rate limit acted on {rate_limited:.0%} of circle ticks"
        assert smooth.path_error_m.mean() <= 6e-3, f"mean {smooth.path_error_m.mean() * 1e3:.1f} mm"


def test_target_a_metre_outside_the_workspace_is_rejected_and_never_reached(arm):
    """1 m beyond the box is refused at the door; 10 cm beyond is clipped to the box edge."""
    s0 = arm.state()
    ws = arm.loop_config.reference.workspace
    far = np.array([ws.pos_max_m[0] + 1.0, 0.0, 0.3])
    before = arm.status()["rejected_targets"]
    with pytest.raises(InvalidTargetError, match="outside the workspace"):
        arm.set_target(CartesianTarget(far, s0.ee_quat_xyzw), None)
    assert arm.status()["rejected_targets"] == before + 1
    near = np.array([s0.ee_pos_m[0], s0.ee_pos_m[1], ws.pos_max_m[2] + 0.1])
    hold_and_measure(arm, near, s0.ee_quat_xyzw, 2.0, 0.3, sim_clock(arm))
    assert arm.state().ee_pos_m[2] <= ws.pos_max_m[2] + 2e-3
    assert np.linalg.norm(arm.state().ee_pos_m - far) > 0.9


def test_a_target_beyond_reach_leaves_the_arm_at_rest_at_its_reach_limit(sim):
    """The box's far top corners lie beyond the arm's reach with the gripper down. Streamed
    there, the arm must stretch toward them and stop: inside the box (2 cm of slack), and no
    joint above 90 % of its speed limit (the torque pipeline's velocity guard starts at 85 %).
    Before the law capped the task inertia near the singularity (``MAX_TASK_INERTIA``), torque
    mode thrashed at 5-13 rad/s, 0.17-0.33 m outside the box; measured since: 0 mm outside
    and at rest 55-70 mm short of the corner.
    Torque mode only: tracker mode's 1 kHz law is franky's own, with no velocity guard, and
    stretching toward these corners took a joint to 111 % of its limit and the TCP 12-42 mm
    outside the box (a real arm's reflex would stop it with a fault); see the closing note."""
    arm = FrankaBackend(_config(sim.ip, "torque"), sim_loop_config())
    arm.start()
    try:
        _toward_the_far_top_corners(arm)
    finally:
        arm.close()


def _toward_the_far_top_corners(arm: FrankaBackend) -> None:
    s0 = arm.state()
    ws = arm.loop_config.reference.workspace
    lo, hi = np.asarray(ws.pos_min_m), np.asarray(ws.pos_max_m)
    speed_limit = arm.config.limits.joint_vel_max_rad_s
    for y in (hi[1], lo[1]):
        corner = np.array([hi[0], y, hi[2]])
        worst = {"outside_m": 0.0, "speed_fraction": 0.0}

        def sample(_t: float, worst: dict = worst) -> None:
            s = arm.state()
            outside = float(np.max(np.maximum(lo - s.ee_pos_m, s.ee_pos_m - hi)))
            speed = float(np.max(np.abs(s.dq_rad_s) / speed_limit))
            worst["outside_m"] = max(worst["outside_m"], outside)
            worst["speed_fraction"] = max(worst["speed_fraction"], speed)

        stream(arm, lambda _t, c=corner: (c, None), s0.ee_quat_xyzw, 5.0, sample, sim_clock(arm))
        assert worst["outside_m"] <= 0.02, f"{corner}: TCP {worst['outside_m']:.3f} m outside"
        assert worst["speed_fraction"] <= 0.9, (
            f"{corner}: a joint at {worst['speed_fraction']:.0%} of its speed limit"
        )
        assert np.abs(arm.state().dq_rad_s).max() < 0.05  # at rest at the limit, not swinging
        assert arm.status()["fault_text"] == ""
        hold_and_measure(arm, s0.ee_pos_m, s0.ee_quat_xyzw, 3.0, 0.1, sim_clock(arm))


def test_tracker_speed_guard_stops_a_stretch_beyond_reach_until_recover(sim):
    """Tracker mode runs franky's law, which has no velocity guard: streamed toward the box's far
    top corners (beyond reach) it took a joint to 111 % of its speed limit. Our speed guard must
    keep every joint within its limit: past 95 % it stops the tracker and latches a fault that
    only ``recover`` clears; after a recover and a reset home the arm tracks again (tracking
    straight back from the stretched posture trips the guard again). Measured: it tripped at
    95-97 % (joint 4) in most runs; in the others no joint passed 95 %."""
    arm = FrankaBackend(_config(sim.ip, "tracker"), sim_loop_config())
    arm.start()
    try:
        s0 = arm.state()
        hi = np.asarray(arm.loop_config.reference.workspace.pos_max_m)
        limit = arm.config.limits.joint_vel_max_rad_s
        worst, tripped = 0.0, False
        clock = sim_clock(arm)
        for y in (hi[1], -hi[1]):
            corner = np.array([hi[0], y, hi[2]])
            t0 = clock()
            while clock() - t0 < 5.0 and not tripped:
                if arm.status()["fault_text"]:
                    tripped = True
                    break
                arm.set_target(CartesianTarget(corner, s0.ee_quat_xyzw), None)
                worst = max(worst, float(np.max(np.abs(arm.state().dq_rad_s) / limit)))
                time.sleep(0.01)
            if tripped:
                break
        assert worst <= 1.0, f"a joint at {worst:.0%} of its speed limit"
        if tripped:
            assert "tracker speed guard" in arm.status()["fault_text"]
            _wait_for(lambda: np.abs(arm.robot.read_state().dq_rad_s).max() < 0.05, 3.0, "rest")
            with pytest.raises(InvalidTargetError, match="fault"):
                arm.set_target(CartesianTarget(s0.ee_pos_m, s0.ee_quat_xyzw), None)
            arm.recover()
        # Home in joint space first: from the stretched posture franky's law may not bring the
        # TCP back at all (once it sat still 96 mm from the start pose for 4 s).
        arm.reset({"mode": "home"})
        assert arm.status()["fault_text"] == ""
        errors = hold_and_measure(arm, s0.ee_pos_m, s0.ee_quat_xyzw, 4.0, 0.3, sim_clock(arm))
        assert errors.mean() <= SETTLE_M
    finally:
        arm.close()


def test_silent_client_holds_within_100_ms_and_damps_by_500_ms(arm):
    """The control thread's own stamps: HOLD 100-110 ms and DAMP 500-510 ms after the last target
    (wall time)."""
    s0 = arm.state()
    hold_and_measure(arm, s0.ee_pos_m + np.array([0, 0.01, 0]), s0.ee_quat_xyzw, 0.5, 0.1)
    last = time.monotonic()
    arm.set_target(CartesianTarget(s0.ee_pos_m + np.array([0, 0.01, 0]), s0.ee_quat_xyzw), None)
    _wait_for(lambda: _mode(arm) == int(ControlMode.DAMP), 2.0, "damping")
    changes = [(t - last, m) for t, m in arm.timing.mode_changes if t > last]
    hold = next(t for t, m in changes if m == int(ControlMode.HOLD))
    damp = next(t for t, m in changes if m == int(ControlMode.DAMP))
    assert 0.099 <= hold <= 0.110, f"hold after {hold * 1e3:.1f} ms"
    assert 0.499 <= damp <= 0.510, f"damp after {damp * 1e3:.1f} ms"


def test_software_stop_refuses_targets_until_cleared(arm):
    s0 = arm.state()
    arm.software_stop(True)
    _wait_for(lambda: _mode(arm) == int(ControlMode.DAMP), 1.0, "damping under the stop")
    assert arm.status()["stopped"]
    with pytest.raises(InvalidTargetError, match="software stop"):
        arm.set_target(CartesianTarget(s0.ee_pos_m, s0.ee_quat_xyzw), None)
    arm.software_stop(False)
    assert not arm.status()["stopped"]
    goal = s0.ee_pos_m + np.array([0.0, 0.0, 0.02])
    errors = hold_and_measure(arm, goal, s0.ee_quat_xyzw, 2.0, 0.3, sim_clock(arm))
    assert errors.mean() <= SETTLE_M


def test_a_large_heap_does_not_fault_the_torque_start(sim):
    """A process with a large heap (a learner, a console, pytest itself) starts torque control
    within franky's 50 ms signal timeout, again and again. Before the collector was quieted ahead
    of the motion (``quiet_gc``), a full collection in the control thread's first moments held the
    GIL 51+ ms here and faulted every start ("did not receive a new torque signal")."""
    heap = [{"i": i, "l": [i]} for i in range(2_000_000)]  # ~4M tracked objects
    for _ in range(3):
        backend = FrankaBackend(_config(sim.ip, "torque"), sim_loop_config())
        backend.start()
        try:
            assert backend.config.signal_timeout_s == 0.05
            ticks = backend.timing.total

            def ran_or_faulted(b: FrankaBackend = backend, start: int = ticks) -> bool:
                return b.timing.total >= start + 500 or bool(b.status()["fault_text"])

            _wait_for(ran_or_faulted, 10.0, "500 ticks or a fault")
            assert backend.status()["fault_text"] == "", backend.status()["fault_text"]
        finally:
            backend.close()
    assert len(heap) == 2_000_000


def test_gripper_opens_closes_and_grasps_without_blocking(sim):
    backend = FrankaBackend(_config(sim.ip, "torque"), sim_loop_config())
    backend.start()
    try:
        gripper = backend.robot.gripper
        assert gripper is not None
        done = gripper.done_count
        backend.robot.gripper_move(0.08, 0.05)  # 4 cm at the sim's 5 cm/s: most of a second
        assert gripper.busy  # the call came back while the fingers still move
        assert gripper.wait_idle(10.0)
        assert gripper.done_count == done + 1
        assert gripper.width_m == pytest.approx(0.08, abs=3e-3)
        backend.robot.gripper_grasp(0.0, 40.0, 0.05)
        assert gripper.busy
        assert gripper.wait_idle(10.0)
        assert gripper.width_m <= 0.005
        assert gripper.stats.last_result is True
        assert gripper.stats.failures == 0
        with pytest.raises(ValueError, match="width_m"):
            backend.robot.gripper_move(0.2, 0.05)
    finally:
        backend.close()


@pytest.mark.parametrize("mode", MODES)
def test_simulator_going_away_is_a_fault_and_recover_brings_the_arm_back(sim, mode):
    backend = FrankaBackend(_config(sim.ip, mode), sim_loop_config())
    backend.start()
    try:
        s0 = backend.state()
        sim.kill()
        _wait_for(lambda: _mode(backend) == int(ControlMode.FAULT), 10.0, "fault report")
        status = backend.status()
        assert status["fault_text"] != ""
        assert status["connected"] is False
        assert backend.state() is not None  # the server thread still has a state to publish
        with pytest.raises(InvalidTargetError, match="fault"):
            backend.set_target(CartesianTarget(s0.ee_pos_m, s0.ee_quat_xyzw), None)
        with pytest.raises(RuntimeError, match="fault"):
            backend.reset({"seed": 1})
        with pytest.raises(RuntimeError, match="FCI"):
            backend.recover()  # the arm is still away: one clear line, still in fault
        assert _mode(backend) == int(ControlMode.FAULT)
        sim.start()
        reply = backend.recover()
        assert reply["recovered"] != ""
        assert _mode(backend) != int(ControlMode.FAULT)
        assert backend.status()["connected"] is True
        s1 = backend.state()
        goal = s1.ee_pos_m + np.array([0.0, 0.02, 0.0])
        errors = hold_and_measure(backend, goal, s1.ee_quat_xyzw, 2.0, 0.3, sim_clock(backend))
        assert errors.mean() <= SETTLE_M
    finally:
        backend.close()


def test_resets_home_and_random_offset(sim):
    backend = FrankaBackend(_config(sim.ip, "torque"), sim_loop_config())
    backend.start()
    try:
        s0 = backend.state()
        away = s0.ee_pos_m + np.array([0, 0.04, -0.03])
        hold_and_measure(backend, away, s0.ee_quat_xyzw, 1.0, 0.1, sim_clock(backend))
        reply = backend.reset({"seed": 3, "mode": "home"})
        assert reply["mode"] == "home"
        q = backend.state().q_rad
        assert np.abs(q - np.asarray(SIM_HOME_Q_RAD)).max() <= 0.01
        reply = backend.reset({"seed": 3, "mode": "random"})
        offset = np.asarray(reply["offset_m"])
        assert (np.abs(offset) <= np.asarray(backend.reset_config.random_box_m)).all()
        reply_again = backend.reset({"seed": 3, "mode": "random"})
        assert reply_again["offset_m"] == reply["offset_m"]  # same seed, same offset
        assert backend.reset({"mode": "operator"})["prompt"] == "reset the scene, then press r"
        with pytest.raises(ValueError, match="mode"):
            backend.reset({"mode": "teleport"})
        with pytest.raises(ValueError, match="unknown"):
            backend.reset({"speed": 3})
    finally:
        backend.close()


def test_unreachable_fci_is_one_line_naming_the_ip():
    backend = FrankaBackend(_config("127.0.0.254", "torque"))
    with pytest.raises(FrankaError, match=r"127\.0\.0\.254.*FCI") as info:
        backend.start()
    assert "\n" not in str(info.value)


def test_robot_server_over_franky_sim_streams_state_and_recovers_on_request(sim):
    """The server's contract end to end: targets over ZMQ move the arm, the state meta says mode
    and fault, a lost arm is reported as fault with libfranka's words, and only an explicit
    ``recover`` request brings it back (refused with the FCI line while the arm is away)."""
    from robot_rl.transport.robot_server import RobotClient, RobotServer
    from tests.netutil import PLAIN, loopback_endpoints

    backend = FrankaBackend(_config(sim.ip, "torque"), sim_loop_config())
    backend.start()
    endpoints = loopback_endpoints()
    server = RobotServer(backend, endpoints, PLAIN)
    server.start()
    client = RobotClient(endpoints, PLAIN)
    try:
        start = client.latest(timeout_s=5.0)
        assert start.meta["control"] == "torque" and start.meta["fault_text"] == ""
        goal = start.state.ee_pos_m + np.array([0.0, 0.03, 0.0])
        clock = sim_clock(backend)
        t0 = clock()
        while clock() - t0 < 1.5:  # a 20 Hz stream for 1.5 simulated seconds
            assert client.send_target(CartesianTarget(goal, start.state.ee_quat_xyzw))
            time.sleep(0.05)
        moved = client.latest(timeout_s=2.0, newer_than_seq=client.latest().seq)
        assert moved.meta["mode"] == int(ControlMode.ACTIVE)
        assert np.linalg.norm(moved.state.ee_pos_m - goal) <= SETTLE_M
        sim.kill()
        _wait_for(
            lambda: client.latest().meta["mode"] == int(ControlMode.FAULT), 10.0, "fault in state"
        )
        faulted = client.latest()
        assert faulted.meta["fault_text"] and faulted.meta["connected"] is False
        with pytest.raises(RuntimeError, match="FCI"):
            client.request("recover", timeout_s=10.0)
        sim.start()
        reply = client.request("recover", timeout_s=10.0)
        assert reply["recovered"]
        # the client's newest state may still be one from before the recovery: wait for one after
        _wait_for(lambda: (m := client.latest().meta)["connected"] is True
                  and m["mode"] != int(ControlMode.FAULT), 10.0, "recovered state")  # fmt: skip
    finally:
        client.close()
        server.stop()
        backend.close()
