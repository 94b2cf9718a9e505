"""The in-process link keeps the ZMQ links' contract: order, durability, closing an open
episode, and weights the learner cannot change under the actor."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import torch

from robot_rl.data.episodes import load_episodes
from robot_rl.transport.inprocess import InProcessTransport
from tests.transport.test_links import Sink, episode_steps, same


def test_steps_reach_the_sink_and_the_store_in_order(tmp_path: Path) -> None:
    transport = InProcessTransport()
    sink = Sink()
    learner = transport.learner(tmp_path / "store", sink, task="reach")
    a, b = transport.actor("a"), transport.actor("b")
    sent_a = episode_steps(0, 5) + episode_steps(10, 3)[:2]  # ends mid-episode
    sent_b = episode_steps(100, 4)
    for i in range(5):
        for link, sent in ((a, sent_a), (b, sent_b)):
            if i < len(sent):
                link.add(sent[i])
    a.add(sent_a[5])
    a.add(sent_a[6])
    a.end_episode()  # stored as unfinished
    assert a.unacknowledged_steps == 7  # its own steps, until the learner takes them
    assert not a.flush(timeout_s=0.0)  # nobody has taken them yet: flush says so
    assert learner.steps_received == 0
    entered, release = threading.Event(), threading.Event()

    def slow_sink(actor_id: str, steps: list, discontinuity: bool) -> None:
        entered.set()
        assert release.wait(5.0)
        sink(actor_id, steps, discontinuity)

    learner.sink = slow_sink
    taker = threading.Thread(target=learner.poll, kwargs={"timeout_ms": 5000})
    taker.start()
    assert entered.wait(5.0)  # the learner has taken the queue and is storing it
    # flush returns only once the learner has taken and stored every step: not while it is
    # still storing them, although the queue itself is already empty.
    assert not a.flush(timeout_s=0.05) and a.unacknowledged_steps == 7
    release.set()
    assert a.flush(timeout_s=5.0) and a.unacknowledged_steps == 0
    assert learner.steps_received == 11
    taker.join(timeout=5.0)
    episodes = list(load_episodes(tmp_path / "store"))
    got = {n: [t for e in episodes if e.meta["actor_id"] == n for t in e.transitions] for n in "ab"}
    assert all(map(same, got["a"], sent_a)) and len(got["a"]) == 7
    assert all(map(same, got["b"], sent_b)) and len(got["b"]) == 4
    assert len(sink.steps) == 11
    assert learner.store.durable == {"a": 6, "b": 3}


def test_published_weights_are_a_snapshot(tmp_path: Path) -> None:
    transport = InProcessTransport()
    learner = transport.learner(tmp_path / "store", Sink(), task="reach")
    actor = transport.actor("a")
    net = torch.nn.Linear(3, 2)
    assert actor.latest_weights() is None
    learner.publish_weights({"actor": net.state_dict()}, version=1)
    with torch.no_grad():
        net.weight.add_(1.0)  # the learner trains on
    version, state = actor.latest_weights()
    assert version == 1
    assert not torch.equal(state["actor"]["weight"], net.weight)
    assert actor.latest_weights() is None  # nothing newer
    half = learner.publish_weights({"actor": net.state_dict()}, version=2, half=True)
    assert actor.latest_weights()[1]["actor"]["weight"].dtype == torch.float16
    assert half == (6 + 2) * 2  # six weights and two biases, two bytes each


def test_an_episode_closed_unfinished_is_not_joined_to_the_next(tmp_path: Path) -> None:
    """A restart or operator reset: half an episode, closed, then a fresh episode, into real
    replay buffers through the shared sink (which would reject a join)."""
    from robot_rl.data.replay import ReplayBuffer
    from robot_rl.runtime.learner import ReplaySink

    demo, online = ReplayBuffer(1000), ReplayBuffer(1000)
    sink = ReplaySink(demo, online, threading.Lock())
    transport = InProcessTransport()
    learner = transport.learner(tmp_path / "store", sink, task="reach")
    actor = transport.actor("a")
    for step in episode_steps(0, 6)[:3]:
        actor.add(step)
    actor.end_episode()
    for step in episode_steps(50, 4):
        actor.add(step)
    learner.poll()
    assert len(online) == 7 and sink.steps == 7
    assert [len(e.transitions) for e in load_episodes(tmp_path / "store")] == [3, 4]


def test_a_nan_step_is_dropped_at_intake_and_the_rest_reach_replay(tmp_path: Path) -> None:
    from robot_rl.data.replay import ReplayBuffer
    from robot_rl.runtime.learner import ReplaySink

    demo, online = ReplayBuffer(1000), ReplayBuffer(1000)
    sink = ReplaySink(demo, online, threading.Lock())
    transport = InProcessTransport()
    learner = transport.learner(tmp_path / "store", sink, task="reach")
    actor = transport.actor("a")
    steps = episode_steps(0, 6)
    poisoned = {**steps[2].next_obs, "state": np.full(4, np.nan, np.float32)}
    steps[2] = dataclasses.replace(steps[2], next_obs=poisoned)
    steps[3] = dataclasses.replace(steps[3], obs=poisoned)
    for step in steps:
        actor.add(step)
    assert (actor.steps_held, actor.steps_stored) == (6, 0)
    assert learner.poll() == 4  # poll raised nothing; steps 2 and 3 were dropped
    assert learner.rejected == 2
    assert (actor.steps_held, actor.steps_stored) == (0, 6)
    assert len(online) == 4 and online.num_episodes == 2  # never joined across the hole
    stored = [t for e in load_episodes(tmp_path / "store") for t in e.transitions]
    assert all(map(same, stored, [steps[i] for i in (0, 1, 4, 5)]))


def test_bad_weights_never_reach_the_actor(tmp_path: Path) -> None:
    transport = InProcessTransport()
    learner = transport.learner(tmp_path / "store", Sink(), task="reach")
    actor = transport.actor("a")
    good = {"actor": torch.nn.Linear(3, 2).state_dict()}
    actor.expect_weights(good)
    nan = {"actor": {k: v.clone() for k, v in good["actor"].items()}}
    nan["actor"]["bias"][0] = float("nan")
    assert learner.publish_weights(nan, version=1) == 0 and learner.weights_refused == 1
    assert actor.latest_weights() is None
    learner.publish_weights({"actor": torch.nn.Linear(4, 2).state_dict()}, version=2)
    assert actor.latest_weights() is None and actor.rejected_weights == 1
    learner.publish_weights(good, version=3)
    assert actor.latest_weights()[0] == 3
