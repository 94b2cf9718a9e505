"""The console hub and bridge without a server: one mark per episode with undo, control ownership
and its lock, bounded per-page state, the episode timeline, the robot's mode, holding while
paused (counted, not slept), and the camera forwarder feeding frames while the loop holds."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from robot_rl.console.bridge import ConsoleBridge
from robot_rl.console.forwarder import CameraForwarder
from robot_rl.console.hub import (
    MAX_MARKS,
    MAX_PENDING_CONTROLS,
    ConsoleHub,
    ControlRefusedError,
    HubConfig,
)
from robot_rl.console.robot_status import robot_mode
from robot_rl.data.episode_labels import StepFlags


class FakeEnv:
    """Not an arm env: the bridge then has no robot state, cameras or software stop to reach
    (the twin's software stop is checked in test_console_session and the browser tests)."""


def test_a_mark_applies_once_per_episode_and_undo_withdraws_a_pending_one() -> None:
    hub = ConsoleHub()
    assert "marked success" in hub.control("mark_success", client="page 1")
    with pytest.raises(ControlRefusedError, match="episode 0 is already marked success"):
        hub.control("mark_success", client="page 1")  # Space/Enter repeating a click: refused
    with pytest.raises(ControlRefusedError, match="already marked"):
        hub.control("mark_failure", client="page 1")
    assert hub.refused == 2
    assert "withdrawn" in hub.control("undo_mark", client="page 1")
    assert hub.take_controls() == []  # the actor never saw the withdrawn mark
    assert hub.snapshot()["marks"] == 0
    hub.control("mark_failure", client="page 1")  # after an undo, the episode may be marked again
    assert [c.name for c in hub.take_controls()] == ["mark_failure"]
    hub.end_episode(False, 0.0, 0.0)
    hub.control("mark_success")  # the next episode has its own mark
    assert hub.snapshot()["marks"] == 2


def test_undo_after_the_window_is_refused() -> None:
    hub = ConsoleHub(HubConfig(undo_window_s=0.0))
    hub.control("mark_success")
    time.sleep(0.001)  # past a zero-length window
    with pytest.raises(ControlRefusedError, match="no mark of the last 0 s"):
        hub.control("undo_mark")


def test_an_applied_mark_is_undone_through_the_bridge_hook() -> None:
    hub = ConsoleHub()
    bridge = ConsoleBridge(hub, FakeEnv())
    undone: list[tuple[int, str]] = []
    bridge.on_undo_mark = lambda mark: undone.append((mark.episode, mark.label))
    hub.control("mark_success")
    assert bridge.before_step().label == "success"  # applied: the episode ends marked
    info = {
        "operator_label": "success",
        "label_before": StepFlags(0.0, False, False),
        "label_after": StepFlags(1.0, True, False),
    }  # what apply_label records
    bridge.after_step({"state": np.ones(3, np.float32)}, np.zeros(2, np.float32), info, 1.0)
    assert bridge.end_episode(info, 1.0, 0, 3)  # success, by the mark
    bridge.start_episode()
    hub.control("undo_mark")
    bridge.before_step()
    assert undone == [(0, "success")] and bridge.undone == [(0, "success")]
    charts = hub.snapshot()["charts"]  # the episode's chart points follow the withdrawn mark
    assert charts["success"] == [0.0] and charts["returns"] == [0.0]
    assert hub.snapshot()["success_rate"] == 0.0
    assert not hub.relabel_episode(7, True, 0.0)  # an episode the charts never had
    hub.control("mark_failure")  # a mark whose step was never recorded: withdrawn, no relabel
    bridge.before_step()
    bridge.end_episode({"operator_label": "failure"}, 0.0, 0, 3)
    hub.control("undo_mark")
    bridge.before_step()
    assert undone == [(0, "success")] and bridge.undone[-1] == (1, "failure")


def test_control_lock_refuses_other_pages_but_never_stop() -> None:
    hub = ConsoleHub()
    hub.control("take_over", client="page 1")
    with pytest.raises(ControlRefusedError, match="only the page in control"):
        hub.control("lock", client="page 2")
    hub.control("lock", client="page 1")
    assert hub.snapshot()["owner"] == "page 1" and hub.snapshot()["locked"]
    for name in ("take_over", "hand_back", "clear_stop", "mark_success", "reset"):
        with pytest.raises(ControlRefusedError, match="locked by page 1"):
            hub.control(name, client="page 2")
    hub.control("stop", client="page 2")  # stop is always allowed
    hub.client_left("page 1")  # the owner's page closed: its lock ends
    assert not hub.snapshot()["locked"]
    hub.control("take_over", client="page 2")
    hub.control("lock", client="page 2")
    hub.control("take_over")  # the operator at the machine (in-process) is never refused
    assert hub.snapshot()["owner"] == "local" and not hub.snapshot()["locked"]


def test_per_page_state_is_bounded() -> None:
    hub = ConsoleHub()
    with pytest.raises(ValueError, match="not a teleop key"):
        hub.key("F13", True)
    hub.key("w", True)
    assert hub.page.keyboard._held == {"w"}
    for _ in range(MAX_PENDING_CONTROLS):
        hub.control("pause", client="page 1")
    with pytest.raises(ControlRefusedError, match="waiting for the actor loop"):
        hub.control("pause", client="page 1")
    hub.control("stop", client="page 1")  # stop gets through a full queue
    hub.take_controls()
    for _ in range(MAX_MARKS + 50):
        hub.control("mark_failure")
        hub.take_controls()
        hub.end_episode(False, 0.0, 0.0)
    assert len(hub.marks) == MAX_MARKS and hub.marks[-1]["episode"] == MAX_MARKS + 49


def test_timeline_records_control_score_marks_and_firing_and_resets_per_episode() -> None:
    hub = ConsoleHub()
    hub.record_step(1, operator=False, score=0.1)
    hub.record_step(2, operator=True, score=float("nan"))
    hub.control("mark_success")
    hub.record_step(3, operator=True, score=0.9, fired=True)
    timeline = hub.snapshot()["timeline"]
    assert timeline["control"] == "poo"
    assert timeline["score"] == [0.1, None, 0.9]  # a NaN score is a gap, not a number
    assert timeline["marks"] == [{"step": 2, "mark": "mark_success"}]
    assert timeline["fired_step"] == 3
    hub.end_episode(True, 1.0, 2 / 3)
    assert hub.snapshot()["timeline"] == {
        "control": "",
        "score": [],
        "marks": [],
        "fired_step": None,
    }


def test_robot_mode_names_from_enum_int_or_text() -> None:
    import enum

    class Mode(enum.IntEnum):
        ACTIVE = 0
        DAMP = 2

    @dataclass
    class State:
        mode: Any

    assert robot_mode(State(Mode.DAMP)) == "damp"
    assert robot_mode(State(3)) == "fault"
    assert robot_mode(State("Stopped")) == "stopped"
    assert robot_mode(object()) is None


def test_the_bridge_holds_while_paused_or_stopped_counted_not_slept() -> None:
    hub = ConsoleHub()
    bridge = ConsoleBridge(hub, FakeEnv())
    hub.control("pause")
    done = threading.Event()
    holder = threading.Thread(target=lambda: (bridge.before_step(wait_s=0.01), done.set()))
    holder.start()
    deadline = time.monotonic() + 10
    while bridge.holds < 5 and time.monotonic() < deadline:
        hub.wait(0.01)
    assert bridge.holds >= 5 and not done.is_set()  # five hold cycles, and still holding
    hub.control("stop")
    hub.control("resume")  # resumed but still stopped: still holds
    holds = bridge.holds
    while bridge.holds < holds + 5 and time.monotonic() < deadline:
        hub.wait(0.01)
    assert not done.is_set() and bridge.stopped
    assert hub.snapshot()["stopped"] is True
    hub.control("clear_stop")
    holder.join(10)
    assert done.is_set() and not bridge.stopped and hub.snapshot()["stopped"] is False


@dataclass
class Frame:
    seq: Any
    image: Any


@dataclass
class Received:
    frame: Frame
    capture_wall_s: float


class FakeStreams:
    """A camera subscriber whose frames the test sets; a bad frame raises inside the forwarder."""

    cameras = ("front", "wrist")

    def __init__(self) -> None:
        self.frames: dict[str, Received] = {}

    def latest(self, camera_id: str) -> Received | None:
        return self.frames.get(camera_id)


def test_the_forwarder_feeds_frames_independently_and_survives_bad_ones() -> None:
    hub = ConsoleHub(HubConfig(max_fps=1000.0))
    streams = FakeStreams()
    forwarder = CameraForwarder(streams, hub, poll_s=0.001).start()
    try:
        image = np.zeros((8, 8, 3), np.uint8)
        streams.frames["front"] = Received(Frame(float("inf"), image), time.time())  # bad seq
        streams.frames["wrist"] = Received(Frame(1, image), time.time())
        deadline = time.monotonic() + 5
        while (forwarder.bad_frames < 1 or forwarder.forwarded < 1) and time.monotonic() < deadline:
            time.sleep(0.001)
        assert forwarder.bad_frames >= 1 and forwarder.forwarded == 1
        for seq in range(2, 6):  # the thread lives on: later frames still arrive
            streams.frames["front"] = Received(Frame(seq, image), time.time() + seq)
            while hub.frames_published < seq and time.monotonic() < deadline:
                time.sleep(0.001)
        assert hub.frames_published == 5 and forwarder.alive
        assert {f.camera for f in hub.frames_since({})} == {"front", "wrist"}
    finally:
        forwarder.stop()
    assert not forwarder.alive


def test_a_mark_for_an_episode_that_ended_meanwhile_is_dropped() -> None:
    hub = ConsoleHub()
    bridge = ConsoleBridge(hub, FakeEnv())
    hub.control("mark_success")  # meant for episode 0 ...
    bridge.end_episode({"success": False}, 0.0, 0, 5)  # ... which the env ended meanwhile
    assert bridge.before_step().label is None  # not applied to episode 1
    hub.control("mark_failure")  # episode 1 has its own mark
    assert bridge.before_step().label == "failure"
