"""Output helpers shared by the benchmarks: a flat JSON file and a readable two-column table.

A benchmark result is a flat mapping of metric name -> number (or a short string / bool). Names
carry their unit (``tick_compute_us_p50``, ``static_error_mm``), so files need no schema.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

Scalar = float | int | str | bool

PROC_STAT = Path("/proc/stat")


def _cpu_times(path: Path = PROC_STAT) -> tuple[int, int, int] | None:
    """The host's CPU time over all cores since boot, in clock ticks, from the aggregate ``cpu``
    line of ``/proc/stat`` (Linux): (total, idle incl. iowait, steal). None where there is no
    such file or it cannot be read."""
    try:
        with open(path) as f:
            fields = f.readline().split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    try:  # user nice system idle iowait irq softirq steal [guest guest_nice: inside user, nice]
        ticks = [int(x) for x in fields[1:9]]
    except ValueError:
        return None
    return sum(ticks), ticks[3] + ticks[4], ticks[7]


class HostCpuWindow:
    """What the host's CPUs did between ``start()`` (or construction) and ``figures()``: the
    fraction of CPU time busy, and the fraction the hypervisor stole (time a virtual CPU was
    ready to run while the host ran something else). A benchmark reports both beside its
    timings, so that a slow host can be told from a slow change. -1 where unavailable."""

    def __init__(self, path: Path = PROC_STAT) -> None:
        self.path = path
        self.start()

    def start(self) -> None:
        self._start = _cpu_times(self.path)

    def figures(self, name: str = "") -> dict[str, float]:
        """``host_cpu_busy_fraction{name}`` and ``host_cpu_steal_fraction{name}``."""
        end = _cpu_times(self.path)
        busy = steal = -1.0
        if self._start is not None and end is not None and end[0] > self._start[0]:
            total = end[0] - self._start[0]
            idle = end[1] - self._start[1]
            busy = (total - idle) / total
            steal = (end[2] - self._start[2]) / total
        return {f"host_cpu_busy_fraction{name}": busy, f"host_cpu_steal_fraction{name}": steal}


def check_flat(results: Mapping[str, Scalar]) -> None:
    """Raise ValueError unless ``results`` maps str keys to finite numbers, strings or bools."""
    for key, value in results.items():
        if not isinstance(key, str):
            raise ValueError(f"result key {key!r} is a {type(key).__name__}; keys must be str")
        if not isinstance(value, (float, int, str, bool)):
            raise ValueError(
                f"result {key}={value!r} is a {type(value).__name__}; allowed: float, int, str, "
                "bool (results are flat)"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(
                f"result {key}={value!r} is not finite; JSON allows finite numbers only"
            )


def write_json(path: str | Path, results: Mapping[str, Scalar]) -> Path:
    """Write ``results`` as a flat JSON object (sorted keys), creating parent folders.

    Raises ValueError for nested or non-finite values and OSError if the path cannot be written.
    Returns the path written.
    """
    check_flat(results)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(dict(results), indent=2, sort_keys=True, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def _format_value(value: Scalar) -> str:
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if value == 0.0 or 1e-3 <= abs(value) < 1e6:
        return f"{value:.3f}"
    return f"{value:.3e}"


def format_table(results: Mapping[str, Scalar], title: str | None = None) -> str:
    """Two aligned columns, metric and value, in the mapping's order; an optional title line."""
    rows = [(key, _format_value(value)) for key, value in results.items()]
    key_width = max((len(k) for k, _ in rows), default=0)
    value_width = max((len(v) for _, v in rows), default=0)
    lines = [] if title is None else [title, "-" * max(len(title), key_width + 2 + value_width)]
    lines += [f"{key:<{key_width}}  {value:>{value_width}}" for key, value in rows]
    return "\n".join(lines)


def print_table(
    results: Mapping[str, Scalar], title: str | None = None, file: TextIO | None = None
) -> None:
    """Print ``format_table(results, title)`` to ``file`` (stdout by default)."""
    print(format_table(results, title), file=file or sys.stdout)
