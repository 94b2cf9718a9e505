"""Optional dependencies, imported when a feature is used rather than at install or import time.

The base install carries what ``robot-rl train`` on the twin needs. Everything else (CLIP rewards,
plots, camera I/O, the console, W&B, LeRobot, rerun, gym-hil) lives in a named extra of
``pyproject.toml``; :func:`require` imports a module from one and, when it is missing, raises
:class:`MissingExtraError` with a one-line message naming the extra to install.
"""

from __future__ import annotations

import importlib
import types


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def require(module: str, extra: str, feature: str) -> types.ModuleType:
    """Import ``module`` (dotted name) or raise :class:`MissingExtraError`.

    ``extra`` is the optional-dependency group of robot-rl that installs it and ``feature`` says
    what needs it, e.g. ``require("wandb", "wandb", "logger: wandb")``.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        # Only the module itself (or one of its parents) missing means the extra is absent; an
        # error deeper inside an installed package is a real bug and propagates unchanged.
        missing = exc.name or ""
        if missing and (module == missing or module.startswith(missing + ".")):
            raise MissingExtraError(
                f"{feature} needs the optional package {missing!r}: pip install 'robot-rl[{extra}]'"
            ) from None
        raise
