"""The learner's durable store of actors' steps: one episode file per finished episode.

Both learner ends (``learner_link`` over ZMQ, ``inprocess`` in one process) keep each actor's open
episode here and write it (``robot_rl.data.episodes``, meta naming the actor and its seq range)
when it ends, when the actor closes it, or when the actor restarts without finishing it. What is
written is what the learner acknowledges as durable; ``restore`` reads it back after a restart.

An episode that never ends (a missing time limit) is bounded: at ``max_episode_steps`` its steps
so far are written as an unfinished episode (logged with the actor and the cap, counted in
``episodes_cut``) and the following steps go to the next file, so memory and the time one write
takes stay bounded and nothing is lost.

``relabel`` withdraws an operator's mark from a stored episode (``data.episode_labels``): the file
whose meta names the actor and the marked step's ``last_seq`` is rewritten atomically with its
label history; the newest ``RECENT_FILES`` written are indexed, older ones are looked up by
reading the episode files' meta, newest first. A relabel already applied (an actor's resend) is
recognised and changes nothing (``repeated_relabels``).
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robot_rl.data.batch import Transition
from robot_rl.data.episode_labels import StepRelabel, relabel_episode_file
from robot_rl.data.episodes import EPISODE_RE, load_episodes, save_episode

log = logging.getLogger(__name__)

MAX_SEQ = 2**53  # the largest seq the links accept (see learner_link)
RECENT_FILES = 256  # episode files indexed by (actor, last_seq) for relabelling
MAX_RELABEL_SCAN = 2000  # older episode files whose meta a relabel reads before giving up


@dataclass
class _Open:
    steps: list[Transition] = field(default_factory=list)
    first_seq: int = 0


class EpisodeStore:
    """Per-actor open episodes, written when they end. ``durable[actor]``: last stored seq."""

    def __init__(
        self,
        directory: str | Path,
        task: str,
        compress: bool = False,
        max_episode_steps: int = 2_000,
    ) -> None:
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps={max_episode_steps}; expected >= 1")
        self.directory = Path(directory)
        self.task = task
        self.compress = compress  # deflating 128x128 frames would cap intake near 300 steps/s
        self.max_episode_steps = max_episode_steps
        self.durable: dict[str, int] = {}
        self.keys: dict[str, str] = {}  # actor id -> the CURVE key (z85) that sends it
        self.episodes_cut = 0
        self.relabelled = 0  # episodes relabelled (an applied mark withdrawn)
        self.repeated_relabels = 0  # relabels that were already applied (resent): no change
        self._open: dict[str, _Open] = {}
        self._recent: OrderedDict[tuple[str, int], Path] = OrderedDict()

    def restore(self) -> dict[str, int]:
        """Read back the last stored seq (and sending key) of every actor (after a learner
        restart). Episode files with an implausible ``last_seq`` are ignored with a warning."""
        if self.directory.is_dir():
            for episode in load_episodes(self.directory):
                actor, last = episode.meta.get("actor_id"), episode.meta.get("last_seq")
                if not isinstance(actor, str) or not 0 < len(actor) <= 64:
                    continue
                if isinstance(last, bool) or not isinstance(last, int) or not 0 <= last <= MAX_SEQ:
                    log.warning("episode store: %s has last_seq=%r; expected an int in 0..%d, "
                                "ignored", episode.path, last, MAX_SEQ)  # fmt: skip
                    continue
                if last >= self.durable.get(actor, -1):
                    self.durable[actor] = last
                    key = episode.meta.get("actor_key")
                    if isinstance(key, str) and key:
                        self.keys[actor] = key
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
        elif len(episode.steps) >= self.max_episode_steps:
            self.episodes_cut += 1
            log.warning("episode store: %s's episode reached max_episode_steps=%d without an end "
                        "flag; stored as unfinished, the next steps go to a new file (give the "
                        "task a time limit)", actor_id, self.max_episode_steps)  # fmt: skip
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
        if actor_id in self.keys:
            meta["actor_key"] = self.keys[actor_id]
        path = save_episode(self.directory, episode.steps, meta, compress=self.compress)
        self._recent[(actor_id, last_seq)] = path
        while len(self._recent) > RECENT_FILES:
            self._recent.popitem(last=False)
        self.durable[actor_id] = last_seq
        self._open[actor_id] = _Open(first_seq=last_seq + 1)

    def relabel(self, relabel: StepRelabel) -> bool:
        """Withdraw a mark from the stored episode that ends with ``relabel.last_seq`` of
        ``relabel.actor_id`` (see the module docstring). True when relabelled now, False when it
        already was (a resend: nothing written). LookupError when it is not stored (yet, or any
        more), ValueError when its last step is neither the marked one nor this relabel's."""
        key = (relabel.actor_id, relabel.last_seq)
        path = self._recent.get(key) or self._find(*key)
        if path is None:
            raise LookupError(f"no stored episode of {relabel.actor_id} ends at seq "
                              f"{relabel.last_seq} in {self.directory}")  # fmt: skip
        if not relabel_episode_file(path, relabel):
            self.repeated_relabels += 1
            log.info("episode store: %s already has the %s mark of seq %d withdrawn (a resend); "
                     "unchanged", path.name, relabel.undone, relabel.last_seq)  # fmt: skip
            return False
        self.relabelled += 1
        log.info("episode store: %s relabelled: the %s mark of seq %d withdrawn", path.name,
                 relabel.undone, relabel.last_seq)  # fmt: skip
        return True

    def _find(self, actor_id: str, last_seq: int) -> Path | None:
        """The episode file whose meta names ``actor_id`` and ``last_seq``, newest first."""
        if not self.directory.is_dir():
            return None
        names = sorted((p for p in self.directory.iterdir() if EPISODE_RE.match(p.name)),
                       reverse=True)[:MAX_RELABEL_SCAN]  # fmt: skip
        for path in names:
            try:
                with np.load(path, allow_pickle=False) as data:
                    meta = json.loads(str(data["meta"]))
            except (OSError, ValueError, KeyError) as exc:
                log.debug("episode store: %s skipped while looking for a relabel: %s", path, exc)
                continue
            if meta.get("actor_id") == actor_id and meta.get("last_seq") == last_seq:
                return path
        return None
