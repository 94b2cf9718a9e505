"""Camera streams into the console, independently of the policy loop.

A ``CameraForwarder`` runs on its own thread and copies each camera's newest frame from a
``CameraSubscriber`` (or anything with ``cameras`` and ``latest(camera)``) into the hub, stamped
with its capture time, so the page keeps seeing the arm while the actor is paused, stopped or
resetting. It sleeps until the source says a frame arrived (``wait_frame``; a source without it is
polled every ``poll_s``), and only each camera's newest frame goes on: frames that arrived while
it was busy are skipped, never queued. A bad frame is logged and counted; it never ends the
thread.

A ``RobotStatusForwarder`` does the same for the robot's mode, loop rate and warnings: every
``period_s`` (10 Hz) it reads ``ArmEnv.robot_status`` (the twin's controller, or the robot
client's newest state meta) into the hub, so the stop/fault banner and the health panel stay
live while the actor is paused, stopped or resetting. A failed read is logged and counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, Self

import numpy as np

from robot_rl.console.hub import ConsoleHub
from robot_rl.console.robot_status import robot_fields

log = logging.getLogger(__name__)


class FrameSource(Protocol):
    """What the forwarder reads: camera names and each one's newest received frame (an object
    with ``frame.seq``, ``frame.image`` (H, W, 3) uint8 RGB and ``capture_wall_s``, and where
    known ``received_wall_s`` and ``sent_wall_s``). A source may also have ``wait_frame(after,
    timeout_s) -> count`` (see ``CameraSubscriber.wait_frame``): the forwarder then wakes on each
    frame instead of polling."""

    cameras: tuple[str, ...]

    def latest(self, camera_id: str) -> Any: ...


class _StoppableThread:
    """A daemon thread named ``thread_name`` that runs ``run(stop_event)`` from ``start()``
    until ``stop()``."""

    thread_name = "console-forwarder"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        self._thread = threading.Thread(target=self.run, args=(self._stop,),
                                        name=self.thread_name, daemon=True)  # fmt: skip
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run(self, stop: threading.Event) -> None:
        raise NotImplementedError


class CameraForwarder(_StoppableThread):
    """Copies new frames from ``source`` into ``hub`` as they arrive until stopped.

    poll_s: the polling period for a source without ``wait_frame``. wake_s: the longest sleep on
    ``wait_frame`` (how soon ``stop`` is seen when no frame comes)."""

    thread_name = "console-cameras"

    def __init__(self, source: FrameSource, hub: ConsoleHub, poll_s: float = 0.005,
                 wake_s: float = 0.1) -> None:  # fmt: skip
        super().__init__()
        if not poll_s > 0 or not wake_s > 0:
            raise ValueError(f"poll_s={poll_s}, wake_s={wake_s}; both must be > 0 s")
        self.source, self.hub, self.poll_s, self.wake_s = source, hub, poll_s, wake_s
        self.forwarded = 0  # frames handed to the hub
        # gaps in a camera's seq between frames forwarded: frames lost upstream or replaced by a
        # newer one of their camera before this thread took them (keep-newest, never a queue)
        self.skipped = 0
        self.wakes = 0  # times ``wait_frame`` woke this thread (0 for a polled source)
        # Where a frame's time goes before the console's part, in ms from its capture (where the
        # source gives the stamps): sent by the camera's publisher (the camera's own latency:
        # a twin's render), arrived in this process (the stream and the receive thread), and
        # picked up by this thread (its wake-up).
        self.published_ms: deque[float] = deque(maxlen=10_000)
        self.arrival_ms: deque[float] = deque(maxlen=10_000)
        self.picked_ms: deque[float] = deque(maxlen=10_000)
        self.bad_frames = 0  # frames that raised (logged, skipped)

    def run(self, stop: threading.Event) -> None:
        seen: dict[str, int] = {}
        wait_frame = getattr(self.source, "wait_frame", None)
        count = 0
        while not stop.is_set():
            if wait_frame is not None:
                try:
                    new_count = int(wait_frame(count, self.wake_s))
                except Exception as exc:  # a broken source must not end the stream
                    self.bad_frames += 1
                    log.warning("console: waiting for camera frames failed: %s", exc)
                    stop.wait(self.poll_s)
                    continue
                if new_count == count:
                    continue  # no frame within wake_s: look at ``stop`` again
                self.wakes += 1
                count = new_count
            fresh = 0
            for camera in tuple(self.source.cameras):
                try:
                    received = self.source.latest(camera)
                    if received is None:
                        continue
                    seq = int(received.frame.seq)
                    if seq == seen.get(camera):
                        continue  # already forwarded (a lower seq is a restarted camera: new)
                    if camera in seen and seq > seen[camera] + 1:
                        self.skipped += seq - seen[camera] - 1
                    seen[camera] = seq
                    picked = time.time()
                    image = np.asarray(received.frame.image)
                    capture = float(received.capture_wall_s)
                    self.hub.publish_frames({camera: image}, capture)
                    for series, name in ((self.published_ms, "sent_wall_s"),
                                         (self.arrival_ms, "received_wall_s")):  # fmt: skip
                        stamp = getattr(received, name, None)
                        if isinstance(stamp, float):
                            series.append((stamp - capture) * 1e3)
                    self.picked_ms.append((picked - capture) * 1e3)
                    self.forwarded += 1
                    fresh += 1
                except Exception as exc:  # one bad frame must not end the stream
                    self.bad_frames += 1
                    if self.bad_frames <= 10 or self.bad_frames % 1000 == 0:
                        log.warning("console: camera %s frame skipped (%d so far): %s",
                                    camera, self.bad_frames, exc)  # fmt: skip
            if not fresh and wait_frame is None:
                stop.wait(self.poll_s)


class RobotStatusForwarder(_StoppableThread):
    """Copies ``read()`` (a robot status, see ``bridge.robot_fields``) into ``hub`` every
    ``period_s`` until stopped."""

    thread_name = "console-robot-status"

    def __init__(self, read: Callable[[], dict[str, Any]], hub: ConsoleHub,
                 period_s: float = 0.1) -> None:  # fmt: skip
        super().__init__()
        if not period_s > 0:
            raise ValueError(f"period_s={period_s}; must be > 0")
        self.read, self.hub, self.period_s = read, hub, period_s
        self.updates = 0  # statuses handed to the hub
        self.failures = 0  # reads that raised (logged, skipped)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            deadline = time.monotonic() + self.period_s
            try:
                self.hub.update(**robot_fields(self.read()))
                self.updates += 1
            except Exception as exc:  # a failed read must not end the status stream
                self.failures += 1
                if self.failures <= 10 or self.failures % 1000 == 0:
                    log.warning("console: robot status not read (%d so far): %s",
                                self.failures, exc)  # fmt: skip
            stop.wait(max(0.0, deadline - time.monotonic()))
