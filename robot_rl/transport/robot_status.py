"""What a robot reports about itself besides its state: the control loop's rate and the recent
warnings of the code that drives it. Used by the robot server (in its state message's meta) and
by the in-process twin (``envs.twin_env``), so the operator console shows both the same way.

``TickRate`` turns a growing tick counter into a rate (Hz) over the last ``window_s`` of wall
time; ``RecentWarnings`` is a logging handler that keeps the newest WARNING-or-worse lines of
chosen loggers (bounded, each line cut to ``max_chars``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

# Loggers whose warnings concern the arm: the robot server, the control loop, the backends.
ROBOT_LOGGERS = ("robot_rl.transport.robot_server", "robot_rl.controllers", "robot_rl.hardware",
                 "robot_rl.sim")  # fmt: skip


class TickRate:
    """Rate of a tick counter (ticks per wall-clock second) over about the last ``window_s``.

    ``update(count, now_s)`` is cheap enough to call on every state publication: it keeps one
    sample per ``window_s / 4``. A counter that goes backwards (a restarted loop) starts over.
    """

    def __init__(self, window_s: float = 1.0) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s={window_s}; must be > 0")
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque(maxlen=8)

    def update(self, count: int, now_s: float | None = None) -> float | None:
        """The rate (Hz) with this new reading; None until two readings span 1/4 window."""
        now_s = time.monotonic() if now_s is None else now_s
        samples = self._samples
        if samples and count < samples[-1][1]:
            samples.clear()
        if not samples or now_s - samples[-1][0] >= self.window_s / 4:
            samples.append((now_s, count))
        while len(samples) > 2 and now_s - samples[1][0] >= self.window_s:
            samples.popleft()
        first_s, first = samples[0]
        span_s = now_s - first_s
        if span_s < self.window_s / 4:
            return None
        return (count - first) / span_s


class RecentWarnings(logging.Handler):
    """Keeps the newest ``keep`` warning lines ("HH:MM:SS text") of ``loggers`` while attached."""

    def __init__(self, keep: int = 5, max_chars: int = 160,
                 loggers: tuple[str, ...] = ROBOT_LOGGERS) -> None:  # fmt: skip
        super().__init__(logging.WARNING)
        self.loggers = loggers
        self.total = 0  # warnings seen while attached
        self._lines: deque[str] = deque(maxlen=keep)
        self._max_chars = max_chars
        self._guard = threading.Lock()
        self._attached = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a malformed log call must not break the caller
            text = str(record.msg)
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {text}"[: self._max_chars]
        with self._guard:
            self._lines.append(line)
            self.total += 1

    def lines(self) -> list[str]:
        with self._guard:
            return list(self._lines)

    def attach(self) -> RecentWarnings:
        if not self._attached:
            for name in self.loggers:
                logging.getLogger(name).addHandler(self)
            self._attached = True
        return self

    def detach(self) -> None:
        if self._attached:
            for name in self.loggers:
                logging.getLogger(name).removeHandler(self)
            self._attached = False
