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
