"""The actor/learner link inside one process: the same calls as ``ActorLink`` / ``LearnerLink``,
with a queue instead of sockets (no encoding, no copies of frames).

``robot-rl train`` runs its actor and learner on this; ``robot-rl actor`` / ``robot-rl learner``
run the same loops on the ZMQ links. Steps go actor -> queue -> ``poll`` on the learner side ->
the learner's sink and its durable ``EpisodeStore``; weights go ``publish_weights`` -> the
actor's ``latest_weights`` (tensors cloned, so later updates never change what the actor holds).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from robot_rl.data.batch import Transition
from robot_rl.transport.episode_store import EpisodeStore
from robot_rl.transport.learner_link import StepSink


def _clone(state: Any) -> Any:
    if isinstance(state, Mapping):
        return {k: _clone(v) for k, v in state.items()}
    return state.detach().clone() if isinstance(state, torch.Tensor) else state


class InProcessTransport:
    """Holds the queue and the newest weights; hands out the two ends."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        # (actor_id, seq, step or None for "close the open episode", starts_episode)
        self._queue: deque[tuple[str, int, Transition | None, bool]] = deque()
        self._weights: tuple[int, dict[str, Any]] | None = None
        self._in_flight = 0  # items taken by poll() but not yet stored

    def actor(self, actor_id: str, first_seq: int = 0) -> InProcessActorLink:
        return InProcessActorLink(self, actor_id, first_seq)

    def learner(self, store_dir: str | Path, sink: StepSink, task: str) -> InProcessLearnerLink:
        return InProcessLearnerLink(self, store_dir, sink, task)


class InProcessActorLink:
    """The actor's end (see ``ActorLink`` for the meaning of each call)."""

    def __init__(self, transport: InProcessTransport, actor_id: str, first_seq: int) -> None:
        self._t = transport
        self.actor_id = actor_id
        self._next_seq = first_seq
        self._starts_next = True
        self.weights_version = -1
        self.weights_received_at = 0.0

    def add(self, step: Transition) -> None:
        with self._t._cond:
            self._t._queue.append((self.actor_id, self._next_seq, step, self._starts_next))
            self._t._cond.notify_all()
        self._next_seq += 1
        self._starts_next = step.terminated or step.truncated

    def end_episode(self) -> None:
        if not self._starts_next:
            with self._t._cond:
                self._t._queue.append((self.actor_id, self._next_seq - 1, None, False))
                self._t._cond.notify_all()
        self._starts_next = True

    def pump(self) -> None:
        """Nothing to send: steps are in the learner's queue as soon as they are added."""

    def latest_weights(self) -> tuple[int, dict[str, Any]] | None:
        with self._t._cond:
            weights = self._t._weights
        if weights is None or weights[0] <= self.weights_version:
            return None
        self.weights_version = weights[0]
        self.weights_received_at = time.monotonic()
        return weights

    @property
    def weights_age_s(self) -> float:
        if self.weights_version < 0:
            return float("inf")
        return time.monotonic() - self.weights_received_at

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def unacknowledged_steps(self) -> int:
        with self._t._cond:
            queued = sum(1 for item in self._t._queue if item[0] == self.actor_id and item[2])
            return queued + self._t._in_flight

    def flush(self, timeout_s: float) -> bool:
        """Wait until the learner has taken and stored everything queued."""
        deadline = time.monotonic() + timeout_s
        with self._t._cond:
            while self._t._queue or self._t._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._t._cond.wait(left)
        return True

    def close(self) -> None:
        """Nothing to release."""


class InProcessLearnerLink:
    """The learner's end (see ``LearnerLink``)."""

    def __init__(
        self, transport: InProcessTransport, store_dir: str | Path, sink: StepSink, task: str
    ) -> None:
        self._t = transport
        self.sink = sink
        self.store = EpisodeStore(store_dir, task)
        self.store.restore()
        self.steps_received = 0
        self.weights_version = -1

    def poll(self, timeout_ms: int = 0, max_messages: int = 1 << 30) -> int:
        """Take every queued step (waiting up to ``timeout_ms`` for one); returns how many."""
        with self._t._cond:
            if not self._t._queue and timeout_ms > 0:
                self._t._cond.wait(timeout_ms / 1000)
            items = list(self._t._queue)
            self._t._queue.clear()
            self._t._in_flight += len(items)
        try:
            accepted = self._take(items)
        finally:
            with self._t._cond:
                self._t._in_flight -= len(items)
                self._t._cond.notify_all()
        return accepted

    def _take(self, items: list[tuple[str, int, Transition | None, bool]]) -> int:
        """Hand each actor's consecutive steps to the sink as one run; a run that opens an
        episode is marked as a discontinuity (the previous one may have been closed unfinished)."""
        accepted, run, run_actor, run_starts = 0, [], None, False

        def flush() -> None:
            if run:
                self.sink(run_actor, list(run), run_starts)
                run.clear()

        for actor_id, seq, step, starts in items:
            if run and (actor_id != run_actor or starts):
                flush()
            if step is None:
                flush()
                self.store.close(actor_id)
                continue
            if not run:
                run_actor, run_starts = actor_id, starts
            self.store.add(actor_id, seq, step, starts)
            run.append(step)
            accepted += 1
        flush()
        self.steps_received += accepted
        return accepted

    def publish_weights(
        self,
        state_dict: Mapping[str, Any],
        version: int,
        half: bool = False,
        health: Mapping[str, float | str] | None = None,
    ) -> int:
        """Make ``state_dict`` (cloned) the newest weights; returns their size in bytes. (The
        in-process session shows the learner's health on the console itself: ``health`` is
        accepted for the same calls as the ZMQ link and not needed here.)"""
        cloned = _clone(state_dict)
        if half:
            cloned = {k: {n: t.half() if t.is_floating_point() else t for n, t in v.items()}
                      for k, v in cloned.items()}  # fmt: skip
        with self._t._cond:
            self._t._weights = (version, cloned)
        self.weights_version = version
        return sum(t.numel() * t.element_size() for v in cloned.values() for t in v.values())

    def status(self) -> dict[str, dict[str, float]]:
        return {a: {"durable": float(d)} for a, d in self.store.durable.items()}

    def close(self) -> None:
        """Nothing to release."""
