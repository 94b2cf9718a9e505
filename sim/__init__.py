"""PyBullet twin of a Franka Panda: the arm at torque level, task scenes, cameras, experts."""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import sys
import tempfile
import types
import typing
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


PYBULLET_BANNER = b"pybullet build time:"


def import_without_banner(name: str, banner: bytes) -> types.ModuleType:
    """Import module ``name`` with the lines starting with ``banner`` that its C code prints to
    fd 1 or fd 2 while it loads dropped; everything else it prints there (a real error, a
    warning) is passed on unchanged, after the import."""
    sys.stdout.flush()
    sys.stderr.flush()
    with contextlib.ExitStack() as stack:
        captures: dict[int, tuple[int, typing.BinaryIO]] = {}
        try:
            for fd in (1, 2):
                try:
                    saved = os.dup(fd)
                except OSError:  # no such fd (an embedded interpreter): nothing to filter there
                    continue
                capture = stack.enter_context(tempfile.TemporaryFile())
                captures[fd] = (saved, capture)
                os.dup2(capture.fileno(), fd)
            return importlib.import_module(name)
        finally:
            _flush_c_stdio()
            with contextlib.suppress(ValueError, OSError):
                sys.stdout.flush()
                sys.stderr.flush()
            for fd, (saved, capture) in captures.items():
                os.dup2(saved, fd)
                os.close(saved)
                capture.seek(0)
                kept = [line for line in capture.read().splitlines(keepends=True)
                        if not line.startswith(banner)]  # fmt: skip
                if kept:
                    os.write(fd, b"".join(kept))


# pybullet's C module prints its build banner (to stderr) at its first import: on every command.
import_without_banner("pybullet", PYBULLET_BANNER)
