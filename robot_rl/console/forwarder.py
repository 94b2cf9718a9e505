"""Camera streams into the console, independently of the policy loop.

A ``CameraForwarder`` runs on its own thread and copies each camera's newest frame from a
``CameraSubscriber`` (or anything with ``cameras`` and ``latest(camera)``) into the hub, stamped
with its capture time, so the page keeps seeing the arm while the actor is paused, stopped or
resetting. A bad frame is logged and counted; it never ends the thread.

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
    with ``frame.seq``, ``frame.image`` (H, W, 3) uint8 RGB and ``capture_wall_s``)."""

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
    """Copies new frames from ``source`` into ``hub`` every ``poll_s`` until stopped."""

    thread_name = "console-cameras"

    def __init__(self, source: FrameSource, hub: ConsoleHub, poll_s: float = 0.005) -> None:
        super().__init__()
        self.source, self.hub, self.poll_s = source, hub, poll_s
        self.forwarded = 0  # frames handed to the hub
        # ms from capture to arrival (``received_wall_s``, where the source gives it): the
        # camera's own latency (a twin's render) and the stream's, before the console's part
        self.arrival_ms: deque[float] = deque(maxlen=10_000)
        self.bad_frames = 0  # frames that raised (logged, skipped)

    def run(self, stop: threading.Event) -> None:
        seen: dict[str, int] = {}
        while not stop.is_set():
            fresh = 0
            for camera in tuple(self.source.cameras):
                try:
                    received = self.source.latest(camera)
                    if received is None:
                        continue
                    seq = int(received.frame.seq)
                    if seq <= seen.get(camera, -1):
                        continue
                    seen[camera] = seq
                    image = np.asarray(received.frame.image)
                    self.hub.publish_frames({camera: image}, float(received.capture_wall_s))
                    arrived = getattr(received, "received_wall_s", None)
                    if isinstance(arrived, float):
                        self.arrival_ms.append((arrived - received.capture_wall_s) * 1e3)
                    self.forwarded += 1
                    fresh += 1
                except Exception as exc:  # one bad frame must not end the stream
                    self.bad_frames += 1
                    if self.bad_frames <= 10 or self.bad_frames % 1000 == 0:
                        log.warning("console: camera %s frame skipped (%d so far): %s",
                                    camera, self.bad_frames, exc)  # fmt: skip
            if not fresh:
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
