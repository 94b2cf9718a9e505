"""The operator's command, and how raw device axes become one.

Every device reads six raw axes in [-1, 1] (linear x, y, z, then angular x, y, z, in the device's
own order and signs), buttons, and an optional gripper request. ``TeleopConfig`` maps them to the
robot base frame: output axis i takes raw axis ``axis_map[i]`` times ``axis_sign[i]``; inside the
``deadzone`` an axis reads 0, and outside it is rescaled so the response starts at 0 (no jump at
the edge); then ``scale[i]`` applies. A twist component of 1.0 means full speed:
``max_linear_m_s`` or ``max_angular_rad_s``.

A contract, with the contracts (``interfaces``, ``config``): the devices in ``hardware`` produce
commands and ``teleop``, the console and the runtime consume them, so it sits below all of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Gripper = Literal["open", "close"]
DEVICES = ("spacemouse", "gamepad", "keyboard", "console", "scripted")


class DeviceNotFoundError(RuntimeError):
    """A teleop device is not plugged in or not readable; the message says what to do."""


@dataclass(frozen=True)
class TeleopCommand:
    """twist: (6,) fractions of full speed in the base frame (linear xyz, angular xyz);
    engaged: some axis is past the deadzone or a gripper button is down; stamp_s: time.monotonic()
    of the reading."""

    twist: np.ndarray
    gripper: Gripper | None = None
    engaged: bool = False
    buttons: tuple[bool, ...] = ()
    stamp_s: float = 0.0

    @staticmethod
    def idle(stamp_s: float = 0.0) -> TeleopCommand:
        return TeleopCommand(np.zeros(6), None, False, (), stamp_s)


@dataclass(frozen=True)
class TeleopConfig:
    device: str = "keyboard"  # one of DEVICES
    select: str = ""  # which device: a serial number, a /dev/input or hidraw path, or an index
    deadzone: float = 0.1
    scale: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    axis_map: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
    axis_sign: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    max_linear_m_s: float = 0.1
    max_angular_rad_s: float = 0.5
    hold_s: float = 0.5  # hand back after this long without input
    stale_s: float = 0.25  # a device silent for longer reads as idle
    close_button: int = 0  # gamepad / SpaceMouse button that closes the gripper
    open_button: int = 1
    keys: dict[str, str] = field(default_factory=dict)  # keyboard: key -> action, see keyboard.py

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"teleop device {self.device!r}; allowed: {', '.join(DEVICES)}")
        if not 0.0 <= self.deadzone < 1.0:
            raise ValueError(f"deadzone={self.deadzone}; need 0 <= deadzone < 1")
        for name in ("scale", "axis_map", "axis_sign"):
            if len(getattr(self, name)) != 6:
                raise ValueError(f"{name} needs 6 values (linear xyz, angular xyz)")
        if sorted(self.axis_map) != list(range(6)):
            raise ValueError(f"axis_map={self.axis_map}; need a permutation of 0..5")
        if self.hold_s < 0 or self.stale_s <= 0:
            raise ValueError("hold_s must be >= 0 and stale_s > 0")
        if self.max_linear_m_s <= 0 or self.max_angular_rad_s <= 0:
            raise ValueError("max_linear_m_s and max_angular_rad_s must be > 0")


def shape_axes(raw: np.ndarray, config: TeleopConfig) -> np.ndarray:
    """(6,) raw axes in [-1, 1] -> (6,) twist fractions: map, sign, deadzone, scale (module doc)."""
    raw = np.asarray(raw, dtype=float)
    if raw.shape != (6,) or not np.isfinite(raw).all():
        raise ValueError(f"raw axes {raw!r}; expected 6 finite values")
    mapped = raw[list(config.axis_map)] * np.asarray(config.axis_sign)
    mapped = np.clip(mapped, -1.0, 1.0)
    dz = config.deadzone
    magnitude = np.maximum(np.abs(mapped) - dz, 0.0) / (1.0 - dz)
    return np.sign(mapped) * magnitude * np.asarray(config.scale)


def command_from_axes(
    raw: np.ndarray,
    buttons: tuple[bool, ...],
    config: TeleopConfig,
    stamp_s: float,
    gripper: Gripper | None = None,
) -> TeleopCommand:
    """A command from raw axes and buttons; the gripper buttons map to open / close."""
    twist = shape_axes(raw, config)
    if gripper is None:
        if len(buttons) > config.close_button and buttons[config.close_button]:
            gripper = "close"
        elif len(buttons) > config.open_button and buttons[config.open_button]:
            gripper = "open"
    engaged = bool(np.any(twist != 0.0) or gripper is not None)
    return TeleopCommand(twist, gripper, engaged, tuple(bool(b) for b in buttons), stamp_s)


def twist_speeds(command: TeleopCommand, config: TeleopConfig) -> tuple[np.ndarray, np.ndarray]:
    """(linear m/s (3,), angular rad/s (3,)) of a command."""
    t = np.asarray(command.twist, dtype=float)
    if not all(math.isfinite(v) for v in t):
        raise ValueError(f"teleop twist {t!r} is not finite")
    return t[:3] * config.max_linear_m_s, t[3:] * config.max_angular_rad_s
