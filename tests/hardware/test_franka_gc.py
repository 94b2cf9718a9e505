"""The garbage collector stays out of the torque loop: the Franka backend collects, freezes and
disables it before franky's torque motion starts (a full collection after the start held the
GIL past franky's 50 ms signal timeout and faulted every start on a large heap), and turns it back
on only when the last running backend closes. franky is an injected fake (no simulator); the
simulator case is ``test_franka_sim.py::test_a_large_heap_does_not_fault_the_torque_start``."""

from __future__ import annotations

import gc

import pytest
from robot_rl.hardware.franka import FrankaConfig
from robot_rl.hardware.franka_backend import FrankaBackend, quiet_gc

from tests.hardware.test_franka_wrench import _franky

pytestmark = pytest.mark.timeout(60)


def _recording_franky(seen: list[tuple[bool, int]], fail: bool = False):
    """The wrench test's fake franky, whose ``move`` records the collector's state (enabled,
    frozen objects) at the moment the motion starts."""
    module = _franky()
    base = module.Robot

    class Robot(base):  # type: ignore[misc, valid-type]
        def move(self, motion, asynchronous=False) -> None:
            seen.append((gc.isenabled(), gc.get_freeze_count()))
            if fail:
                raise RuntimeError("libfranka: motion refused")
            super().move(motion, asynchronous)

    module.Robot = Robot
    return module


def _backend(module) -> FrankaBackend:
    return FrankaBackend(FrankaConfig(robot_ip="10.0.0.2", realtime="ignore", gripper=False),
                         franky_module=module)  # fmt: skip


@pytest.fixture(autouse=True)
def collector_on():
    """Each test starts with the collector on, as a process normally runs."""
    assert quiet_gc.holders == 0
    gc.enable()
    yield
    assert quiet_gc.holders == 0, "a backend was left holding the collector"
    gc.enable()


def test_the_collector_is_off_and_the_heap_frozen_before_the_motion_starts():
    seen: list[tuple[bool, int]] = []
    backend = _backend(_recording_franky(seen))
    backend.start()
    try:
        assert seen, "the motion never started"
        enabled, frozen = seen[0]
        assert not enabled and frozen > 0
        assert not gc.isenabled()
    finally:
        backend.close()
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_closing_one_backend_leaves_the_collector_off_for_another_still_running():
    first, second = _backend(_franky()), _backend(_franky())
    first.start()
    second.start()
    try:
        assert quiet_gc.holders == 2
        first.close()
        assert not gc.isenabled() and gc.get_freeze_count() > 0
    finally:
        second.close()
        first.close()  # a second close releases nothing more
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_a_start_that_fails_gives_the_collector_back():
    seen: list[tuple[bool, int]] = []
    backend = _backend(_recording_franky(seen, fail=True))
    with pytest.raises(Exception, match="motion refused"):
        backend.start()
    assert seen and quiet_gc.holders == 0
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_a_process_that_ran_with_the_collector_off_keeps_it_off_after_close():
    gc.disable()
    backend = _backend(_franky())
    backend.start()
    backend.close()
    assert not gc.isenabled() and gc.get_freeze_count() == 0
