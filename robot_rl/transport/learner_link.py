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
- Malformed, unknown or oversized messages are logged, counted (``rejected``) and answered with
  an ack carrying ``error`` (a one-line reason); ``poll`` never raises for anything a peer sends.
- Trust: with CURVE, an actor id belongs to the key that first sent it (kept in the episode
  files' meta as ``actor_key``, so a restarted learner still knows it); another key claiming it is
  refused. A batch may skip at most ``max_seq_gap`` steps past what the learner expects, so a
  far-future ``first_seq`` is refused rather than stored (it would turn the real actor's next
  steps into "duplicates"). At most ``max_actors`` actor ids are served, and an episode that
  never ends is stored in parts of ``max_episode_steps`` (see ``EpisodeStore``).
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
from robot_rl.data.episode_labels import StepRelabel
from robot_rl.endpoints import DEFAULT_ENDPOINTS
from robot_rl.transport.codec import CodecError, decode, encode, weights_to_bytes
from robot_rl.transport.episode_store import EpisodeStore
from robot_rl.transport.security import SecurityConfig, secure_server
from robot_rl.transport.steps import StepDecoder, non_finite_fields

log = logging.getLogger(__name__)

ACCEPTED = frozenset({"transitions", "request", "heartbeat"})
MAX_ACTOR_ID = 64
MAX_SEQ = 2**53  # seq numbers stay exact as floats (JSON meta) and far from msgpack's limits
MAX_ERROR_CHARS = 200  # an error reply never quotes more than this of what the peer sent


class RejectedMessageError(ValueError):
    """A message the learner refuses; the text is sent back to the actor as the ack's error."""


def _short(text: object) -> str:
    """``text`` as one line of at most MAX_ERROR_CHARS characters (never echo a peer's bulk)."""
    line = " ".join(str(text).split())
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 3] + "..."


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class LinkEndpoints:
    """Where the learner listens. Defaults are loopback; a networked learner binds tcp://*:PORT
    with CURVE keys."""

    transitions: str = DEFAULT_ENDPOINTS.transitions
    weights: str = DEFAULT_ENDPOINTS.weights


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
        max_actors: int = 64,
        max_seq_gap: int = 10_000,
        max_episode_steps: int = 2_000,
    ) -> None:
        if max_actors < 1 or max_seq_gap < 0:
            raise ValueError(f"max_actors={max_actors} (>= 1), max_seq_gap={max_seq_gap} (>= 0)")
        self.store = EpisodeStore(store_dir, task, compress, max_episode_steps)
        self.sink = sink
        self.max_message_bytes = max_message_bytes
        self.max_actors = max_actors
        self.max_seq_gap = max_seq_gap
        self.actors: dict[str, ActorState] = {}
        self.rejected = 0  # messages refused (malformed, unauthorised, out of bounds)
        self.steps_rejected = 0  # steps dropped at intake for a NaN or an infinity
        self.store_errors = 0  # episode writes that failed (disk full, permissions)
        self.weights_refused = 0  # publish_weights calls refused for non-finite tensors
        self.duplicates = 0
        self.steps_received = 0
        self.weights_version = -1
        self.relabels_failed = 0  # relabel requests whose episode was not found or not marked
        self.on_relabel: Callable[[StepRelabel], Any] | None = None  # e.g. ReplaySink.relabel
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
        if len(self.actors) > self.max_actors:
            log.warning("learner link: %d actors in %s, more than max_actors=%d; new actor ids "
                        "are refused", len(self.actors), self.store.directory,
                        self.max_actors)  # fmt: skip
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
            try:
                accepted += self._handle(frames)
            except Exception as exc:  # last guard: no message may end the learner's loop
                self.rejected += 1
                log.error("learner link: a message raised %s: %s; dropped",
                          type(exc).__name__, _short(exc))  # fmt: skip
                self._send(frames[0], 0, {"error": _short(f"internal error: {exc}")})
        return accepted

    def _handle(self, frames: list[Any]) -> int:
        if len(frames) < 2:
            self.rejected += 1
            log.warning("learner link: dropped a message without a body")
            return 0
        identity, body = frames[0], frames[1:]
        actor_id: str | None = None
        seq = 0
        try:
            message = decode(body, self.max_message_bytes, ACCEPTED)
            seq = message.seq
            actor_id = message.meta.get("actor_id")
            if not isinstance(actor_id, str) or not 0 < len(actor_id) <= MAX_ACTOR_ID:
                actor_id = None
                raise RejectedMessageError(
                    f"actor_id must be a string of 1-{MAX_ACTOR_ID} characters"
                )
            state = self._actor(actor_id, _user_id(body[0]))
        except (CodecError, RejectedMessageError) as exc:
            self._refuse(identity, actor_id, seq, exc)
            return 0
        state.last_seen_s = time.monotonic()
        accepted = 0
        error = None
        if message.type == "transitions":
            try:
                accepted = self._transitions(actor_id, state, message)
            except (CodecError, RejectedMessageError) as exc:
                self.rejected += 1
                error = _short(exc)
                log.warning("learner link: refused transitions from %s: %s", actor_id, error)
        elif message.type == "request" and message.meta.get("op") == "relabel":
            error, extra = self._relabel(actor_id, message.meta.get("relabel"))
            self._ack(identity, actor_id, state, seq, error, extra)
            return 0
        elif message.type == "request" and message.meta.get("op") not in ("hello", None):
            self.rejected += 1
            error = _short(f"unknown request op {message.meta.get('op')!r}; known: hello, relabel")
            log.warning("learner link: %s from %s", error, actor_id)
        self._ack(identity, actor_id, state, seq, error)
        return accepted

    def _actor(self, actor_id: str, user_id: str) -> ActorState:
        """The state of ``actor_id``, bound to the CURVE key (``user_id``) that first sent it;
        RejectedMessageError for another key or for one actor more than ``max_actors``."""
        state = self.actors.get(actor_id)
        if state is None:
            if len(self.actors) >= self.max_actors:
                raise RejectedMessageError(
                    f"actor_id {actor_id!r} refused: this learner serves at most max_actors="
                    f"{self.max_actors} actors"
                )
            state = self.actors[actor_id] = ActorState()
        bound = self.store.keys.get(actor_id)
        if user_id:
            if bound is None:
                self.store.keys[actor_id] = user_id
            elif bound != user_id:
                raise RejectedMessageError(
                    f"actor_id {actor_id!r} belongs to another CURVE key; each actor needs its "
                    "own key pair"
                )
        return state

    def _refuse(self, identity: Any, actor_id: str | None, seq: int, exc: Exception) -> None:
        self.rejected += 1
        error = _short(exc)
        log.warning("learner link: refused a message: %s", error)
        meta = {"error": error} if actor_id is None else {"actor_id": actor_id, "error": error}
        self._send(identity, seq, meta)

    def _transitions(self, actor_id: str, state: ActorState, message: Any) -> int:
        first_seq = message.meta.get("first_seq")
        count = message.meta.get("count")
        if not _is_int(first_seq) or not 0 <= first_seq <= MAX_SEQ:
            raise RejectedMessageError(
                f"first_seq={_short(repr(first_seq))}; expected an int in 0..{MAX_SEQ}"
            )
        if not _is_int(count) or count < 1 or first_seq + count - 1 > MAX_SEQ:
            raise RejectedMessageError(
                f"count={_short(repr(count))}; expected an int >= 1 with first_seq + count - 1 "
                f"<= {MAX_SEQ}"
            )
        if first_seq <= state.received:
            self.duplicates += 1
            return 0
        if first_seq - (state.received + 1) > self.max_seq_gap:
            raise RejectedMessageError(
                f"first_seq={first_seq} is {first_seq - state.received - 1} steps past the "
                f"expected {state.received + 1}; at most max_seq_gap={self.max_seq_gap} steps may "
                "be skipped"
            )
        starts = message.arrays.get("starts_episode")
        if starts is None or starts.dtype != np.bool_ or starts.shape != (count,):
            raise CodecError(f"starts_episode must be bool ({count},)")
        gap = first_seq > state.received + 1
        holds_from = message.meta.get("holds_from", first_seq)
        if not _is_int(holds_from):
            raise RejectedMessageError(f"holds_from={_short(repr(holds_from))}; expected an int")
        lost_for_good = holds_from == first_seq
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
        runs = _finite_runs(actor_id, first_seq, steps)
        dropped = len(steps) - sum(len(run) for _, run in runs)
        try:
            for offset, run in runs:
                # After a dropped step the replay must not join what follows to what came
                # before: a run that does not start the batch is a discontinuity.
                self.sink(actor_id, run, discontinuity if offset == 0 else True)
        except Exception as exc:  # steps the replay refuses (another obs layout), or its bug
            state.decoder.last_next_obs = previous
            log.error("learner link: %s sent steps the replay rejects (not acknowledged): %s: %s",
                      actor_id, type(exc).__name__, _short(exc))  # fmt: skip
            raise RejectedMessageError(f"the learner's replay refuses these steps: {exc}") from None
        kept = {start + i for start, run in runs for i in range(len(run))}
        try:
            for offset, step in enumerate(steps):
                if offset not in kept:
                    self.store.close(actor_id)  # a dropped step ends the stored episode
                    continue
                self.store.add(actor_id, first_seq + offset, step, bool(starts[offset]))
            if message.meta.get("closes_episode") is True:
                self.store.close(actor_id)
        except OSError as exc:
            # The replay has the steps and the store keeps them open (written at its next
            # write); they are received but not durable, so the actor keeps its copies.
            self.store_errors += 1
            log.error("learner link: episode store %s failed: %s; %s's steps stay unacknowledged "
                      "as durable", self.store.directory, exc, actor_id)  # fmt: skip
        if dropped:
            self.steps_rejected += dropped
        state.received = first_seq + len(steps) - 1
        self.steps_received += len(steps) - dropped
        return len(steps) - dropped

    def _relabel(self, actor_id: str, fields: Any) -> tuple[str | None, dict[str, Any]]:
        """An actor's "relabel" request: its own stored episode's marked step gets the env's
        flags back (``data.episode_labels``), then ``on_relabel`` (the replay's copy). Returns
        the ack's error and extra meta: ``relabelled`` names the seq once the actor may stop
        sending it (done, already done, or refused for good); a step not yet durable gets no
        ``relabelled``, so the actor sends it again later. A relabel already applied (resent
        after a lost ack or an actor restart) is acknowledged without touching the file or the
        replay again (``EpisodeStore.relabel``)."""
        try:
            if not isinstance(fields, dict):
                raise ValueError("relabel request: meta relabel must be a map")
            relabel = StepRelabel.from_meta(fields)
            if relabel.actor_id != actor_id:
                raise ValueError(f"relabel request from {actor_id} names {relabel.actor_id}; an "
                                 "actor relabels its own episodes only")  # fmt: skip
        except ValueError as exc:
            self.rejected += 1
            log.warning("learner link: refused a relabel from %s: %s", actor_id, _short(exc))
            return _short(exc), {}
        if relabel.last_seq > self.store.durable.get(actor_id, -1):
            return _short(f"seq {relabel.last_seq} is not stored yet"), {}
        done = {"relabelled": relabel.last_seq}
        try:
            applied = self.store.relabel(relabel)
        except (LookupError, ValueError, OSError) as exc:
            self.relabels_failed += 1
            log.error("learner link: the %s mark of %s seq %d was not withdrawn on disk: %s",
                      relabel.undone, actor_id, relabel.last_seq, _short(exc))  # fmt: skip
            return _short(exc), done
        if applied and self.on_relabel is not None:
            self.on_relabel(relabel)
        return None, done

    def _ack(
        self, identity: Any, actor_id: str, state: ActorState, seq: int, error: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        durable = self.store.durable.get(actor_id, -1)
        meta: dict[str, Any] = {
            "actor_id": actor_id,
            "received": state.received,
            "durable": durable,
            "weights_version": self.weights_version,
            **(extra or {}),
        }
        if error is not None:
            meta["error"] = error
        self._send(identity, seq, meta)

    def _send(self, identity: Any, seq: int, meta: dict[str, Any]) -> None:
        try:
            self._router.send_multipart(
                [identity, *encode("transitions_ack", seq, meta)], flags=zmq.NOBLOCK
            )
        except zmq.ZMQError as exc:  # the actor went away; it will ask again
            log.info("learner link: ack to %s not sent: %s", meta.get("actor_id"), exc)

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
        bad = non_finite_tensors(state_dict)
        if bad:
            self.weights_refused += 1
            log.error("learner link: weights %d not published: non-finite values in %s; the "
                      "actors keep the last good weights", version, ", ".join(bad[:5]))  # fmt: skip
            return 0
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


def _user_id(frame: Any) -> str:
    """The ZAP user id (the client's CURVE public key, z85) of a received frame; "" when the
    socket has no authentication (plaintext on loopback)."""
    try:
        return str(frame.get("User-Id") or "")
    except (zmq.ZMQError, AttributeError, TypeError):
        return ""


def non_finite_tensors(state_dict: Mapping[str, Any]) -> list[str]:
    """Names ("actor/net.0.weight") of the floating tensors in a (nested) state dict that hold a
    NaN or an infinity (one device sync for the whole dict)."""
    import torch

    named: list[tuple[str, Any]] = []

    def collect(prefix: str, node: Mapping[str, Any]) -> None:
        for key, value in node.items():
            name = f"{prefix}/{key}" if prefix else str(key)
            if isinstance(value, Mapping):
                collect(name, value)
            elif isinstance(value, torch.Tensor) and value.is_floating_point():
                named.append((name, value))

    collect("", state_dict)
    if not named:
        return []
    device = named[0][1].device  # one device in practice; .to() is a no-op there
    finite = torch.stack([torch.isfinite(t).all().to(device) for _, t in named])
    if bool(finite.all()):
        return []
    return [name for (name, _), ok in zip(named, finite.tolist(), strict=True) if not ok]


def _finite_runs(
    actor_id: str, first_seq: int, steps: list[Transition]
) -> list[tuple[int, list[Transition]]]:
    """``steps`` split into runs of finite steps, as (offset of the run's first step, run); a
    step with a NaN or an infinity anywhere is dropped with a logged error."""
    runs: list[tuple[int, list[Transition]]] = []
    current: list[Transition] = []
    for offset, step in enumerate(steps):
        bad = non_finite_fields(step)
        if bad:
            log.error("learner link: dropped step %d of %s: non-finite %s",
                      first_seq + offset, actor_id, ", ".join(bad))  # fmt: skip
            if current:
                runs.append((offset - len(current), current))
            current = []
            continue
        current.append(step)
    if current:
        runs.append((len(steps) - len(current), current))
    return runs
