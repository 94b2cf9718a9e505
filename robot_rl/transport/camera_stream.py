"""Camera streams over ZMQ: one publisher per camera, a subscriber that keeps the newest frames
and assembles synchronized multi-camera observations.

Each frame is one "frame" message (see ``codec``): array ``image`` (uint8 H x W x 3 RGB, or a
uint8 JPEG byte string when ``encoding`` is "jpeg"), meta ``camera_id``, ``frame_seq`` (the
camera's own counter), ``capture_wall_s`` (capture time on the wall clock, so that frame age is
meaningful across machines with synchronized clocks), ``sent_wall_s`` (when the publisher handed
it to ZMQ, wall clock: capture to sent is the camera's own latency, a twin's render; optional, so
older publishers still work) and ``encoding``.

Freshness over completeness: the publisher's send queue is eight frames deep, so a slow
subscriber loses frames instead of falling ever further behind, and the subscriber's receive
thread keeps only the newest frame per camera. Drops show up as gaps in ``frame_seq`` and are
counted per camera.

Bad frames never stop the receive thread: a message that does not decode, whose meta has the
wrong types (``camera_id`` not a short string, ``frame_seq`` not an int, a non-finite capture
time), whose raw image is not uint8 (H, W, 3), or whose JPEG declares more than
``max_decoded_bytes`` of pixels (read from the JPEG header before anything is decoded) is logged
and counted in ``rejected``; the thread's own failures are logged and counted in ``errors``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import zmq

from robot_rl.interfaces import Frame
from robot_rl.transport.codec import CodecError, decode, encode
from robot_rl.transport.security import SecurityConfig, secure_client, secure_server

log = logging.getLogger(__name__)

FRAME_TYPES = frozenset({"frame"})
MAX_AGES = 200_000  # frame ages kept per camera with keep_ages (a bounded history)


def _monotonic_to_wall(stamp_s: float) -> float:
    return time.time() - (time.monotonic() - stamp_s)


class CameraPublisher:
    """Publishes frames of one or more cameras on one PUB endpoint.

    jpeg_quality: None sends raw RGB (lossless, what the learner wants); 1-100 sends JPEG (for
    remote viewers over thin links; needs OpenCV).
    """

    def __init__(
        self,
        endpoint: str,
        security: SecurityConfig,
        jpeg_quality: int | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        if jpeg_quality is not None and not 1 <= jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality={jpeg_quality}; allowed 1..100 or None (raw)")
        self.jpeg_quality = jpeg_quality
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.PUB)
        self._sock.sndhwm = 8  # bounded: a slow subscriber loses frames instead of lagging
        self._sock.linger = 0
        secure_server(self._sock, endpoint, security)
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._seq = 0

    def publish(self, frame: Frame) -> None:
        """Send ``frame`` (never blocks: a frame a subscriber cannot take now is dropped)."""
        image = np.asarray(frame.image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"camera {frame.camera_id!r}: image {image.dtype} {image.shape}; "
                "expected uint8 (H, W, 3) RGB"
            )
        encoding = "raw"
        if self.jpeg_quality is not None:
            image, encoding = _jpeg_encode(image, self.jpeg_quality), "jpeg"
        meta = {
            "camera_id": frame.camera_id,
            "frame_seq": int(frame.seq),
            "capture_wall_s": _monotonic_to_wall(frame.stamp_s),
            "encoding": encoding,
            "sent_wall_s": time.time(),
        }
        frames = encode("frame", self._seq, meta, {"image": image})
        self._seq += 1
        with contextlib.suppress(zmq.Again):  # PUB drops at the high-water mark; nothing to undo
            self._sock.send_multipart(frames, copy=False, flags=zmq.NOBLOCK)

    def close(self) -> None:
        self._sock.close(linger=0)


def _jpeg_encode(image: np.ndarray, quality: int) -> np.ndarray:
    from robot_rl.extras import require

    cv2 = require("cv2", "cameras", "JPEG camera streams")
    ok, data = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not JPEG-encode a frame")
    return data.reshape(-1)


# Start-of-frame markers (baseline, extended, progressive, lossless, ...): they carry the size.
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD,
                          0xCE, 0xCF})  # fmt: skip


def jpeg_size(data: bytes | memoryview) -> tuple[int, int]:
    """(height, width) from a JPEG's start-of-frame header, without decoding; CodecError if the
    bytes are not a JPEG with one."""
    view = memoryview(data).cast("B")
    if len(view) < 4 or view[0] != 0xFF or view[1] != 0xD8:
        raise CodecError("frame says jpeg but has no JPEG start marker")
    offset = 2
    while offset + 4 <= len(view):
        if view[offset] != 0xFF:
            raise CodecError(f"JPEG header is corrupt at byte {offset}")
        marker = view[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            offset += 2
            continue
        (length,) = struct.unpack_from(">H", view, offset + 2)
        if length < 2:
            raise CodecError(f"JPEG segment length {length} at byte {offset}")
        if marker in _SOF_MARKERS:
            if offset + 9 > len(view):
                break
            height, width = struct.unpack_from(">HH", view, offset + 5)
            return int(height), int(width)
        if marker == 0xDA:  # start of scan before any frame header
            break
        offset += 2 + length
    raise CodecError("JPEG has no frame header giving its size")


def _jpeg_decode(data: np.ndarray, max_decoded_bytes: int) -> np.ndarray:
    """RGB (H, W, 3) uint8 of a JPEG byte string; the size in its header is checked against
    ``max_decoded_bytes`` before OpenCV decodes anything."""
    from robot_rl.extras import require

    cv2 = require("cv2", "cameras", "JPEG camera streams")

    raw = np.ascontiguousarray(data, np.uint8).reshape(-1)
    height, width = jpeg_size(raw.data)
    if height * width * 3 > max_decoded_bytes:
        raise CodecError(
            f"JPEG declares {width}x{height} ({height * width * 3} bytes decoded); this "
            f"subscriber takes at most {max_decoded_bytes} bytes per frame"
        )
    image = cv2.imdecode(raw, cv2.IMREAD_COLOR)
    if image is None:
        raise CodecError("frame says jpeg but does not decode as JPEG")
    return np.ascontiguousarray(image[:, :, ::-1])


@dataclass
class StreamStats:
    """Per-camera counters. age_s: receive time minus capture time of the newest frame."""

    received: int = 0
    dropped: int = 0  # frame_seq gaps (the publisher or the network dropped them)
    last_age_s: float = float("nan")
    ages_s: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class ReceivedFrame:
    """A frame as received: the frame, its capture time on the wall clock, when it arrived, and
    when its publisher sent it (None if the publisher does not say)."""

    frame: Frame
    capture_wall_s: float
    received_wall_s: float
    sent_wall_s: float | None = None

    @property
    def age_s(self) -> float:
        return time.time() - self.capture_wall_s


class CameraSubscriber:
    """Receives frames from camera publishers on a background thread, keeping the newest.

    cameras: the camera ids to keep (others are ignored). keep_ages: record every frame's
    latency in ``stats`` (benchmarks; the newest ``MAX_AGES`` are kept). max_bytes: largest
    message accepted. max_decoded_bytes: largest decoded JPEG frame accepted (4K RGB fits).
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        security: SecurityConfig,
        cameras: Sequence[str],
        keep_ages: bool = False,
        max_bytes: int = 64 * 1024 * 1024,
        context: zmq.Context | None = None,
        max_decoded_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        if not cameras:
            raise ValueError("name at least one camera to subscribe to")
        self.cameras = tuple(cameras)
        self.keep_ages = keep_ages
        self.max_bytes = max_bytes
        self.max_decoded_bytes = max_decoded_bytes
        self.stats = {name: StreamStats() for name in self.cameras}
        self.rejected = 0  # malformed messages, dropped and logged
        self.errors = 0  # failures of the receive thread itself, logged; the thread goes on
        self.handled = 0  # messages handled (accepted, ignored or rejected)
        self.accepted = 0  # frames kept as a camera's newest (``wait_frame`` counts these)
        self._last_log: dict[str, float] = {}
        self._latest: dict[str, ReceivedFrame] = {}
        self._cond = threading.Condition()
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.rcvhwm = 8
        self._sock.linger = 0
        self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        for endpoint in endpoints:
            secure_client(self._sock, endpoint, security)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="camera-subscriber", daemon=True)
        self._thread.start()

    # -- receiving -----------------------------------------------------------------------------
    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        while not self._stop.is_set():
            try:
                if not poller.poll(50):
                    continue
                frames = self._sock.recv_multipart(copy=False, flags=zmq.NOBLOCK)
            except zmq.Again:
                continue
            except zmq.ZMQError as exc:
                if self._stop.is_set():
                    return
                self.errors += 1
                self._complain("socket", f"camera stream: receive failed: {exc}", logging.ERROR)
                self._stop.wait(0.1)  # a broken socket must not spin the CPU
                continue
            try:
                self._handle(frames)
            except Exception as exc:  # last guard: the thread outlives any frame
                self.errors += 1
                self._complain("handle", f"camera stream: a frame raised {type(exc).__name__}: "
                               f"{str(exc)[:200]}", logging.ERROR)  # fmt: skip
            finally:
                self.handled += 1

    def _complain(self, kind: str, text: str, level: int = logging.WARNING) -> None:
        """Log ``text`` at most once a second per ``kind`` (a broken publisher repeats)."""
        now = time.monotonic()
        if now - self._last_log.get(kind, -1.0) >= 1.0:
            self._last_log[kind] = now
            log.log(level, "%s", text)

    def _handle(self, frames: list) -> None:
        now = time.time()
        try:
            message = decode(frames, self.max_bytes, FRAME_TYPES)
            meta = message.meta
            camera_id, frame_seq = meta.get("camera_id"), meta.get("frame_seq")
            capture, encoding = meta.get("capture_wall_s"), meta.get("encoding", "raw")
            if not isinstance(camera_id, str) or not 0 < len(camera_id) <= 64:
                raise CodecError(f"camera_id {str(camera_id)[:40]!r}; expected 1-64 characters")
            if camera_id not in self.stats:
                return  # a camera this subscriber does not want: not an error
            if isinstance(frame_seq, bool) or not isinstance(frame_seq, int) or frame_seq < 0:
                raise CodecError(f"frame_seq={str(frame_seq)[:40]}; expected an int >= 0")
            if (
                isinstance(capture, bool)
                or not isinstance(capture, int | float)
                or not math.isfinite(capture)
            ):
                raise CodecError(f"capture_wall_s={str(capture)[:40]}; expected finite seconds")
            sent = meta.get("sent_wall_s")
            if sent is not None and (
                isinstance(sent, bool)
                or not isinstance(sent, int | float)
                or not math.isfinite(sent)
            ):
                raise CodecError(f"sent_wall_s={str(sent)[:40]}; expected finite seconds or none")
            if "image" not in message.arrays:
                raise CodecError("no image array")
            image = message.arrays["image"]
            if encoding == "jpeg":
                if image.dtype != np.uint8 or image.ndim != 1:
                    raise CodecError(f"jpeg image is {image.dtype} {image.shape}, not uint8 bytes")
                image = _jpeg_decode(image, self.max_decoded_bytes)
            elif encoding != "raw":
                raise CodecError(f"encoding {str(encoding)[:20]!r}; expected raw or jpeg")
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or not image.size:
                raise CodecError(f"image is {image.dtype} {image.shape}, not uint8 (H, W, 3)")
        except CodecError as exc:
            self.rejected += 1
            self._complain("frame", f"camera stream: dropped a bad frame message: {exc}")
            return
        stats = self.stats[camera_id]
        with self._cond:
            previous = self._latest.get(camera_id)
            if previous is not None and frame_seq > previous.frame.seq + 1:
                stats.dropped += frame_seq - previous.frame.seq - 1
            stats.received += 1
            stats.last_age_s = now - capture
            if self.keep_ages:
                stats.ages_s.append(now - capture)
                if len(stats.ages_s) > MAX_AGES:
                    del stats.ages_s[: MAX_AGES // 2]
            frame = Frame(image, capture, frame_seq, camera_id)  # stamp: capture, wall clock
            self._latest[camera_id] = ReceivedFrame(
                frame, capture, now, None if sent is None else float(sent)
            )
            self.accepted += 1
            self._cond.notify_all()

    # -- reading -------------------------------------------------------------------------------
    def latest(self, camera_id: str) -> ReceivedFrame | None:
        """The newest frame of one camera, or None if none has arrived."""
        with self._cond:
            return self._latest.get(camera_id)

    def wait_frame(self, after: int, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` until more than ``after`` frames have been accepted (any
        camera); returns the count (``accepted``), so a reader wakes on each new frame instead of
        polling: pass the count it returned last time, and read each camera's ``latest``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self.accepted <= after:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return self.accepted

    def wait_synchronized(
        self, max_skew_s: float = 0.05, timeout_s: float = 1.0, newer_than_s: float = 0.0
    ) -> dict[str, ReceivedFrame]:
        """The newest frame of every camera, captured within ``max_skew_s`` of each other and
        after ``newer_than_s`` (wall clock); waits up to ``timeout_s``. TimeoutError says which
        camera is missing or how far apart they are."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                frames = {c: self._latest.get(c) for c in self.cameras}
                missing = [c for c, f in frames.items() if f is None]
                if not missing:
                    stamps = [f.capture_wall_s for f in frames.values()]
                    skew = max(stamps) - min(stamps)
                    if skew <= max_skew_s and min(stamps) > newer_than_s:
                        return frames  # type: ignore[return-value]
                left = deadline - time.monotonic()
                if left <= 0:
                    if missing:
                        raise TimeoutError(
                            f"no frame from camera(s) {missing} within {timeout_s} s; is the "
                            "publisher running and the endpoint right?"
                        )
                    raise TimeoutError(
                        f"cameras not synchronized within {timeout_s} s: skew {skew * 1e3:.1f} "
                        f"ms > {max_skew_s * 1e3:.1f} ms"
                    )
                self._cond.wait(left)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._sock.close(linger=0)
