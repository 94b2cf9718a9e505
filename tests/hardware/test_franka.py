"""The Franka robot's pure parts, on an injected fake of the franky module (no simulator needed):
config validation, FR3 vs Panda limits, state conversion (twist = J dq), torque commands, the
non-blocking gripper worker, the FCI error line, and the bench's missed-period count."""

from __future__ import annotations

import contextlib
import threading
import types

import numpy as np
import pytest
from robot_rl.hardware import franka as franka_mod
from robot_rl.hardware.franka import (
    FR3_LIMITS,
    FrankaConfig,
    FrankaError,
    FrankaFaultError,
    FrankaGripper,
    FrankaRobot,
    fci_unreachable_message,
)
from robot_rl.hardware.franka_backend import (
    TimingRing,
    missed_period_fraction,
    missed_robot_tick_fraction,
    realtime_setup,
)

from robot_rl.interfaces import PANDA_LIMITS, Robot

J = np.arange(42, dtype=float).reshape(6, 7) / 42.0


class _Affine:
    def __init__(self, translation, quaternion) -> None:
        self.translation = np.asarray(translation, float)
        self.quaternion = np.asarray(quaternion, float)


class _Duration:
    def __init__(self, s: float) -> None:
        self._s = s

    def to_sec(self) -> float:
        return self._s


class _State:
    def __init__(self) -> None:
        self.q = np.array([0.0, -0.5, 0.0, -2.0, 0.0, 1.5, 0.7])
        self.dq = np.array([0.1, 0.0, -0.2, 0.0, 0.3, 0.0, 0.0])
        self.tau_J = np.full(7, 0.5)
        self.O_T_EE = _Affine([0.5, 0.1, 0.3], [1.0, 0.0, 0.0, 0.0])
        self.O_F_ext_hat_K = np.array([1.0, 2.0, 3.0, 0.1, 0.2, 0.3])
        self.time = _Duration(1.0)
        self.robot_mode = "RobotMode.Move"


class _Model:
    def zero_jacobian(self, frame, state):
        return J

    def mass(self, state):
        return np.eye(7) * 2.0

    def coriolis(self, state):
        return np.full(7, 0.01)


class _Motion:
    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs
        self.torques: list[np.ndarray] = []

    def set_torque(self, tau) -> None:
        self.torques.append(np.asarray(tau, float).copy())


class _FrankyRobot:
    def __init__(self, ip: str, realtime_config=None) -> None:
        if ip == "10.0.0.99":
            raise RuntimeError("libfranka: Connection timeout")
        self.state = _State()
        self.model = _Model()
        self.has_errors = False
        self.is_in_control = False
        self.collision = None
        self.load = None
        self.moves: list[object] = []

    def set_collision_behavior(self, torque, force) -> None:
        self.collision = (np.asarray(torque), np.asarray(force))

    def set_load(self, mass, com, inertia) -> None:
        self.load = (mass, com, inertia)

    def move(self, motion, asynchronous=False) -> None:
        self.moves.append(motion)
        self.is_in_control = True

    def poll_motion(self) -> bool:
        raise RuntimeError("libfranka: Move command aborted: motion aborted by reflex! ...")


class _Gripper:
    """A fake hand whose move blocks until the test releases it."""

    def __init__(self, ip: str = "", fail: bool = False) -> None:
        self.width = 0.04
        self.release = threading.Event()
        self.started = threading.Event()
        self.calls: list[tuple] = []
        self.fail = fail

    def move(self, width, speed) -> bool:
        self.calls.append(("move", width))
        self.started.set()
        self.release.wait(5.0)
        if self.fail:
            raise RuntimeError("gripper: command failed")
        self.width = width
        return True

    def grasp(self, width, speed, force, eps_in, eps_out) -> bool:
        self.calls.append(("grasp", width, force))
        self.release.wait(5.0)
        self.width = 0.01
        return True


def _fake_franky(gripper: _Gripper | None = None) -> types.ModuleType:
    m = types.ModuleType("franky_fake")
    m.Robot = _FrankyRobot
    m.RealtimeConfig = types.SimpleNamespace(Enforce="enforce", Ignore="ignore")
    m.Frame = types.SimpleNamespace(EndEffector="EE")
    m.SimpleTorqueMotion = _Motion
    m.TorqueStopMotion = _Motion
    m.Gripper = (lambda ip: gripper) if gripper is not None else _Gripper
    return m


def _connected(**overrides) -> FrankaRobot:
    config = FrankaConfig(robot_ip="10.0.0.2", realtime="ignore", **overrides)
    robot = FrankaRobot(config, _fake_franky(_Gripper()))
    robot.connect()
    return robot


def test_fr3_and_panda_joint_ranges_differ_as_their_datasheets_say():
    assert FR3_LIMITS.joint_pos_max_rad[3] == pytest.approx(-0.1518)
    assert PANDA_LIMITS.joint_pos_max_rad[3] == pytest.approx(-0.0698)
    assert FR3_LIMITS.joint_pos_min_rad[5] == pytest.approx(0.5445)
    assert (FR3_LIMITS.joint_pos_min_rad < FR3_LIMITS.joint_pos_max_rad).all()
    assert FrankaConfig(robot_ip="x", model="panda").limits is PANDA_LIMITS


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"robot_ip": ""}, "robot_ip"),
        ({"collision_torque_nm": (20.0,) * 6}, "collision_torque_nm"),
        ({"collision_force_n": (20.0, 20.0, 20.0, 25.0, 25.0, -1.0)}, "collision_force_n"),
        # joint 4 at -0.1 rad: inside the Panda's range, outside the FR3's
        ({"home_q_rad": (0.0, 0.0, 0.0, -0.1, 0.0, 1.5, 0.7)}, "outside the fr3"),
        ({"home_speed_fraction": 0.9}, "home_speed_fraction"),
        ({"load_mass_kg": 5.0}, "load_mass_kg"),
        ({"signal_timeout_s": 0.5}, "signal_timeout_s"),
        ({"max_delta_tau_nm": 2.0}, "max_delta_tau_nm"),
        ({"tracker_period_s": 0.05}, "tracker_period_s"),
        ({"friction_coulomb_nm": (0.2,) * 6}, "friction_coulomb_nm"),
        ({"friction_coulomb_nm": (0.2, 0.2, 0.2, 5.0, 0.2, 0.2, 0.2)}, "friction_coulomb_nm"),
        ({"friction_coulomb_nm": (0.2, 0.2, 0.2, -0.1, 0.2, 0.2, 0.2)}, "friction_coulomb_nm"),
        ({"friction_coulomb_nm": (0.2, 0.2, 0.2, float("nan"), 0.2, 0.2, 0.2)}, "friction_coulomb"),
    ],
)
def test_bad_config_values_are_refused_by_name(fields, match):
    values = {"robot_ip": "10.0.0.2", **fields}
    with pytest.raises(ValueError, match=match):
        FrankaConfig(**values)
    if "home_q_rad" in fields:  # the same posture is fine on a Panda
        FrankaConfig(**values, model="panda")


def test_connect_applies_collision_thresholds_and_load():
    robot = _connected(load_mass_kg=0.4, load_com_m=(0.0, 0.0, 0.05))
    fr = robot.franky_robot
    assert fr.collision[0].tolist() == [20.0, 20.0, 18.0, 18.0, 16.0, 14.0, 12.0]
    assert fr.load[0] == 0.4 and list(fr.load[1]) == [0.0, 0.0, 0.05]
    assert isinstance(robot, Robot)


def test_unreachable_fci_is_one_line_naming_the_ip_and_what_to_check():
    config = FrankaConfig(robot_ip="10.0.0.99", realtime="ignore")
    with pytest.raises(FrankaError) as info:
        FrankaRobot(config, _fake_franky()).connect()
    text = str(info.value)
    assert "10.0.0.99" in text and "FCI" in text and "ping 10.0.0.99" in text
    assert "\n" not in text
    assert "\n" not in fci_unreachable_message("1.2.3.4", RuntimeError("x"))


def _counting_franky() -> tuple[types.ModuleType, list[str]]:
    made: list[str] = []
    module = _fake_franky(_Gripper())

    class Robot(_FrankyRobot):
        def __init__(self, ip: str, realtime_config=None) -> None:
            made.append(ip)
            super().__init__(ip, realtime_config)

    module.Robot = Robot
    return module, made


def test_a_silent_fci_port_is_one_line_before_libfranka_is_asked(monkeypatch):
    # libfranka waits 60 s on an address that does not answer (an unplugged arm), spinning a
    # core; the probe gives the port FCI_PROBE_TIMEOUT_S, and libfranka is never called.
    asked: list[tuple] = []

    def silent(address, timeout=None):
        asked.append((address, timeout))
        raise TimeoutError("timed out")

    monkeypatch.setattr(franka_mod.socket, "create_connection", silent)
    franky, made = _counting_franky()
    config = FrankaConfig(robot_ip="172.16.0.2", realtime="ignore")
    with pytest.raises(FrankaError, match=r"172\.16\.0\.2.*port 1337 silent for 2\.0 s") as info:
        FrankaRobot(config, franky, probe=True).connect()
    assert "\n" not in str(info.value)
    assert asked == [(("172.16.0.2", franka_mod.FCI_PORT), franka_mod.FCI_PROBE_TIMEOUT_S)]
    assert made == []  # libfranka was not asked


def test_an_answering_fci_port_lets_libfranka_connect():
    import socket

    listener = socket.socket()
    try:
        listener.bind(("127.0.0.1", franka_mod.FCI_PORT))
    except OSError:
        listener.close()
        pytest.skip("port 1337 on 127.0.0.1 is taken here")
    listener.listen(1)
    try:
        franky, made = _counting_franky()
        config = FrankaConfig(robot_ip="127.0.0.1", realtime="ignore")
        FrankaRobot(config, franky, probe=True).connect()
        assert made == ["127.0.0.1"]
    finally:
        listener.close()
    franky, made = _counting_franky()  # nothing listens now: refused at once, named
    with pytest.raises(FrankaError, match=r"127\.0\.0\.1.*port 1337"):
        FrankaRobot(config, franky, probe=True).connect()
    assert made == []
    # an injected franky (a fake, no port to probe) is not probed unless asked
    FrankaRobot(config, franky).connect()
    assert made == ["127.0.0.1"]


def test_state_twist_is_jacobian_times_joint_velocity_and_model_uses_the_same_sample():
    robot = _connected()
    state = robot.read_state()
    raw = robot.raw_state()
    np.testing.assert_allclose(state.ee_twist, J @ raw.dq)
    np.testing.assert_allclose(state.ee_pos_m, [0.5, 0.1, 0.3])
    np.testing.assert_allclose(state.ee_quat_xyzw, [1.0, 0.0, 0.0, 0.0])
    assert 0.0 <= state.command_age_s < 5.0  # counted from the connection: finite on the wire
    model = robot.model()
    assert model.jacobian.shape == (6, 7) and model.mass_matrix.shape == (7, 7)
    np.testing.assert_allclose(robot.external_wrench(), [1.0, 2.0, 3.0, 0.1, 0.2, 0.3])


def test_command_torque_needs_a_running_motion_and_reaches_it():
    robot = _connected()
    with pytest.raises(FrankaFaultError, match="no torque motion"):
        robot.command_torque(np.zeros(7))
    robot.start_torque_motion()
    motion = robot.franky_robot.moves[-1]
    assert motion.kwargs["signal_timeout"] == 0.05  # franky's own timeout underneath ours
    tau = np.linspace(-1, 1, 7)
    robot.command_torque(tau)
    np.testing.assert_allclose(motion.torques[-1], tau)
    assert robot.read_state().command_age_s < 1.0


def test_poll_turns_a_dead_motion_into_a_fault_with_libfrankas_text():
    robot = _connected()
    with pytest.raises(FrankaFaultError, match="reflex"):
        robot.poll()


def test_gripper_calls_return_while_the_hand_still_moves_and_newest_command_wins():
    hand = _Gripper()
    gripper = FrankaGripper(hand, poll_hz=200.0)
    try:
        gripper.move(0.08, 0.1)
        assert hand.started.wait(2.0)  # the worker runs it; this thread was never blocked
        assert gripper.busy
        gripper.move(0.02, 0.1)  # waits behind the running move...
        gripper.grasp(0.0, 40.0, 0.1)  # ...and is replaced by the newer grasp
        hand.release.set()
        assert gripper.wait_idle(5.0)
        assert [c[0] for c in hand.calls] == ["move", "grasp"]
        assert gripper.stats.replaced == 1
        assert gripper.width_m == pytest.approx(0.01)
    finally:
        hand.release.set()
        gripper.close()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda g: g.move(0.1, 0.05), "width_m"),
        (lambda g: g.move(float("nan"), 0.05), "width_m"),
        (lambda g: g.move(0.04, 0.0), "speed_m_s"),
        (lambda g: g.grasp(0.0, 500.0, 0.05), "force_n"),
    ],
)
def test_gripper_refuses_bad_values(call, match):
    gripper = FrankaGripper(_Gripper(), poll_hz=200.0)
    try:
        with pytest.raises(ValueError, match=match):
            call(gripper)
        assert gripper.stats.commands == 0
    finally:
        gripper.close()


def test_a_failing_gripper_command_is_counted_and_the_worker_lives_on():
    hand = _Gripper(fail=True)
    hand.release.set()
    gripper = FrankaGripper(hand, poll_hz=200.0)
    try:
        gripper.move(0.05, 0.1)
        assert gripper.wait_idle(5.0)
        assert gripper.stats.failures == 1 and "failed" in gripper.stats.last_error
        hand.fail = False
        gripper.move(0.06, 0.1)
        assert gripper.wait_idle(5.0)
        assert gripper.width_m == pytest.approx(0.06)
    finally:
        gripper.close()


def test_missed_period_fraction_counts_empty_one_ms_slots():
    every_ms = np.arange(1000) * 1e-3 + 2e-4
    assert missed_period_fraction(every_ms) == 0.0
    # drop 10 of 1000 updates in the middle: 10 empty slots out of 1000
    gaps = np.delete(every_ms, np.arange(500, 510))
    assert missed_period_fraction(gaps) == pytest.approx(0.01)
    assert missed_period_fraction(np.array([0.0])) == 1.0
    # +-0.2 ms jitter (intervals 0.6 and 1.4 ms) misses none, even with the stamps on the 1 ms
    # grid's boundaries
    jitter = every_ms + 3e-4 + np.where(np.arange(1000) % 2 == 0, 2e-4, -2e-4)
    assert missed_period_fraction(jitter) == 0.0
    # two updates 0.1 ms apart and then none for 1.9 ms: that period had no new torque
    bunched = every_ms + np.where(np.arange(1000) % 2 == 0, 4.5e-4, -4.5e-4)
    assert missed_period_fraction(bunched) == pytest.approx(499 / 999, rel=0.01)


def test_missed_robot_ticks_are_counted_on_the_robots_clock_not_the_wall():
    # A robot at 93 % of real time under a 1 kHz wall-clock loop: each torque update reads the
    # newest robot state, so some ticks get two torques and none gets none.
    wall_s = np.arange(2000) * 1e-3
    robot_s = np.floor(wall_s * 0.93 / 1e-3) * 1e-3 + 5.0
    assert missed_robot_tick_fraction(robot_s) == 0.0
    # Loop and robot stalled together 54 ms (RT throttling of their CPU): the wall clock sees
    # 54 empty slots, the robot no missed tick.
    wall_gap = np.concatenate([wall_s[:1000], wall_s[1000:] + 0.054])
    assert missed_period_fraction(wall_gap) == pytest.approx(54 / 2054)
    assert missed_robot_tick_fraction(robot_s) == 0.0
    # The loop alone stalls 20 ms while the robot runs on: the next update reads a state 20 ticks
    # later: ticks 1000..1018 (19 of the 2000) got no new torque.
    ticks = np.concatenate([np.arange(0, 1000), np.arange(1019, 2000)]) * 1e-3
    assert missed_robot_tick_fraction(ticks) == pytest.approx(19 / 2000)
    # NaN stamps (no state read yet) are left out; too few stamps count as all missed
    assert missed_robot_tick_fraction(np.array([np.nan, 0.0, 0.001, 0.002])) == 0.0
    assert missed_robot_tick_fraction(np.array([np.nan, 1.0])) == 1.0


def test_timing_ring_keeps_robot_stamps_beside_the_wall_stamps_across_the_wrap():
    ring = TimingRing(capacity=4)
    for i in range(6):
        ring.stamp(10.0 + i, robot_t_s=float(i))
    ring.stamp(16.0)  # no robot state read: NaN
    np.testing.assert_array_equal(ring.stamps(), [13.0, 14.0, 15.0, 16.0])
    np.testing.assert_array_equal(ring.robot_stamps()[:3], [3.0, 4.0, 5.0])
    assert np.isnan(ring.robot_stamps()[3])


def test_realtime_setup_reports_what_it_got_without_raising():
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(realtime_setup(cpu=10_000, priority=1)))
    worker.start()
    worker.join(5.0)
    assert result["cpu"] is None  # no such core: refused and logged, not fatal
    assert isinstance(result["fifo"], bool)


def test_connect_gives_the_calling_thread_its_scheduling_back():
    """libfranka makes the connecting thread SCHED_FIFO 99 (and all it starts later inherits it);
    the fake does the same where this user may, and connect() must undo it."""
    import os

    class _GreedyRobot(_FrankyRobot):
        def __init__(self, ip: str, realtime_config=None) -> None:
            super().__init__(ip, realtime_config)
            # Where this user may not, there is nothing to undo and the check below still holds.
            with contextlib.suppress(PermissionError):
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))

    franky = _fake_franky(_Gripper())
    franky.Robot = _GreedyRobot
    seen: dict = {}

    def connect() -> None:
        seen["before"] = os.sched_getscheduler(0)
        FrankaRobot(FrankaConfig(robot_ip="10.0.0.2", realtime="ignore"), franky).connect()
        seen["after"] = os.sched_getscheduler(0)

    worker = threading.Thread(target=connect)
    worker.start()
    worker.join(5.0)
    assert seen["after"] == seen["before"]


def test_the_rigs_friction_reaches_the_cartesian_law_and_zero_turns_it_off():
    from robot_rl.hardware.franka_backend import FrankaBackend

    fc = (0.1, 0.2, 0.3, 0.4, 0.3, 0.2, 0.1)
    config = FrankaConfig(robot_ip="10.0.0.2", friction_coulomb_nm=fc)
    backend = FrankaBackend(config, franky_module=_fake_franky())
    np.testing.assert_array_equal(backend.loop_config.cartesian_gains.friction_coulomb_nm, fc)
    assert backend._tfriction  # tracker mode moves its target by the same feedforward
    off = FrankaConfig(robot_ip="10.0.0.2", friction_coulomb_nm=(0.0,) * 7)
    assert not FrankaBackend(off, franky_module=_fake_franky())._tfriction
