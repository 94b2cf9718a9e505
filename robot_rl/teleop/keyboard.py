"""Keyboard teleoperation: held keys drive the arm at full scale along one axis each.

Keys are named as the browser names them (``KeyboardEvent.key``, lower case); the console page
forwards key presses and releases. Default layout (``TeleopConfig.keys`` overrides any of it):
w/s +x/-x, a/d +y/-y, r/f +z/-z, q/e yaw +/-, c closes the gripper, o opens it.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from robot_rl.teleop_command import TeleopCommand, TeleopConfig, command_from_axes

DEFAULT_KEYS = {
    "w": "+x", "s": "-x", "a": "+y", "d": "-y", "r": "+z", "f": "-z",
    "q": "+yaw", "e": "-yaw", "c": "close", "o": "open",
}  # fmt: skip
AXES = {"x": 0, "y": 1, "z": 2, "roll": 3, "pitch": 4, "yaw": 5}


class KeyboardTeleop:
    """Held-key state -> ``TeleopCommand`` (thread-safe: the console's server thread presses)."""

    def __init__(self, config: TeleopConfig | None = None) -> None:
        self.config = config or TeleopConfig(device="keyboard")
        self.keys = {**DEFAULT_KEYS, **self.config.keys}
        for key, action in self.keys.items():
            if action not in ("open", "close") and (
                action[:1] not in "+-" or action[1:] not in AXES
            ):
                raise ValueError(
                    f"key {key!r} -> {action!r}; actions are +x/-x ... +yaw/-yaw, open, close"
                )
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._stamp = time.monotonic()

    def is_teleop_key(self, key: str) -> bool:
        return key.lower() in self.keys

    def press(self, key: str) -> None:
        with self._lock:
            self._held.add(key.lower())
            self._stamp = time.monotonic()

    def release(self, key: str) -> None:
        with self._lock:
            self._held.discard(key.lower())
            self._stamp = time.monotonic()

    def release_all(self) -> None:
        """Forget every held key (the page lost focus or disconnected)."""
        with self._lock:
            self._held.clear()

    def read(self) -> TeleopCommand:
        """Raw axes are already in the base frame: the mapping's sign and scale still apply."""
        raw = np.zeros(6)
        gripper = None
        with self._lock:
            held = set(self._held)
        for key in held:
            action = self.keys.get(key)
            if action in ("open", "close"):
                gripper = action
            elif action:
                raw[AXES[action[1:]]] += 1.0 if action[0] == "+" else -1.0
        raw = np.clip(raw, -1.0, 1.0)
        identity = TeleopConfig(device="keyboard", deadzone=0.0, scale=self.config.scale,
                                axis_sign=self.config.axis_sign)  # fmt: skip
        return command_from_axes(raw, (), identity, time.monotonic(), gripper)

    def close(self) -> None:
        self.release_all()
