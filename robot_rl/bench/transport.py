"""`robot-rl bench transport`: camera frames and actor/learner traffic over ZMQ on loopback, with
HIL-SERL's own actor -> learner wire (agentlace) run side by side as the peer.

Frames
- frame_latency_ms_p50 / p99: two 640x480 RGB cameras published at 30 fps each (one PUB per
  camera, raw frames), capture (just before publish) to the subscriber's receive thread, over
  CURVE; ``*_plaintext`` the same run without encryption.
- frame_throughput_mb_s: image bytes per second the subscriber received over CURVE (two cameras
  at 30 fps need 55 MB/s); frame_max_throughput_mb_s: the same link driven as fast as it goes.

Transitions (two 128x128 cameras and a 21-dim state per step, 100-step episodes, camera-like
frames: smooth gradients plus sensor noise)
- transition_bytes: our wire bytes per step (each frame crosses once, uint8, 16-step batches).
- agentlace_bytes_per_transition: the peer's request bytes per step, measured in its intake run.
  The peer is HIL-SERL's wire as agentlace sends it: each transition a dict with uint8
  ``observations`` and ``next_observations``, pickled and lz4-framed, over ZMQ REQ/REP, with the
  ``get_last_update_id`` round trip that ``TrainerClient.update`` makes before each send. HIL-SERL's
  actor calls ``update()`` at the end of every episode (``examples/train_rlpd.py``), so one request
  carries an episode; pickle then writes a frame shared by one step's next_obs and the next
  step's obs once. bytes_ratio_vs_agentlace = agentlace_bytes_per_transition / transition_bytes
  (above 1: we send fewer bytes).
- ``*_per_transition``: the same peer sending each transition in its own REQ/REP (obs and
  next_obs both in every message), the agentlace pattern with the smallest latency.
- transition_bytes_pickle_f32 / transition_bytes_ratio_vs_pickle_f32: one transition pickled with
  float32 images in obs and next_obs, uncompressed. Kept as a second figure only: it multiplies
  a dtype choice (x4) by duplication (x2) and is no peer's wire.
- transitions_per_s (CURVE) / transitions_per_s_plaintext: steps per second from an ``ActorLink``
  (this thread) into a ``LearnerLink`` (another thread) that decodes them, adds them to a real
  ``ReplayBuffer`` and writes every episode to its ``EpisodeStore``; timed until the actor holds
  the learner's durable ack for the last step. Ours also writes and fsyncs every sealed batch to
  the actor's spool before sending it (a crashed actor loses at most its unsealed tail); the
  peer keeps nothing on disk on the actor's side. agentlace_transitions_per_s: the peer, from its
  first insert to the reply to its last request, its server adding to the same kind of replay
  buffer and episode store. intake_ratio_vs_agentlace = transitions_per_s_plaintext /
  agentlace_transitions_per_s (both plaintext: agentlace has no encryption);
  ``*_per_transition`` against the per-transition peer (run on the first 5 episodes: it is slow).
  ``*_stored`` count the steps each replay buffer holds at the end (all of them, or the run is an
  error).
- weights_broadcast_ms: the default pixel agent's policy weights (encoder, actor, gripper critic)
  from ``publish_weights`` until they are loaded into the actor's policy (median; the actor waits
  on its socket, no spin). weights_load_ms: the loading alone.

pickle appears only in the peer, which runs inside this process on loopback; nothing of ours is
ever pickled.
"""

from __future__ import annotations

import pickle  # the agentlace peer's wire only (in-process, loopback)
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from robot_rl.data.batch import Transition
from robot_rl.data.replay import ReplayBuffer
from robot_rl.interfaces import Frame
from robot_rl.transport.actor_link import ActorLink, ActorLinkConfig
from robot_rl.transport.camera_stream import CameraPublisher, CameraSubscriber
from robot_rl.transport.episode_store import EpisodeStore
from robot_rl.transport.learner_link import LearnerLink, LinkEndpoints
from robot_rl.transport.security import SecurityConfig, generate_keys
from robot_rl.transport.steps import encode_steps

CAMERAS = ("front", "wrist")
EPISODE_STEPS = 100
IMAGE_SIZE = 128
STATE_DIM = 21


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


# -- the transition stream both wires carry ---------------------------------------------------
def _observation(index: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(index)
    obs = {c: _image(rng, IMAGE_SIZE, IMAGE_SIZE) for c in CAMERAS}
    obs["state"] = rng.standard_normal(STATE_DIM).astype(np.float32)
    return obs


def _stream(episodes: int) -> list[Transition]:
    """``episodes`` episodes of EPISODE_STEPS steps; within one, a step's obs is the previous
    step's next_obs (the same dict, as in an actor loop); the last step is a time limit."""
    rng = np.random.default_rng(2)
    frames = [_observation(i) for i in range(EPISODE_STEPS + 1)]  # one episode's frames, reused
    steps = []
    for _ in range(episodes):
        for i in range(EPISODE_STEPS):
            action = rng.uniform(-1, 1, 4).astype(np.float32)
            steps.append(Transition(frames[i], action, 0.0, frames[i + 1], False,
                                    i == EPISODE_STEPS - 1))  # fmt: skip
    return steps


def _our_bytes(steps: list[Transition]) -> float:
    """Our wire bytes per step in one 16-step batch of ``steps``."""
    batch = steps[:16]
    frames = encode_steps("actor-0", 0, batch, [True] + [False] * 15)
    return sum(memoryview(f).nbytes for f in frames) / len(batch)


def _pickle_f32_bytes(step: Transition) -> float:
    def as_f32(o: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: v.astype(np.float32) for k, v in o.items()}

    peer = {"observations": as_f32(step.obs), "actions": step.action, "rewards": step.reward,
            "next_observations": as_f32(step.next_obs), "masks": 1.0, "dones": False}  # fmt: skip
    return float(len(pickle.dumps(peer, protocol=pickle.HIGHEST_PROTOCOL)))


class _Intake:
    """What a learner does with received steps: into a real replay buffer (our ``LearnerLink``
    writes its episode store itself; the peer's server keeps one beside this)."""

    def __init__(self) -> None:
        self.replay = ReplayBuffer(capacity=100_000)

    def sink(self, actor_id: str, steps: list[Transition], discontinuity: bool) -> None:
        if discontinuity:
            self.replay.close_episode()
        for step in steps:
            self.replay.add(step)


def _our_intake(server: SecurityConfig, client: SecurityConfig, steps: list[Transition],
                tmp: Path) -> tuple[float, int]:  # fmt: skip
    """(steps per second into the learner's replay buffer and durable store, steps stored)."""
    endpoints = LinkEndpoints(f"tcp://127.0.0.1:{_free_port()}",
                              f"tcp://127.0.0.1:{_free_port()}")  # fmt: skip
    intake = _Intake()
    learner = LearnerLink(endpoints, server, tmp / "store", intake.sink, task="bench")
    stop = threading.Event()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            while not stop.is_set():
                learner.poll(timeout_ms=10)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    thread = threading.Thread(target=serve, name="bench-learner", daemon=True)
    thread.start()
    actor = ActorLink(ActorLinkConfig(actor_id="bench", transitions_endpoint=endpoints.transitions,
                                      weights_endpoint=endpoints.weights,
                                      spool_dir=str(tmp / "spool")), client)  # fmt: skip
    try:
        start = time.perf_counter()
        for step in steps:
            actor.add(step)
        if not actor.flush(timeout_s=120.0):
            left = actor.unacknowledged_steps
            raise RuntimeError(f"bench transport: the learner did not store {len(steps)} steps "
                               f"within 120 s ({left} unacknowledged)")  # fmt: skip
        elapsed = time.perf_counter() - start
    finally:
        stop.set()
        thread.join()
        actor.close()
        learner.close()
    if errors:
        raise RuntimeError(f"bench transport: the learner thread failed: {errors[0]}")
    return len(steps) / elapsed, len(intake.replay)


# -- the peer: HIL-SERL's actor -> learner wire as agentlace sends it -------------------------
def _compress(obj: object) -> bytes:
    """agentlace's default request/reply encoding: pickle, then an lz4 frame."""
    import lz4.frame

    return lz4.frame.compress(pickle.dumps(obj))


def _decompress(data: bytes) -> Any:  # the peer's wire is untyped pickle
    import lz4.frame

    return pickle.loads(lz4.frame.decompress(data))  # the peer only, in-process


def _peer_dict(step: Transition, obs: dict[str, Any], next_obs: dict[str, Any]) -> dict[str, Any]:
    """One transition as HIL-SERL's actor inserts it into its data store."""
    done = step.terminated or step.truncated
    mask = 1.0 - float(step.terminated)
    return {"observations": obs, "actions": step.action, "next_observations": next_obs,
            "rewards": step.reward, "masks": mask, "dones": done}  # fmt: skip


def _peer_transition(data: dict[str, Any]) -> Transition:
    terminated = float(data["masks"]) == 0.0
    truncated = bool(data["dones"]) and not terminated
    return Transition(data["observations"], np.asarray(data["actions"], np.float32),
                      float(data["rewards"]), data["next_observations"], terminated,
                      truncated)  # fmt: skip


class _PeerServer:
    """The learner side: a REP socket that answers ``get_last_update_id`` and inserts each
    ``datastore`` batch into a replay buffer and an episode store, then replies."""

    def __init__(self, endpoint: str, tmp: Path) -> None:
        self.intake = _Intake()
        self.store = EpisodeStore(tmp / "peer-store", "bench")
        self.last_id = -1
        self.seq = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._socket = zmq.Context.instance().socket(zmq.REP)
        self._socket.linger = 0
        self._socket.rcvtimeo = 100
        self._socket.bind(endpoint)
        self._thread = threading.Thread(target=self._serve, name="bench-peer", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    request = _decompress(self._socket.recv())
                except zmq.Again:
                    continue
                self._socket.send(_compress(self._handle(request)))
        except BaseException as exc:  # reported by the caller
            self.error = exc

    def _handle(self, request: dict[str, Any]) -> dict[str, Any]:
        if request["type"] == "get_last_update_id":
            return {"success": True, "payload": self.last_id}
        starts = True
        for data in request["payload"]["data"]:
            step = _peer_transition(data)
            self.intake.replay.add(step)
            self.store.add("peer", self.seq, step, starts)
            starts = step.terminated or step.truncated
            self.seq += 1
        self.last_id = request["payload"]["last_id"]
        return {"success": True}

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._socket.close(linger=0)


def _agentlace_intake(steps: list[Transition], per_transition: bool,
                      tmp: Path) -> tuple[float, float, int]:  # fmt: skip
    """(steps per second into the peer's replay and store, request bytes per step, steps stored).

    The actor side inserts each step into a queue (its data store) and, like
    ``TrainerClient.update``, asks for the server's last id, then sends everything newer: at the
    end of every episode, or after every step with ``per_transition``.
    """
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    server = _PeerServer(endpoint, tmp / ("peer-1" if per_transition else "peer-ep"))
    client = zmq.Context.instance().socket(zmq.REQ)
    client.linger = 0
    client.rcvtimeo = 30_000
    client.connect(endpoint)
    sent_bytes = 0

    def request(message: dict[str, Any]) -> dict[str, Any]:
        nonlocal sent_bytes
        data = _compress(message)
        sent_bytes += len(data)
        client.send(data)
        return _decompress(client.recv())

    queue: list[dict[str, Any]] = []  # inserted, not yet sent (the actor's data store)
    sent_id = -1
    try:
        start = time.perf_counter()
        obs: dict[str, Any] = {}
        for index, step in enumerate(steps):
            if not queue:
                obs = dict(step.obs)
            next_obs = dict(step.next_obs)
            queue.append(_peer_dict(step, obs, next_obs))
            obs = next_obs  # the next step's obs is this dict (pickle writes it once)
            if per_transition or step.terminated or step.truncated:
                last = request({"type": "get_last_update_id", "payload": {"store_name": "a"}})
                if last.get("payload") != sent_id:
                    raise RuntimeError(f"bench transport: the peer holds up to {last}, "
                                       f"expected {sent_id}")  # fmt: skip
                reply = request({"type": "datastore", "store_name": "a",
                                 "payload": {"data": queue, "last_id": index}})  # fmt: skip
                if not reply.get("success"):
                    raise RuntimeError(f"bench transport: the peer refused a batch: {reply}")
                queue, sent_id = [], index
        elapsed = time.perf_counter() - start
    finally:
        client.close(linger=0)
        server.close()
    if server.error is not None:
        raise RuntimeError(f"bench transport: the peer's server failed: {server.error!r}")
    return len(steps) / elapsed, sent_bytes / len(steps), len(server.intake.replay)


def _weights_broadcast_ms(server: SecurityConfig, client: SecurityConfig, runs: int,
                          tmp: Path) -> tuple[float, float, float]:  # fmt: skip
    """(median publish -> loaded in the actor's policy, median load alone, bytes)."""
    import torch

    from robot_rl.agents.config import SACConfig
    from robot_rl.agents.sac import SACAgent
    from robot_rl.bench.learner import _spaces
    from robot_rl.runtime.actor import Policy

    obs_space, act_space = _spaces(IMAGE_SIZE, STATE_DIM, 4)
    learner_agent = SACAgent(obs_space, act_space, SACConfig(device="cpu"), 0)
    actor_policy = Policy(obs_space, act_space, SACConfig(device="cpu"), 1)  # what an actor holds
    endpoints = LinkEndpoints(f"tcp://127.0.0.1:{_free_port()}",
                              f"tcp://127.0.0.1:{_free_port()}")  # fmt: skip
    learner = LearnerLink(endpoints, server, tmp / "wstore", lambda *a: None, task="bench")
    actor = ActorLink(ActorLinkConfig(actor_id="w", transitions_endpoint=endpoints.transitions,
                                      weights_endpoint=endpoints.weights,
                                      spool_dir=str(tmp / "wspool")), client)  # fmt: skip
    # The actor's process sleeps on its weights socket (a poller), as an actor's loop would
    # between steps; the link itself offers only the non-blocking read.
    poller = zmq.Poller()
    poller.register(actor._sub, zmq.POLLIN)  # to wait without a spin

    def receive(deadline: float) -> tuple[int, dict[str, Any]] | None:
        while (left_ms := (deadline - time.monotonic()) * 1e3) > 0:
            if poller.poll(left_ms):
                got = actor.latest_weights()
                if got is not None:
                    return got
        return None

    times, loads, size = [], [], 0
    try:
        version = 0
        state = learner_agent.policy_state_dict()
        joined = None
        deadline = time.monotonic() + 10.0
        while joined is None and time.monotonic() < deadline:  # the subscription joins first
            version += 1
            learner.publish_weights(state, version)
            joined = receive(time.monotonic() + 0.1)
        if joined is None:
            raise RuntimeError("bench transport: the actor never received weights in 10 s")
        for _ in range(runs):
            with torch.no_grad():  # new weights each time, as a training learner publishes
                for p in learner_agent.actor.parameters():
                    p.add_(0.01)
            state = learner_agent.policy_state_dict()
            version += 1
            start = time.perf_counter()
            size = learner.publish_weights(state, version)
            got = receive(time.monotonic() + 10.0)
            if got is None:
                raise RuntimeError(f"bench transport: weights version {version} never arrived")
            loaded_at = time.perf_counter()
            actor_policy.load_policy_state_dict(got[1])
            done = time.perf_counter()
            times.append(done - start)
            loads.append(done - loaded_at)
        for mine, theirs in zip(actor_policy.actor.parameters(),
                                learner_agent.actor.parameters(), strict=True):  # fmt: skip
            if not torch.equal(mine, theirs):
                raise RuntimeError("bench transport: the actor's policy differs from the weights")
    finally:
        actor.close()
        learner.close()
    return float(np.median(times) * 1e3), float(np.median(loads) * 1e3), float(size)


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
        steps = _stream(2 if quick else 20)
        ours_bytes = _our_bytes(steps)
        f32_bytes = _pickle_f32_bytes(steps[5])
        rate, stored = _our_intake(server, client, steps, tmp / "curve")
        rate_plain, stored_plain = _our_intake(plain, plain, steps, tmp / "plain")
        peer_rate, peer_bytes, peer_stored = _agentlace_intake(steps, False, tmp)
        one_rate, one_bytes, one_stored = _agentlace_intake(steps[: 5 * EPISODE_STEPS], True, tmp)
        weights_ms, load_ms, weights_bytes = _weights_broadcast_ms(
            server, client, 3 if quick else 10, tmp
        )
    sent = float(len(steps))
    return {
        "frame_latency_ms_p50": curve["p50"],
        "frame_latency_ms_p99": curve["p99"],
        "frame_latency_ms_p50_plaintext": plaintext["p50"],
        "frame_latency_ms_p99_plaintext": plaintext["p99"],
        "frame_throughput_mb_s": curve["mb_s"],
        "frame_fps_received_per_camera": curve["fps_received"],
        "frames_lost": curve["sent"] - curve["received"],
        "frame_max_throughput_mb_s": fast["mb_s"],
        "transition_bytes": ours_bytes,
        "agentlace_bytes_per_transition": peer_bytes,
        "bytes_ratio_vs_agentlace": peer_bytes / ours_bytes,
        "agentlace_bytes_per_transition_per_transition": one_bytes,
        "bytes_ratio_vs_agentlace_per_transition": one_bytes / ours_bytes,
        "transition_bytes_pickle_f32": f32_bytes,
        "transition_bytes_ratio_vs_pickle_f32": f32_bytes / ours_bytes,
        "transitions_sent": sent,
        "transitions_per_s": rate,
        "transitions_stored": float(stored),
        "transitions_per_s_plaintext": rate_plain,
        "transitions_stored_plaintext": float(stored_plain),
        "agentlace_transitions_per_s": peer_rate,
        "agentlace_transitions_stored": float(peer_stored),
        "intake_ratio_vs_agentlace": rate_plain / peer_rate,
        "agentlace_transitions_per_s_per_transition": one_rate,
        "agentlace_transitions_sent_per_transition": float(min(len(steps), 5 * EPISODE_STEPS)),
        "agentlace_transitions_stored_per_transition": float(one_stored),
        "intake_ratio_vs_agentlace_per_transition": rate_plain / one_rate,
        "weights_broadcast_ms": weights_ms,
        "weights_load_ms": load_ms,
        "weights_bytes": weights_bytes,
    }
