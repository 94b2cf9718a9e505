"""The camera forwarder wakes on each frame its source announces (no polling period on the path),
and hands on only each camera's newest frame: frames that landed while it was busy are skipped and
counted, never queued."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest

from robot_rl.console.forwarder import CameraForwarder
from robot_rl.console.hub import ConsoleHub, HubConfig
from robot_rl.interfaces import Frame


@dataclass(frozen=True)
class Received:
    frame: Frame
    capture_wall_s: float
    received_wall_s: float
    sent_wall_s: float | None = None


class AnnouncingStreams:
    """A subscriber stand-in with ``wait_frame``: the test lands frames, several at once if it
    likes, and the forwarder learns of them only through ``wait_frame``."""

    cameras = ("front", "wrist")

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.frames: dict[str, Received] = {}
        self.count = 0
        self.waiting = 0  # calls of wait_frame so far

    def land(self, *frames: Received) -> None:
        with self.cond:  # all of them before the forwarder can look: only the newest counts
            for received in frames:
                self.frames[received.frame.camera_id] = received
                self.count += 1
            self.cond.notify_all()

    def latest(self, camera_id: str) -> Received | None:
        with self.cond:
            return self.frames.get(camera_id)

    def wait_frame(self, after: int, timeout_s: float) -> int:
        with self.cond:
            self.waiting += 1
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.count > after, timeout_s)
            return self.count


def received(camera: str, seq: int, capture_wall_s: float) -> Received:
    image = np.full((8, 8, 3), seq, np.uint8)
    return Received(Frame(image, capture_wall_s, seq, camera), capture_wall_s,
                    capture_wall_s + 0.02, capture_wall_s + 0.01)  # fmt: skip


def wait_until(predicate, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.001)


def test_the_forwarder_wakes_on_each_frame_and_keeps_only_the_newest() -> None:
    hub = ConsoleHub(HubConfig(max_fps=1000.0))
    streams = AnnouncingStreams()
    # A poll period far longer than the test: a frame only gets through if wait_frame woke it.
    forwarder = CameraForwarder(streams, hub, poll_s=3600.0, wake_s=0.05).start()
    try:
        wait_until(lambda: streams.waiting >= 1)
        base = time.time()
        streams.land(received("front", 1, base + 1))
        wait_until(lambda: forwarder.forwarded >= 1)
        streams.land(*(received("front", seq, base + seq) for seq in (2, 3, 4)))
        wait_until(lambda: forwarder.forwarded >= 2)
        assert forwarder.forwarded == 2 and forwarder.skipped == 2 and forwarder.wakes == 2
        (shown,) = hub.frames_since({})
        assert shown.camera == "front" and shown.stamp_s == base + 4  # the newest, not seq 2
        streams.land(received("wrist", 1, base + 5))
        wait_until(lambda: forwarder.forwarded >= 3)
        assert {f.camera for f in hub.frames_since({})} == {"front", "wrist"}
        assert forwarder.skipped == 2 and forwarder.wakes == 3
        streams.land(received("front", 0, base + 6))  # its camera process restarted: seq 0 again
        wait_until(lambda: forwarder.forwarded >= 4)
        # where the time went, in ms from capture: sent, arrived, then picked up here
        assert list(forwarder.published_ms) == pytest.approx([10.0] * 4, abs=1e-3)
        assert list(forwarder.arrival_ms) == pytest.approx([20.0] * 4, abs=1e-3)
        assert len(forwarder.picked_ms) == 4
    finally:
        forwarder.stop()
    assert not forwarder.alive  # a forwarder asleep on wait_frame still sees stop


def test_a_source_without_wait_frame_is_polled() -> None:
    class Polled:
        cameras = ("front",)

        def __init__(self) -> None:
            self.frame: Received | None = None

        def latest(self, camera_id: str) -> Received | None:
            return self.frame

    hub = ConsoleHub(HubConfig(max_fps=1000.0))
    source = Polled()
    forwarder = CameraForwarder(source, hub, poll_s=0.001).start()
    try:
        source.frame = received("front", 1, time.time())
        wait_until(lambda: forwarder.forwarded == 1)
        assert forwarder.wakes == 0
    finally:
        forwarder.stop()


def test_a_source_whose_wait_fails_is_logged_and_the_forwarder_lives_on() -> None:
    class Failing(AnnouncingStreams):
        def wait_frame(self, after: int, timeout_s: float) -> int:
            self.waiting += 1
            if self.waiting <= 2:
                raise ConnectionError("subscriber closed")
            return super().wait_frame(after, timeout_s)

    hub = ConsoleHub(HubConfig(max_fps=1000.0))
    streams = Failing()
    forwarder = CameraForwarder(streams, hub, poll_s=0.001, wake_s=0.05).start()
    try:
        wait_until(lambda: streams.waiting >= 3)
        streams.land(received("front", 1, time.time()))
        wait_until(lambda: forwarder.forwarded == 1)
        assert forwarder.bad_frames == 2 and forwarder.alive
    finally:
        forwarder.stop()


@pytest.mark.parametrize("poll_s, wake_s", [(0.0, 0.1), (0.005, -1.0), (float("nan"), 0.1)])
def test_forwarder_periods_must_be_positive(poll_s: float, wake_s: float) -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        CameraForwarder(AnnouncingStreams(), ConsoleHub(), poll_s=poll_s, wake_s=wake_s)
