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
{"undone": label, "marked": {reward, terminated, truncated}, "restored": {...}, "time_utc"}, so
what the operator first said is never lost.
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
        return {"undone": self.undone, "marked": self.marked.as_dict(),
                "restored": self.restored.as_dict(),
                "time_utc": dt.datetime.now(dt.timezone.utc).isoformat()}  # fmt: skip

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


def relabel_episode_file(path: Path, relabel: StepRelabel) -> Path:
    """Give the last step of the episode at ``path`` the ``restored`` flags and append the
    relabel to its meta's ``label_history`` (see the module docstring); atomic. ValueError if the
    file's last step is not the marked one (its reward and flags differ from ``marked``), or if
    the file is malformed (``EpisodeFormatError``)."""
    path = Path(path)
    transitions, old_meta = load_episode(path)  # every check of the format first
    last = transitions[-1]
    marked = relabel.marked
    if (float(last.reward), bool(last.terminated), bool(last.truncated)) != (
        float(np.float32(marked.reward)),
        marked.terminated,
        marked.truncated,
    ):
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
    return write_episode_file(path, arrays, compress, overwrite=True)
