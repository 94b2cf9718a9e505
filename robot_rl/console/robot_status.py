"""The robot as the operator console shows it: mode, fault, loop rate and warnings, from a robot
server's state meta or an in-process twin's ``ArmBackend.robot_status`` (the same keys).
"""

from __future__ import annotations

from typing import Any

import numpy as np

MODES = ("active", "hold", "damp", "fault")  # ControlMode's order (controllers.watchdog)
STATE_LOST_S = 1.0  # a robot state older than this: the robot server is silent
MAX_WARNINGS = 5
MAX_WARNING_CHARS = 200


def robot_mode(state: Any) -> str | None:
    """The robot's mode (active, hold, damp, stopped, fault) from a state that carries one."""
    mode = getattr(state, "mode", None)
    if mode is None:
        return None
    name = getattr(mode, "name", None)
    if isinstance(name, str):
        return name.lower()
    if isinstance(mode, (int, np.integer)) and 0 <= int(mode) < len(MODES):
        return MODES[int(mode)]
    return str(mode).lower()[:16]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    return float(value) if np.isfinite(value) else None


def robot_fields(status: dict[str, Any]) -> dict[str, Any]:
    """The console's robot fields from a robot status (a robot server's state meta, or
    ``ArmBackend.robot_status``): ``robot_mode`` (active, hold, damp, stopped, fault: a fault
    first, then a latched software stop, then the watchdog's mode), ``robot_fault_text``, the
    loop rate (``robot_loop_hz`` against ``robot_loop_hz_target``, ``robot_loop_clock``,
    ``robot_realtime_factor``), ``robot_warnings`` (newest last, bounded) and what a real arm
    adds (``robot_connected``, ``robot_control``, ``robot_recoveries``). A status with no state,
    or a state older than ``STATE_LOST_S``, is a fault: the robot server is silent. Values of
    the wrong type are left out, never passed on."""
    fields: dict[str, Any] = {}
    warnings = status.get("warnings")
    lines = [w[:MAX_WARNING_CHARS] for w in warnings if isinstance(w, str)] \
        if isinstance(warnings, list) else []  # fmt: skip
    fault = status.get("fault_text")
    fault = fault[:MAX_WARNING_CHARS] if isinstance(fault, str) and fault else ""
    age_s = _number(status.get("state_age_s"))
    connected = status.get("connected")
    if status.get("no_state"):
        fault = "no robot state yet: is the robot server running?"
    elif age_s is not None and age_s > STATE_LOST_S:
        fault = f"no robot state for {age_s:.1f} s: is the robot server running?"
    elif connected is False and not fault:
        fault = "the arm is not connected"
    mode = status.get("mode")
    stopped = status.get("stopped") is True
    if fault or (isinstance(mode, int) and mode == 3):
        fields["robot_mode"] = "fault"
    elif stopped:
        fields["robot_mode"] = "stopped"
    elif isinstance(mode, int) and not isinstance(mode, bool) and 0 <= mode < len(MODES):
        fields["robot_mode"] = MODES[mode]
    fields["robot_fault_text"] = fault
    for key, name in (("loop_hz", "robot_loop_hz"), ("loop_hz_target", "robot_loop_hz_target"),
                      ("realtime_factor", "robot_realtime_factor"),
                      ("state_age_s", "robot_state_age_s"),
                      ("recoveries", "robot_recoveries")):  # fmt: skip
        number = _number(status.get(key))
        if number is not None:
            fields[name] = number
    for key, name in (("loop_clock", "robot_loop_clock"), ("control", "robot_control")):
        if isinstance(status.get(key), str):
            fields[name] = status[key][:32]
    if isinstance(connected, bool):
        fields["robot_connected"] = connected
    fields["robot_warnings"] = lines[-MAX_WARNINGS:]
    for key in ("tcp_pos_m", "gripper_width_m"):
        if key in status:
            fields[key] = status[key]
    return fields


__all__ = ["MODES", "STATE_LOST_S", "robot_fields", "robot_mode"]
