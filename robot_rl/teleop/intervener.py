"""The operator as the env's intervener: a teleop device read through the intervention gate.

``TeleopIntervener`` implements ``robot_rl.envs.intervention.Intervener``: each step it reads the
device's newest command, lets the gate decide who is in control (the console's take-over / hand-
back requests included), and while the operator is in control returns the env action that moves at
the operator's twist (base frame, converted into the episode's reset frame and action units).
The wrapper then records the step with that action and ``intervened`` set, so it reaches the demo
buffer as the learner issue asks. ``open_device`` builds a device from a ``TeleopConfig``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from robot_rl.envs.arm_env import arm_env, twist_to_action
from robot_rl.teleop.gate import Force, InterventionGate
from robot_rl.teleop_command import DeviceNotFoundError, TeleopCommand, TeleopConfig, twist_speeds


class TeleopDevice(Protocol):
    def read(self) -> TeleopCommand: ...

    def close(self) -> None: ...


def open_device(config: TeleopConfig, page: TeleopDevice | None = None) -> TeleopDevice:
    """The device ``config.device`` names; "keyboard" and "console" read the console page
    (``page``). DeviceNotFoundError with what to do when it is not there."""
    if config.device == "spacemouse":
        from robot_rl.hardware.spacemouse import SpaceMouse

        return SpaceMouse(config)
    if config.device == "gamepad":
        from robot_rl.hardware.gamepad import Gamepad

        return Gamepad(config)
    if config.device in ("keyboard", "console"):
        if page is None:
            raise DeviceNotFoundError(
                f"teleop device {config.device!r} reads the operator console's page; start the "
                "console (robot-rl session start, or console.enabled) or pick spacemouse/gamepad"
            )
        return page
    raise DeviceNotFoundError(f"teleop device {config.device!r} cannot be opened here")


def operator_action(env: Any, command: TeleopCommand, config: TeleopConfig) -> np.ndarray:
    """The env action that moves at ``command``'s twist for one policy period (in the episode's
    reset frame and action units); works for the twin and the remote env alike."""
    arm = arm_env(env)
    if arm is None:
        raise ValueError("the operator drives an arm env (the twin or a robot server's arm)")
    linear, angular = twist_speeds(command, config)
    return twist_to_action(arm.config, arm.reset_frame, linear, angular, command.gripper)


class TeleopIntervener:
    """See the module docstring. ``in_control`` and ``last_command`` are for the console."""

    def __init__(
        self,
        device: TeleopDevice,
        config: TeleopConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.device, self.config, self.clock = device, config, clock
        self.gate = InterventionGate(config.hold_s)
        self.in_control = False
        self.last_command = TeleopCommand.idle()
        self.last_action: np.ndarray | None = None
        self._force: Force | None = None
        self._lock = threading.Lock()

    def request(self, force: Force) -> None:
        """A console request ("take" or "release"), applied on the next step."""
        with self._lock:
            self._force = force

    def reset(self, env: Any) -> None:
        self.last_action = None  # a forced take-over (an operator demo) stays across episodes

    def action(self, env: Any, policy_action: np.ndarray) -> np.ndarray | None:
        command = self.device.read()
        with self._lock:
            force, self._force = self._force, None
        self.in_control = self.gate.update(command, self.clock(), force)
        self.last_command = command
        if not self.in_control:
            self.last_action = None
            return None
        self.last_action = operator_action(env, command, self.config)
        return self.last_action


class CombinedIntervener:
    """The operator first; when they are not in control, an optional fallback intervener (the
    scripted one in sim) may take over."""

    def __init__(self, operator: TeleopIntervener, fallback: Any | None = None) -> None:
        self.operator, self.fallback = operator, fallback

    def reset(self, env: Any) -> None:
        self.operator.reset(env)
        if self.fallback is not None:
            self.fallback.reset(env)

    def action(self, env: Any, policy_action: np.ndarray) -> np.ndarray | None:
        action = self.operator.action(env, policy_action)
        if action is None and self.fallback is not None:
            action = self.fallback.action(env, policy_action)
        return action
