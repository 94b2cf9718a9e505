"""SIGINT and SIGTERM handlers for the span of a ``with`` block (stdlib only, so the session
supervisor can use it without importing torch)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def handle_stop_signals(handler: Callable[[int, Any], None]) -> Iterator[bool]:
    """``handler(signum, frame)`` for SIGINT and SIGTERM while inside, the previous handlers
    after. Yields whether it could install them (only the main thread can; elsewhere nothing
    changes). Installing re-enables a SIGINT that a non-interactive shell started us ignoring."""
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield True
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
