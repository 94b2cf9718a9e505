"""The console hub: what the actor loop shows the operator, and what the operator asks of it.

The actor loop calls ``publish_frames`` (camera frames with their capture time), ``update``
(robot state, actions, who is in control, the success detector's score and threshold, episode
counters, learner health), ``record_step`` (one point of the episode timeline) and
``end_episode``; it takes the operator's controls with ``take_controls`` once per step, and may
``wait`` on the hub between steps so that a control or teleop input wakes it at once. The web
server (``robot_rl.console.server``) reads ``snapshot``, ``frames_since`` and the chart history,
and feeds ``control``, key presses and the browser gamepad into the hub. Frames are JPEG-encoded
here, once per frame, at most ``max_fps`` per camera; a ``CameraForwarder``
(``robot_rl.console.forwarder``) feeds camera streams in independently of the policy loop.

Control ownership: the page (tab) that took over last owns control; the owner may ``lock`` it, and
then other tabs may only watch or send ``stop``. In-process callers (``client=None``) are the
operator at the machine and are never refused. Marks: one per episode, with an ``undo_mark``
within ``undo_window_s``. Every per-client collection here is bounded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from robot_rl.teleop.keyboard import KeyboardTeleop
from robot_rl.teleop_command import TeleopCommand, TeleopConfig, command_from_axes

log = logging.getLogger(__name__)

CONTROLS = ("take_over", "hand_back", "mark_success", "mark_failure", "undo_mark", "reset",
            "pause", "resume", "record_demo", "stop", "clear_stop", "lock", "unlock")  # fmt: skip
MARKS = ("mark_success", "mark_failure")
MAX_PENDING_CONTROLS = 64  # controls not yet taken by the actor loop
MAX_MARKS = 1000  # the console's mark log (newest kept)
MAX_TIMELINE_STEPS = 5000  # timeline points of the current episode


class ControlRefusedError(ValueError):
    """A well-formed control that the console refuses now (locked, already marked, ...)."""


@dataclass(frozen=True)
class Control:
    name: str
    page_ms: float | None  # the page's Date.now() when the operator acted (latency probes)
    received_s: float  # time.time() when the hub got it
    client: str | None = None  # the page (tab) that sent it; None: in-process
    episode: int | None = None  # marks and undo_mark: the episode (the hub's count) concerned


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class HubConfig:
    max_fps: float = 15.0  # frames per camera sent to the page
    jpeg_quality: int = 80
    history: int = 300  # points per chart
    undo_window_s: float = 5.0  # a mark may be withdrawn this long after it was made


class _History:
    """Per-episode, per-step and per-report series for the page's charts, ``length`` each."""

    def __init__(self, length: int) -> None:
        self.success: deque[float] = deque(maxlen=length)
        self.returns: deque[float] = deque(maxlen=length)
        self.interventions: deque[float] = deque(maxlen=length)
        self.score: deque[float] = deque(maxlen=length)
        self.utd: deque[float] = deque(maxlen=length)
        self.loss: deque[float] = deque(maxlen=length)


class _Timeline:
    """The current episode, one entry per step: who controlled it and the detector's score."""

    def __init__(self) -> None:
        self.control: deque[str] = deque(maxlen=MAX_TIMELINE_STEPS)  # "p" policy, "o" operator
        self.score: deque[float | None] = deque(maxlen=MAX_TIMELINE_STEPS)
        self.marks: list[dict[str, Any]] = []  # {"step", "mark"} of this episode
        self.fired_step: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"control": "".join(self.control), "score": list(self.score),
                "marks": list(self.marks), "fired_step": self.fired_step}  # fmt: skip


class ConsoleHub:
    """Thread-safe state shared by the actor loop and the console server (see module doc)."""

    def __init__(self, config: HubConfig | None = None, teleop: TeleopConfig | None = None):
        self.config = config or HubConfig()
        self.page = PageTeleop(teleop)
        self._lock = threading.Condition()
        self._state: dict[str, Any] = {"in_control": "policy", "episode": 0, "paused": False,
                                       "stopped": False, "recording": False, "step": 0,
                                       "owner": None, "locked": False}  # fmt: skip
        self._frames: dict[str, EncodedFrame] = {}
        self._last_encode: dict[str, float] = {}
        self._seq = 0
        self._controls: deque[Control] = deque()
        self._history = _History(self.config.history)
        self._timeline = _Timeline()
        self.marks: deque[dict[str, Any]] = deque(maxlen=MAX_MARKS)  # the console's mark log
        self.stream_latency_ms: deque[float] = deque(maxlen=10_000)  # reported by pages
        # Where a frame's latency goes (ms from capture): JPEG encoded here, written to a page.
        self.encoded_ms: deque[float] = deque(maxlen=10_000)
        self.sent_ms: deque[float] = deque(maxlen=10_000)
        # ... and arrived on a page's websocket (pages report it with the latency, before the
        # JPEG's decode and display)
        self.page_received_ms: deque[float] = deque(maxlen=10_000)
        self.frames_published = 0
        self.frames_skipped = 0  # malformed frames (wrong dtype or shape, failed encoding)
        self.refused = 0  # controls refused (locked, marked twice, too many pending)
        self.waits = 0  # calls of ``wait`` (the actor holding while paused or stopped)
        self.version = 0  # bumps on every change, for the server's push loop
        self._wake_seq = 0  # bumps on operator input (wakes ``wait``)
        self._pad_active = False
        self._listeners: list[Any] = []  # called on operator input (e.g. cut a paced step short)
        self._frame_listeners: list[Callable[[], None]] = []  # called on each new frame

    # -- actor side ---------------------------------------------------------------------------
    def publish_frames(self, frames: dict[str, np.ndarray], stamp_s: float | None = None) -> int:
        """RGB uint8 (H, W, 3) frames per camera, captured at wall-clock ``stamp_s`` (default
        now); returns how many were encoded (at most ``max_fps`` per camera get through)."""
        from robot_rl.extras import require

        cv2 = require("cv2", "console", "the console's camera views")

        stamp_s = time.time() if stamp_s is None else float(stamp_s)
        min_gap = 1.0 / self.config.max_fps
        encoded = 0
        for camera, image in frames.items():
            with self._lock:
                if stamp_s - self._last_encode.get(camera, -1e9) < min_gap:
                    continue
                self._last_encode[camera] = stamp_s
            image = np.asarray(image)
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                self.frames_skipped += 1
                log.warning("console: camera %s frame %s %s skipped; need (H, W, 3) uint8",
                            camera, image.shape, image.dtype)  # fmt: skip
                continue
            quality = [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality]
            ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(image[:, :, ::-1]), quality)
            if not ok:
                self.frames_skipped += 1
                continue
            self.encoded_ms.append((time.time() - stamp_s) * 1e3)
            with self._lock:
                self._seq += 1
                self._frames[camera] = EncodedFrame(camera, self._seq, stamp_s, jpeg.tobytes())
                self.frames_published += 1
                self.version += 1
                self._lock.notify_all()
                listeners = list(self._frame_listeners)
            for listener in listeners:  # the server's push loops: send it now, not at a poll
                try:
                    listener()
                except Exception:  # a page's closed event loop must not stop the stream
                    log.debug("console: a frame listener failed", exc_info=True)
            encoded += 1
        return encoded

    def add_frame_listener(self, listener: Callable[[], None]) -> None:
        """``listener()`` runs (on the publishing thread) after each new frame; keep it short."""
        with self._lock:
            self._frame_listeners.append(listener)

    def remove_frame_listener(self, listener: Callable[[], None]) -> None:
        with self._lock:
            if listener in self._frame_listeners:
                self._frame_listeners.remove(listener)

    def update(self, **fields: Any) -> None:
        """Merge fields into the state the page shows (numbers, strings, lists of numbers).
        ``utd`` and ``loss`` also go to their charts."""
        clean = {k: _jsonable(v) for k, v in fields.items()}
        with self._lock:
            self._state.update(clean)
            if clean.get("success_probability") is not None:
                self._history.score.append(clean["success_probability"])
            for name in ("utd", "loss"):
                if isinstance(clean.get(name), (int, float)):
                    getattr(self._history, name).append(float(clean[name]))
            self.version += 1
            self._lock.notify_all()

    def record_step(self, step: int, operator: bool, score: float | None = None,
                    fired: bool = False) -> None:  # fmt: skip
        """One step of the current episode's timeline: its index (from 1), whether the operator
        controlled it, the detector's score (probability) and whether the detector fired."""
        score = float(score) if score is not None and np.isfinite(score) else None
        with self._lock:
            self._timeline.control.append("o" if operator else "p")
            self._timeline.score.append(None if score is None else round(score, 4))
            if fired and self._timeline.fired_step is None:
                self._timeline.fired_step = int(step)
            self._state["step"] = int(step)

    def end_episode(self, success: bool, episode_return: float, intervention_rate: float) -> None:
        with self._lock:
            self._history.success.append(float(success))
            self._history.returns.append(float(episode_return))
            self._history.interventions.append(float(intervention_rate))
            n = len(self._history.success)
            recent = list(self._history.success)[-20:]
            self._state.update(episode=self._state.get("episode", 0) + 1, episodes_done=n,
                               success_rate=float(np.mean(recent)), step=0,
                               intervention_rate=float(np.mean(
                                   list(self._history.interventions)[-20:])))  # fmt: skip
            self._timeline = _Timeline()
            self.version += 1
            self._lock.notify_all()

    def relabel_episode(self, episode: int, success: bool, return_change: float) -> bool:
        """An ended episode's success and return changed (an applied mark withdrawn): its chart
        points and the success rate follow. False when it has left the charts' history."""
        with self._lock:
            back = int(self._state.get("episode", 0)) - 1 - int(episode)
            history = self._history
            if not 0 <= back < len(history.success):
                return False
            index = len(history.success) - 1 - back
            history.success[index] = float(success)
            history.returns[index] += float(return_change)
            self._state["success_rate"] = float(np.mean(list(history.success)[-20:]))
            self.version += 1
            self._lock.notify_all()
            return True

    @property
    def episode(self) -> int:
        """Episodes ended so far: the index of the running episode."""
        with self._lock:
            return int(self._state.get("episode", 0))

    def take_controls(self) -> list[Control]:
        """The operator's controls since the last call, oldest first."""
        with self._lock:
            controls = list(self._controls)
            self._controls.clear()
        return controls

    def wait(self, timeout_s: float) -> bool:
        """Sleep up to ``timeout_s``; True early if a control or teleop input arrived."""
        with self._lock:
            self.waits += 1
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
    def control(self, name: str, page_ms: float | None = None, client: str | None = None) -> str:
        """Queue the operator's control for the actor loop; returns a one-line confirmation.
        Raises ``ValueError`` for an unknown control and ``ControlRefusedError`` for one refused now
        (control locked by another tab, the episode already marked, nothing to undo)."""
        if name not in CONTROLS:
            raise ValueError(f"unknown console control {name!r}; known: {', '.join(CONTROLS)}")
        with self._lock:
            try:
                message = self._accept(name, page_ms, client)
            except ControlRefusedError:
                self.refused += 1
                raise
            self._wake_seq += 1
            self.version += 1
            self._lock.notify_all()
        self._notify()
        return message

    def _accept(self, name: str, page_ms: float | None, client: str | None) -> str:
        """Check and queue one control (the lock is held)."""
        owner, locked = self._state["owner"], self._state["locked"]
        if locked and client is not None and client != owner and name != "stop":
            raise ControlRefusedError(
                f"{name} refused: control is locked by {owner}; only stop is allowed from this page"
            )
        if len(self._controls) >= MAX_PENDING_CONTROLS and name != "stop":
            raise ControlRefusedError(
                f"{name} refused: {MAX_PENDING_CONTROLS} controls are waiting for the actor loop"
            )
        episode = int(self._state.get("episode", 0))
        now = time.time()
        undo_of: int | None = None
        if name in ("lock", "unlock"):
            if client is not None and client != owner:
                raise ControlRefusedError(
                    f"{name} refused: only the page in control ({owner or 'none'}) may lock or "
                    "unlock; take over first"
                )
            self._state["locked"] = name == "lock"
            return f"control {'locked' if name == 'lock' else 'unlocked'} by {client or 'local'}"
        if name in MARKS:
            done = [m for m in self.marks if m["episode"] == episode and not m["undone"]]
            if done:
                label = done[-1]["mark"].removeprefix("mark_")
                raise ControlRefusedError(
                    f"episode {episode} is already marked {label}; undo it first"
                )
            self.marks.append({"mark": name, "episode": episode, "time_s": now,
                               "step": self._state.get("step", 0), "undone": False})  # fmt: skip
            self._timeline.marks.append({"step": self._state.get("step", 0), "mark": name})
        elif name == "undo_mark":
            window_s = self.config.undo_window_s
            recent = [m for m in self.marks if not m["undone"] and now - m["time_s"] <= window_s]
            if not recent:
                raise ControlRefusedError(f"no mark of the last {window_s:g} s to undo")
            mark = recent[-1]
            mark["undone"] = True
            undo_of = mark["episode"]
            pending = [c for c in self._controls if c.name == mark["mark"]]
            if pending:  # the actor has not seen it yet: it never happens
                self._controls.remove(pending[-1])
                kept = [m for m in self._timeline.marks if m["mark"] != mark["mark"]]
                self._timeline.marks = kept
                return f"mark {mark['mark']} of episode {undo_of} withdrawn"
        if name == "take_over":
            if self._state["owner"] != (client or "local"):  # a lock belongs to its owner
                self._state["locked"] = False
            self._state["owner"] = client or "local"
        elif name == "hand_back":
            self._state.update(owner=None, locked=False)
        about = episode if name in MARKS else undo_of
        self._controls.append(Control(name, page_ms, now, client, about))
        if name in MARKS:
            return f"episode {episode} marked {name.removeprefix('mark_')} (undo: z)"
        if name == "undo_mark":
            return f"mark of episode {undo_of} withdrawn"
        return f"{name} sent"

    def client_left(self, client: str) -> None:
        """A page closed: it holds no keys, and its lock ends."""
        self.page.keyboard.release_all()
        with self._lock:
            if self._state["owner"] == client:
                self._state["locked"] = False
            self.version += 1
            self._lock.notify_all()

    def key(self, key: str, down: bool) -> None:
        """A teleop key held (``down``) or released on the page; unknown keys are refused."""
        if not self.page.keyboard.is_teleop_key(key):
            raise ValueError(f"key {key[:32]!r} is not a teleop key; keys: "
                             f"{', '.join(sorted(self.page.keyboard.keys))}")  # fmt: skip
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
        now = time.time()
        with self._lock:
            state = dict(self._state)
            state["charts"] = {
                "success": list(self._history.success),
                "returns": list(self._history.returns),
                "interventions": list(self._history.interventions),
                "score": list(self._history.score),
                "utd": list(self._history.utd),
                "loss": list(self._history.loss),
            }
            state["timeline"] = self._timeline.as_dict()
            state["marks"] = sum(not m["undone"] for m in self.marks)
            state["frame_age_ms"] = {c: round((now - f.stamp_s) * 1e3, 1)
                                     for c, f in self._frames.items()}  # fmt: skip
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
        return [round(float(v), 4) if np.isfinite(v) else None for v in value.ravel()]
    if isinstance(value, (np.floating, float)):
        return round(float(value), 5) if np.isfinite(value) else None
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
