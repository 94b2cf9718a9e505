"""The actor's count of finished episodes (success, return, intervention rate), which follows an
operator's undo of a mark the actor already applied.

``robot-rl train`` shows the training success on its progress bar and in TensorBoard
(``actor/success_rate``, ``actor/return``) and ``robot-rl actor`` reports its successes to the
session's status line. A success mark made its episode a success; withdrawing the mark
(``console.bridge.AppliedMark``) gives the episode the env's own verdict back, so the counters are
corrected in place: ``withdraw_mark`` finds the episode by the seq of its last step (the marked
step, the same number the relabel sent to the learner carries) and changes its success and return
once. A second withdrawal of the same episode, or one of an episode the tally never counted or has
forgotten (older than ``remember`` episodes), changes nothing and returns False.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class EpisodeRecord:
    """One finished episode as the tally counts it (its return in reward units)."""

    success: bool
    episode_return: float
    intervention_rate: float
    corrected: bool = False  # an operator's mark on it was withdrawn


class EpisodeTally:
    """Finished episodes of one actor, keyed by the seq of their last step (see the module
    docstring). Rates and means are over the newest ``window`` episodes; totals over all."""

    def __init__(self, window: int = 20, remember: int = 64) -> None:
        if window < 1 or remember < window:
            raise ValueError(f"window={window} (>= 1), remember={remember} (>= window)")
        self.window = window
        self.remember = remember
        self._records: OrderedDict[int, EpisodeRecord] = OrderedDict()  # oldest first
        self._anonymous = 0  # keys for episodes added without a seq (never withdrawable)
        self.episodes = 0  # finished episodes counted, in total
        self.successes = 0  # of them successful, after any correction
        self.corrections = 0  # withdrawn marks that changed a counted episode

    def add(self, last_seq: int | None, success: bool, episode_return: float,
            intervention_rate: float) -> None:  # fmt: skip
        """A finished episode whose last step has seq ``last_seq`` (None: not withdrawable)."""
        if last_seq is None:
            self._anonymous -= 1
            key = self._anonymous
        else:
            key = int(last_seq)
        self._records.pop(key, None)
        self._records[key] = EpisodeRecord(bool(success), float(episode_return),
                                           float(intervention_rate))  # fmt: skip
        while len(self._records) > self.remember:
            self._records.popitem(last=False)
        self.episodes += 1
        self.successes += bool(success)

    def withdraw_mark(self, last_seq: int, success: bool, return_change: float) -> bool:
        """The operator's mark on the episode ending at ``last_seq`` was withdrawn: it now counts
        as ``success`` (the env's verdict) and its return moves by ``return_change``. True when a
        counted episode changed; False (nothing changes) for an episode already corrected, never
        counted or forgotten."""
        record = self._records.get(int(last_seq)) if last_seq >= 0 else None
        if record is None:
            log.warning("episode tally: no counted episode ends at seq %d; the counters keep it "
                        "as it was", last_seq)  # fmt: skip
            return False
        if record.corrected:
            log.info("episode tally: the episode ending at seq %d was already corrected", last_seq)
            return False
        self.successes += int(bool(success)) - int(record.success)
        record.success = bool(success)
        record.episode_return += float(return_change)
        record.corrected = True
        self.corrections += 1
        return True

    def _recent(self) -> list[EpisodeRecord]:
        records = list(self._records.values())
        return records[-self.window :]

    @property
    def success_rate(self) -> float:
        """Successes over the newest ``window`` episodes (0.0 before any)."""
        recent = self._recent()
        return float(np.mean([r.success for r in recent])) if recent else 0.0

    @property
    def mean_return(self) -> float:
        """Mean return of the newest ``window`` episodes (0.0 before any)."""
        recent = self._recent()
        return float(np.mean([r.episode_return for r in recent])) if recent else 0.0

    @property
    def intervention_rate(self) -> float:
        """Mean intervention rate of the newest ``window`` episodes (0.0 before any)."""
        recent = self._recent()
        return float(np.mean([r.intervention_rate for r in recent])) if recent else 0.0
