"""Camera streams over ZMQ: one publisher per camera, a subscriber that keeps the newest frames
and assembles synchronized multi-camera observations.

Each frame is one "frame" message (see ``codec``): array ``image`` (uint8 H x W x 3 RGB, or a
uint8 JPEG byte string when ``encoding`` is "jpeg"), meta ``camera_id``, ``frame_seq`` (the
camera's own counter), ``capture_wall_s`` (capture time on the wall clock, so that frame age is
meaningful across machines with synchronized clocks) and ``encoding``.

Freshness over completeness: the publisher's send queue is eight frames deep, so a slow
subscriber loses frames instead of falling ever further behind, and the subscriber's receive
thread keeps only the newest frame per camera. Drops show up as gaps in ``frame_seq`` and are
counted per camera.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import zmq

from robot_rl.interfaces import Camera, Frame
from robot_rl.transport.codec import CodecError, decode, encode
from robot_rl.transport.security import SecurityConfig, secure_client, secure_server

log = logging.getLogger(__name__)

FRAME_TYPES = frozenset({"frame"})


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
        }
        frames = encode("frame", self._seq, meta, {"image": image})
        self._seq += 1
        with contextlib.suppress(zmq.Again):  # PUB drops at the high-water mark; nothing to undo
            self._sock.send_multipart(frames, copy=False, flags=zmq.NOBLOCK)

    def publish_from(self, cameras: Iterable[Camera]) -> None:
        """Read one frame from each camera and publish it."""
        for camera in cameras:
            self.publish(camera.read())

    def close(self) -> None:
        self._sock.close(linger=0)


def _jpeg_encode(image: np.ndarray, quality: int) -> np.ndarray:
    try:
        import cv2
    except ImportError as exc:
        raise RuntimeError("JPEG streams need OpenCV: pip install opencv-python-headless") from exc
    ok, data = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not JPEG-encode a frame")
    return data.reshape(-1)


def _jpeg_decode(data: np.ndarray) -> np.ndarray:
    import cv2

    image = cv2.imdecode(np.asarray(data, np.uint8), cv2.IMREAD_COLOR)
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
    """A frame as received: the frame, its capture time on the wall clock, when it arrived."""

    frame: Frame
    capture_wall_s: float
    received_wall_s: float

    @property
    def age_s(self) -> float:
        return time.time() - self.capture_wall_s


class CameraSubscriber:
    """Receives frames from camera publishers on a background thread, keeping the newest.

    cameras: the camera ids to keep (others are ignored). keep_ages: record every frame's
    latency in ``stats`` (benchmarks). max_bytes: largest message accepted.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        security: SecurityConfig,
        cameras: Sequence[str],
        keep_ages: bool = False,
        max_bytes: int = 64 * 1024 * 1024,
        context: zmq.Context | None = None,
    ) -> None:
        if not cameras:
            raise ValueError("name at least one camera to subscribe to")
        self.cameras = tuple(cameras)
        self.keep_ages = keep_ages
        self.max_bytes = max_bytes
        self.stats = {name: StreamStats() for name in self.cameras}
        self.rejected = 0  # malformed messages, dropped and logged
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
            if not poller.poll(50):
                continue
            try:
                frames = self._sock.recv_multipart(copy=False, flags=zmq.NOBLOCK)
            except zmq.Again:
                continue
            except zmq.ZMQError:
                if self._stop.is_set():
                    return
                raise
            self._handle(frames)

    def _handle(self, frames: list) -> None:
        now = time.time()
        try:
            message = decode(frames, self.max_bytes, FRAME_TYPES)
            meta = message.meta
            camera_id, frame_seq = meta["camera_id"], int(meta["frame_seq"])
            capture = float(meta["capture_wall_s"])
            image = message.arrays["image"]
            if meta.get("encoding", "raw") == "jpeg":
                image = _jpeg_decode(image)
            elif image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise CodecError(f"image is {image.dtype} {image.shape}, not uint8 (H, W, 3)")
        except (CodecError, KeyError, TypeError, ValueError) as exc:
            log.warning("camera stream: dropped a malformed frame message: %s", exc)
            self.rejected += 1
            return
        if camera_id not in self.stats:
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
            frame = Frame(image, capture, frame_seq, camera_id)  # stamp: capture, wall clock
            self._latest[camera_id] = ReceivedFrame(frame, capture, now)
            self._cond.notify_all()

    # -- reading -------------------------------------------------------------------------------
    def latest(self, camera_id: str) -> ReceivedFrame | None:
        """The newest frame of one camera, or None if none has arrived."""
        with self._cond:
            return self._latest.get(camera_id)

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
