"""Teleoperation: one ``TeleopCommand`` from any device (SpaceMouse, gamepad, keyboard, the
console page), shaped by one config (deadzone, scaling, axis mapping), and the intervention gate
that decides when the operator is in control."""
