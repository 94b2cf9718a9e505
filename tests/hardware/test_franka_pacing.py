"""Robot pacing of the torque loop (``FrankaConfig.pacing``): each tick starts when the robot's
next state is there, waiting at most ``ROBOT_TICK_WAIT_S`` past the loop's own deadline. franky is
an injected fake whose robot clock a test thread advances (no simulator; the simulator's figures
are ``robot-rl bench franka``'s)."""

from __future__ import annotations

import contextlib
import threading
import time
import types
from collections.abc import Iterator

import numpy as np
import pytest
from robot_rl.controllers.watchdog import ControlMode
from robot_rl.hardware.franka import FrankaConfig
from robot_rl.hardware.franka_backend import LINK_TIMEOUT_S, ROBOT_TICK_WAIT_S, FrankaBackend

from tests.hardware.test_franka_wrench import _franky, _State

pytestmark = pytest.mark.timeout(60)


class _RobotClock:
    """The fake robot's clock: ``tick()`` advances it one 1 ms control tick."""

    def __init__(self) -> None:
        self.ms = 0

    def tick(self) -> None:
        self.ms += 1


@contextlib.contextmanager
def ticking_clock(clock: _RobotClock) -> Iterator[threading.Event]:
    """A thread that advances ``clock`` every millisecond while the yielded event is set (set at
    the start; clear it and the robot falls silent)."""
    ticking = threading.Event()
    ticking.set()
    done = threading.Event()

    def robot() -> None:
        while not done.is_set():
            time.sleep(0.001)
            if ticking.is_set():
                clock.tick()

    driver = threading.Thread(target=robot, daemon=True)
    driver.start()
    try:
        yield ticking
    finally:
        done.set()
        driver.join(2.0)


def _clocked_franky(clock: _RobotClock) -> types.ModuleType:
    module = _franky()
    base = module.Robot

    class Robot(base):  # type: ignore[misc, valid-type]
        @property
        def state(self):
            raw = _State()
            ms = clock.ms
            raw.time = types.SimpleNamespace(to_sec=lambda: ms / 1000.0)
            return raw

        @state.setter
        def state(self, value) -> None:  # the base class assigns one in __init__
            pass

        has_errors = False

        def recover_from_errors(self) -> bool:
            return True

    module.Robot = Robot
    return module


def _run(pacing: str, robot_period_s: float | None, ticks: int) -> tuple[FrankaBackend, np.ndarray]:
    """Start a torque backend on the fake; a thread advances the robot clock every
    ``robot_period_s`` (None: never, a silent robot) until the loop has ticked ``ticks`` times.
    Returns the closed backend and the robot-clock stamp each torque was computed from."""
    clock = _RobotClock()
    config = FrankaConfig(robot_ip="10.0.0.2", realtime="ignore", gripper=False, pacing=pacing)
    backend = FrankaBackend(config, franky_module=_clocked_franky(clock))
    done = threading.Event()

    def robot() -> None:
        while not done.is_set() and robot_period_s is not None:
            time.sleep(robot_period_s)
            clock.tick()

    driver = threading.Thread(target=robot, daemon=True)
    backend.start()
    driver.start()
    try:
        deadline = time.monotonic() + 30.0
        while backend.timing.total < ticks and time.monotonic() < deadline:
            time.sleep(0.01)
        assert backend.timing.total >= ticks, f"{backend.timing.total} ticks in 30 s"
    finally:
        done.set()
        backend.close()
        driver.join(2.0)
    return backend, backend.timing.robot_stamps()


def test_a_robot_paced_tick_answers_a_fresh_robot_state_unless_its_wait_ran_out():
    # A robot slower than the loop (as franky-sim below real time): every tick's state is newer
    # than the last one's, except after a wait that ran out, and those are counted.
    backend, stamps = _run("robot", 0.0015, 300)
    repeats = int(np.sum(np.diff(stamps) <= 0))
    assert repeats <= backend.robot_wait_timeouts
    assert backend.robot_waits > 0
    assert backend.status()["robot_paced"]


def test_a_wallclock_loop_computes_twice_from_one_state_when_the_robot_is_slower():
    # The peer: the loop's own 1 ms against a 1.5 ms robot repeats states, and never waits.
    backend, stamps = _run("wallclock", 0.0015, 300)
    assert int(np.sum(np.diff(stamps) <= 0)) > 0
    assert backend.robot_waits == backend.robot_wait_timeouts == 0
    assert not backend.status()["robot_paced"]


def test_a_silent_robot_does_not_stop_the_loop_or_its_watchdog():
    # No new robot state ever: the loop still ticks (each wait runs out and is counted), so the
    # watchdog still holds and then damps without targets, until the link watchdog calls the
    # silence a lost link (LINK_TIMEOUT_S); only then do the ticks stop.
    clock = _RobotClock()
    config = FrankaConfig(robot_ip="10.0.0.2", realtime="ignore", gripper=False, pacing="robot")
    backend = FrankaBackend(config, franky_module=_clocked_franky(clock))
    backend.start()
    try:
        deadline = time.monotonic() + 30.0
        while backend.status()["mode"] != int(ControlMode.FAULT) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "link lost" in backend.status()["fault_text"]
    finally:
        backend.close()
    stamps = backend.timing.robot_stamps()
    ticks = backend.timing.total
    # ticked on through the silence: each tick waits ROBOT_TICK_WAIT_S for a state that never
    # comes (plus its own period), for about LINK_TIMEOUT_S; at least half that many ticks
    assert ticks >= 0.5 * LINK_TIMEOUT_S / (ROBOT_TICK_WAIT_S + 0.001)
    assert backend.robot_wait_timeouts >= ticks - 1
    assert np.all(stamps == stamps[0])
    modes = [m for _, m in backend.timing.mode_changes]
    assert modes[-2:] == [int(ControlMode.HOLD), int(ControlMode.DAMP)]  # before the link fault


def test_a_robot_clock_that_stops_is_a_lost_link_and_one_that_moves_never_is():
    # franky answers the last state while its motion waits on a dead link; only the robot's
    # clock tells. It moves for 1.5x the link timeout (no fault), then stops: a fault that names
    # the lost link, never before the timeout, after the watchdog's own hold and damp; a recover
    # (the clock moving again) clears it.
    clock = _RobotClock()
    config = FrankaConfig(robot_ip="10.0.0.2", realtime="ignore", gripper=False)
    backend = FrankaBackend(config, franky_module=_clocked_franky(clock))
    backend.start()
    try:
        with ticking_clock(clock) as moving:
            period_s = backend.control_period_s
            deadline = time.monotonic() + 30.0
            while clock.ms < 1500 * LINK_TIMEOUT_S and time.monotonic() < deadline:
                time.sleep(0.01)
            assert clock.ms >= 1500 * LINK_TIMEOUT_S
            assert backend.status()["fault_text"] == ""
            assert backend.status()["connected"] is True
            moving.clear()
            stopped_at = time.monotonic()
            while (backend.status()["mode"] != int(ControlMode.FAULT)
                   and time.monotonic() < deadline):  # fmt: skip
                time.sleep(0.005)
            faulted_after = time.monotonic() - stopped_at
            status = backend.status()
            assert status["mode"] == int(ControlMode.FAULT)
            assert "link lost" in status["fault_text"]
            assert status["connected"] is False
            # not before the timeout (less the one tick whose state was already the last)
            assert faulted_after >= LINK_TIMEOUT_S - 2 * period_s
            modes = [m for _, m in backend.timing.mode_changes]
            assert int(ControlMode.DAMP) in modes  # the watchdog damped first (no targets)
            moving.set()
            assert backend.recover()["recovered"].startswith("link lost")
            assert backend.status()["connected"] is True
            assert backend.status()["mode"] != int(ControlMode.FAULT)
    finally:
        backend.close()


def test_tracker_mode_and_wallclock_are_not_paced_and_bad_pacing_is_refused():
    tracker = FrankaConfig(robot_ip="10.0.0.2", control="tracker", gripper=False)
    assert not FrankaBackend(tracker, franky_module=_franky()).robot_paced
    with pytest.raises(ValueError, match="pacing"):
        FrankaConfig(robot_ip="10.0.0.2", pacing="fast")  # type: ignore[arg-type]
