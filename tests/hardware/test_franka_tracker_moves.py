"""Tracker mode's joint moves (the home reset) on an injected fake franky: the move is joined
with the reset's timeout, never waited on without one, so a motion that hangs (franky-sim killed
as a motion started left one in control with a stopped clock and no error) is a fault within
that timeout, a lost link when the arm's clock stood still, and a recover brings the tracker
back. No simulator: franky-sim's own tests kill a real one."""

from __future__ import annotations

import threading
import time
import types
from typing import ClassVar

import pytest
from robot_rl.controllers.watchdog import ControlMode
from robot_rl.hardware.franka import FrankaConfig
from robot_rl.hardware.franka_backend import FrankaBackend, ResetConfig

from tests.hardware.test_franka_pacing import _clocked_franky, _RobotClock, ticking_clock

pytestmark = pytest.mark.timeout(60)


class _Tracker:
    def __init__(self, robot, **kwargs) -> None:
        self.targets = 0
        self.stopped = False

    def set_target(self, pose, twist, accel) -> None:
        self.targets += 1

    def set_gains(self, gains) -> None: ...

    def stop(self) -> None:
        self.stopped = True


def _tracker_franky(clock: _RobotClock, moves_hang: threading.Event) -> types.ModuleType:
    module = _clocked_franky(clock)
    base = module.Robot

    class Robot(base):  # type: ignore[misc, valid-type]
        joins: ClassVar[list[float]] = []

        def join_motion(self, timeout_s=None) -> bool:
            Robot.joins.append(timeout_s)
            if moves_hang.is_set():  # the motion never ends: the wait runs its whole timeout
                time.sleep(timeout_s)
                return False
            return True

    module.Robot = Robot
    module.CartesianImpedanceTracker = _Tracker
    module.CartesianImpedanceGains = types.SimpleNamespace(diagonal=lambda *a: a)
    module.PostureTask = lambda *a, **k: (a, k)
    module.Affine = module.Twist = module.TwistAcceleration = lambda *a: a
    module.JointMotion = lambda q, relative_dynamics_factor: ("joint", tuple(q))
    return module


@pytest.mark.parametrize("clock_runs", [True, False], ids=["slow-move", "link-lost"])
def test_a_joint_move_that_never_ends_is_a_fault_within_the_reset_timeout(clock_runs):
    clock = _RobotClock()
    hang = threading.Event()
    franky = _tracker_franky(clock, hang)
    config = FrankaConfig(robot_ip="10.0.0.2", realtime="ignore", gripper=False, control="tracker")
    backend = FrankaBackend(config, reset_config=ResetConfig(timeout_s=0.3), franky_module=franky)
    backend.start()
    with ticking_clock(clock) as ticking:
        try:
            assert backend.reset({"mode": "home"})["mode"] == "home"  # a move that ends: no fault
            assert franky.Robot.joins == [0.3]  # joined with the reset's timeout, not forever
            assert backend.status()["fault_text"] == ""
            hang.set()
            if not clock_runs:
                ticking.clear()
            with pytest.raises(RuntimeError, match=r"did not finish within 0\.3 s"):
                backend.reset({"mode": "home"})
            assert franky.Robot.joins == [0.3, 0.3]
            status = backend.status()
            assert status["mode"] == int(ControlMode.FAULT)
            assert ("link lost" in status["fault_text"]) is (not clock_runs)
            assert status["connected"] is clock_runs
            with pytest.raises(RuntimeError, match="fault"):
                backend.reset({"mode": "home"})  # nothing moves until a recover
            hang.clear()
            ticking.set()
            assert "did not finish" in backend.recover()["recovered"]
            assert backend.status()["mode"] != int(ControlMode.FAULT)
            assert backend.status()["connected"] is True
        finally:
            backend.close()
