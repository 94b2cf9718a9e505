"""Fault injection between a controller and the twin: command latency, jitter and drops."""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FaultConfig:
    """latency_s: fixed delay of every command; jitter_s: extra uniform delay in [0, jitter_s];
    drop_probability: chance that a command never arrives (the arm keeps the last one)."""

    latency_s: float = 0.0
    jitter_s: float = 0.0
    drop_probability: float = 0.0

    def __post_init__(self) -> None:
        if self.latency_s < 0 or self.jitter_s < 0:
            raise ValueError(
                f"latency_s={self.latency_s}, jitter_s={self.jitter_s}; both must be >= 0"
            )
        if not 0.0 <= self.drop_probability <= 1.0:
            raise ValueError(f"drop_probability={self.drop_probability}; allowed 0..1")

    @property
    def active(self) -> bool:
        return self.latency_s > 0 or self.jitter_s > 0 or self.drop_probability > 0


class FaultyChannel:
    """Delays and drops torque commands; delivery keeps the order in which commands were sent."""

    def __init__(self, config: FaultConfig, rng: np.random.Generator):
        self.config = config
        self.rng = rng
        self._queue: collections.deque[tuple[float, np.ndarray]] = collections.deque()
        self._last_delivery_s = -np.inf
        self.dropped = 0

    def send(self, tau_nm: np.ndarray, now_s: float) -> None:
        c = self.config
        if c.drop_probability > 0 and self.rng.random() < c.drop_probability:
            self.dropped += 1
            return
        delay = c.latency_s + (self.rng.uniform(0.0, c.jitter_s) if c.jitter_s > 0 else 0.0)
        due = max(now_s + delay, self._last_delivery_s)  # no overtaking
        self._last_delivery_s = due
        self._queue.append((due, tau_nm))

    def receive(self, now_s: float) -> tuple[np.ndarray | None, float | None]:
        """Newest command due by ``now_s`` and the time it was due, or (None, None)."""
        latest: tuple[float, np.ndarray] | None = None
        while self._queue and self._queue[0][0] <= now_s + 1e-12:
            latest = self._queue.popleft()
        if latest is None:
            return None, None
        return latest[1], latest[0]
