"""Gamepads (Xbox, PlayStation, Logitech F310 and alike) through Linux evdev.

Left stick: x/y in the base frame (up = +x away from the operator, left = +y); right stick
vertical: z; right stick horizontal: yaw. Buttons are numbered in the order of ``BUTTONS`` (south,
east, west, north, left and right shoulder): by default south closes the gripper and east opens
it. Stick values are normalized with the device's reported range to [-1, 1]; the config's
mapping, deadzone and scaling apply on top (gamepad sticks rest a little off-centre: keep a
deadzone of 0.1 or more).

Selection (``TeleopConfig.select``): empty takes the first device with two sticks, else a
/dev/input/event* path or a name fragment. No gamepad, or one the user cannot read (add the user
to the ``input`` group), raises ``DeviceNotFoundError``. Access goes through ``evdev_module``, so
the driver is tested on fakes.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from typing import Any

import numpy as np

from robot_rl.teleop_command import (
    DeviceNotFoundError,
    TeleopCommand,
    TeleopConfig,
    command_from_axes,
)

log = logging.getLogger(__name__)

EV_KEY, EV_ABS = 0x01, 0x03
ABS_X, ABS_Y, ABS_RX, ABS_RY = 0x00, 0x01, 0x03, 0x04
BUTTONS = (0x130, 0x131, 0x134, 0x133, 0x136, 0x137)  # BTN_SOUTH, EAST, WEST, NORTH, TL, TR
# raw slot -> (evdev axis, sign): base x = -left stick y (up is negative), y = -left stick x,
# z = -right stick y, yaw = -right stick x; roll and pitch stay 0.
STICKS = {0: (ABS_Y, -1.0), 1: (ABS_X, -1.0), 2: (ABS_RY, -1.0), 5: (ABS_RX, -1.0)}


def load_evdev() -> Any:
    try:
        return importlib.import_module("evdev")
    except ImportError:
        raise DeviceNotFoundError(
            "the evdev package is not installed (Linux only); install the hardware extra: "
            'pip install -e ".[hardware]"'
        ) from None


def list_gamepads(evdev_module: Any | None = None) -> list[Any]:
    """Input devices with both sticks."""
    evdev = evdev_module or load_evdev()
    pads = []
    for path in evdev.list_devices():
        try:
            device = evdev.InputDevice(path)
        except OSError:
            continue  # not readable by this user; reported if nothing else is found
        absolute = dict(device.capabilities().get(EV_ABS, []))
        if all(a in absolute for a in (ABS_X, ABS_Y, ABS_RX, ABS_RY)):
            pads.append(device)
        else:
            device.close()
    return pads


class Gamepad:
    """One gamepad (see the module docstring)."""

    def __init__(self, config: TeleopConfig | None = None, evdev_module: Any | None = None) -> None:
        self.config = config or TeleopConfig(device="gamepad", deadzone=0.15)
        self._evdev = evdev_module or load_evdev()
        pads = list_gamepads(self._evdev)
        self._device = self._choose(pads)
        for pad in pads:
            if pad is not self._device:
                pad.close()
        absolute = dict(self._device.capabilities().get(EV_ABS, []))
        self._ranges = {code: (info.min, info.max) for code, info in absolute.items()}
        self._values = {code: 0.0 for code in absolute}
        self._buttons = {code: False for code in BUTTONS}
        self._stamp = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="gamepad", daemon=True)
        self._thread.start()
        log.info("gamepad %s opened at %s", self._device.name, self._device.path)

    def _choose(self, pads: list[Any]) -> Any:
        select = self.config.select
        if not pads:
            raise DeviceNotFoundError(
                "no gamepad found: plug one in (or pair it); if it is plugged in, add your user "
                "to the input group (sudo usermod -aG input $USER, then log in again)"
            )
        if not select:
            return pads[0]
        for pad in pads:
            if select == pad.path or select.lower() in pad.name.lower():
                return pad
        raise DeviceNotFoundError(
            f"no gamepad matches teleop.select={select!r}; connected: "
            f"{[(p.path, p.name) for p in pads]}"
        )

    def _normalize(self, code: int, value: int) -> float:
        lo, hi = self._ranges.get(code, (-32768, 32767))
        return float(np.clip(2.0 * (value - lo) / max(hi - lo, 1) - 1.0, -1.0, 1.0))

    def _run(self) -> None:
        try:
            for event in self._device.read_loop():
                if self._stop.is_set():
                    return
                with self._lock:
                    if event.type == EV_ABS and event.code in self._values:
                        self._values[event.code] = self._normalize(event.code, event.value)
                    elif event.type == EV_KEY and event.code in self._buttons:
                        self._buttons[event.code] = bool(event.value)
                    self._stamp = time.monotonic()
        except OSError as exc:
            with self._lock:
                self.error = f"gamepad {self._device.name} stopped answering ({exc}): unplugged?"
            log.error("%s", self.error)

    def read(self) -> TeleopCommand:
        with self._lock:
            if self.error:
                raise DeviceNotFoundError(self.error)
            raw = np.zeros(6)
            for slot, (code, sign) in STICKS.items():
                raw[slot] = sign * self._values.get(code, 0.0)
            buttons = tuple(self._buttons[c] for c in BUTTONS)
            stamp = self._stamp
        return command_from_axes(raw, buttons, self.config, stamp)

    def close(self) -> None:
        self._stop.set()
        self._device.close()
