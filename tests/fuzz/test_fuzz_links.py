"""Fuzzing the actor/learner links on loopback with a seeded generator.

The learner: 2 400 malformed messages on its transitions socket (random bytes, broken headers,
wrong meta types, huge and non-finite numbers, arrays of the wrong shape or dtype, NaN steps,
continuations of nothing, far-future seqs, a flood of actor ids, odd requests). Every one gets a
reply, ``poll`` never raises, and afterwards a fresh actor's steps are all stored, the actor count
stays capped and the resident memory grew by a bounded amount.

The actor (the learner-output side): a fake learner answers it with 1 200 malformed acks and
publishes 1 000 malformed weights messages (garbage, wrong types, non-finite tensors, wrong keys
or shapes, broken safetensors). ``pump`` and ``latest_weights`` never raise, nothing is freed or
loaded, and afterwards a real learner on the same endpoints receives every step.
"""

from __future__ import annotations

import json
import os
import random
import struct
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import torch
import zmq

from robot_rl.transport.actor_link import ActorLink
from robot_rl.transport.codec import encode, weights_to_bytes
from robot_rl.transport.learner_link import LearnerLink
from tests.transport.test_links import (
    PLAIN,
    Sink,
    actor_config,
    episode_steps,
    free_endpoints,
    run_until,
    same,
    start_learner,
    stored,
)

pytestmark = pytest.mark.timeout(120)

LEARNER_MESSAGES = 2400
ACKS = 1200
WEIGHTS = 1000
RSS_GROWTH_LIMIT_MB = 64.0
SEED = int(os.environ.get("ROBOT_RL_FUZZ_SEED", "17"))  # another seed: another set of messages
WEIRD = [None, True, -1, 0, 2**63 - 1, 2**64 - 1, -(2**63), 1.5, float("inf"), float("-inf"),
         float("nan"), "", "x" * 300, [], [1, 2], {}, {"a": [1]}, b"\x00\xff"]  # fmt: skip


def rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 2**20


def header(meta: dict[str, Any], specs: list[Any], msg_type: Any = "transitions") -> bytes:
    """A msgpack header with anything in it (encode would refuse most of these)."""
    fields = {"v": 1, "type": msg_type, "seq": 1, "stamp": 1.0, "meta": meta, "arrays": specs}
    return msgpack.packb(fields, use_bin_type=True)


def arrays_message(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> list[bytes]:
    specs = [[k, v.dtype.name, list(v.shape)] for k, v in arrays.items()]
    return [header(meta, specs), *(np.ascontiguousarray(v).tobytes() for v in arrays.values())]


def steps_arrays(rng: random.Random, count: int) -> dict[str, np.ndarray]:
    return {
        "action": np.zeros((count, 3), np.float32),
        "reward": np.zeros(count, np.float32),
        "gripper_penalty": np.zeros(count, np.float32),
        "terminated": np.zeros(count, bool),
        "truncated": np.zeros(count, bool),
        "intervened": np.zeros(count, bool),
        "starts_episode": np.array([True] + [False] * (count - 1)),
        "next_obs/state": np.full((count, 4), rng.random(), np.float32),
        "obs/state": np.zeros((1, 4), np.float32),
    }


def malformed_for_learner(rng: random.Random, n: int, seqs: dict[str, int]) -> list[bytes]:
    """One message the learner must refuse (or, for NaN steps, store without the bad steps).
    seqs: the next seq of each NaN-sending actor, so that its batches are otherwise in order."""
    kind = rng.randrange(14)
    actor = f"fz{rng.randrange(4)}"
    meta = {"actor_id": actor, "first_seq": 0, "count": 2}
    if kind == 0:
        return [rng.randbytes(rng.randrange(0, 200))]
    if kind == 1:
        return [rng.randbytes(rng.randrange(1, 50)) for _ in range(rng.randrange(2, 6))]
    if kind == 2:  # a weird value in one meta field
        meta[rng.choice(["actor_id", "first_seq", "count", "holds_from"])] = rng.choice(WEIRD)
        return arrays_message(meta, steps_arrays(rng, 2))
    if kind == 3:  # one array of the wrong shape or dtype
        arrays = steps_arrays(rng, 2)
        key = rng.choice(sorted(arrays))
        arrays[key] = rng.choice([np.zeros(()), np.zeros((2, 2, 2), np.float64),
                                  np.zeros(5, np.uint8), np.zeros((0,), bool)])  # fmt: skip
        return arrays_message(meta, arrays)
    if kind == 4:  # one array missing
        arrays = steps_arrays(rng, 2)
        del arrays[rng.choice(sorted(arrays))]
        return arrays_message(meta, arrays)
    if kind == 5:  # a continuation of nothing (no episode start, fresh actor)
        arrays = steps_arrays(rng, 2)
        arrays["starts_episode"] = np.zeros(2, bool)
        del arrays["obs/state"]
        return arrays_message({**meta, "actor_id": f"cont{n}"[:64]}, arrays)
    if kind == 6:  # NaN or inf in a step of an otherwise good batch
        arrays = steps_arrays(rng, 2)
        key = rng.choice(["action", "reward", "next_obs/state", "obs/state", "gripper_penalty"])
        arrays[key] = arrays[key].copy()
        arrays[key].reshape(-1)[0] = rng.choice([np.nan, np.inf, -np.inf])
        nan_actor = f"nan{rng.randrange(3)}"
        first = seqs.get(nan_actor, 0)
        seqs[nan_actor] = first + 2
        return arrays_message({**meta, "actor_id": nan_actor, "first_seq": first}, arrays)
    if kind == 7:  # a far-future seq
        return arrays_message({**meta, "first_seq": rng.choice([10**12, 2**53, 2**63 - 1])},
                              steps_arrays(rng, 2))  # fmt: skip
    if kind == 8:  # a flood of actor ids
        return [header({"actor_id": f"flood-{n}", "op": "hello"}, [], "request")]
    if kind == 9:  # odd requests
        op = rng.choice(["\0" * 17_000, "reset", ["hello"], 5, "x" * 1000])
        return [header({"actor_id": actor, "op": op}, [], "request")]
    if kind == 10:  # a header that lies about its buffers
        specs = [["action", "float32", [2**20, 2**20]]]
        return [header(meta, specs), b"\0" * 16]
    if kind == 11:  # wrong type, version or seq
        fields = {"v": rng.choice([0, 2, "1", None]), "type": rng.choice(["frame", "weights", 7]),
                  "seq": rng.choice(WEIRD), "stamp": 1.0, "meta": meta, "arrays": []}  # fmt: skip
        return [msgpack.packb(fields, use_bin_type=True)]
    if kind == 12:  # deep nesting in meta
        deep: Any = 0
        for _ in range(rng.randrange(50, 400)):
            deep = [deep]
        return [header({**meta, "deep": deep}, [])]
    images = np.zeros((2, 4, 4, 3), rng.choice([np.float32, np.int16]))  # kind 13: bad images
    return arrays_message(meta, {**steps_arrays(rng, 2), "next_obs/front": images})


def test_the_learner_survives_malformed_messages_and_serves_a_valid_actor(tmp_path: Path) -> None:
    ep = free_endpoints()
    sink = Sink()
    learner = LearnerLink(ep, PLAIN, tmp_path / "store", sink, "reach", max_actors=16)
    # The real actor says hello before the flood of actor ids fills the learner's table.
    actor = ActorLink(actor_config(ep, tmp_path / "spool", actor_id="valid-actor"), PLAIN)
    run_until(learner, actor, lambda: actor._hello_answered)
    rogue = zmq.Context.instance().socket(zmq.DEALER)
    rogue.linger = 0
    rogue.connect(ep.transitions)
    rng = random.Random(SEED)
    seqs: dict[str, int] = {}
    rss_before = rss_mb()
    replies = sent = 0
    deadline = time.monotonic() + 60
    while sent < LEARNER_MESSAGES:
        for _ in range(50):
            rogue.send_multipart(malformed_for_learner(rng, sent, seqs))
            sent += 1
        while replies < sent:  # every message is answered, malformed or not
            assert time.monotonic() < deadline, f"{sent - replies} messages unanswered"
            learner.poll(timeout_ms=5)
            while rogue.poll(0):
                rogue.recv_multipart()
                replies += 1
    assert learner.rejected >= LEARNER_MESSAGES * 0.7
    assert learner.steps_rejected > 0  # NaN steps were dropped, one by one
    assert len(learner.actors) == 16  # capped, although hundreds of ids were claimed
    assert all(np.isfinite(t.obs["state"]).all() and np.isfinite(t.action).all()
               and np.isfinite(t.reward) for t in sink.steps)  # fmt: skip
    rogue.close()
    sent_steps = episode_steps(0, 5) + episode_steps(10, 7)
    for step in sent_steps:
        actor.add(step)
    run_until(learner, actor, lambda: actor.unacknowledged_steps == 0)
    mine = [t for e in load_actor_episodes(tmp_path / "store", "valid-actor") for t in e]
    assert len(mine) == 12 and all(map(same, mine, sent_steps))
    assert rss_mb() - rss_before < RSS_GROWTH_LIMIT_MB
    actor.close()
    learner.close()


def load_actor_episodes(store: Path, actor_id: str) -> list[list[Any]]:
    from robot_rl.data.episodes import load_episodes

    return [e.transitions for e in load_episodes(store) if e.meta.get("actor_id") == actor_id]


def bad_ack(rng: random.Random) -> list[bytes]:
    """An ack that must not be taken: at least one of received/durable is invalid, or it is an
    error-only ack, or not an ack at all."""
    kind = rng.randrange(5)
    if kind == 0:
        return [rng.randbytes(rng.randrange(0, 100))]
    if kind == 1:
        return [header({"error": rng.choice(["x" * 5000, "no", "\0"])}, [], "transitions_ack")]
    if kind == 2:
        return [header({"received": 0}, [], rng.choice(["weights", "reply", "ack"]))]
    invalid = rng.choice([None, True, -2, 2**64 - 1, 2**53 + 1, 1.0, float("inf"),
                          float("nan"), "3", [3], {"a": 3}])  # fmt: skip
    good = rng.choice([-1, 0, 3])
    received, durable = (invalid, good) if kind == 3 else (good, invalid)
    return [header({"received": received, "durable": durable}, [], "transitions_ack")]


def safetensors_header(tensors: dict[str, Any]) -> bytes:
    text = json.dumps(tensors).encode()
    return struct.pack("<Q", len(text)) + text


def bad_weights(rng: random.Random, n: int) -> list[bytes]:
    """A weights message the actor must refuse."""
    good = {"actor": torch.nn.Linear(4, 2).state_dict()}
    kind = rng.randrange(7)
    data: bytes
    if kind == 0:
        data = rng.randbytes(rng.randrange(0, 300))
    elif kind == 1:  # a safetensors header promising far more than it holds
        spec = {"dtype": "F32", "shape": [2**20, 2**20], "data_offsets": [0, 2**42]}
        data = safetensors_header({"actor/weight": spec}) + b"\0" * 8
    elif kind == 2:
        bad = {"actor": {k: v.clone() for k, v in good["actor"].items()}}
        bad["actor"]["weight"].view(-1)[rng.randrange(8)] = rng.choice([np.nan, np.inf])
        data = weights_to_bytes(bad)
    elif kind == 3:
        data = weights_to_bytes({"critic": good["actor"]})
    elif kind == 4:
        data = weights_to_bytes({"actor": torch.nn.Linear(5, 2).state_dict()})
    else:
        data = weights_to_bytes(good)  # good tensors with a bad version
    version: Any = n + 2 if kind < 5 else rng.choice([None, -1, 1.5, float("inf"), "7", [7],
                                                      2**64 - 1])  # fmt: skip
    payload = np.frombuffer(data, np.uint8)
    frames = encode("weights", 1, {"version": 0, "learner_id": "L"}, {"safetensors": payload})
    fields = msgpack.unpackb(bytes(frames[0]), raw=False)
    fields["meta"]["version"] = version
    return [msgpack.packb(fields, use_bin_type=True), *frames[1:]]


def test_the_actor_survives_malformed_learner_output_and_a_real_learner_gets_everything(
    tmp_path: Path,
) -> None:
    ep = free_endpoints()
    ctx = zmq.Context.instance()
    router, pub = ctx.socket(zmq.ROUTER), ctx.socket(zmq.PUB)
    for sock in (router, pub):
        sock.linger = 0
    router.bind(ep.transitions)
    pub.bind(ep.weights)
    actor = ActorLink(actor_config(ep, tmp_path / "spool", resend_after_s=0.05), PLAIN)
    actor.expect_weights({"actor": torch.nn.Linear(4, 2).state_dict()})
    sent_steps = episode_steps(0, 6) + episode_steps(20, 9)
    for step in sent_steps:
        actor.add(step)
    rng = random.Random(SEED + 6)
    rss_before = rss_mb()
    deadline = time.monotonic() + 60
    while not router.poll(5):
        assert time.monotonic() < deadline
        actor.pump()
    identity = router.recv_multipart()[0]
    for _ in range(ACKS // 50):
        for _ in range(50):
            router.send_multipart([identity, *bad_ack(rng)])
        seen = actor.rejected_acks + actor.learner_errors
        target = seen + 50
        while actor.rejected_acks + actor.learner_errors < target:
            assert time.monotonic() < deadline, "acks not consumed"
            actor.pump()
            while router.poll(0):
                router.recv_multipart()  # what the actor sends meanwhile
    assert actor.acks == 0 and actor.received == -1 and actor.steps_stored == 0
    for n in range(WEIGHTS):
        refused = actor.rejected_weights
        while actor.rejected_weights == refused:  # PUB/SUB may drop: send until it is judged
            assert time.monotonic() < deadline + 30, "weights not judged"
            pub.send_multipart(bad_weights(rng, n))
            assert actor.latest_weights() is None
    assert actor.weights_version == -1
    assert rss_mb() - rss_before < RSS_GROWTH_LIMIT_MB
    router.close()
    pub.close()
    learner = start_learner(ep, tmp_path / "store", Sink())
    run_until(learner, actor, lambda: actor.unacknowledged_steps == 0, timeout_s=20)
    assert all(map(same, stored(tmp_path / "store"), sent_steps))
    assert len(stored(tmp_path / "store")) == len(sent_steps)
    actor.close()
    learner.close()
