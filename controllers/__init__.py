"""Impedance control for torque-controlled arms: control laws, reference pipeline, safety, loop."""
