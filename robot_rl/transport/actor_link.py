"""The actor's end of the actor/learner link: transitions out (DEALER), weights in (SUB).

The actor never blocks on the network: ``add`` queues a step, ``pump`` (called between env
steps) sends, reads acks and resends, ``latest_weights`` hands over the newest weights if any
arrived. Steps are grouped into batches of ``batch_steps`` (a batch also ends with its episode),
numbered by the actor's own step counter (``seq``, persisted in ``spool_dir`` so an actor restart
never reuses a number).

Holding: a batch is kept until the learner acknowledges it as durable (written to its episode
store). The newest ``max_memory_batches`` stay in memory; older ones spill to ``spool_dir`` (one
file each, the encoded frames) and are read back when it is their turn. Past ``max_spool_bytes``
the actor has held too much: ``add`` raises ``BackpressureError`` so the session can hold the arm
and tell the operator, rather than silently dropping data.

Resending: if the learner's ``received`` stops advancing for ``resend_after_s`` while batches
are unacknowledged (a learner restart loses what was in flight), every unacknowledged batch is
sent again in order; the learner drops what it already has.
"""

from __future__ import annotations

import logging
import os
import struct
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import zmq

from robot_rl.data.batch import Transition
from robot_rl.transport.codec import CodecError, decode, encode, weights_from_bytes
from robot_rl.transport.security import SecurityConfig, secure_client
from robot_rl.transport.steps import encode_steps

log = logging.getLogger(__name__)

SEQ_FILE = "next_seq"


class BackpressureError(RuntimeError):
    """The actor holds more unacknowledged data than allowed: the learner is gone too long."""


@dataclass
class _Batch:
    first_seq: int
    last_seq: int
    frames: list[bytes] | None  # None while spilled to disk
    path: Path | None = None


@dataclass(frozen=True)
class ActorLinkConfig:
    actor_id: str = "actor-0"
    transitions_endpoint: str = "tcp://127.0.0.1:5555"
    weights_endpoint: str = "tcp://127.0.0.1:5556"
    spool_dir: str = "runs/actor-spool"
    batch_steps: int = 16
    max_memory_batches: int = 256
    max_spool_bytes: int = 8 * 1024**3
    max_in_flight: int = 64  # batches sent but not yet received
    resend_after_s: float = 2.0
    hello_every_s: float = 1.0
    max_weights_bytes: int = 512 * 1024 * 1024


class ActorLink:
    """See the module docstring."""

    def __init__(
        self, config: ActorLinkConfig, security: SecurityConfig, context: zmq.Context | None = None
    ) -> None:
        self.config = config
        self.spool = Path(config.spool_dir)
        self.spool.mkdir(parents=True, exist_ok=True)
        self._next_seq = self._read_seq()
        self._pending: list[Transition] = []
        self._pending_starts: list[bool] = []
        self._starts_next = True  # the first step after (re)start opens an episode
        self._batches: deque[_Batch] = deque(self._load_spool())
        self._send_index = 0  # index into _batches of the next batch to send
        self.received = -1  # the learner's last received seq for us (from acks)
        self.durable = -1
        self._last_progress = time.monotonic()
        self._last_hello = 0.0
        self._hello_answered = False
        self._msg_seq = 0
        self.resends = 0
        self.acks = 0
        self.weights_version = -1
        self.learner_health: dict[str, float | str] = {}  # sent with the weights
        self._learner_id = ""
        self.weights_received_at = 0.0
        self._ctx = context or zmq.Context.instance()
        self._dealer = self._ctx.socket(zmq.DEALER)
        self._dealer.linger = 0
        self._dealer.sndhwm = config.max_in_flight + 4
        secure_client(self._dealer, config.transitions_endpoint, security)
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.linger = 0
        self._sub.rcvhwm = 2
        self._sub.maxmsgsize = config.max_weights_bytes
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        secure_client(self._sub, config.weights_endpoint, security)

    # -- the step counter and the spool --------------------------------------------------------
    def _read_seq(self) -> int:
        path = self.spool / SEQ_FILE
        try:
            return int(path.read_text().strip()) if path.exists() else 0
        except ValueError:
            log.error("actor link: %s is corrupt; scanning spooled batches instead", path)
            return 0

    def _write_seq(self) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.spool, prefix=".seq.")
        with os.fdopen(fd, "w") as fh:
            fh.write(str(self._next_seq))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.spool / SEQ_FILE)

    def _load_spool(self) -> list[_Batch]:
        batches = []
        for path in sorted(self.spool.glob("batch_*.bin")):
            try:
                first, last = (int(x) for x in path.stem.split("_")[1:3])
            except ValueError:
                log.warning("actor link: ignoring stray spool file %s", path)
                continue
            batches.append(_Batch(first, last, None, path))
            self._next_seq = max(self._next_seq, last + 1)
        if batches:
            log.info("actor link: %d unacknowledged batches from a previous run", len(batches))
        return batches

    def _spill(self, batch: _Batch) -> None:
        path = self.spool / f"batch_{batch.first_seq:012d}_{batch.last_seq:012d}.bin"
        fd, tmp = tempfile.mkstemp(dir=self.spool, prefix=".batch.")
        with os.fdopen(fd, "wb") as fh:
            for frame in batch.frames or []:
                fh.write(struct.pack("<Q", len(frame)))
                fh.write(frame)
        os.replace(tmp, path)
        batch.frames, batch.path = None, path

    @staticmethod
    def _read_spilled(path: Path) -> list[bytes]:
        data, frames, offset = path.read_bytes(), [], 0
        while offset < len(data):
            (size,) = struct.unpack_from("<Q", data, offset)
            frames.append(data[offset + 8 : offset + 8 + size])
            offset += 8 + size
        return frames

    def spooled_bytes(self) -> int:
        return sum(b.path.stat().st_size for b in self._batches if b.path and b.path.exists())

    # -- sending -------------------------------------------------------------------------------
    def add(self, step: Transition) -> None:
        """Queue one env step (in order); raises BackpressureError when holding too much."""
        # A full batch is sealed when the next step arrives (or its episode ends), so an open
        # episode always has pending steps that end_episode() can mark as closing it.
        if len(self._pending) >= self.config.batch_steps:
            self._seal()
        self._pending.append(step)
        self._pending_starts.append(self._starts_next)
        self._starts_next = step.terminated or step.truncated
        if self._starts_next:
            self._seal()
        self.pump()

    def end_episode(self) -> None:
        """The episode stops here without an end flag (an operator reset, a shutdown): seal what
        is pending and tell the learner to store the episode as unfinished."""
        if not self._starts_next:  # an episode is open
            self._seal(closes_episode=True)
        self._starts_next = True

    def _seal(self, closes_episode: bool = False) -> None:
        if not self._pending:
            return
        first = self._next_seq
        frames = encode_steps(self.config.actor_id, first, self._pending, self._pending_starts,
                              closes_episode=closes_episode)  # fmt: skip
        batch = _Batch(first, first + len(self._pending) - 1, [bytes(f) for f in frames])
        self._next_seq = batch.last_seq + 1
        self._write_seq()
        self._pending, self._pending_starts = [], []
        self._batches.append(batch)
        in_memory = [b for b in self._batches if b.frames is not None]
        if len(in_memory) > self.config.max_memory_batches:
            if self.spooled_bytes() > self.config.max_spool_bytes:
                raise BackpressureError(
                    f"actor {self.config.actor_id} holds {len(self._batches)} unacknowledged "
                    f"batches ({self.spooled_bytes() / 1e9:.1f} GB spooled in {self.spool}); "
                    "the learner has not acknowledged data for too long: check it is running"
                )
            self._spill(in_memory[0])

    def pump(self) -> None:
        """Send what may be sent, read acks and weights, resend on silence. Never blocks."""
        self._read_acks()
        now = time.monotonic()
        if not self._hello_answered and now - self._last_hello >= self.config.hello_every_s:
            self._send(encode("request", self._next_msg_seq(),
                              {"op": "hello", "actor_id": self.config.actor_id}))  # fmt: skip
            self._last_hello = now
        unreceived = [b for b in self._batches if b.last_seq > self.received]
        if unreceived and now - self._last_progress > self.config.resend_after_s:
            first_unsent = self._send_index
            self._send_index = next(
                (i for i, b in enumerate(self._batches) if b.last_seq > self.received), 0
            )
            if self._send_index < first_unsent:
                self.resends += 1
                first = self._batches[self._send_index].first_seq
                log.info("actor link: no progress for %.1f s; resending from seq %d",
                         now - self._last_progress, first)  # fmt: skip
            self._last_progress = now
        in_flight = sum(
            1 for b in list(self._batches)[: self._send_index] if b.last_seq > self.received
        )
        while self._send_index < len(self._batches) and in_flight < self.config.max_in_flight:
            batch = self._batches[self._send_index]
            frames = batch.frames if batch.frames is not None else self._read_spilled(batch.path)
            if not self._send([self._holds_from(frames[0]), *frames[1:]]):
                break
            self._send_index += 1
            in_flight += 1

    def _holds_from(self, header: bytes) -> bytes:
        """The header with ``holds_from``: the oldest seq this actor can still resend. A learner
        skips a gap in the stream only when the actor no longer holds the missing steps."""
        fields = msgpack.unpackb(header, raw=False)
        fields["meta"]["holds_from"] = self._batches[0].first_seq
        return msgpack.packb(fields, use_bin_type=True)

    def _next_msg_seq(self) -> int:
        self._msg_seq += 1
        return self._msg_seq

    def _send(self, frames: list[Any]) -> bool:
        try:
            self._dealer.send_multipart(frames, copy=False, flags=zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    def _read_acks(self) -> None:
        while True:
            try:
                frames = self._dealer.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                ack = decode(frames, 1 << 20, frozenset({"transitions_ack"}))
                received, durable = int(ack.meta["received"]), int(ack.meta["durable"])
            except (CodecError, KeyError, TypeError, ValueError) as exc:
                log.warning("actor link: dropped a malformed ack: %s", exc)
                continue
            self.acks += 1
            self._hello_answered = True
            if received < self.received:  # the learner restarted and lost what was in flight
                log.warning("actor link: learner now has seq %d (had %d); resending",
                            received, self.received)  # fmt: skip
                self._send_index = 0
                self.resends += 1
            if received > self.received or durable > self.durable:
                self._last_progress = time.monotonic()
            self.received, self.durable = received, durable
            if self._next_seq <= received:  # our spool was wiped: never reuse numbers
                log.warning("actor link: step counter %d behind the learner's %d; jumping ahead",
                            self._next_seq, received)  # fmt: skip
                self._next_seq = received + 1
                self._write_seq()
            self._free(durable)

    def _free(self, durable: int) -> None:
        while self._batches and self._batches[0].last_seq <= durable:
            batch = self._batches.popleft()
            self._send_index = max(0, self._send_index - 1)
            if batch.path is not None:
                batch.path.unlink(missing_ok=True)

    def flush(self, timeout_s: float) -> bool:
        """Seal pending steps and pump until the learner holds everything durably, or timeout.
        Returns True if nothing is left unacknowledged."""
        self._seal()
        deadline = time.monotonic() + timeout_s
        while self._batches and time.monotonic() < deadline:
            self.pump()
            time.sleep(0.005)
        return not self._batches

    @property
    def next_seq(self) -> int:
        """The seq the next sealed step will get (persists across actor restarts)."""
        return self._next_seq

    @property
    def unacknowledged_steps(self) -> int:
        return sum(b.last_seq - b.first_seq + 1 for b in self._batches) + len(self._pending)

    # -- weights -------------------------------------------------------------------------------
    def latest_weights(self) -> tuple[int, dict[str, Any]] | None:
        """(version, state dict) of the newest weights received since the last call, or None."""
        newest = None
        while True:
            try:
                frames = self._sub.recv_multipart(copy=False, flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            newest = frames
        if newest is None:
            return None
        try:
            message = decode(newest, self.config.max_weights_bytes, frozenset({"weights"}))
            version = int(message.meta["version"])
            learner_id = str(message.meta.get("learner_id", ""))
            state = weights_from_bytes(message.arrays["safetensors"])
        except (CodecError, KeyError, TypeError, ValueError) as exc:
            log.warning("actor link: dropped malformed weights: %s", exc)
            return None
        if learner_id != self._learner_id:  # a (re)started learner numbers from its own start
            self._learner_id, self.weights_version = learner_id, -1
        if version <= self.weights_version:
            return None
        self.weights_version = version
        self.weights_received_at = time.monotonic()
        health = message.meta.get("health")
        if isinstance(health, dict):  # display only: scalars with short names, nothing else
            self.learner_health = {
                str(k)[:40]: v for k, v in list(health.items())[:32]
                if isinstance(v, int | float | str) and not isinstance(v, bool)
            }  # fmt: skip
        return version, state

    @property
    def weights_age_s(self) -> float:
        """Seconds since the current weights arrived (inf before any)."""
        if self.weights_version < 0:
            return float("inf")
        return time.monotonic() - self.weights_received_at

    def close(self) -> None:
        self._dealer.close(linger=0)
        self._sub.close(linger=0)
