"""Fuzzing the camera subscriber on loopback with a seeded generator: 2 400 malformed frame
messages (garbage, broken headers, wrong meta types, non-finite stamps and seqs, images of the
wrong dtype or shape, broken JPEGs and JPEGs whose header claims a huge image). Each is judged
(counted as rejected), the receive thread stays alive and raises nothing, no bad frame becomes
the newest, a valid frame still arrives afterwards, and resident memory grew by a bounded amount.
"""

from __future__ import annotations

import os
import random
import struct
import time
from pathlib import Path
from typing import Any

import cv2
import msgpack
import numpy as np
import pytest
import zmq

from robot_rl.transport.camera_stream import CameraSubscriber
from robot_rl.transport.codec import encode
from robot_rl.transport.security import SecurityConfig

pytestmark = pytest.mark.timeout(120)

PLAIN = SecurityConfig(plaintext=True)
MESSAGES = 2400
RSS_GROWTH_LIMIT_MB = 64.0
SEED = int(os.environ.get("ROBOT_RL_FUZZ_SEED", "17"))


def rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 2**20


def message(meta: dict[str, Any], image: np.ndarray) -> list[bytes]:
    """A frame message with ``meta`` over valid meta, patched into the header as given."""
    base = {"camera_id": "front", "frame_seq": 5, "capture_wall_s": time.time(), "encoding": "raw"}
    frames = encode("frame", 1, base, {"image": image})
    fields = msgpack.unpackb(bytes(frames[0]), raw=False)
    fields["meta"].update(meta)
    return [msgpack.packb(fields, use_bin_type=True), *(bytes(f) for f in frames[1:])]


def small_jpeg(rng: random.Random) -> bytes:
    image = np.full((8, 8, 3), rng.randrange(256), np.uint8)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


def malformed(rng: random.Random) -> list[bytes]:
    """One frame message the subscriber must refuse."""
    kind = rng.randrange(10)
    image = np.zeros((4, 4, 3), np.uint8)
    if kind == 0:
        return [rng.randbytes(rng.randrange(0, 120)) for _ in range(rng.randrange(1, 3))]
    if kind == 1:  # a value of the wrong type or range in a meta field
        invalid = {
            "camera_id": [None, True, 5, "", "x" * 65, ["front"], {"a": 1}, b"front"],
            "frame_seq": [None, True, -1, 1.5, float("inf"), float("nan"), "7", [1]],
            "capture_wall_s": [None, True, float("inf"), float("-inf"), float("nan"), "1", [1]],
            "encoding": [None, True, 5, "png", ["raw"], ""],
        }
        key = rng.choice(sorted(invalid))
        return message({key: rng.choice(invalid[key])}, image)
    if kind == 2:  # a missing meta field
        fields = msgpack.unpackb(bytes(message({}, image)[0]), raw=False)
        del fields["meta"][rng.choice(["camera_id", "frame_seq", "capture_wall_s"])]
        return [msgpack.packb(fields, use_bin_type=True), image.tobytes()]
    if kind == 3:  # a raw image of the wrong dtype or shape
        bad = rng.choice([np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32),
                          np.zeros((4, 4, 4), np.uint8), np.zeros((0, 4, 3), np.uint8),
                          np.zeros(48, np.uint8)])  # fmt: skip
        return message({}, bad)
    if kind == 4:  # random bytes said to be a JPEG
        data = b"\xff\xd8" + rng.randbytes(rng.randrange(0, 200))
        return message({"encoding": "jpeg"}, np.frombuffer(data, np.uint8))
    if kind == 5:  # a real JPEG, truncated before its frame header ends
        data = small_jpeg(rng)
        cut = data.index(b"\xff\xc0") + rng.randrange(0, 8)
        return message({"encoding": "jpeg"}, np.frombuffer(data[:cut], np.uint8))
    if kind == 6:  # a real JPEG claiming a huge size
        data = bytearray(small_jpeg(rng))
        sof = data.index(b"\xff\xc0")
        data[sof + 5 : sof + 9] = struct.pack(">HH", rng.randrange(5000, 65536), 65535)
        return message({"encoding": "jpeg"}, np.frombuffer(bytes(data), np.uint8))
    if kind == 7:  # JPEG bytes with the wrong array layout
        data = np.frombuffer(small_jpeg(rng), np.uint8)
        return message({"encoding": "jpeg"}, data.astype(np.int16))
    if kind == 8:  # another message type, version or seq
        fields = msgpack.unpackb(bytes(message({}, image)[0]), raw=False)
        invalid = {"type": ["weights", 7, None], "v": [0, 2, "1", None],
                   "seq": [-1, 1.5, "3", None, True],
                   "stamp": [float("nan"), float("inf"), "1", None, True]}  # fmt: skip
        key = rng.choice(sorted(invalid))
        fields[key] = rng.choice(invalid[key])
        return [msgpack.packb(fields, use_bin_type=True), image.tobytes()]
    fields = msgpack.unpackb(bytes(message({}, image)[0]), raw=False)  # kind 9: lying buffers
    fields["arrays"] = [["image", "uint8", [2**16, 2**16, 3]]]
    return [msgpack.packb(fields, use_bin_type=True), image.tobytes()]


def test_the_camera_subscriber_survives_malformed_frames() -> None:
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.linger = 0
    pub.bind("tcp://127.0.0.1:0")
    endpoint = pub.getsockopt_string(zmq.LAST_ENDPOINT)
    sub = CameraSubscriber([endpoint], PLAIN, ["front"], max_decoded_bytes=1 << 20)
    good = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    rng = random.Random(SEED)
    deadline = time.monotonic() + 90
    try:
        while sub.latest("front") is None:  # PUB/SUB joins asynchronously
            assert time.monotonic() < deadline
            pub.send_multipart(message({"frame_seq": 1}, good))
            time.sleep(0.005)
        rss_before = rss_mb()
        for _ in range(MESSAGES):
            handled = sub.handled
            frames = malformed(rng)
            while sub.handled == handled:  # PUB/SUB may drop: resend until it is judged
                assert time.monotonic() < deadline, "the subscriber stopped handling messages"
                pub.send_multipart(frames)
                for _ in range(200):
                    if sub.handled != handled:
                        break
                    time.sleep(0.0005)
        assert sub._thread.is_alive() and sub.errors == 0
        assert sub.rejected >= MESSAGES
        assert sub.latest("front").frame.seq == 1  # no bad frame became the newest
        pub.send_multipart(message({"frame_seq": 2}, good))
        while sub.latest("front").frame.seq != 2:
            assert time.monotonic() < deadline
            time.sleep(0.002)
        np.testing.assert_array_equal(sub.latest("front").frame.image, good)
        assert rss_mb() - rss_before < RSS_GROWTH_LIMIT_MB
    finally:
        sub.close()
        pub.close()
