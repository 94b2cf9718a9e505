"""The actor/learner link inside one process: the same calls as ``ActorLink`` / ``LearnerLink``,
with a queue instead of sockets (no encoding, no copies of frames).

``robot-rl train`` runs its actor and learner on this; ``robot-rl actor`` / ``robot-rl learner``
run the same loops on the ZMQ links. Steps go actor -> queue -> ``poll`` on the learner side ->
the learner's sink and its durable ``EpisodeStore``; weights go ``publish_weights`` -> the
actor's ``latest_weights`` (tensors cloned, so later updates never change what the actor holds).

The same guards as the ZMQ links: a step with a non-finite number, or one the sink refuses, is
logged, counted (``rejected``) and not stored, and ``poll`` never raises for it; non-finite weights
are never published, and an actor that declared its policy's layout (``expect_weights``) refuses
weights that do not match it and keeps its last good ones.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from robot_rl.data.batch import Transition
from robot_rl.data.episode_labels import StepRelabel
from robot_rl.transport.episode_store import EpisodeStore
from robot_rl.transport.learner_link import StepSink, non_finite_tensors
from robot_rl.transport.steps import non_finite_fields

log = logging.getLogger(__name__)


def _clone(state: Any) -> Any:
    if isinstance(state, Mapping):
        return {k: _clone(v) for k, v in state.items()}
    return state.detach().clone() if isinstance(state, torch.Tensor) else state


class InProcessTransport:
    """Holds the queue and the newest weights; hands out the two ends."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        # (actor_id, seq, step or None for "close the open episode" or a StepRelabel,
        # starts_episode)
        self._queue: deque[tuple[str, int, Transition | StepRelabel | None, bool]] = deque()
        self._weights: tuple[int, dict[str, Any]] | None = None
        self._in_flight = 0  # items taken by poll() but not yet stored
        self._in_flight_steps: dict[str, int] = {}  # of which steps, per actor

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
        self._first_seq = first_seq
        self._starts_next = True
        self.weights_version = -1
        self.weights_received_at = 0.0
        self.rejected_weights = 0
        self._expected_weights: dict[str, Any] | None = None

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

    def relabel(self, relabel: StepRelabel) -> None:
        """Withdraw an applied mark (``data.episode_labels``): queued behind the steps, so the
        learner applies it to its episode store and replay after storing the marked step."""
        with self._t._cond:
            self._t._queue.append((self.actor_id, relabel.last_seq, relabel, False))
            self._t._cond.notify_all()

    def pump(self) -> None:
        """Nothing to send: steps are in the learner's queue as soon as they are added."""

    def expect_weights(self, state_dict: Mapping[str, Any]) -> None:
        """See ``ActorLink.expect_weights``."""
        from robot_rl.transport.actor_link import _layout

        self._expected_weights = _layout(state_dict)

    def latest_weights(self) -> tuple[int, dict[str, Any]] | None:
        from robot_rl.transport.actor_link import _check_layout, _layout

        with self._t._cond:
            weights = self._t._weights
        if weights is None or weights[0] <= self.weights_version:
            return None
        if self._expected_weights is not None:
            try:
                _check_layout(_layout(weights[1]), self._expected_weights)
            except ValueError as exc:
                self.rejected_weights += 1
                self.weights_version = weights[0]  # do not look at this version again
                log.warning("in-process link: refused weights v%d (%s); keeping the last good "
                            "ones", weights[0], exc)  # fmt: skip
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
            queued = sum(
                1
                for item in self._t._queue
                if item[0] == self.actor_id and isinstance(item[2], Transition)
            )
            return queued + self._t._in_flight_steps.get(self.actor_id, 0)

    @property
    def steps_held(self) -> int:
        """Steps handed over but not yet taken by the learner (for the console)."""
        return self.unacknowledged_steps

    @property
    def steps_stored(self) -> int:
        """Steps the learner has taken (the in-process learner stores what it takes)."""
        return self._next_seq - self._first_seq - self.unacknowledged_steps

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
        self.rejected = 0
        self.weights_version = -1
        self.weights_refused = 0
        self.relabels_failed = 0
        self.on_relabel: Callable[[StepRelabel], Any] | None = None  # e.g. ReplaySink.relabel

    def poll(self, timeout_ms: int = 0, max_messages: int = 1 << 30) -> int:
        """Take every queued step (waiting up to ``timeout_ms`` for one); returns how many."""
        with self._t._cond:
            if not self._t._queue and timeout_ms > 0:
                self._t._cond.wait(timeout_ms / 1000)
            items = list(self._t._queue)
            self._t._queue.clear()
            self._t._in_flight += len(items)
            taken: dict[str, int] = {}
            for actor_id, _, step, _ in items:
                taken[actor_id] = taken.get(actor_id, 0) + isinstance(step, Transition)
            for actor_id, n in taken.items():
                flying = self._t._in_flight_steps
                flying[actor_id] = flying.get(actor_id, 0) + n
        try:
            accepted = self._take(items)
        finally:
            with self._t._cond:
                self._t._in_flight -= len(items)
                for actor_id, n in taken.items():
                    self._t._in_flight_steps[actor_id] -= n
                self._t._cond.notify_all()
        return accepted

    def _take(self, items: list[tuple[str, int, Transition | StepRelabel | None, bool]]) -> int:
        """Hand each actor's consecutive steps to the sink as one run, then to the store; a run
        that opens an episode is marked as a discontinuity (the previous one may have been closed
        unfinished). A non-finite step, or a run the sink refuses, is logged and dropped."""
        accepted = 0
        run: list[tuple[int, Transition, bool]] = []
        run_actor = ""
        broken: set[str] = set()  # actors whose last step was dropped: the next run is apart

        def flush() -> int:
            if not run:
                return 0
            steps = [step for _, step, _ in run]
            try:
                self.sink(run_actor, steps, run[0][2] or run_actor in broken)
                broken.discard(run_actor)
            except Exception as exc:  # steps the replay refuses (another obs layout), or its bug
                self.rejected += 1
                log.error("in-process link: %s sent %d steps the replay rejects: %s: %s",
                          run_actor, len(run), type(exc).__name__, exc)  # fmt: skip
                self.store.close(run_actor)
                run.clear()
                return 0
            for seq, step, starts in run:
                self.store.add(run_actor, seq, step, starts)
            taken = len(run)
            run.clear()
            return taken

        for actor_id, seq, step, starts in items:
            if run and (actor_id != run_actor or starts):
                accepted += flush()
            if isinstance(step, StepRelabel):
                accepted += flush()
                self.apply_relabel(step)
                continue
            if step is None:
                accepted += flush()
                self.store.close(actor_id)
                continue
            bad = non_finite_fields(step)
            if bad:
                self.rejected += 1
                log.error("in-process link: dropped step %d of %s: non-finite %s",
                          seq, actor_id, ", ".join(bad))  # fmt: skip
                accepted += flush()
                self.store.close(actor_id)
                broken.add(actor_id)
                continue
            if not run:
                run_actor = actor_id
            run.append((seq, step, starts))
        accepted += flush()
        self.steps_received += accepted
        return accepted

    def apply_relabel(self, relabel: StepRelabel) -> bool:
        """The episode store's file, then ``on_relabel`` (the learner's replay copy); logged and
        counted in ``relabels_failed`` when the episode is not found on disk; a relabel already
        applied changes nothing."""
        ok = True
        try:
            if not self.store.relabel(relabel):
                return True  # applied before: the file and the replay have it
        except (LookupError, ValueError, OSError) as exc:
            ok = False
            self.relabels_failed += 1
            log.error("in-process link: the %s mark of %s seq %d was not withdrawn on disk: %s",
                      relabel.undone, relabel.actor_id, relabel.last_seq, exc)  # fmt: skip
        if self.on_relabel is not None:
            self.on_relabel(relabel)
        return ok

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
        bad = non_finite_tensors(state_dict)
        if bad:
            self.weights_refused += 1
            log.error("in-process link: weights %d not published: non-finite values in %s",
                      version, ", ".join(bad[:5]))  # fmt: skip
            return 0
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
