"""PyBullet twin of a Franka Panda: the arm at torque level, task scenes, cameras, experts."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_c_stdout() -> Iterator[None]:
    """Silence what C code prints to fd 1 (pybullet's build banner on import, "argv[0]=" on
    connect), so a command's stdout stays its own report. Python's buffered output is flushed
    first, so nothing of ours is lost."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no fd 1 (an embedded interpreter): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        _flush_c_stdio()  # C's buffered printf output goes to /dev/null, not to the real fd 1
        os.dup2(saved, 1)
        os.close(saved)


def _flush_c_stdio() -> None:
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(None).fflush(None)


with quiet_c_stdout():  # the banner prints once, at pybullet's first import
    import pybullet  # noqa: F401
