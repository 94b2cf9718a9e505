"""Bounded ring of per-tick telemetry for the control loop (preallocated, no growth at 1 kHz)."""

from __future__ import annotations

import numpy as np

_FIELDS = {
    "stamp_s": np.float64,
    "compute_us": np.float32,  # controller math only (reference, law, safety)
    "io_us": np.float32,  # reading state and model, sending the torque
    "period_us": np.float32,  # wall time since the previous tick started
    "missed_deadline": np.bool_,
    "mode": np.int8,
    "target_age_s": np.float32,
    "safety_flags": np.int8,
}


class TelemetryRing:
    """Keeps the newest ``capacity`` ticks. ``tau_nm`` holds the torque sent on each tick."""

    def __init__(self, capacity: int, num_joints: int = 7):
        if capacity <= 0:
            raise ValueError(f"telemetry capacity={capacity}; must be a positive number of ticks")
        self.capacity = capacity
        self._cols = {name: np.zeros(capacity, dtype=dt) for name, dt in _FIELDS.items()}
        self._tau = np.zeros((capacity, num_joints))
        self.count = 0  # ticks recorded since creation (may exceed capacity)

    def record(
        self,
        stamp_s: float,
        compute_us: float,
        io_us: float,
        period_us: float,
        missed_deadline: bool,
        mode: int,
        target_age_s: float,
        safety_flags: int,
        tau_nm: np.ndarray,
    ) -> None:
        i = self.count % self.capacity
        c = self._cols
        c["stamp_s"][i] = stamp_s
        c["compute_us"][i] = compute_us
        c["io_us"][i] = io_us
        c["period_us"][i] = period_us
        c["missed_deadline"][i] = missed_deadline
        c["mode"][i] = mode
        c["target_age_s"][i] = target_age_s
        c["safety_flags"][i] = safety_flags
        self._tau[i] = tau_nm
        self.count += 1

    def _order(self) -> np.ndarray:
        n = min(self.count, self.capacity)
        start = self.count - n
        return (np.arange(start, start + n)) % self.capacity

    def column(self, name: str) -> np.ndarray:
        """Oldest-to-newest copy of one field ('tau_nm' gives an (n, 7) array)."""
        idx = self._order()
        if name == "tau_nm":
            return self._tau[idx]
        if name not in self._cols:
            raise KeyError(f"unknown telemetry field {name!r}; known: {[*_FIELDS, 'tau_nm']}")
        return self._cols[name][idx]

    def clear(self) -> None:
        self.count = 0
