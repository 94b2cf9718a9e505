"""The learner's durable store of actors' steps: one episode file per finished episode.

Both learner ends (``learner_link`` over ZMQ, ``inprocess`` in one process) keep each actor's open
episode here and write it (``robot_rl.data.episodes``, meta naming the actor and its seq range)
when it ends, when the actor closes it, or when the actor restarts without finishing it. What is
written is what the learner acknowledges as durable; ``restore`` reads it back after a restart.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from robot_rl.data.batch import Transition
from robot_rl.data.episodes import load_episodes, save_episode

log = logging.getLogger(__name__)


@dataclass
class _Open:
    steps: list[Transition] = field(default_factory=list)
    first_seq: int = 0


class EpisodeStore:
    """Per-actor open episodes, written when they end. ``durable[actor]``: last stored seq."""

    def __init__(self, directory: str | Path, task: str, compress: bool = False) -> None:
        self.directory = Path(directory)
        self.task = task
        self.compress = compress  # deflating 128x128 frames would cap intake near 300 steps/s
        self.durable: dict[str, int] = {}
        self._open: dict[str, _Open] = {}

    def restore(self) -> dict[str, int]:
        """Read back the last stored seq of every actor (after a learner restart)."""
        if self.directory.is_dir():
            for episode in load_episodes(self.directory):
                actor, last = episode.meta.get("actor_id"), episode.meta.get("last_seq")
                if isinstance(actor, str) and isinstance(last, int):
                    self.durable[actor] = max(self.durable.get(actor, -1), last)
        return dict(self.durable)

    def add(self, actor_id: str, seq: int, step: Transition, starts_episode: bool) -> None:
        """One accepted step, in the actor's order."""
        if starts_episode and self.open_steps(actor_id):  # a reset without an end flag
            self.close(actor_id)
        episode = self._open.setdefault(actor_id, _Open())
        if not episode.steps:
            episode.first_seq = seq
        episode.steps.append(step)
        if step.terminated or step.truncated:
            self._write(actor_id, seq)

    def close(self, actor_id: str) -> None:
        """Store the actor's open episode as unfinished (it stopped, crashed or restarted)."""
        episode = self._open.get(actor_id)
        if episode is not None and episode.steps:
            self._write(actor_id, episode.first_seq + len(episode.steps) - 1)

    def open_steps(self, actor_id: str) -> int:
        episode = self._open.get(actor_id)
        return len(episode.steps) if episode else 0

    def _write(self, actor_id: str, last_seq: int) -> None:
        episode = self._open[actor_id]
        meta = {"task": self.task, "actor_id": actor_id, "first_seq": episode.first_seq,
                "last_seq": last_seq, "source": "actor"}  # fmt: skip
        save_episode(self.directory, episode.steps, meta, compress=self.compress)
        self.durable[actor_id] = last_seq
        self._open[actor_id] = _Open(first_seq=last_seq + 1)
