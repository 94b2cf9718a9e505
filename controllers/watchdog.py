"""Command watchdog: how fresh the last target is decides what the loop may do."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ControlMode(enum.IntEnum):
    """What the control loop is doing this tick."""

    ACTIVE = 0  # tracking the target stream
    HOLD = 1  # targets stalled: holding the pose the arm had when they stopped
    DAMP = 2  # stalled for longer: pure damping brings the arm to rest
    FAULT = 3  # the controller failed this tick: pure damping, logged


@dataclass(frozen=True)
class WatchdogConfig:
    hold_after_s: float = 0.1
    damp_after_s: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.hold_after_s < self.damp_after_s:
            raise ValueError(
                f"watchdog hold_after_s={self.hold_after_s}, damp_after_s={self.damp_after_s}; "
                "need 0 < hold_after_s < damp_after_s"
            )


# Tolerance on the age comparison so that lockstep ticks (k * period) land on the threshold exactly.
_EPS_S = 1e-9


def watchdog_mode(command_age_s: float, config: WatchdogConfig) -> ControlMode:
    """Mode for a target stream whose newest target is ``command_age_s`` old (NaN age: DAMP)."""
    if not command_age_s < config.damp_after_s - _EPS_S:  # also true for NaN: fail safe
        return ControlMode.DAMP
    if command_age_s >= config.hold_after_s - _EPS_S:
        return ControlMode.HOLD
    return ControlMode.ACTIVE
