"""The actor's end of the actor/learner link: transitions out (DEALER), weights in (SUB).

The actor never blocks on the network: ``add`` queues a step, ``pump`` (called between env
steps) sends, reads acks and resends, ``latest_weights`` hands over the newest weights if any
arrived. Steps are grouped into batches of ``batch_steps`` (a batch also ends with its episode,
and at least every ``seal_every_s``), numbered by the actor's own step counter (``seq``,
persisted in ``spool_dir`` so an actor restart never reuses a number).

Durability: a batch is written to ``spool_dir`` (one file each, the encoded frames; fsynced, then
renamed into place) when it is sealed, before it is first sent, and deleted only when the learner
acknowledges it as durable (written to its episode store). So a kill -9 loses at most the
unsealed tail: the steps of the last ``seal_every_s`` (an open episode keeps its newest step
unsealed, so that ``end_episode`` can still mark the episode closed). A restarted actor resends
its spool first. The newest ``max_memory_batches`` also stay in memory to resend without reading
the disk. Past ``max_spool_bytes`` the actor has held too much: ``add`` raises
``BackpressureError`` so the session can hold the arm and tell the operator, rather than silently
dropping data. ``steps_held`` (not yet stored by the learner) and ``steps_stored`` (stored by the
learner since this link started) are for the operator console; ``close`` says where every step
went.

Resending: if the learner's ``received`` stops advancing for ``resend_after_s`` while batches
are unacknowledged (a learner restart loses what was in flight), every unacknowledged batch is
sent again in order; the learner drops what it already has.

Relabels: ``relabel`` takes an operator's withdrawn mark (``data.episode_labels.StepRelabel``)
and writes it to the spool at once (``relabel_<seq>.json``: JSON, fsynced, renamed into place,
the directory fsynced) before holding it in memory; it is sent as a "relabel" request once the
learner's acks say the marked step is durable, and resent every ``resend_after_s`` until an ack
names it (``relabelled``: done, already done, or refused for good, with the learner's error
logged); then its file is deleted. A restarted actor with the same spool reads the pending
relabels back and sends each once the learner has stored the step it names (after the spooled
batches before it), so a kill -9 seconds after an undo loses no relabel; the learner applies a
resent one only once (``EpisodeStore.relabel``). A relabel file that cannot be trusted (not
JSON, another format, another actor's, a seq this actor never sealed, a bad field) is logged in
one line, counted (``relabels_set_aside``) and moved aside as ``*.corrupt``. At most
``MAX_PENDING_RELABELS`` are held; past that the oldest is moved aside as ``*.dropped`` (kept on
disk, not sent).

Learner output is checked, never trusted: an ack whose numbers are not ints in range, weights
whose version is not an int, whose tensors are not finite, or whose keys, shapes or dtypes differ
from what ``expect_weights`` declared are logged, counted (``rejected_acks``,
``rejected_weights``) and dropped; the actor keeps its last good weights.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import struct
import tempfile
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import zmq

from robot_rl.data.batch import Transition
from robot_rl.data.episode_labels import StepRelabel
from robot_rl.endpoints import DEFAULT_ENDPOINTS
from robot_rl.transport.codec import CodecError, decode, encode, weights_from_bytes
from robot_rl.transport.learner_link import MAX_SEQ, non_finite_tensors
from robot_rl.transport.security import SecurityConfig, secure_client
from robot_rl.transport.steps import encode_steps

log = logging.getLogger(__name__)

SEQ_FILE = "next_seq"
MAX_PENDING_RELABELS = 100
RELABEL_PREFIX = "relabel_"  # relabel_<seq, 12 digits>.json in the spool
RELABEL_FORMAT = 1  # the "format" field of a relabel file
MAX_RELABEL_FILE_BYTES = 1 << 20  # a relabel carries two vectors of at most 4096 numbers
LOG_EVERY_S = 10.0  # the same complaint about the learner's output is logged at most this often


class BackpressureError(RuntimeError):
    """The actor holds more unacknowledged data than allowed: the learner is gone too long."""


@dataclass
class _Batch:
    first_seq: int
    last_seq: int
    frames: list[bytes] | None  # None when only on disk
    path: Path
    nbytes: int = 0  # size of the spool file

    @property
    def steps(self) -> int:
        return self.last_seq - self.first_seq + 1


@dataclass(frozen=True)
class ActorLinkConfig:
    actor_id: str = "actor-0"
    transitions_endpoint: str = DEFAULT_ENDPOINTS.transitions
    weights_endpoint: str = DEFAULT_ENDPOINTS.weights
    spool_dir: str = "runs/actor-spool"
    batch_steps: int = 16
    seal_every_s: float = 1.0  # pending steps older than this are sealed (and spooled)
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
        self._pending_since = 0.0  # monotonic time the oldest pending step arrived
        self._starts_next = True  # the first step after (re)start opens an episode
        self._batches: deque[_Batch] = deque(self._load_spool())
        self._spool_bytes = sum(b.nbytes for b in self._batches)
        self.steps_stored = 0  # steps the learner stored durably since this link started
        self.rejected_acks = 0
        self.rejected_weights = 0
        self.learner_errors = 0  # acks that carried an error (the learner refused something)
        self.last_learner_error = ""
        self._expected_weights: dict[str, tuple[tuple[int, ...], Any]] | None = None
        self._last_log: dict[str, float] = {}
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
        self._relabels: dict[int, tuple[StepRelabel, float]] = {}  # last_seq -> (it, sent at)
        self.relabels_done = 0  # relabels the learner acknowledged
        self.relabels_set_aside = 0  # relabel files moved aside (untrusted, or over the limit)
        self._relabels.update(self._load_relabels())  # from a previous run, sent when durable
        self._bound_relabels()
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
        # Sealing must not wait for the actor loop (it blocks while the operator pauses): a
        # background thread seals what is pending. It only writes the spool; the sockets stay
        # with the caller's thread. ``_lock`` guards the pending steps and the batches.
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._sealer = threading.Thread(target=self._seal_on_time, name="actor-link-sealer",
                                        daemon=True)  # fmt: skip
        self._sealer.start()

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
            batches.append(_Batch(first, last, None, path, path.stat().st_size))
            self._next_seq = max(self._next_seq, last + 1)
        if batches:
            log.info("actor link: %d unacknowledged batches (%d steps) from a previous run in %s",
                     len(batches), sum(b.steps for b in batches), self.spool)  # fmt: skip
        return batches

    def _write_batch(self, first: int, last: int, frames: list[bytes]) -> _Batch:
        """Write a sealed batch to the spool (fsynced, renamed into place)."""
        path = self.spool / f"batch_{first:012d}_{last:012d}.bin"
        fd, tmp = tempfile.mkstemp(dir=self.spool, prefix=".batch.")
        try:
            with os.fdopen(fd, "wb") as fh:
                for frame in frames:
                    fh.write(struct.pack("<Q", len(frame)))
                    fh.write(frame)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return _Batch(first, last, frames, path, sum(8 + len(f) for f in frames))

    def _fsync_spool(self) -> None:
        """Make the renames in the spool durable (POSIX; skipped where unsupported)."""
        try:
            fd = os.open(self.spool, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError as exc:  # some filesystems refuse fsync on a directory; renames are done
            log.debug("actor link: fsync of %s failed: %s", self.spool, exc)
        finally:
            os.close(fd)

    @staticmethod
    def _read_spilled(path: Path) -> list[bytes]:
        """A spooled batch's frames; CodecError if the file is truncated or corrupt."""
        data, frames, offset = path.read_bytes(), [], 0
        while offset < len(data):
            if offset + 8 > len(data):
                raise CodecError(f"spool file {path} is truncated")
            (size,) = struct.unpack_from("<Q", data, offset)
            if offset + 8 + size > len(data):
                raise CodecError(f"spool file {path} is truncated")
            frames.append(data[offset + 8 : offset + 8 + size])
            offset += 8 + size
        if not frames:
            raise CodecError(f"spool file {path} is empty")
        return frames

    def spooled_bytes(self) -> int:
        """Bytes of unacknowledged batches in the spool."""
        return self._spool_bytes

    # -- sending -------------------------------------------------------------------------------
    def add(self, step: Transition) -> None:
        """Queue one env step (in order); raises BackpressureError when holding too much."""
        with self._lock:
            self._add(step)

    def _add(self, step: Transition) -> None:
        # A full batch is sealed when the next step arrives (or its episode ends), so an open
        # episode always has pending steps that end_episode() can mark as closing it.
        if len(self._pending) >= self.config.batch_steps:
            self._seal()
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.append(step)
        self._pending_starts.append(self._starts_next)
        self._starts_next = step.terminated or step.truncated
        if self._starts_next:
            self._seal()
        self._pump()

    def end_episode(self) -> None:
        """The episode stops here without an end flag (an operator reset, a shutdown): seal what
        is pending and tell the learner to store the episode as unfinished."""
        with self._lock:
            if not self._starts_next:  # an episode is open
                self._seal(closes_episode=True)
            self._starts_next = True

    def _seal_on_time(self) -> None:
        """The sealer thread: every quarter of ``seal_every_s``, seal pending steps older than
        ``seal_every_s`` (keeping an open episode's newest step pending)."""
        period_s = max(0.01, self.config.seal_every_s / 4)
        while not self._closing.wait(period_s):
            with self._lock:
                if self._closing.is_set():
                    return
                try:
                    self._seal_if_due()
                except (BackpressureError, OSError) as exc:  # add() raises it to the caller
                    self._complain("seal", f"sealing on time failed: {exc}")

    def _seal_if_due(self) -> None:
        if len(self._pending) > 1 and (
            time.monotonic() - self._pending_since >= self.config.seal_every_s
        ):
            self._seal(keep_last=not self._starts_next)

    def _seal(self, closes_episode: bool = False, keep_last: bool = False) -> None:
        """Make the pending steps a batch, on disk before it is ever sent. keep_last: leave the
        newest step pending (an open episode's, so end_episode can still close it)."""
        count = len(self._pending) - (1 if keep_last else 0)
        if count <= 0:
            return
        steps, starts = self._pending[:count], self._pending_starts[:count]
        first = self._next_seq
        frames = encode_steps(self.config.actor_id, first, steps, starts,
                              closes_episode=closes_episode)  # fmt: skip
        batch = self._write_batch(first, first + count - 1, [bytes(f) for f in frames])
        self._fsync_spool()
        # The spool's file names carry the seq; next_seq is written when batches are freed.
        self._next_seq = batch.last_seq + 1
        self._pending, self._pending_starts = self._pending[count:], self._pending_starts[count:]
        self._pending_since = time.monotonic()
        self._batches.append(batch)
        self._spool_bytes += batch.nbytes
        in_memory = [b for b in self._batches if b.frames is not None]
        if len(in_memory) > self.config.max_memory_batches:
            in_memory[0].frames = None  # it is on disk; read back when it is its turn
        if self._spool_bytes > self.config.max_spool_bytes:
            raise BackpressureError(
                f"actor {self.config.actor_id} holds {len(self._batches)} unacknowledged "
                f"batches ({self._spool_bytes / 1e9:.1f} GB spooled in {self.spool}, limit "
                f"{self.config.max_spool_bytes / 1e9:.1f} GB); the learner has not acknowledged "
                "data for too long: check it is running"
            )

    # -- relabels (an operator's withdrawn mark), held in the spool until acknowledged ----------
    def relabel(self, relabel: StepRelabel) -> None:
        """Hold an operator's withdrawn mark for the learner, on disk first (see the module
        docstring). ValueError for a relabel of another actor's step (the learner refuses it)."""
        if relabel.actor_id != self.config.actor_id:
            raise ValueError(f"relabel: actor_id={relabel.actor_id!r}; this link sends only its "
                             f"own, {self.config.actor_id!r}")  # fmt: skip
        with self._lock:
            try:
                self._write_relabel(relabel)
            except OSError as exc:  # still sent while this actor runs; lost if it is killed
                log.error("actor link: could not write the relabel of seq %d to %s (%s); it is "
                          "held in memory only", relabel.last_seq, self.spool, exc)  # fmt: skip
            self._relabels[relabel.last_seq] = (relabel, -float("inf"))
            self._bound_relabels()
            self._pump()

    def _relabel_path(self, seq: int) -> Path:
        return self.spool / f"{RELABEL_PREFIX}{seq:012d}.json"

    def _write_relabel(self, relabel: StepRelabel) -> None:
        """``relabel_<seq>.json`` (fsynced, renamed into place, the directory fsynced)."""
        body = json.dumps({"format": RELABEL_FORMAT, "relabel": relabel.to_meta()},
                          allow_nan=False).encode()  # fmt: skip
        fd, tmp = tempfile.mkstemp(dir=self.spool, prefix=".relabel.")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self._relabel_path(relabel.last_seq))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._fsync_spool()

    def _load_relabels(self) -> dict[int, tuple[StepRelabel, float]]:
        """The relabels a previous run left pending; untrusted files are moved aside."""
        for tmp in self.spool.glob(".relabel.*"):  # a write cut short: its relabel() never returned
            try:
                tmp.unlink(missing_ok=True)
            except OSError as exc:  # a directory by that name, say: left as it is
                log.warning("actor link: could not remove %s: %s", tmp, exc)
        pending: dict[int, tuple[StepRelabel, float]] = {}
        for path in sorted(self.spool.glob(f"{RELABEL_PREFIX}*.json")):
            try:
                relabel = self._read_relabel(path)
            except (OSError, ValueError, TypeError, KeyError, RecursionError) as exc:
                self._set_relabel_aside(path, ".corrupt", f"refused: {exc}")
                continue
            pending[relabel.last_seq] = (relabel, -float("inf"))
        if pending:
            log.info("actor link: %d relabels pending from a previous run in %s (seq %s); sent "
                     "once the learner holds their steps", len(pending), self.spool,
                     ", ".join(str(s) for s in sorted(pending)[:10]))  # fmt: skip
        return pending

    def _read_relabel(self, path: Path) -> StepRelabel:
        """A relabel file, checked: ValueError (or OSError) naming what is wrong."""
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        with path.open("rb") as fh:
            data = fh.read(MAX_RELABEL_FILE_BYTES + 1)
        if len(data) > MAX_RELABEL_FILE_BYTES:
            raise ValueError(f"larger than {MAX_RELABEL_FILE_BYTES} bytes")
        document = json.loads(data.decode("utf-8"))
        if not isinstance(document, dict) or document.get("format") != RELABEL_FORMAT:
            found = document.get("format") if isinstance(document, dict) else type(document)
            raise ValueError(f"format={str(found)[:40]}; expected {RELABEL_FORMAT}")
        fields = document.get("relabel")
        if not isinstance(fields, dict):
            raise ValueError("field relabel must be a map")
        relabel = StepRelabel.from_meta(fields)
        if relabel.actor_id != self.config.actor_id:
            raise ValueError(f"actor_id={relabel.actor_id[:40]!r}; this actor is "
                             f"{self.config.actor_id!r}")  # fmt: skip
        if path.name != self._relabel_path(relabel.last_seq).name:
            raise ValueError(f"last_seq={relabel.last_seq} differs from the file name")
        if relabel.last_seq >= self._next_seq:
            raise ValueError(f"last_seq={relabel.last_seq}; this actor has sealed only seq < "
                             f"{self._next_seq}")  # fmt: skip
        return relabel

    def _set_relabel_aside(self, path: Path, suffix: str, why: str) -> None:
        """Move a relabel file aside (kept, never sent): one logged line, counted."""
        self.relabels_set_aside += 1
        aside = path.with_suffix(suffix)
        try:
            path.replace(aside)
        except OSError as exc:
            why += f"; moving it aside failed: {exc}"
        why = " ".join(why.split())[:300]  # one line, whatever the file held
        log.error("actor link: relabel file %s %s; moved aside as %s", path, why, aside.name)

    def _bound_relabels(self) -> None:
        while len(self._relabels) > MAX_PENDING_RELABELS:
            dropped = min(self._relabels)
            del self._relabels[dropped]
            self._set_relabel_aside(
                self._relabel_path(dropped), ".dropped",
                f"not sent: more than {MAX_PENDING_RELABELS} relabels pending (episode seq "
                f"{dropped} keeps its mark)",
            )  # fmt: skip

    def _forget_relabel(self, seq: int) -> None:
        """The learner acknowledged it: its file goes (a delete lost in a crash only means a
        resend, which the learner recognises)."""
        del self._relabels[seq]
        try:
            self._relabel_path(seq).unlink(missing_ok=True)
        except OSError as exc:
            log.error("actor link: could not delete %s (%s); it is sent again next run",
                      self._relabel_path(seq), exc)  # fmt: skip

    @property
    def relabels_pending(self) -> int:
        with self._lock:
            return len(self._relabels)

    @property
    def last_step_seq(self) -> int:
        """The seq of the newest step added (sealed or not); -1 before any."""
        with self._lock:
            return self._next_seq + len(self._pending) - 1

    def _send_relabels(self, now: float) -> None:
        for seq, (relabel, sent_s) in list(self._relabels.items()):
            if seq <= self.durable and now - sent_s >= self.config.resend_after_s:
                meta = {"op": "relabel", "actor_id": self.config.actor_id,
                        "relabel": relabel.to_meta()}  # fmt: skip
                if self._send(encode("request", self._next_msg_seq(), meta)):
                    self._relabels[seq] = (relabel, now)

    def pump(self) -> None:
        """Send what may be sent, read acks and weights, resend on silence. Never blocks."""
        with self._lock:
            self._pump()

    def _pump(self) -> None:
        self._read_acks()
        now = time.monotonic()
        self._seal_if_due()
        if not self._hello_answered and now - self._last_hello >= self.config.hello_every_s:
            self._send(encode("request", self._next_msg_seq(),
                              {"op": "hello", "actor_id": self.config.actor_id}))  # fmt: skip
            self._last_hello = now
        if self._relabels:
            self._send_relabels(now)
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
            try:
                frames = batch.frames or self._read_spilled(batch.path)
                header = self._holds_from(frames[0], self._send_index)
            except (OSError, CodecError, ValueError, TypeError, KeyError) as exc:
                self._drop_corrupt(batch, exc)
                continue
            if not self._send([header, *frames[1:]]):
                break
            self._send_index += 1
            in_flight += 1

    def _holds_from(self, header: bytes, index: int) -> bytes:
        """The header of batch ``index`` with ``holds_from``: the oldest seq before it that this
        actor can still resend (its own first seq when the steps just before it are gone for
        good). A learner skips a gap in the stream only when the actor cannot fill it."""
        batch = self._batches[index]
        before = self._batches[index - 1] if index > 0 else None
        contiguous = before is not None and before.last_seq + 1 == batch.first_seq
        fields = msgpack.unpackb(header, raw=False)
        fields["meta"]["holds_from"] = self._batches[0].first_seq if contiguous else batch.first_seq
        return msgpack.packb(fields, use_bin_type=True)

    def _drop_corrupt(self, batch: _Batch, exc: Exception) -> None:
        """A spool file that cannot be read back: moved aside (``*.corrupt``), logged; its steps
        are lost and the learner sees the gap. The batches after it that continue its episode
        cannot be delivered either (their first observation was in it): moved aside as
        ``*.orphan``, so that the stream resumes at the next episode start."""
        log.error("actor link: spooled batch seq %d-%d unreadable (%s); moved aside as %s.corrupt",
                  batch.first_seq, batch.last_seq, exc, batch.path.name)  # fmt: skip
        index = self._batches.index(batch)
        self._set_aside(batch, ".corrupt")
        while index < len(self._batches):
            following = self._batches[index]
            try:
                frames = following.frames or self._read_spilled(following.path)
                starts = decode(frames).arrays["starts_episode"]
                continues = not bool(starts[0])
            except (OSError, CodecError, KeyError, IndexError) as exc2:
                log.error("actor link: spooled batch seq %d-%d unreadable too (%s)",
                          following.first_seq, following.last_seq, exc2)  # fmt: skip
                continues = True
            if not continues:
                break
            log.error("actor link: batch seq %d-%d continues the lost episode; moved aside as "
                      "%s.orphan", following.first_seq, following.last_seq,
                      following.path.name)  # fmt: skip
            self._set_aside(following, ".orphan")

    def _set_aside(self, batch: _Batch, suffix: str) -> None:
        try:
            batch.path.replace(batch.path.with_suffix(suffix))
        except OSError:
            batch.path.unlink(missing_ok=True)
        self._batches.remove(batch)
        self._spool_bytes -= batch.nbytes

    def _complain(self, kind: str, text: str) -> None:
        """Log ``text`` at most every LOG_EVERY_S per ``kind`` (a broken learner repeats)."""
        now = time.monotonic()
        if now - self._last_log.get(kind, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._last_log[kind] = now
            log.warning("actor link: %s", text)

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
            except CodecError as exc:
                self.rejected_acks += 1
                self._complain("ack", f"dropped a malformed ack: {str(exc)[:200]}")
                continue
            error = ack.meta.get("error")
            if error is not None:
                self.learner_errors += 1
                self.last_learner_error = str(error)[:200]
                self._complain("error", f"the learner refused a message: {str(error)[:200]}")
            done = ack.meta.get("relabelled")
            if isinstance(done, int) and not isinstance(done, bool) and done in self._relabels:
                self._forget_relabel(done)
                self.relabels_done += error is None
                if error is not None:
                    log.error("actor link: the learner did not relabel seq %d: %s", done,
                              str(error)[:200])  # fmt: skip
            received, durable = ack.meta.get("received"), ack.meta.get("durable")
            if received is None and durable is None and error is not None:
                continue  # an error about a message it could not attribute to us
            if not all(
                isinstance(v, int) and not isinstance(v, bool) and -1 <= v <= MAX_SEQ
                for v in (received, durable)
            ):
                self.rejected_acks += 1
                self._complain(
                    "ack",
                    f"dropped an ack with received={str(received)[:40]} "
                    f"durable={str(durable)[:40]}; expected ints in -1..{MAX_SEQ}",
                )
                continue
            self._take_ack(received, durable)

    def _take_ack(self, received: int, durable: int) -> None:
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
        if self._batches and self._batches[0].last_seq <= durable:
            self._write_seq()  # before the files that also carry it are deleted
        while self._batches and self._batches[0].last_seq <= durable:
            batch = self._batches.popleft()
            self._send_index = max(0, self._send_index - 1)
            self._spool_bytes -= batch.nbytes
            self.steps_stored += batch.steps
            batch.path.unlink(missing_ok=True)

    def flush(self, timeout_s: float) -> bool:
        """Seal pending steps and pump until the learner holds everything durably, or timeout.
        Returns True if nothing is left unacknowledged."""
        with self._lock:
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
        """Steps not yet stored by the learner: spooled batches plus the unsealed tail."""
        with self._lock:
            return sum(b.steps for b in self._batches) + len(self._pending)

    @property
    def steps_held(self) -> int:
        """Steps the actor holds that the learner has not stored (for the console)."""
        return self.unacknowledged_steps

    @property
    def steps_spooled(self) -> int:
        """Held steps that are on disk in the spool (all sealed ones)."""
        with self._lock:
            return sum(b.steps for b in self._batches)

    def stop_summary(self) -> str:
        """One line saying where this run's steps went (printed when the actor stops)."""
        with self._lock:
            return self._summary()

    def _summary(self) -> str:
        text = (
            f"actor {self.config.actor_id}: {self.steps_stored} steps stored by the learner this "
            f"run, {self.steps_spooled} held in the spool {self.spool} (sent next run)"
        )
        if self._pending:
            text += f", {len(self._pending)} unsealed steps lost"
        if self._relabels:
            text += f", {len(self._relabels)} relabels held in the spool (sent next run)"
        return text

    # -- weights -------------------------------------------------------------------------------
    def expect_weights(self, state_dict: Mapping[str, Any]) -> None:
        """Declare the keys, shapes and dtypes of the policy's state dict (nested as in
        ``SACAgent.policy_state_dict``): published weights that differ are refused. (fp16 weights
        are accepted for float32 tensors: the learner may send half precision.)"""
        self._expected_weights = _layout(state_dict)

    def latest_weights(self) -> tuple[int, dict[str, Any]] | None:
        """(version, state dict) of the newest weights received since the last call, or None.
        Malformed, non-finite or (after ``expect_weights``) mismatched weights are refused."""
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
            return self._take_weights(newest)
        except (CodecError, KeyError, TypeError, ValueError, OverflowError) as exc:
            self.rejected_weights += 1
            self._complain("weights", f"refused published weights ({str(exc)[:200]}); keeping "
                           f"weights v{self.weights_version}")  # fmt: skip
            return None

    def _take_weights(self, frames: list[Any]) -> tuple[int, dict[str, Any]] | None:
        message = decode(frames, self.config.max_weights_bytes, frozenset({"weights"}))
        version, learner_id = message.meta.get("version"), message.meta.get("learner_id", "")
        if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= MAX_SEQ:
            raise ValueError(f"version={str(version)[:40]}; expected an int in 0..{MAX_SEQ}")
        if not isinstance(learner_id, str) or len(learner_id) > 64:
            raise ValueError("learner_id must be a string of at most 64 characters")
        if "safetensors" not in message.arrays:
            raise ValueError("no safetensors array")
        state = weights_from_bytes(message.arrays["safetensors"])
        bad = non_finite_tensors(state)
        if bad:
            raise ValueError(f"non-finite values in {', '.join(bad[:5])}")
        if self._expected_weights is not None:
            _check_layout(_layout(state), self._expected_weights)
        if learner_id != self._learner_id:  # a (re)started learner numbers from its own start
            self._learner_id, self.weights_version = learner_id, -1
        if version <= self.weights_version:
            return None
        self.weights_version = version
        self.weights_received_at = time.monotonic()
        health = message.meta.get("health")
        if isinstance(health, dict):  # display only: scalars with short names, nothing else
            self.learner_health = {
                str(k)[:40]: (v[:80] if isinstance(v, str) else v)
                for k, v in list(health.items())[:32]
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
        """Seal the unsealed tail into the spool (closing an open episode), log where every step
        went (``stop_summary``), and close the sockets."""
        self._closing.set()
        self._sealer.join(timeout=5.0)
        try:
            self.end_episode()
        except BackpressureError as exc:  # the batch is on disk; the spool is over its limit
            log.warning("actor link: %s", exc)
        except OSError as exc:
            log.error("actor link: could not spool the last %d steps: %s", len(self._pending), exc)
        log.info("%s", self.stop_summary())
        self._dealer.close(linger=0)
        self._sub.close(linger=0)


def _layout(state: Mapping[str, Any], prefix: str = "") -> dict[str, tuple[tuple[int, ...], Any]]:
    """name -> (shape, dtype) of every tensor in a nested state dict."""
    out: dict[str, tuple[tuple[int, ...], Any]] = {}
    for key, value in state.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(_layout(value, name))
        elif hasattr(value, "shape") and hasattr(value, "dtype"):
            out[name] = (tuple(value.shape), value.dtype)
        else:
            raise ValueError(f"weights entry {name!r} is a {type(value).__name__}, not a tensor")
    return out


def _check_layout(
    got: dict[str, tuple[tuple[int, ...], Any]], want: dict[str, tuple[tuple[int, ...], Any]]
) -> None:
    import torch

    if got.keys() != want.keys():
        missing, extra = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
        raise ValueError(f"keys differ from the policy's: missing {missing[:3]}, extra {extra[:3]}")
    for name, (shape, dtype) in want.items():
        got_shape, got_dtype = got[name]
        half_ok = dtype == torch.float32 and got_dtype == torch.float16
        if got_shape != shape or (got_dtype != dtype and not half_ok):
            raise ValueError(f"{name} is {got_dtype} {got_shape}; the policy has {dtype} {shape}")
