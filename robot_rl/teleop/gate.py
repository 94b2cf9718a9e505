"""Who is in control: the intervention gate, with hysteresis.

The operator takes over as soon as the device's input passes the deadzone (or a gripper button is
pressed), and keeps control while input continues; after ``hold_s`` without input control goes
back to the policy, so a brief pause while steering does not hand the arm back mid-correction.
The console can also force control: "take over" holds it until "hand back" (no input needed);
"hand back" releases at once, and input must stop and start again before it re-engages (so a
stick held off-centre when the operator clicks "hand back" does not grab control back).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from robot_rl.teleop_command import TeleopCommand

Force = Literal["take", "release"]


@dataclass
class InterventionGate:
    hold_s: float = 0.5
    active: bool = False
    forced: bool = False  # console "take over": sticky until "hand back"
    _last_input_s: float = -1e9
    _released_with_input: bool = False

    def update(self, command: TeleopCommand, now_s: float, force: Force | None = None) -> bool:
        """Feed the newest command (and a console request); True while the operator controls."""
        if force == "take":
            self.active = self.forced = True
        elif force == "release":
            self.active = self.forced = False
            self._released_with_input = command.engaged
        if command.engaged and self._released_with_input:
            return self.active  # wait for the operator to let go first
        self._released_with_input = False
        if command.engaged:
            self._last_input_s = now_s
            self.active = True
        elif self.active and not self.forced and now_s - self._last_input_s >= self.hold_s:
            self.active = False
        return self.active

    def reset(self) -> None:
        self.active = self.forced = False
        self._released_with_input = False
        self._last_input_s = -1e9
