"""3Dconnexion SpaceMouse (6-DoF) over HID, through hidapi's ``hid`` module.

The device sends input reports: id 1 carries translation (three little-endian int16) and, on newer
models, rotation too in the same report (12 bytes); id 2 carries rotation on older models; id 3
a button bitmask. Axes are scaled by ``FULL_SCALE`` to [-1, 1]. A reader thread keeps the newest
state. ``read()`` first turns the puck's axes (x right, y toward the user, z down, as the HID
reports have them) into a base frame whose x points away from an operator facing the arm, y to
their left and z up (``PUCK_TO_BASE``), then applies the config's mapping (identity by default:
set ``axis_map`` / ``axis_sign`` for the lab's layout; check the signs on the real device once).

Device selection (``TeleopConfig.select``): empty takes the only SpaceMouse (an error if several),
else a serial number, a hidraw path, or an index into ``list_spacemice()``. A device that is not
there, or not readable (Linux needs a udev rule for /dev/hidraw*), raises ``DeviceNotFoundError``
saying what to do. All HID access goes through ``hid_module`` so the driver is tested on fakes.
"""

from __future__ import annotations

import importlib
import logging
import struct
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

VENDOR_IDS = (0x046D, 0x256F)  # Logitech (older 3Dconnexion devices), 3Dconnexion
PRODUCT_IDS = {
    0xC626: "SpaceNavigator", 0xC627: "SpaceExplorer", 0xC628: "SpaceNavigator for Notebooks",
    0xC62B: "SpaceMouse Pro", 0xC635: "SpaceMouse Compact", 0xC652: "Universal Receiver",
    0xC631: "SpaceMouse Pro Wireless", 0xC632: "SpaceMouse Pro Wireless (receiver)",
    0xC62E: "SpaceMouse Wireless (cabled)", 0xC62F: "SpaceMouse Wireless (receiver)",
}  # fmt: skip
FULL_SCALE = 350.0
# Puck (x right, y toward the user, z down) -> base (x away, y left, z up), operator facing the arm:
# base axis i = sign[i] * puck axis index[i] (rotations follow their axes).
PUCK_TO_BASE = ((1, 0, 2, 4, 3, 5), (-1.0, -1.0, -1.0, -1.0, -1.0, -1.0))
UDEV_HINT = (
    'on Linux, let your user read it: a udev rule such as SUBSYSTEM=="hidraw", '
    'ATTRS{idVendor}=="256f", MODE="0666" in /etc/udev/rules.d/99-spacemouse.rules, then '
    "replug it"
)


def load_hid() -> Any:
    try:
        return importlib.import_module("hid")
    except ImportError:
        raise DeviceNotFoundError(
            "the hidapi package is not installed; install the hardware extra: "
            'pip install -e ".[hardware]"'
        ) from None


def list_spacemice(hid_module: Any | None = None) -> list[dict[str, Any]]:
    """Connected 3Dconnexion devices: path, serial, product name, ids."""
    hid = hid_module or load_hid()
    found = []
    for info in hid.enumerate():
        if info.get("vendor_id") in VENDOR_IDS and info.get("product_id") in PRODUCT_IDS:
            found.append(info)
    return found


def parse_report(report: bytes, axes: np.ndarray, buttons: list[bool]) -> None:
    """Update raw axes (6,) and buttons from one HID input report, in place."""
    if not report:
        return
    kind, payload = report[0], bytes(report[1:])
    if kind == 1 and len(payload) >= 6:
        values = struct.unpack_from("<3h", payload)
        axes[:3] = np.asarray(values) / FULL_SCALE
        if len(payload) >= 12:  # newer models: rotation in the same report
            axes[3:] = np.asarray(struct.unpack_from("<3h", payload, 6)) / FULL_SCALE
    elif kind == 2 and len(payload) >= 6:
        axes[3:] = np.asarray(struct.unpack_from("<3h", payload)) / FULL_SCALE
    elif kind == 3 and payload:
        mask = int.from_bytes(payload[:4].ljust(4, b"\0"), "little")
        buttons[:] = [bool(mask >> i & 1) for i in range(max(len(buttons), 2))]
    np.clip(axes, -1.0, 1.0, out=axes)


class SpaceMouse:
    """One SpaceMouse (see the module docstring)."""

    def __init__(self, config: TeleopConfig | None = None, hid_module: Any | None = None) -> None:
        self.config = config or TeleopConfig(device="spacemouse")
        self._hid = hid_module or load_hid()
        info = self._choose(list_spacemice(self._hid))
        self.name = PRODUCT_IDS.get(info.get("product_id"), "SpaceMouse")
        self._device = self._hid.device()
        try:
            self._device.open_path(info["path"])
        except (OSError, ValueError) as exc:
            raise DeviceNotFoundError(
                f"{self.name} at {info['path']!r} cannot be opened ({exc}); {UDEV_HINT}"
            ) from None
        self._axes = np.zeros(6)
        self._buttons = [False, False]
        self._stamp = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="spacemouse", daemon=True)
        self._thread.start()
        log.info("SpaceMouse %s opened at %s", self.name, info["path"])

    def _choose(self, found: list[dict[str, Any]]) -> dict[str, Any]:
        select = self.config.select
        if not found:
            raise DeviceNotFoundError(
                "no SpaceMouse found: plug it in (or its wireless receiver); if it is plugged in, "
                + UDEV_HINT
            )
        if not select:
            if len(found) > 1:
                raise DeviceNotFoundError(
                    f"{len(found)} SpaceMice connected; choose one with teleop.select (a serial, "
                    f"path or index): {[(d.get('serial_number'), d['path']) for d in found]}"
                )
            return found[0]
        for i, info in enumerate(found):
            path = info["path"].decode() if isinstance(info["path"], bytes) else info["path"]
            if select in (str(i), info.get("serial_number"), path):
                return info
        raise DeviceNotFoundError(
            f"no SpaceMouse matches teleop.select={select!r}; connected: "
            f"{[(d.get('serial_number'), d['path']) for d in found]}"
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                report = self._device.read(64, 50)
            except (OSError, ValueError) as exc:
                with self._lock:
                    self.error = f"{self.name} stopped answering ({exc}): is it unplugged?"
                log.error("%s", self.error)
                return
            if report:
                with self._lock:
                    parse_report(bytes(report), self._axes, self._buttons)
                    self._stamp = time.monotonic()

    def read(self) -> TeleopCommand:
        """The newest command; idle if the device went quiet for ``stale_s`` (the puck sends
        reports only while deflected, so a centred puck is idle too)."""
        now = time.monotonic()
        with self._lock:
            if self.error:
                raise DeviceNotFoundError(self.error)
            axes, buttons, stamp = self._axes.copy(), tuple(self._buttons), self._stamp
        if now - stamp > self.config.stale_s and not any(buttons):
            return TeleopCommand.idle(now)
        index, sign = PUCK_TO_BASE
        return command_from_axes(axes[list(index)] * np.asarray(sign), buttons, self.config, stamp)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
        self._device.close()
