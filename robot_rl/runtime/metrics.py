"""Where training scalars go: TensorBoard (the default) or Weights & Biases.

A :class:`MetricsSink` takes named scalars at an integer step (the env step count), is flushed now
and then and closed once. :func:`make_sink` builds the one a train config names with
``logger: tensorboard | wandb``. TensorBoard event files land in ``RUN_DIR/tb``; W&B writes under
``RUN_DIR/wandb`` and runs offline unless ``WANDB_MODE`` says otherwise (``wandb sync`` uploads an
offline run later), so logging to W&B never needs the network by default. W&B is the optional
extra ``wandb`` and is imported only when chosen.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from robot_rl.extras import require

LOGGERS = ("tensorboard", "wandb")
WANDB_MODES = ("offline", "online", "disabled")


@runtime_checkable
class MetricsSink(Protocol):
    """Receives training scalars. Implementations are safe to call from the actor and the
    learner thread at once."""

    def scalar(self, name: str, value: float, step: int) -> None:
        """Record ``value`` under ``name`` (``"train/return"``) at ``step`` (env steps, >= 0)."""

    def flush(self) -> None:
        """Push buffered values to disk (or the service)."""

    def close(self) -> None:
        """Flush and release; further calls to ``scalar`` are errors."""


def _check_scalar(name: str, value: float, step: int) -> float:
    if not isinstance(name, str) or not name:
        raise ValueError(f"metric name {name!r} must be a non-empty string")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"metric {name!r}: step {step!r} must be an int >= 0")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"metric {name!r}: value {value!r} must be a real number") from None
    return number  # NaN and inf pass: a diverging loss is worth seeing in the plot


class _ClosedGuard:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False

    def _check_open(self, name: str) -> None:
        if self._closed:
            raise RuntimeError(f"metric {name!r} written to a closed {type(self).__name__}")


class TensorBoardSink(_ClosedGuard):
    """Event files under ``log_dir`` (``RUN_DIR/tb`` from :func:`make_sink`)."""

    def __init__(self, log_dir: str | Path) -> None:
        super().__init__()
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(str(self.log_dir))

    def scalar(self, name: str, value: float, step: int) -> None:
        number = _check_scalar(name, value, step)
        with self._lock:
            self._check_open(name)
            self._writer.add_scalar(name, number, step)

    def flush(self) -> None:
        with self._lock:
            if not self._closed:
                self._writer.flush()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._writer.close()


class WandbSink(_ClosedGuard):
    """One W&B run with files under ``RUN_DIR/wandb``; offline by default (no network)."""

    def __init__(
        self,
        run_dir: str | Path,
        config: Mapping[str, Any] | None = None,
        *,
        project: str = "robot-rl",
        mode: str | None = None,
    ) -> None:
        super().__init__()
        mode = mode if mode is not None else os.environ.get("WANDB_MODE", "offline")
        if mode not in WANDB_MODES:
            raise ValueError(f"W&B mode {mode!r} is not one of {list(WANDB_MODES)}")
        wandb = require("wandb", "wandb", "logger: wandb")
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.mode = mode
        self._run = wandb.init(
            project=project,
            name=self.run_dir.name,
            dir=str(self.run_dir),
            config=dict(config or {}),
            mode=mode,
            reinit="create_new",  # several sinks in one process (tests, sweeps) stay apart
        )
        self._step = -1

    def scalar(self, name: str, value: float, step: int) -> None:
        number = _check_scalar(name, value, step)
        with self._lock:
            self._check_open(name)
            # W&B drops rows whose step goes backwards (two threads may race); keep the newer
            # step for such a late value rather than losing it.
            self._step = max(self._step, step)
            self._run.log({name: number}, step=self._step)

    def flush(self) -> None:
        """W&B's own service writes continuously; nothing is held back here."""

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._run.finish()


class MemorySink(_ClosedGuard):
    """Keeps every scalar in a dict ``name -> [(step, value)]``; for tests of training code."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, list[tuple[int, float]]] = {}
        self.flushes = 0

    def scalar(self, name: str, value: float, step: int) -> None:
        number = _check_scalar(name, value, step)
        with self._lock:
            self._check_open(name)
            self.values.setdefault(name, []).append((step, number))

    def flush(self) -> None:
        with self._lock:
            self.flushes += 1

    def close(self) -> None:
        with self._lock:
            self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed


def _plain_config(config: object) -> dict[str, Any]:
    """A train config (dataclass or mapping) as plain JSON-able values for W&B's config panel."""
    if config is None:
        return {}
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    if not isinstance(config, Mapping):
        raise ValueError(f"config must be a dataclass or a mapping, not {type(config).__name__}")

    def plain(value: object) -> object:
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, (str, int, bool)) or value is None:
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else str(value)
        if hasattr(value, "tolist"):  # numpy arrays and scalars
            return plain(value.tolist())
        return str(value)

    return {str(k): plain(v) for k, v in config.items()}


_PROJECT_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def make_sink(
    logger: str,
    run_dir: str | Path,
    config: object = None,
    *,
    project: str = "robot-rl",
    wandb_mode: str | None = None,
) -> MetricsSink:
    """The sink a train config names: ``"tensorboard"`` (``RUN_DIR/tb``) or ``"wandb"``.

    ``config`` (the train config, a dataclass or mapping) is stored with a W&B run; TensorBoard
    ignores it. ``wandb_mode`` defaults to ``$WANDB_MODE`` or ``"offline"``.
    """
    if logger not in LOGGERS:
        raise ValueError(f"logger {logger!r} is not one of {list(LOGGERS)}")
    run_dir = Path(run_dir)
    if logger == "tensorboard":
        return TensorBoardSink(run_dir / "tb")
    if not _PROJECT_RE.match(project):
        raise ValueError(f"W&B project {project!r} must be 1-128 of letters, digits, '_', '.', '-'")
    return WandbSink(run_dir, _plain_config(config), project=project, mode=wandb_mode)
