"""Camera streams on loopback: frames arrive intact with ages, drops are counted, malformed
messages are dropped, multi-camera observations are synchronized."""

from __future__ import annotations

import struct
import time

import cv2
import msgpack
import numpy as np
import pytest
import zmq

from robot_rl.interfaces import Frame
from robot_rl.transport.camera_stream import CameraPublisher, CameraSubscriber, jpeg_size
from robot_rl.transport.codec import CodecError, encode
from robot_rl.transport.security import SecurityConfig

PLAIN = SecurityConfig(plaintext=True)


def frame(camera: str, seq: int, h: int = 24, w: int = 32) -> Frame:
    image = np.random.default_rng(seq).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Frame(image, time.monotonic(), seq, camera)


def wait_for(predicate, timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


@pytest.fixture
def link():
    """A publisher and a subscriber to the front and wrist cameras, connected."""
    pub = CameraPublisher("tcp://127.0.0.1:0", PLAIN)
    sub = CameraSubscriber([pub.endpoint], PLAIN, ["front", "wrist"], keep_ages=True)

    def connected() -> bool:  # PUB/SUB joins asynchronously: publish until something arrives
        pub.publish(frame("front", 0))
        time.sleep(0.01)
        return sub.latest("front") is not None

    wait_for(connected)
    yield pub, sub
    sub.close()
    pub.close()


def test_frames_arrive_intact_with_capture_time_and_age(link) -> None:
    pub, sub = link
    sent = frame("wrist", 7)
    pub.publish(sent)
    wait_for(lambda: sub.latest("wrist") is not None)
    got = sub.latest("wrist")
    np.testing.assert_array_equal(got.frame.image, sent.image)
    assert got.frame.seq == 7 and got.frame.camera_id == "wrist"
    assert 0.0 <= got.age_s < 1.0
    assert sub.stats["wrist"].received == 1 and sub.stats["wrist"].ages_s[0] >= 0.0


def test_a_frame_says_when_it_was_sent_between_its_capture_and_its_arrival(link) -> None:
    pub, sub = link
    pub.publish(frame("wrist", 3))
    wait_for(lambda: sub.latest("wrist") is not None)
    got = sub.latest("wrist")
    assert got.capture_wall_s <= got.sent_wall_s <= got.received_wall_s


def test_wait_frame_wakes_on_each_accepted_frame_not_on_rejected_ones(link) -> None:
    pub, sub = link
    count = sub.accepted
    assert sub.wait_frame(count, 0.0) == count  # nothing new: returns at the timeout
    sub._handle([b"garbage"])  # rejected: not a frame, wakes nobody
    assert sub.wait_frame(count, 0.0) == count
    pub.publish(frame("wrist", 4))
    assert sub.wait_frame(count, 5.0) == count + 1  # returns as the frame is kept
    assert sub.latest("wrist").frame.seq == 4


def test_gaps_in_the_camera_sequence_are_counted_as_drops(link) -> None:
    pub, sub = link
    for seq in (1, 2, 6):
        pub.publish(frame("front", seq))
    wait_for(lambda: sub.latest("front").frame.seq == 6)
    assert sub.stats["front"].dropped == 3


def test_malformed_messages_are_dropped_and_the_stream_goes_on(link) -> None:
    pub, sub = link
    # Feed the subscriber's handler directly with what a buggy or hostile publisher might send.
    for bad in ([b"garbage"], [b"\x81\xa1v\x01"], []):
        sub._handle(bad)
    assert sub.rejected == 3
    pub.publish(frame("front", 9))
    wait_for(lambda: sub.latest("front").frame.seq == 9)


def test_synchronized_observation_waits_for_every_camera_within_the_skew(link) -> None:
    pub, sub = link
    with pytest.raises(TimeoutError, match="wrist"):
        sub.wait_synchronized(max_skew_s=0.05, timeout_s=0.1)
    pub.publish(frame("front", 10))
    pub.publish(frame("wrist", 10))
    frames = sub.wait_synchronized(max_skew_s=0.05, timeout_s=2.0)
    assert set(frames) == {"front", "wrist"}
    stamps = [f.capture_wall_s for f in frames.values()]
    assert max(stamps) - min(stamps) <= 0.05
    # A front frame captured 0.12 s after the wrist's: more apart than the skew allows.
    later = frame("front", 11)
    pub.publish(Frame(later.image, frames["wrist"].frame.stamp_s + 0.12, 11, "front"))
    wait_for(lambda: sub.latest("front").frame.seq == 11)
    with pytest.raises(TimeoutError, match="skew"):
        sub.wait_synchronized(max_skew_s=0.05, timeout_s=0.1)


def test_jpeg_stream_for_remote_viewers() -> None:
    pub = CameraPublisher("tcp://127.0.0.1:0", PLAIN, jpeg_quality=90)
    sub = CameraSubscriber([pub.endpoint], PLAIN, ["front"])
    smooth = np.zeros((48, 64, 3), np.uint8)
    smooth[..., 0] = np.linspace(0, 255, 64, dtype=np.uint8)  # JPEG-friendly content
    try:

        def arrived() -> bool:
            pub.publish(Frame(smooth, time.monotonic(), 1, "front"))
            time.sleep(0.01)
            return sub.latest("front") is not None

        wait_for(arrived)
        got = sub.latest("front").frame.image
        assert got.shape == smooth.shape
        assert np.abs(got.astype(int) - smooth).mean() < 4.0  # lossy but close
    finally:
        sub.close()
        pub.close()


def test_bad_images_and_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="jpeg_quality"):
        CameraPublisher("tcp://127.0.0.1:0", PLAIN, jpeg_quality=0)
    pub = CameraPublisher("tcp://127.0.0.1:0", PLAIN)
    try:
        with pytest.raises(ValueError, match="uint8"):
            pub.publish(Frame(np.zeros((4, 4), np.float32), 0.0, 0, "front"))
    finally:
        pub.close()
    with pytest.raises(ValueError, match="at least one camera"):
        CameraSubscriber(["tcp://127.0.0.1:1"], PLAIN, [])


def test_twin_cameras_stream_from_the_cli(capsys) -> None:
    import threading

    from robot_rl import cli
    from tests.netutil import free_port

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sub = CameraSubscriber([endpoint], PLAIN, ["front", "wrist"])
    argv = ["cameras", "publish-twin", "--task", "reach", "--endpoint", endpoint, "--size", "32",
            "--plaintext", "--duration", "3"]  # fmt: skip
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("rc", cli.main(argv)))
    thread.start()
    try:
        frames = sub.wait_synchronized(max_skew_s=0.5, timeout_s=10.0)
        assert frames["front"].frame.image.shape == (32, 32, 3)
        assert frames["front"].frame.image.std() > 0  # a rendered scene, not a blank
    finally:
        thread.join(timeout=20)
        sub.close()
    assert result["rc"] == 0
    assert "published" in capsys.readouterr().out


def raw_publisher() -> tuple[zmq.Socket, str]:
    sock = zmq.Context.instance().socket(zmq.PUB)
    sock.linger = 0
    sock.bind("tcp://127.0.0.1:0")
    return sock, sock.getsockopt_string(zmq.LAST_ENDPOINT)


def frame_message(meta: dict, image: np.ndarray) -> list:
    """A "frame" message with ``meta`` merged into valid meta (values encode may refuse, such
    as inf, are patched into the header directly)."""
    base = {"camera_id": "front", "frame_seq": 1, "capture_wall_s": time.time(), "encoding": "raw"}
    frames = encode("frame", 1, base, {"image": image})
    header = msgpack.unpackb(bytes(frames[0]), raw=False)
    header["meta"].update(meta)
    return [msgpack.packb(header, use_bin_type=True), *frames[1:]]


def huge_jpeg() -> np.ndarray:
    """A real 16x16 JPEG whose frame header is patched to claim 8000 x 8000 pixels (192 MB)."""
    ok, data = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))
    assert ok
    data = bytearray(data.reshape(-1).tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 8000, 8000)
    return np.frombuffer(bytes(data), np.uint8)


def test_bad_frames_are_counted_and_the_thread_stays_alive(monkeypatch) -> None:
    decoded = []
    real = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda *a: decoded.append(a) or real(*a))
    sock, endpoint = raw_publisher()
    sub = CameraSubscriber([endpoint], PLAIN, ["front"])
    image = np.zeros((4, 4, 3), np.uint8)
    bad = [
        frame_message({"frame_seq": float("inf")}, image),
        frame_message({"camera_id": ["front"]}, image),
        frame_message({"capture_wall_s": float("nan")}, image),
        frame_message({"encoding": "jpeg"}, huge_jpeg()),
        frame_message({"encoding": "jpeg"}, np.frombuffer(b"\xff\xd8\xff\xda", np.uint8)),
        frame_message({}, np.zeros((4, 4), np.uint8)),
        frame_message({"encoding": ["raw"]}, image),
        frame_message({"sent_wall_s": float("nan")}, image),
        frame_message({"sent_wall_s": "now"}, image),
    ]
    try:
        wait_for(lambda: sock.send_multipart(frame_message({}, image)) or sub.latest("front"))
        start = sub.handled
        for message in bad:
            sock.send_multipart(message)
        wait_for(lambda: sub.handled >= start + len(bad))
        assert sub.rejected == len(bad) and sub.errors == 0
        assert sub._thread.is_alive()
        assert decoded == []  # the 192 MB JPEG was refused from its header, never decoded
        sock.send_multipart(frame_message({"frame_seq": 99}, image))
        wait_for(lambda: sub.latest("front").frame.seq == 99)
    finally:
        sub.close()
        sock.close()


def test_jpeg_size_comes_from_the_header() -> None:
    ok, data = cv2.imencode(".jpg", np.zeros((24, 40, 3), np.uint8))
    assert ok and jpeg_size(data.reshape(-1).tobytes()) == (24, 40)
    assert jpeg_size(huge_jpeg().tobytes()) == (8000, 8000)
    with pytest.raises(CodecError, match="no JPEG start marker"):
        jpeg_size(b"\x89PNG....")
