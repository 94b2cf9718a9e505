"""`robot-rl bench transport`: camera frames and actor/learner traffic over ZMQ on loopback.

- frame_latency_ms_p50 / p99: two 640x480 RGB cameras published at 30 fps each (one PUB per
  camera, raw frames), capture (just before publish) to the subscriber's receive thread, over
  CURVE (the setting used off loopback); ``*_plaintext`` the same without encryption.
- frame_throughput_mb_s: image bytes per second the subscriber received in that run (what two
  cameras at 30 fps need is 55 MB/s); ``frame_max_throughput_mb_s``: the same link driven as
  fast as the publisher can send.
- transition_bytes: wire bytes per step of one two-camera 128x128 transition (21-dim state) in a
  16-step batch; transition_bytes_ratio_vs_pickle_f32: pickling the same step with float32 images
  in obs and next_obs (what peers send), measured here, divided by ours.
- transitions_per_s: steps per second from an ``ActorLink`` into a ``LearnerLink`` (other thread)
  that decodes them, hands them to a sink and writes finished episodes to its durable store.
- weights_broadcast_ms: the default pixel agent's policy weights (encoder, actor, gripper
  critic) from ``publish_weights`` until an actor holds them as tensors (median).
"""

from __future__ import annotations

import pickle  # only to size the peers' baseline in memory; nothing is sent pickled
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import zmq

from robot_rl.data.batch import Transition
from robot_rl.interfaces import Frame
from robot_rl.transport.actor_link import ActorLink, ActorLinkConfig
from robot_rl.transport.camera_stream import CameraPublisher, CameraSubscriber
from robot_rl.transport.learner_link import LearnerLink, LinkEndpoints
from robot_rl.transport.security import SecurityConfig, generate_keys
from robot_rl.transport.steps import encode_steps

CAMERAS = ("front", "wrist")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _curve(keys: Path) -> tuple[SecurityConfig, SecurityConfig]:
    """(server, client) configs with fresh keys; the client's key is allowed."""
    generate_keys(keys, "server")
    public, _ = generate_keys(keys, "client")
    (keys / "allowed").mkdir()
    (keys / "allowed" / "client.key").write_bytes(public.read_bytes())
    return SecurityConfig(str(keys), "server"), SecurityConfig(str(keys), "client", "server")


def _image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Camera-like content: smooth gradients plus sensor noise (compresses like a real frame)."""
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) % 256], -1)
    noise = rng.integers(0, 8, (h, w, 3))
    return ((base + noise) % 256).astype(np.uint8)


def _frames(server: SecurityConfig, client: SecurityConfig, seconds: float,
            fps: float | None) -> dict[str, float]:  # fmt: skip
    """Two 640x480 cameras, one publisher each; fps None: as fast as possible."""
    rng = np.random.default_rng(0)
    images = {c: _image(rng, 480, 640) for c in CAMERAS}
    pubs = {c: CameraPublisher(f"tcp://127.0.0.1:{_free_port()}", server) for c in CAMERAS}
    sub = CameraSubscriber([p.endpoint for p in pubs.values()], client, CAMERAS, keep_ages=True)
    try:
        deadline = time.monotonic() + 5.0  # let the subscriptions join
        while any(sub.latest(c) is None for c in CAMERAS) and time.monotonic() < deadline:
            for c, pub in pubs.items():
                pub.publish(Frame(images[c], time.monotonic(), 0, c))
            time.sleep(0.02)
        for stats in sub.stats.values():
            stats.ages_s.clear()
            stats.received = 0
        start = time.monotonic()
        seq = 0
        while time.monotonic() - start < seconds:
            seq += 1
            for c, pub in pubs.items():
                pub.publish(Frame(images[c], time.monotonic(), seq, c))
            if fps is not None:
                next_at = start + seq / fps
                time.sleep(max(0.0, next_at - time.monotonic()))
        time.sleep(0.1)  # the last frames in flight
        elapsed = time.monotonic() - start
        ages = np.concatenate([np.asarray(s.ages_s) for s in sub.stats.values()]) * 1e3
        received = sum(s.received for s in sub.stats.values())
        return {
            "p50": float(np.percentile(ages, 50)),
            "p99": float(np.percentile(ages, 99)),
            "mb_s": received * images["front"].nbytes / elapsed / 1e6,
            "fps_received": received / len(CAMERAS) / elapsed,
            "sent": float(seq * len(CAMERAS)),
            "received": float(received),
        }
    finally:
        sub.close()
        for pub in pubs.values():
            pub.close()


def _transition(rng: np.random.Generator, step: int, size: int = 128) -> Transition:
    def obs(i: int) -> dict[str, np.ndarray]:
        o = {c: _image(np.random.default_rng(i), size, size) for c in CAMERAS}
        o["state"] = rng.standard_normal(21).astype(np.float32)
        return o

    return Transition(obs(step), rng.uniform(-1, 1, 4).astype(np.float32), 0.0, obs(step + 1),
                      False, False)  # fmt: skip


def _transition_bytes() -> dict[str, float]:
    rng = np.random.default_rng(1)
    steps = [_transition(rng, i) for i in range(16)]
    for i in range(1, 16):  # one stream: obs is the previous next_obs
        t = steps[i]
        steps[i] = Transition(
            steps[i - 1].next_obs, t.action, t.reward, t.next_obs, t.terminated, t.truncated
        )
    frames = encode_steps("actor-0", 0, steps, [True] + [False] * 15)
    ours = sum(memoryview(f).nbytes for f in frames) / len(steps)

    def as_f32(o: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: v.astype(np.float32) for k, v in o.items()}

    t = steps[5]
    peer = {"observations": as_f32(t.obs), "actions": t.action, "rewards": t.reward,
            "next_observations": as_f32(t.next_obs), "masks": 1.0, "dones": False}  # fmt: skip
    pickled = len(pickle.dumps(peer, protocol=pickle.HIGHEST_PROTOCOL))
    return {"ours": ours, "pickle": float(pickled)}


def _transitions_per_s(server: SecurityConfig, client: SecurityConfig, steps: int,
                       tmp: Path) -> float:  # fmt: skip
    endpoints = LinkEndpoints(f"tcp://127.0.0.1:{_free_port()}",
                              f"tcp://127.0.0.1:{_free_port()}")  # fmt: skip
    count = [0]

    def sink(actor_id: str, batch: list[Transition], discontinuity: bool) -> None:
        count[0] += len(batch)

    learner = LearnerLink(endpoints, server, tmp / "store", sink, task="bench")
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            learner.poll(timeout_ms=10)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    rng = np.random.default_rng(2)
    episode = 200
    base = [_transition(rng, i) for i in range(episode)]
    for i in range(1, episode):
        base[i] = Transition(base[i - 1].next_obs, base[i].action, 0.0, base[i].next_obs,
                             False, i == episode - 1)  # fmt: skip
    actor = ActorLink(ActorLinkConfig(actor_id="bench", transitions_endpoint=endpoints.transitions,
                                      weights_endpoint=endpoints.weights,
                                      spool_dir=str(tmp / "spool")), client)  # fmt: skip
    try:
        start = time.perf_counter()
        for i in range(steps):
            actor.add(base[i % episode])
        actor.flush(timeout_s=120.0)
        elapsed = time.perf_counter() - start
        return count[0] / elapsed
    finally:
        stop.set()
        thread.join()
        actor.close()
        learner.close()


def _weights_broadcast_ms(server: SecurityConfig, client: SecurityConfig, runs: int,
                          tmp: Path) -> tuple[float, float]:  # fmt: skip
    from robot_rl.agents.config import SACConfig
    from robot_rl.agents.sac import SACAgent
    from robot_rl.bench.learner import _spaces

    obs_space, act_space = _spaces(128, 21, 4)
    agent = SACAgent(obs_space, act_space, SACConfig(device="cpu"), 0)
    state = agent.policy_state_dict()
    endpoints = LinkEndpoints(f"tcp://127.0.0.1:{_free_port()}",
                              f"tcp://127.0.0.1:{_free_port()}")  # fmt: skip
    learner = LearnerLink(endpoints, server, tmp / "wstore", lambda *a: None, task="bench")
    actor = ActorLink(ActorLinkConfig(actor_id="w", transitions_endpoint=endpoints.transitions,
                                      weights_endpoint=endpoints.weights,
                                      spool_dir=str(tmp / "wspool")), client)  # fmt: skip
    times, size = [], 0
    try:
        version = 0
        deadline = time.monotonic() + 10
        while actor.latest_weights() is None and time.monotonic() < deadline:  # join first
            version += 1
            learner.publish_weights(state, version)
            time.sleep(0.05)
        for _ in range(runs):
            version += 1
            start = time.perf_counter()
            size = learner.publish_weights(state, version)
            got = None
            while got is None and time.perf_counter() - start < 10:
                got = actor.latest_weights()
            times.append(time.perf_counter() - start)
            agent.load_policy_state_dict(got[1])  # what the actor does next
    finally:
        actor.close()
        learner.close()
    return float(np.median(times) * 1e3), float(size)


def run_transport_bench(seed: int = 0, quick: bool = False) -> dict[str, float]:
    """Measure (see module docstring); ``quick`` shortens every part for tests."""
    del seed  # deterministic content; timing is what varies
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server, client = _curve(tmp / "keys")
        plain = SecurityConfig(plaintext=True)
        seconds = 1.0 if quick else 10.0
        curve = _frames(server, client, seconds, fps=30.0)
        plaintext = _frames(plain, plain, seconds / 2, fps=30.0)
        fast = _frames(server, client, seconds / 5, fps=None)
        sizes = _transition_bytes()
        rate = _transitions_per_s(server, client, 200 if quick else 3000, tmp)
        weights_ms, weights_bytes = _weights_broadcast_ms(server, client, 3 if quick else 10, tmp)
    zmq.Context.instance()  # (the shared context stays for the process)
    return {
        "frame_latency_ms_p50": curve["p50"],
        "frame_latency_ms_p99": curve["p99"],
        "frame_latency_ms_p50_plaintext": plaintext["p50"],
        "frame_latency_ms_p99_plaintext": plaintext["p99"],
        "frame_throughput_mb_s": curve["mb_s"],
        "frame_fps_received_per_camera": curve["fps_received"],
        "frames_lost": curve["sent"] - curve["received"],
        "frame_max_throughput_mb_s": fast["mb_s"],
        "transition_bytes": sizes["ours"],
        "transition_bytes_pickle_f32": sizes["pickle"],
        "transition_bytes_ratio_vs_pickle_f32": sizes["pickle"] / sizes["ours"],
        "transitions_per_s": rate,
        "weights_broadcast_ms": weights_ms,
        "weights_bytes": weights_bytes,
        "curve": 1.0,
    }
