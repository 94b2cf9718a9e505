"""Relabelling a stored episode when the operator withdraws a mark the actor already applied.

A success mark made the episode's last step terminal with reward 1; a failure mark ended it
truncated with reward 0 (``runtime.actor.apply_label``). Undoing the mark gives that step back
what the env said (``StepRelabel.restored``: its reward and terminated flag; the episode stays
ended, so a step that is not terminal is truncated) in three places: the episode file on the
learner's disk (``relabel_episode_file``), the replay buffers' copy while they hold it
(``ReplayBuffer.relabel_step``) and the console.

The file is rewritten atomically (a hidden temporary file in the same directory, fsynced, then
``os.replace`` over the original, then the directory fsynced), every other array unchanged, and
the label history is kept in the episode's meta: ``label_history`` gains one entry per relabel,
{"undone": label, "last_seq", "marked": {reward, terminated, truncated}, "restored": {...},
"time_utc"}, so what the operator first said is never lost.

A relabel is applied once: the same relabel again (an actor resends what it holds until the
learner acknowledges it, also after a restart of either) finds the step already restored with its
entry in the history, and changes nothing (``relabel_episode_file`` returns False; no second
entry, no rewrite).
"""

from __future__ import annotations

import datetime as dt
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.data.episodes import load_episode, write_episode_file

LABELS = ("success", "failure")
MAX_LABEL_HISTORY = 100  # entries kept in an episode's meta (the newest)


@dataclass(frozen=True)
class StepFlags:
    """A step's reward and end flags."""

    reward: float
    terminated: bool
    truncated: bool

    def as_dict(self) -> dict[str, Any]:
        return {"reward": float(self.reward), "terminated": bool(self.terminated),
                "truncated": bool(self.truncated)}  # fmt: skip


@dataclass(frozen=True)
class StepRelabel:
    """Withdraw the operator's ``undone`` mark from the last step (seq ``last_seq``) of an
    episode ``actor_id`` sent: the step is found on disk by (actor_id, last_seq) and in replay by
    its executed ``action`` (A,) and final ``next_state`` (D,) (the step as stored); ``marked``
    is what the mark made of it, ``restored`` what it becomes."""

    actor_id: str
    last_seq: int
    undone: str
    marked: StepFlags
    restored: StepFlags
    action: np.ndarray
    next_state: np.ndarray

    def __post_init__(self) -> None:
        if self.undone not in LABELS:
            raise ValueError(f"relabel: undone={self.undone!r}; expected one of {LABELS}")
        if isinstance(self.last_seq, bool) or not isinstance(self.last_seq, int) or \
                self.last_seq < 0:  # fmt: skip
            raise ValueError(f"relabel: last_seq={self.last_seq!r}; expected an int >= 0")
        for flags in (self.marked, self.restored):
            if not np.isfinite(flags.reward):
                raise ValueError(f"relabel: reward {flags.reward} is not finite")
        if self.restored.terminated and self.restored.truncated:
            raise ValueError("relabel: a step is not both terminated and truncated")

    def history_entry(self) -> dict[str, Any]:
        return {"undone": self.undone, "last_seq": self.last_seq, "marked": self.marked.as_dict(),
                "restored": self.restored.as_dict(),
                "time_utc": dt.datetime.now(dt.timezone.utc).isoformat()}  # fmt: skip

    def recorded_in(self, history: Any) -> bool:
        """Whether a ``label_history`` (a stored episode's meta) holds this relabel's entry: the
        same undone label, marked and restored flags (and seq, for entries that name one)."""
        if not isinstance(history, list):
            return False
        for entry in history:
            if not isinstance(entry, dict):
                continue
            seq = entry.get("last_seq", self.last_seq)
            if (entry.get("undone"), entry.get("marked"), entry.get("restored"), seq) == (
                self.undone, self.marked.as_dict(), self.restored.as_dict(), self.last_seq
            ):  # fmt: skip
                return True
        return False

    def to_meta(self) -> dict[str, Any]:
        """Plain values for a message's meta (``from_meta`` reads them back, checked)."""
        return {"actor_id": self.actor_id, "last_seq": self.last_seq, "undone": self.undone,
                "marked": self.marked.as_dict(), "restored": self.restored.as_dict(),
                "action": [float(v) for v in self.action],
                "next_state": [float(v) for v in self.next_state]}  # fmt: skip

    @staticmethod
    def from_meta(meta: dict[str, Any]) -> StepRelabel:
        """ValueError naming the field for anything malformed."""
        try:
            flags = {
                k: StepFlags(
                    float(meta[k]["reward"]),
                    _bool(meta[k]["terminated"]),
                    _bool(meta[k]["truncated"]),
                )
                for k in ("marked", "restored")
            }
            actor = meta["actor_id"]
            if not isinstance(actor, str) or not 0 < len(actor) <= 64:
                raise ValueError(f"actor_id={str(actor)[:40]!r}")
            return StepRelabel(actor, meta["last_seq"], meta["undone"], flags["marked"],
                               flags["restored"], _vector(meta["action"], "action"),
                               _vector(meta["next_state"], "next_state"))  # fmt: skip
        except (KeyError, TypeError) as exc:
            raise ValueError(f"relabel message: missing or malformed field {exc}") from None


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"relabel: flag {str(value)[:20]!r}; expected true or false")
    return value


def _vector(value: Any, name: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float32)
    if array.ndim != 1 or not 0 < array.size <= 4096 or not np.isfinite(array).all():
        raise ValueError(f"relabel: {name} must be 1-4096 finite numbers")
    return array


def _flags_of(step: Any) -> tuple[float, bool, bool]:
    return float(step.reward), bool(step.terminated), bool(step.truncated)


def _stored(flags: StepFlags) -> tuple[float, bool, bool]:
    """``flags`` as an episode file holds them (the reward as float32)."""
    return float(np.float32(flags.reward)), flags.terminated, flags.truncated


def relabel_episode_file(path: Path, relabel: StepRelabel) -> bool:
    """Give the last step of the episode at ``path`` the ``restored`` flags and append the
    relabel to its meta's ``label_history`` (see the module docstring); atomic. Returns True when
    the file was relabelled, False when this relabel was already applied to it (nothing is
    written). ValueError if the file's last step is not the marked one (its reward and flags
    differ from ``marked``), or if the file is malformed (``EpisodeFormatError``)."""
    path = Path(path)
    transitions, old_meta = load_episode(path)  # every check of the format first
    last = transitions[-1]
    marked = relabel.marked
    if _flags_of(last) == _stored(relabel.restored) and relabel.recorded_in(
        old_meta.get("label_history")
    ):
        return False  # a resend of a relabel already applied
    if _flags_of(last) != _stored(marked):
        raise ValueError(f"{path}: the last step has reward {last.reward}, terminated "
                         f"{last.terminated}, truncated {last.truncated}, not the marked "
                         f"{marked.as_dict()}; not relabelled")  # fmt: skip
    with zipfile.ZipFile(path) as archive:
        compress = any(i.compress_type != zipfile.ZIP_STORED for i in archive.infolist())
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: np.array(data[name]) for name in data.files}
    arrays["reward"][-1] = relabel.restored.reward
    arrays["terminated"][-1] = relabel.restored.terminated
    arrays["truncated"][-1] = relabel.restored.truncated
    meta = dict(old_meta)
    history = list(meta.get("label_history", []))
    meta["label_history"] = [*history, relabel.history_entry()][-MAX_LABEL_HISTORY:]
    meta["operator_label"] = None
    arrays["meta"] = np.array(json.dumps(meta, allow_nan=False))
    write_episode_file(path, arrays, compress, overwrite=True)
    return True
