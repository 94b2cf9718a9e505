"""The console hub: what the actor loop shows the operator, and what the operator asks of it.

The actor loop calls ``publish_frames`` (camera frames with their capture time), ``update``
(robot state, actions, who is in control, the success detector's score and threshold, episode
counters, learner health) and ``end_episode``; it takes the operator's controls with
``take_controls`` once per step, and may ``wait`` on the hub between steps so that a control or
teleop input wakes it at once. The web server (``robot_rl.console.server``) reads ``snapshot``,
``frames_since`` and the chart history, and feeds ``control``, key presses and the browser
gamepad into the hub. Frames are JPEG-encoded here, once per frame, at most ``max_fps`` per camera.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from robot_rl.teleop.command import TeleopCommand, TeleopConfig, command_from_axes
from robot_rl.teleop.keyboard import KeyboardTeleop

log = logging.getLogger(__name__)

CONTROLS = ("take_over", "hand_back", "mark_success", "mark_failure", "reset", "pause",
            "resume", "record_demo", "stop", "clear_stop")  # fmt: skip


@dataclass
class Control:
    name: str
    page_ms: float | None  # the page's Date.now() when the operator acted (latency probes)
    received_s: float  # time.time() when the hub got it


@dataclass
class EncodedFrame:
    camera: str
    seq: int
    stamp_s: float  # wall-clock capture time (time.time())
    jpeg: bytes


class PageTeleop:
    """The console page as a teleop device: held keys plus a browser gamepad (Gamepad API)."""

    def __init__(self, config: TeleopConfig | None = None) -> None:
        self.config = config or TeleopConfig(device="console")
        self.keyboard = KeyboardTeleop(TeleopConfig(device="keyboard", keys=self.config.keys,
                                                    scale=self.config.scale))  # fmt: skip
        self._pad: tuple[np.ndarray, tuple[bool, ...], float] | None = None
        self._lock = threading.Lock()

    def set_gamepad(self, axes: list[float], buttons: list[bool]) -> None:
        """Browser standard mapping: axes 0/1 left stick x/y, 2/3 right stick x/y (down +)."""
        a = np.zeros(4)
        a[: min(4, len(axes))] = np.clip(np.nan_to_num(np.asarray(axes[:4], float)), -1, 1)
        raw = np.array([-a[1], -a[0], -a[3], 0.0, 0.0, -a[2]])
        with self._lock:
            self._pad = (raw, tuple(bool(b) for b in buttons[:8]), time.monotonic())

    def read(self) -> TeleopCommand:
        keys = self.keyboard.read()
        with self._lock:
            pad = self._pad
        if pad is None or time.monotonic() - pad[2] > self.config.stale_s:
            return keys
        command = command_from_axes(pad[0], pad[1], self.config, pad[2])
        return command if command.engaged or not keys.engaged else keys

    def close(self) -> None:
        self.keyboard.release_all()


@dataclass
class HubConfig:
    max_fps: float = 15.0  # frames per camera sent to the page
    jpeg_quality: int = 80
    history: int = 300  # points per chart


class _History:
    """Per-episode and per-step series for the page's charts, ``length`` points each."""

    def __init__(self, length: int) -> None:
        self.success: deque[float] = deque(maxlen=length)
        self.returns: deque[float] = deque(maxlen=length)
        self.interventions: deque[float] = deque(maxlen=length)
        self.score: deque[float] = deque(maxlen=length)


class ConsoleHub:
    """Thread-safe state shared by the actor loop and the console server (see module doc)."""

    def __init__(self, config: HubConfig | None = None, teleop: TeleopConfig | None = None):
        self.config = config or HubConfig()
        self.page = PageTeleop(teleop)
        self._lock = threading.Condition()
        self._state: dict[str, Any] = {"in_control": "policy", "episode": 0, "paused": False,
                                       "stopped": False, "recording": False}  # fmt: skip
        self._frames: dict[str, EncodedFrame] = {}
        self._last_encode: dict[str, float] = {}
        self._seq = 0
        self._controls: deque[Control] = deque()
        self._history = _History(self.config.history)
        self.marks: list[dict[str, Any]] = []  # every mark with its episode (the console log)
        self.stream_latency_ms: deque[float] = deque(maxlen=10_000)  # reported by pages
        self.version = 0  # bumps on every change, for the server's push loop
        self._wake_seq = 0  # bumps on operator input (wakes ``wait``)
        self._pad_active = False
        self._listeners: list[Any] = []  # called on operator input (e.g. cut a paced step short)

    # -- actor side ---------------------------------------------------------------------------
    def publish_frames(self, frames: dict[str, np.ndarray], stamp_s: float | None = None) -> None:
        """RGB uint8 frames per camera, captured at wall-clock ``stamp_s`` (default now)."""
        import cv2

        stamp_s = time.time() if stamp_s is None else stamp_s
        min_gap = 1.0 / self.config.max_fps
        for camera, image in frames.items():
            if stamp_s - self._last_encode.get(camera, -1e9) < min_gap:
                continue
            image = np.asarray(image)
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                log.warning("console: camera %s frame %s %s skipped", camera, image.shape,
                            image.dtype)  # fmt: skip
                continue
            quality = [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality]
            ok, jpeg = cv2.imencode(".jpg", image[:, :, ::-1], quality)
            if not ok:
                continue
            self._last_encode[camera] = stamp_s
            with self._lock:
                self._seq += 1
                self._frames[camera] = EncodedFrame(camera, self._seq, stamp_s, jpeg.tobytes())
                self.version += 1
                self._lock.notify_all()

    def update(self, **fields: Any) -> None:
        """Merge fields into the state the page shows (numbers, strings, lists of numbers)."""
        clean = {k: _jsonable(v) for k, v in fields.items()}
        with self._lock:
            self._state.update(clean)
            if "success_probability" in clean and clean["success_probability"] is not None:
                self._history.score.append(clean["success_probability"])
            self.version += 1
            self._lock.notify_all()

    def end_episode(self, success: bool, episode_return: float, intervention_rate: float) -> None:
        with self._lock:
            self._history.success.append(float(success))
            self._history.returns.append(float(episode_return))
            self._history.interventions.append(float(intervention_rate))
            n = len(self._history.success)
            recent = list(self._history.success)[-20:]
            self._state.update(episode=self._state.get("episode", 0) + 1, episodes_done=n,
                               success_rate=float(np.mean(recent)),
                               intervention_rate=float(np.mean(
                                   list(self._history.interventions)[-20:])))  # fmt: skip
            self.version += 1
            self._lock.notify_all()

    def take_controls(self) -> list[Control]:
        """The operator's controls since the last call, oldest first."""
        with self._lock:
            controls = list(self._controls)
            self._controls.clear()
        return controls

    def wait(self, timeout_s: float) -> bool:
        """Sleep up to ``timeout_s``; True early if a control or teleop input arrived."""
        with self._lock:
            start = self._wake_seq
            return self._lock.wait_for(
                lambda: bool(self._controls) or self._wake_seq != start, timeout_s
            )

    def add_input_listener(self, listener: Any) -> None:
        """``listener()`` runs (on the server thread) whenever a control or teleop input comes."""
        self._listeners.append(listener)

    def _notify(self) -> None:
        for listener in self._listeners:
            try:
                listener()
            except Exception:  # a listener must never break the console
                log.exception("console: input listener failed")

    # -- server side --------------------------------------------------------------------------
    def control(self, name: str, page_ms: float | None = None) -> None:
        if name not in CONTROLS:
            raise ValueError(f"unknown console control {name!r}; known: {', '.join(CONTROLS)}")
        with self._lock:
            self._controls.append(Control(name, page_ms, time.time()))
            self._wake_seq += 1
            if name in ("mark_success", "mark_failure"):
                self.marks.append({"mark": name, "episode": self._state.get("episode", 0),
                                   "time_s": time.time()})  # fmt: skip
            self.version += 1
            self._lock.notify_all()
        self._notify()

    def key(self, key: str, down: bool) -> None:
        if down:
            self.page.keyboard.press(key)
        else:
            self.page.keyboard.release(key)
        with self._lock:
            self._wake_seq += 1
            self._lock.notify_all()
        if down:  # a press, not each release, cuts a paced step short
            self._notify()

    def gamepad(self, axes: list[float], buttons: list[bool]) -> None:
        self.page.set_gamepad(axes, buttons)
        active = any(abs(a) > 0.05 for a in axes) or any(buttons)
        with self._lock:
            starting, self._pad_active = active and not self._pad_active, active
            self._wake_seq += 1
            self._lock.notify_all()
        if starting:  # the stick leaving rest, not its 30 Hz updates, cuts a step short
            self._notify()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            state = dict(self._state)
            state["charts"] = {
                "success": list(self._history.success),
                "returns": list(self._history.returns),
                "interventions": list(self._history.interventions),
                "score": list(self._history.score),
            }
            state["marks"] = len(self.marks)
            return state

    def frames_since(self, seen: dict[str, int]) -> list[EncodedFrame]:
        with self._lock:
            return [f for c, f in self._frames.items() if f.seq > seen.get(c, 0)]

    def wait_change(self, version: int, timeout_s: float) -> int:
        with self._lock:
            self._lock.wait_for(lambda: self.version != version, timeout_s)
            return self.version


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [round(float(v), 4) for v in value.ravel()]
    if isinstance(value, (np.floating, float)):
        return round(float(value), 5) if np.isfinite(value) else None
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def forward_camera_streams(subscriber: Any, hub: ConsoleHub, stop: threading.Event) -> None:
    """Feed a ``CameraSubscriber``'s newest frames into the hub, each with its capture time
    (run on a thread until ``stop``): camera streams on the network reach the console page."""
    seen: dict[str, int] = {}
    while not stop.is_set():
        fresh = {}
        for camera in subscriber.cameras:
            received = subscriber.latest(camera)
            if received is not None and received.frame.seq > seen.get(camera, -1):
                seen[camera] = received.frame.seq
                fresh[camera] = received
        for camera, received in fresh.items():
            hub.publish_frames({camera: received.frame.image}, received.capture_wall_s)
        if not fresh:
            stop.wait(0.005)
