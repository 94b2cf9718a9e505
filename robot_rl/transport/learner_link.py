"""The learner's end of the actor/learner link: transitions in (ROUTER), weights out (PUB).

Delivery contract (with ``actor_link.ActorLink``):
- Each actor numbers its steps 0, 1, 2, ... (``seq``). The learner accepts a batch only if it
  continues that actor's stream (first_seq = received + 1), or if it starts a new episode after a
  gap that the actor can no longer fill (its ``holds_from`` is the batch itself: the actor
  crashed and lost steps it never sent; logged). Anything at or below ``received``
  is a duplicate (a resend) and is acknowledged but not stored again.
- Durability: every finished episode is written to ``store_dir`` (one episode file, meta naming
  the actor and its seq range) before it is acknowledged as durable. Acks carry ``received`` and
  ``durable``; actors free their copies up to ``durable`` only. After a learner restart the link
  rebuilds ``durable`` from the files, the actors resend everything after it, and nothing is lost
  or stored twice.
- Malformed, unknown or oversized messages are logged, counted and dropped; they never raise.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from robot_rl.data.batch import Transition
from robot_rl.transport.codec import CodecError, decode, encode, weights_to_bytes
from robot_rl.transport.episode_store import EpisodeStore
from robot_rl.transport.security import SecurityConfig, secure_server
from robot_rl.transport.steps import StepDecoder

log = logging.getLogger(__name__)

ACCEPTED = frozenset({"transitions", "request", "heartbeat"})
MAX_ACTOR_ID = 64


@dataclass(frozen=True)
class LinkEndpoints:
    """Where the learner listens. Defaults are loopback; a networked learner binds tcp://*:PORT
    with CURVE keys."""

    transitions: str = "tcp://127.0.0.1:5555"
    weights: str = "tcp://127.0.0.1:5556"


@dataclass
class ActorState:
    received: int = -1  # last seq accepted from this actor
    decoder: StepDecoder = field(default_factory=StepDecoder)
    last_seen_s: float = 0.0


StepSink = Callable[[str, list[Transition], bool], None]  # actor_id, steps, starts_new_stream


class LearnerLink:
    """Receives actors' transitions into ``sink`` and ``store_dir``; broadcasts weights.

    sink(actor_id, steps, discontinuity): called with every accepted batch, in stream order;
    ``discontinuity`` is True when the batch does not continue what the sink last got from this
    actor (after a learner restart or an actor crash), so the sink can close its open episode.
    """

    def __init__(
        self,
        endpoints: LinkEndpoints,
        security: SecurityConfig,
        store_dir: str | Path,
        sink: StepSink,
        task: str,
        max_message_bytes: int = 64 * 1024 * 1024,
        context: zmq.Context | None = None,
        compress: bool = False,
    ) -> None:
        self.store = EpisodeStore(store_dir, task, compress)
        self.sink = sink
        self.max_message_bytes = max_message_bytes
        self.actors: dict[str, ActorState] = {}
        self.rejected = 0
        self.duplicates = 0
        self.steps_received = 0
        self.weights_version = -1
        self.learner_id = secrets.token_hex(4)  # tells actors a restarted learner's versions
        self._restore()
        self._ctx = context or zmq.Context.instance()
        self._router = self._ctx.socket(zmq.ROUTER)
        self._router.linger = 0
        self._router.maxmsgsize = max_message_bytes
        self._router.router_mandatory = False
        secure_server(self._router, endpoints.transitions, security)
        self._pub = self._ctx.socket(zmq.PUB)
        self._pub.linger = 0
        self._pub.sndhwm = 2  # only the newest weights matter
        secure_server(self._pub, endpoints.weights, security)
        self.transitions_endpoint = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.weights_endpoint = self._pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self._poller = zmq.Poller()
        self._poller.register(self._router, zmq.POLLIN)

    def _restore(self) -> None:
        """Each actor's stored seq, from the episode files (after a learner restart)."""
        for actor, last in self.store.restore().items():
            self.actors.setdefault(actor, ActorState()).received = last
        if self.actors:
            log.info("learner link: restored %s", self.store.durable)

    # -- receiving -----------------------------------------------------------------------------
    def poll(self, timeout_ms: int = 0, max_messages: int = 64) -> int:
        """Handle waiting messages (waiting up to ``timeout_ms`` for the first); returns the
        number of new steps accepted."""
        accepted = 0
        for _ in range(max_messages):
            if not self._poller.poll(timeout_ms):
                break
            timeout_ms = 0
            try:
                frames = self._router.recv_multipart(copy=False, flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            accepted += self._handle(frames)
        return accepted

    def _handle(self, frames: list[Any]) -> int:
        identity, body = frames[0], frames[1:]
        try:
            message = decode(body, self.max_message_bytes, ACCEPTED)
            actor_id = message.meta.get("actor_id")
            if not isinstance(actor_id, str) or not 0 < len(actor_id) <= MAX_ACTOR_ID:
                raise CodecError(f"actor_id {actor_id!r}; expected 1-{MAX_ACTOR_ID} characters")
        except CodecError as exc:
            self.rejected += 1
            log.warning("learner link: dropped a malformed message: %s", exc)
            return 0
        state = self.actors.setdefault(actor_id, ActorState())
        state.last_seen_s = time.monotonic()
        accepted = 0
        if message.type == "transitions":
            try:
                accepted = self._transitions(actor_id, state, message)
            except CodecError as exc:
                self.rejected += 1
                log.warning("learner link: dropped transitions from %s: %s", actor_id, exc)
        elif message.type == "request" and message.meta.get("op") not in ("hello", None):
            self.rejected += 1
            log.warning("learner link: unknown request from %s: %s", actor_id, message.meta)
            return 0
        self._ack(identity, actor_id, state, message.seq)
        return accepted

    def _transitions(self, actor_id: str, state: ActorState, message: Any) -> int:
        first_seq = message.meta.get("first_seq")
        count = message.meta.get("count")
        if not isinstance(first_seq, int) or first_seq < 0 or not isinstance(count, int):
            raise CodecError(f"first_seq={first_seq!r} count={count!r}")
        if first_seq <= state.received:
            self.duplicates += 1
            return 0
        starts = message.arrays.get("starts_episode")
        gap = first_seq > state.received + 1
        holds_from = message.meta.get("holds_from", first_seq)
        lost_for_good = holds_from == first_seq and starts is not None and len(starts) > 0
        if gap and not (lost_for_good and bool(starts[0])):
            # The actor still holds the missing steps (they were in flight when this learner
            # started): wait for its resend rather than skip them.
            log.info("learner link: %s sent seq %d after %d; waiting for the resend",
                     actor_id, first_seq, state.received)  # fmt: skip
            return 0
        # A batch opening an episode may follow one the actor closed without an end flag (a
        # shutdown, an operator reset): the sink must not join them.
        discontinuity = gap or state.decoder.last_next_obs is None or bool(starts[0])
        if gap:
            log.warning("learner link: %s skipped seq %d-%d (lost in an actor crash)",
                        actor_id, state.received + 1, first_seq - 1)  # fmt: skip
            self.store.close(actor_id)
        previous = state.decoder.last_next_obs
        steps = state.decoder.decode(message)
        try:
            self.sink(actor_id, steps, discontinuity)
        except ValueError as exc:  # steps that do not fit the replay (another obs layout)
            state.decoder.last_next_obs = previous
            self.rejected += 1
            log.error("learner link: %s sent steps the replay rejects (not acknowledged): %s",
                      actor_id, exc)  # fmt: skip
            return 0
        for offset, step in enumerate(steps):
            self.store.add(actor_id, first_seq + offset, step, bool(starts[offset]))
        if message.meta.get("closes_episode") is True:
            self.store.close(actor_id)
        state.received = first_seq + len(steps) - 1
        self.steps_received += len(steps)
        return len(steps)

    def _ack(self, identity: Any, actor_id: str, state: ActorState, seq: int) -> None:
        durable = self.store.durable.get(actor_id, -1)
        meta = {"actor_id": actor_id, "received": state.received, "durable": durable,
                "weights_version": self.weights_version}  # fmt: skip
        try:
            self._router.send_multipart(
                [identity, *encode("transitions_ack", seq, meta)], flags=zmq.NOBLOCK
            )
        except zmq.ZMQError as exc:  # the actor went away; it will ask again
            log.info("learner link: ack to %s not sent: %s", actor_id, exc)

    # -- weights -------------------------------------------------------------------------------
    def publish_weights(
        self,
        state_dict: Mapping[str, Any],
        version: int,
        half: bool = False,
        health: Mapping[str, float | str] | None = None,
    ) -> int:
        """Broadcast ``state_dict`` as version ``version``, with the learner's ``health`` (a few
        numbers and strings for the operator console); returns the bytes sent."""
        data = weights_to_bytes(state_dict, half=half)
        meta = {"version": version, "half": half, "learner_id": self.learner_id,
                "health": dict(health or {})}  # fmt: skip
        frames = encode("weights", version, meta, {"safetensors": np.frombuffer(data, np.uint8)})
        try:
            self._pub.send_multipart(frames, copy=False, flags=zmq.NOBLOCK)
        except zmq.Again:
            log.info("learner link: weights %d not sent (no room)", version)
        self.weights_version = version
        return len(data)

    def status(self) -> dict[str, dict[str, float]]:
        """Per actor: received and durable seq, seconds since last heard from."""
        now = time.monotonic()
        return {
            actor: {"received": s.received, "durable": self.store.durable.get(actor, -1),
                    "silent_s": now - s.last_seen_s if s.last_seen_s else float("inf")}
            for actor, s in self.actors.items()
        }  # fmt: skip

    def close(self) -> None:
        self._router.close(linger=0)
        self._pub.close(linger=0)
