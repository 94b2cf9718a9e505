"""Actor/learner links on loopback: delivery in order, durability, a learner restart with nothing
lost or duplicated, an actor restart, spilling and backpressure, malformed input, weights."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zmq

from robot_rl.data.batch import Transition
from robot_rl.data.episodes import load_episodes
from robot_rl.transport.actor_link import ActorLink, ActorLinkConfig, BackpressureError
from robot_rl.transport.learner_link import LearnerLink, LinkEndpoints
from robot_rl.transport.security import SecurityConfig
from tests.netutil import free_port

pytestmark = pytest.mark.timeout(60)
PLAIN = SecurityConfig(plaintext=True)


def obs(step: int) -> dict[str, np.ndarray]:
    """Observation number ``step``: its state holds the number, so order is checkable."""
    return {
        "state": np.array([step, step * 0.5, -step, 1.0], np.float32),
        "front": np.full((8, 8, 3), step % 256, np.uint8),
    }


def episode_steps(start: int, length: int, end: str = "terminated") -> list[Transition]:
    steps = []
    for i in range(length):
        last = i == length - 1
        steps.append(
            Transition(
                obs(start + i),
                np.array([i / length, -0.5, 1.0], np.float32),
                float(last),
                obs(start + i + 1),
                last and end == "terminated",
                last and end == "truncated",
                intervened=i % 3 == 0,
            )
        )
    return steps


class Sink:
    def __init__(self) -> None:
        self.steps: list[Transition] = []
        self.discontinuities = 0

    def __call__(self, actor_id: str, steps: list[Transition], discontinuity: bool) -> None:
        self.steps += steps
        self.discontinuities += discontinuity


def free_endpoints() -> LinkEndpoints:
    return LinkEndpoints(f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}")


def start_learner(ep: LinkEndpoints, store: Path, sink: Sink) -> LearnerLink:
    """A learner on ``ep``; retries while a closed predecessor still holds the port (ZMQ
    closes sockets asynchronously)."""
    deadline = time.monotonic() + 5
    while True:
        try:
            return LearnerLink(ep, PLAIN, store, sink, task="reach")
        except zmq.ZMQError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def actor_config(endpoints: LinkEndpoints, spool: Path, **changes) -> ActorLinkConfig:
    fields = dict(actor_id="a0", transitions_endpoint=endpoints.transitions,
                  weights_endpoint=endpoints.weights, spool_dir=str(spool), batch_steps=4,
                  resend_after_s=0.3)  # fmt: skip
    fields.update(changes)
    return ActorLinkConfig(**fields)


def run_until(learner: LearnerLink | None, actor: ActorLink, done, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "link did not settle in time"
        if learner is not None:
            learner.poll(timeout_ms=5)
        actor.pump()
        time.sleep(0.001)


def stored(store: Path) -> list[Transition]:
    return [t for e in load_episodes(store) for t in e.transitions]


def same(a: Transition, b: Transition) -> bool:
    return (
        all(np.array_equal(a.obs[k], b.obs[k]) for k in a.obs)
        and all(np.array_equal(a.next_obs[k], b.next_obs[k]) for k in a.next_obs)
        and np.array_equal(a.action, b.action)
        and (a.reward, a.terminated, a.truncated, a.intervened)
        == (b.reward, b.terminated, b.truncated, b.intervened)
    )


def test_steps_arrive_in_order_are_stored_and_acknowledged(tmp_path: Path) -> None:
    ep = free_endpoints()
    sink = Sink()
    learner = start_learner(ep, tmp_path / "store", sink)
    actor = ActorLink(actor_config(ep, tmp_path / "spool"), PLAIN)
    sent = episode_steps(0, 7) + episode_steps(100, 5, end="truncated") + episode_steps(200, 3)
    for step in sent:
        actor.add(step)
    run_until(learner, actor, lambda: actor.unacknowledged_steps == 0)
    assert len(sink.steps) == len(sent) and all(map(same, sink.steps, sent))
    assert all(map(same, stored(tmp_path / "store"), sent))
    assert learner.status()["a0"]["durable"] == len(sent) - 1
    assert not list((tmp_path / "spool").glob("batch_*"))
    actor.close()
    learner.close()


def test_learner_restart_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    ep, store = free_endpoints(), tmp_path / "store"
    learner = start_learner(ep, store, Sink())
    actor = ActorLink(actor_config(ep, tmp_path / "spool"), PLAIN)
    sent = episode_steps(0, 6) + episode_steps(50, 9)
    for step in sent[:11]:  # the first episode and part of the second
        actor.add(step)
    run_until(learner, actor, lambda: actor.received >= 9)
    learner.close()  # crash: the open episode's steps were received but not durable

    for step in sent[11:] + episode_steps(80, 4):  # the actor keeps acting meanwhile
        actor.add(step)
    sent += episode_steps(80, 4)
    assert actor.unacknowledged_steps > 0

    restarted_sink = Sink()
    learner = start_learner(ep, store, restarted_sink)
    run_until(learner, actor, lambda: actor.unacknowledged_steps == 0)
    on_disk = stored(store)
    assert len(on_disk) == len(sent), "a step was lost or stored twice"
    assert all(map(same, on_disk, sent))
    # The new learner got exactly what the old one had not made durable.
    assert len(restarted_sink.steps) == len(sent) - 6
    actor.close()
    learner.close()


def test_actor_restart_continues_its_numbering_and_the_learner_carries_on(tmp_path: Path) -> None:
    ep, store, spool = free_endpoints(), tmp_path / "store", tmp_path / "spool"
    sink = Sink()
    learner = start_learner(ep, store, sink)
    actor = ActorLink(actor_config(ep, spool), PLAIN)
    for step in episode_steps(0, 5) + episode_steps(10, 6)[:5]:  # stop mid-episode
        actor.add(step)
    run_until(learner, actor, lambda: actor.received >= 8)  # the 5th step is still pending
    actor.close()  # a clean stop spools the pending step and closes the episode

    actor = ActorLink(actor_config(ep, spool), PLAIN)  # fresh process, same spool
    for step in episode_steps(30, 4):
        actor.add(step)
    run_until(learner, actor, lambda: actor.unacknowledged_steps == 0)
    status = learner.status()["a0"]
    assert status["durable"] == status["received"] >= 5 + 4 + 4 - 1
    episodes = list(load_episodes(store))
    # The unfinished episode was closed and kept whole; the new one stored whole.
    assert [len(e.transitions) for e in episodes] == [5, 5, 4]
    assert not episodes[1].transitions[-1].terminated
    actor.close()
    learner.close()


def test_held_batches_spill_to_disk_and_backpressure_stops_the_actor(tmp_path: Path) -> None:
    ep = free_endpoints()  # no learner yet
    cfg = actor_config(ep, tmp_path / "spool", max_memory_batches=2, max_spool_bytes=20_000)
    actor = ActorLink(cfg, PLAIN)
    sent = []
    with pytest.raises(BackpressureError, match="check it is running"):
        for n in range(200):
            batch = episode_steps(n * 10, 4)
            for step in batch:
                actor.add(step)
                sent.append(step)
    assert list((tmp_path / "spool").glob("batch_*.bin")), "nothing spilled"
    sink = Sink()
    learner = start_learner(ep, tmp_path / "store", sink)
    run_until(learner, actor, lambda: actor.unacknowledged_steps == 0)
    assert all(map(same, stored(tmp_path / "store"), sent))
    assert not list((tmp_path / "spool").glob("batch_*.bin"))
    actor.close()
    learner.close()


def test_malformed_messages_are_dropped_and_the_learner_keeps_serving(tmp_path: Path) -> None:
    ep = free_endpoints()
    learner = start_learner(ep, tmp_path / "store", Sink())
    rogue = zmq.Context.instance().socket(zmq.DEALER)
    rogue.linger = 0
    rogue.connect(ep.transitions)
    for frames in ([b"junk"], [b"\x80", b"x"], [b"\x81\xa1v\x01"]):
        rogue.send_multipart(frames)
    deadline = time.monotonic() + 5
    while learner.rejected < 3 and time.monotonic() < deadline:
        learner.poll(timeout_ms=10)
    assert learner.rejected == 3
    rogue.close()
    actor = ActorLink(actor_config(ep, tmp_path / "spool"), PLAIN)
    for step in episode_steps(0, 3):
        actor.add(step)
    run_until(learner, actor, lambda: actor.unacknowledged_steps == 0)
    actor.close()
    learner.close()


def test_weights_reach_the_actor_as_the_newest_version(tmp_path: Path) -> None:
    ep = free_endpoints()
    learner = start_learner(ep, tmp_path / "store", Sink())
    actor = ActorLink(actor_config(ep, tmp_path / "spool"), PLAIN)
    net = torch.nn.Linear(5, 3)
    got = None
    deadline = time.monotonic() + 5
    version = 0
    while got is None and time.monotonic() < deadline:  # PUB/SUB joins asynchronously
        version += 1
        health = {"updates": version, "last_checkpoint": "12:00:00", "nested": {"no": 1}}
        learner.publish_weights(net.state_dict(), version, health=health)
        time.sleep(0.02)
        got = actor.latest_weights()
    assert got is not None and got[0] == version
    # The learner's health rides along for the console: scalars only.
    assert actor.learner_health == {"updates": version, "last_checkpoint": "12:00:00"}
    for key, value in net.state_dict().items():
        torch.testing.assert_close(got[1][key], value, rtol=0, atol=0)
    assert actor.latest_weights() is None  # nothing newer
    assert actor.weights_age_s < 5.0
    actor.close()
    learner.close()


def test_two_actors_feed_one_learner_with_their_streams_kept_apart(tmp_path: Path) -> None:
    ep = free_endpoints()
    sink = Sink()
    learner = start_learner(ep, tmp_path / "store", sink)
    a = ActorLink(actor_config(ep, tmp_path / "spool-a", actor_id="a"), PLAIN)
    b = ActorLink(actor_config(ep, tmp_path / "spool-b", actor_id="b"), PLAIN)
    sent_a = episode_steps(0, 9) + episode_steps(20, 5)
    sent_b = episode_steps(500, 7, end="truncated") + episode_steps(600, 6)
    for i in range(max(len(sent_a), len(sent_b))):  # interleaved, as two robots would
        if i < len(sent_a):
            a.add(sent_a[i])
        if i < len(sent_b):
            b.add(sent_b[i])
        learner.poll(timeout_ms=1)
    deadline = time.monotonic() + 10
    while (a.unacknowledged_steps or b.unacknowledged_steps) and time.monotonic() < deadline:
        learner.poll(timeout_ms=5)
        a.pump()
        b.pump()
    assert a.unacknowledged_steps == b.unacknowledged_steps == 0
    episodes = list(load_episodes(tmp_path / "store"))
    by_actor = {
        name: [t for e in episodes if e.meta["actor_id"] == name for t in e.transitions]
        for name in ("a", "b")
    }
    assert all(map(same, by_actor["a"], sent_a)) and len(by_actor["a"]) == len(sent_a)
    assert all(map(same, by_actor["b"], sent_b)) and len(by_actor["b"]) == len(sent_b)
    for link in (a, b):
        link.close()
    learner.close()


def test_a_closed_episode_and_the_next_reach_replay_apart_over_zmq(tmp_path: Path) -> None:
    from robot_rl.data.replay import ReplayBuffer
    from robot_rl.runtime.learner import ReplaySink

    demo, online = ReplayBuffer(1000), ReplayBuffer(1000)
    sink = ReplaySink(demo, online, threading.Lock())
    ep = free_endpoints()
    learner = start_learner(ep, tmp_path / "store", sink)
    actor = ActorLink(actor_config(ep, tmp_path / "spool"), PLAIN)
    for step in episode_steps(0, 6)[:3]:
        actor.add(step)
    actor.end_episode()
    for step in episode_steps(50, 4):
        actor.add(step)
    run_until(learner, actor, lambda: actor.unacknowledged_steps == 0)
    assert len(online) == 7 and learner.rejected == 0
    actor.close()
    learner.close()


def test_steps_the_replay_rejects_are_not_acknowledged_and_the_learner_serves_on(
    tmp_path: Path,
) -> None:
    from robot_rl.data.replay import ReplayBuffer
    from robot_rl.runtime.learner import ReplaySink

    demo, online = ReplayBuffer(1000), ReplayBuffer(1000)
    sink = ReplaySink(demo, online, threading.Lock())
    online.add(episode_steps(0, 1)[0])  # the replay already holds 4-dim states ...
    ep = free_endpoints()
    learner = start_learner(ep, tmp_path / "store", sink)
    actor = ActorLink(actor_config(ep, tmp_path / "spool"), PLAIN)
    odd = episode_steps(0, 2)
    odd = [t.__class__({**t.obs, "state": t.obs["state"][:2]}, t.action, t.reward,
                       {**t.next_obs, "state": t.next_obs["state"][:2]}, t.terminated,
                       t.truncated) for t in odd]  # fmt: skip
    for step in odd:  # ... this actor sends 2-dim ones
        actor.add(step)
    deadline = time.monotonic() + 5
    while learner.rejected == 0 and time.monotonic() < deadline:
        learner.poll(timeout_ms=5)
        actor.pump()
    assert learner.rejected >= 1 and actor.durable == -1 and len(online) == 1
    assert not list((tmp_path / "store").glob("episode_*"))
    while actor.learner_errors == 0:  # the actor is told why, in the ack
        assert time.monotonic() < deadline + 5
        learner.poll(timeout_ms=5)
        actor.pump()
    assert "replay refuses these steps" in actor.last_learner_error
    actor.close()
    learner.close()
