"""Agent checkpoints: one ``torch.save`` file, written atomically, read with weights_only=True.

A checkpoint holds the agent's full ``state_dict`` (networks, targets, optimizers, temperature,
counters, random streams) and an ``extra`` dict of plain values (step counts, buffer sizes, ...).
The file is written to a temporary name in the same folder, fsynced and renamed over ``path``,
so a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from robot_rl.agents.sac import SACAgent

CHECKPOINT_FORMAT = 1
_PLAIN_TYPES = (str, int, float, bool, type(None), torch.Tensor)


class CheckpointError(RuntimeError):
    """A checkpoint file that exists but cannot be read as an agent checkpoint."""


def save_checkpoint(path: str | Path, agent: SACAgent, extra: dict[str, Any]) -> None:
    """Write ``agent.state_dict()`` and ``extra`` to ``path`` atomically.

    extra: str keys; values of str, int, float, bool, None, tensors, and lists / tuples / dicts
    of these (what ``torch.load(weights_only=True)`` can read back). Raises ValueError otherwise.
    """
    _check_plain(extra, "extra")
    path = Path(path)
    payload = {"format": CHECKPOINT_FORMAT, "agent": agent.state_dict(), "extra": extra}
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)  # make the rename itself durable


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The payload of a ``save_checkpoint`` file: {"format", "agent", "extra"}, read with
    weights_only=True. The one reader of checkpoint files.

    Raises FileNotFoundError if ``path`` does not exist, CheckpointError if it is not a readable
    robot-rl checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a checkpoint: {exc}") from None
    if (not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT
            or not isinstance(payload.get("extra"), dict) or "agent" not in payload):  # fmt: skip
        raise CheckpointError(
            f"checkpoint {path} is not a robot-rl agent checkpoint (format {CHECKPOINT_FORMAT})"
        )
    return payload


def load_checkpoint(path: str | Path, agent: SACAgent) -> dict[str, Any]:
    """Load a ``save_checkpoint`` file into ``agent`` and return its ``extra`` dict.

    Raises FileNotFoundError if ``path`` does not exist, CheckpointError if it is not a readable
    checkpoint or was saved from an agent of another architecture.
    """
    payload = read_checkpoint(path)
    try:
        agent.load_state_dict(payload["agent"])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path} does not fit this agent: {exc}") from None
    return payload["extra"]


def _check_plain(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{where} has key {k!r}; allowed: str keys")
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(value, _PLAIN_TYPES):
        raise ValueError(
            f"{where} is a {type(value).__name__}; allowed: str, int, float, bool, None, tensors, "
            "and lists / tuples / dicts of these"
        )


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open a folder; the rename is then as durable as it gets
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
