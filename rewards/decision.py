"""From per-frame success probabilities to a success event, robust to single-frame spikes.

Success fires when p >= ``theta_on`` on ``k`` frames, counted with hysteresis: a frame at or above
``theta_on`` adds one, a frame between ``theta_off`` and ``theta_on`` keeps the count (jitter
around the threshold neither fires nor resets), a frame below ``theta_off`` resets it. An optional
state gate (e.g. "the gripper is closed") must hold on a counting frame, else the count resets.
Every fired success is logged with its frame index and score, so false positives can be found and
relabelled.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecisionConfig:
    theta_on: float = 0.9
    theta_off: float = 0.6
    k: int = 3

    def __post_init__(self) -> None:
        if not 0.0 <= self.theta_off <= self.theta_on <= 1.0:
            raise ValueError(
                f"thresholds theta_off={self.theta_off}, theta_on={self.theta_on}; "
                "need 0 <= theta_off <= theta_on <= 1"
            )
        if self.k < 1:
            raise ValueError(f"k={self.k}; need at least one frame")

    @staticmethod
    def from_threshold(theta_on: float, k: int = 3, off_ratio: float = 0.5) -> DecisionConfig:
        """theta_on from a calibrated threshold; theta_off = off_ratio * theta_on."""
        theta_on = min(max(float(theta_on), 0.0), 1.0)
        return DecisionConfig(theta_on, off_ratio * theta_on, k)


@dataclass
class FiredSuccess:
    frame: int
    score: float


def first_fire(probs: Sequence[float], config: DecisionConfig) -> int | None:
    """Index of the frame where success first fires over one episode's probabilities (in step
    order, clipped to [0, 1]); None if it never fires. Offline replays log nothing."""
    state = SuccessDecision(config, log_fired=False)
    for i, p in enumerate(probs):
        if state.update(float(min(max(p, 0.0), 1.0))):
            return i
    return None


@dataclass
class SuccessDecision:
    """Per-episode state; ``update`` once per frame, ``reset`` at each episode start."""

    config: DecisionConfig = field(default_factory=DecisionConfig)
    count: int = 0
    frame: int = 0
    fired: list[FiredSuccess] = field(default_factory=list)
    log_fired: bool = True  # offline evaluation replays thousands of episodes quietly

    def reset(self) -> None:
        self.count, self.frame = 0, 0

    def update(self, p: float, gate: bool = True) -> bool:
        """Feed one frame's probability; True on the frame success fires."""
        cfg = self.config
        if not (0.0 <= p <= 1.0):
            raise ValueError(f"probability {p!r}; expected a number in [0, 1]")
        if not gate or p < cfg.theta_off:
            self.count = 0
        elif p >= cfg.theta_on:
            self.count += 1
        fires = self.count == cfg.k
        if fires:
            self.fired.append(FiredSuccess(self.frame, float(p)))
            if self.log_fired:
                log.info("success fired at frame %d (p=%.3f, %d frames >= %.2f)",
                         self.frame, p, cfg.k, cfg.theta_on)  # fmt: skip
        self.frame += 1
        return fires
