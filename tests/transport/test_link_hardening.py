"""The actor/learner links under bad input: no message stops the learner, no learner output stops
the actor, NaN never reaches replay or the published weights, actor ids belong to their keys,
far-future seqs are refused, the caps hold, and every sealed step is in the spool before it is
sent (a clean stop loses nothing, a kill -9 loses at most the unsealed tail)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import torch
import zmq

from robot_rl.data.batch import Transition
from robot_rl.data.episodes import load_episodes
from robot_rl.transport.actor_link import ActorLink
from robot_rl.transport.codec import decode, encode, weights_to_bytes
from robot_rl.transport.episode_store import EpisodeStore
from robot_rl.transport.learner_link import LearnerLink
from robot_rl.transport.security import SecurityConfig, generate_keys
from robot_rl.transport.steps import encode_steps
from tests.transport.test_links import (
    PLAIN,
    Sink,
    actor_config,
    episode_steps,
    free_endpoints,
    obs,
    run_until,
    same,
    start_learner,
    stored,
)

pytestmark = pytest.mark.timeout(60)


def rogue(endpoint: str, kind: int = zmq.DEALER) -> zmq.Socket:
    sock = zmq.Context.instance().socket(kind)
    sock.linger = 0
    sock.connect(endpoint) if kind == zmq.DEALER else sock.bind(endpoint)
    return sock


def send_and_reply(learner: LearnerLink, sock: zmq.Socket, frames: list[Any]) -> dict:
    """Send one message, let the learner handle it, return the meta of its reply."""
    sock.send_multipart(frames)
    deadline = time.monotonic() + 5
    while not sock.poll(0):
        assert time.monotonic() < deadline, "the learner did not answer"
        learner.poll(timeout_ms=10)
    return decode(sock.recv_multipart()).meta


def transitions(meta: dict, arrays: dict[str, np.ndarray]) -> list[Any]:
    return encode("transitions", 1, {"actor_id": "x", "count": 2, "first_seq": 0, **meta}, arrays)


def good_arrays(count: int = 2) -> dict[str, np.ndarray]:
    return {
        "action": np.zeros((count, 3), np.float32),
        "reward": np.zeros(count, np.float32),
        "gripper_penalty": np.zeros(count, np.float32),
        "terminated": np.zeros(count, bool),
        "truncated": np.zeros(count, bool),
        "intervened": np.zeros(count, bool),
        "starts_episode": np.array([True] + [False] * (count - 1)),
        "next_obs/state": np.zeros((count, 4), np.float32),
        "obs/state": np.zeros((1, 4), np.float32),
    }


def with_header(frames: list[Any], **meta: Any) -> list[Any]:
    """``frames`` with ``meta`` changed in the header (values msgpack can carry but encode
    refuses, such as 2**64 - 1 or a float where an int belongs)."""
    header = msgpack.unpackb(bytes(frames[0]), raw=False)
    header["meta"].update(meta)
    return [msgpack.packb(header, use_bin_type=True), *frames[1:]]


def changed(**arrays: np.ndarray | None) -> dict[str, np.ndarray]:
    out = good_arrays()
    for key, value in arrays.items():
        if value is None:
            del out[key]
        else:
            out[key] = value
    return out


BAD_MESSAGES = {
    "0-d starts_episode": transitions({}, changed(starts_episode=np.array(True))),
    "2-D starts_episode": transitions({}, changed(starts_episode=np.ones((2, 2), bool))),
    "no starts_episode": transitions({}, changed(starts_episode=None, **{"obs/state": None})),
    "0-d action": transitions({}, changed(action=np.array(0.5, np.float32))),
    "0-d obs/state": transitions({}, changed(**{"obs/state": np.array(0.5, np.float32)})),
    "first_seq 2**64-1": with_header(transitions({}, good_arrays()), first_seq=2**64 - 1),
    "first_seq inf": with_header(transitions({}, good_arrays()), first_seq=float("inf")),
    "count 2**63": with_header(transitions({}, good_arrays()), count=2**63),
    "holds_from a list": with_header(transitions({}, good_arrays()), holds_from=[1]),
    "image of floats": transitions(
        {}, {**good_arrays(), "next_obs/front": np.zeros((2, 4, 4, 3), np.float32)}
    ),
    "actor_id a map": with_header(transitions({}, good_arrays()), actor_id={"a": 1}),
    "op 17000 NULs": encode("request", 1, {"actor_id": "x", "op": "\0" * 17_000}),
}


@pytest.mark.parametrize("name", sorted(BAD_MESSAGES))
def test_a_malformed_message_gets_an_error_reply_and_the_learner_serves_on(
    tmp_path: Path, name: str
) -> None:
    ep = free_endpoints()
    sink = Sink()
    learner = start_learner(ep, tmp_path / "store", sink)
    sock = rogue(ep.transitions)
    reply = send_and_reply(learner, sock, BAD_MESSAGES[name])
    assert reply["error"], reply
    assert len(reply["error"]) <= 200  # never echoes the bulk it was sent
    assert learner.rejected == 1
    assert sink.steps == []
    sock.close()
    actor = ActorLink(actor_config(ep, tmp_path / "spool"), PLAIN)  # a valid client still works
    sent = episode_steps(0, 5)
    for step in sent:
        actor.add(step)
    run_until(learner, actor, lambda: actor.unacknowledged_steps == 0)
    assert all(map(same, stored(tmp_path / "store"), sent))
    actor.close()
    learner.close()


def nan_state(step: int) -> dict[str, np.ndarray]:
    o = obs(step)
    o["state"] = o["state"].copy()
    o["state"][1] = np.nan
    return o


def test_a_nan_observation_is_dropped_at_intake_and_the_stream_goes_on(tmp_path: Path) -> None:
    ep = free_endpoints()
    sink = Sink()
    learner = start_learner(ep, tmp_path / "store", sink)
    actor = ActorLink(actor_config(ep, tmp_path / "spool", batch_steps=16), PLAIN)
    steps = episode_steps(0, 6)
    # Step 2's next_obs is NaN, so step 3's obs is too: both are dropped, the rest kept.
    steps[2] = Transition(steps[2].obs, steps[2].action, 0.0, nan_state(3), False, False)
    steps[3] = Transition(nan_state(3), steps[3].action, 0.0, steps[3].next_obs, False, False)
    for step in steps:
        actor.add(step)
    run_until(learner, actor, lambda: actor.unacknowledged_steps == 0)
    assert learner.steps_rejected == 2
    kept = [steps[i] for i in (0, 1, 4, 5)]
    assert len(sink.steps) == 4 and all(map(same, sink.steps, kept))
    assert sink.discontinuities == 2  # the episode start, and the step after the dropped ones
    assert all(np.isfinite(t.obs["state"]).all() for t in stored(tmp_path / "store"))
    assert [len(e.transitions) for e in load_episodes(tmp_path / "store")] == [2, 2]
    actor.close()
    learner.close()


def policy_state() -> dict[str, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    return {"actor": torch.nn.Linear(4, 2).state_dict()}


def test_non_finite_weights_are_never_published(tmp_path: Path) -> None:
    ep = free_endpoints()
    learner = start_learner(ep, tmp_path / "store", Sink())
    actor = ActorLink(actor_config(ep, tmp_path / "spool"), PLAIN)
    bad = policy_state()
    bad["actor"]["weight"][0, 0] = float("nan")
    assert learner.publish_weights(bad, 5) == 0
    assert learner.weights_refused == 1 and learner.weights_version == -1
    seen = []
    deadline = time.monotonic() + 5
    while 7 not in seen:  # the next good weights arrive; version 5 never does
        assert time.monotonic() < deadline
        learner.publish_weights(bad, 5)
        learner.publish_weights(policy_state(), 7)
        got = actor.latest_weights()
        if got is not None:
            seen.append(got[0])
    assert seen == [7]
    actor.close()
    learner.close()


def weights_message(version: Any, state: dict, learner_id: str = "L") -> list[Any]:
    data = np.frombuffer(weights_to_bytes(state), np.uint8)
    frames = encode("weights", 1, {"version": 0, "learner_id": learner_id}, {"safetensors": data})
    return with_header(frames, version=version)


def test_bad_weights_are_refused_and_the_actor_keeps_its_last_good_ones(tmp_path: Path) -> None:
    ep = free_endpoints()
    pub = rogue(ep.weights, zmq.PUB)  # a broken learner
    actor = ActorLink(actor_config(ep, tmp_path / "spool"), PLAIN)
    actor.expect_weights(policy_state())
    nan = policy_state()
    nan["actor"]["bias"][1] = float("inf")
    wide = {"actor": torch.nn.Linear(5, 2).state_dict()}
    renamed = {"critic": policy_state()["actor"]}
    bad = [weights_message(2, nan), weights_message(3, wide), weights_message(4, renamed),
           weights_message(float("inf"), policy_state()), weights_message([5], policy_state()),
           weights_message(2**64 - 1, policy_state())]  # fmt: skip
    deadline = time.monotonic() + 5
    got = None
    while got is None:  # the subscription is up once a good message gets through
        assert time.monotonic() < deadline
        pub.send_multipart(weights_message(1, policy_state()))
        got = actor.latest_weights()
        time.sleep(0.01)
    assert got[0] == 1
    for frames in bad:  # one at a time: latest_weights looks at the newest only
        refused = actor.rejected_weights
        while actor.rejected_weights == refused:
            assert time.monotonic() < deadline + 5
            pub.send_multipart(frames)
            assert actor.latest_weights() is None
            time.sleep(0.005)
    assert actor.weights_version == 1  # the last good ones
    pub.send_multipart(weights_message(9, policy_state()))
    while (got := actor.latest_weights()) is None:
        assert time.monotonic() < deadline + 10
        time.sleep(0.005)
    assert got[0] == 9
    pub.close()
    actor.close()


def test_bad_acks_are_refused_and_the_actor_keeps_going(tmp_path: Path) -> None:
    ep = free_endpoints()
    router = rogue(ep.transitions, zmq.ROUTER)  # a broken learner
    actor = ActorLink(actor_config(ep, tmp_path / "spool"), PLAIN)
    for step in episode_steps(0, 4):
        actor.add(step)
    deadline = time.monotonic() + 5
    while not router.poll(10):
        assert time.monotonic() < deadline
        actor.pump()
    identity = router.recv_multipart()[0]
    bad = [{"received": float("inf"), "durable": -1}, {"received": 0, "durable": "x"},
           {"received": 2**63, "durable": 0}, {"received": True, "durable": 0},
           {"received": [1], "durable": 0}]  # fmt: skip
    for meta in bad:
        frames = with_header(encode("transitions_ack", 1, {"received": 0, "durable": 0}), **meta)
        router.send_multipart([identity, *frames])
    router.send_multipart([identity, *encode("transitions_ack", 2, {"error": "no room"})])
    router.send_multipart([identity, b"\xc1garbage"])
    while actor.rejected_acks < len(bad) + 1 or actor.learner_errors < 1:
        assert time.monotonic() < deadline
        actor.pump()
        time.sleep(0.002)
    assert actor.acks == 0 and actor.received == -1 and actor.unacknowledged_steps == 4
    assert actor.last_learner_error == "no room"
    router.send_multipart([identity, *encode("transitions_ack", 3, {"received": 3, "durable": 3})])
    while actor.acks < 1:
        assert time.monotonic() < deadline
        actor.pump()
        time.sleep(0.002)
    assert actor.unacknowledged_steps == 0 and actor.steps_stored == 4
    router.close()
    actor.close()


def test_a_far_future_first_seq_is_refused_and_the_real_actor_loses_nothing(
    tmp_path: Path,
) -> None:
    ep = free_endpoints()
    learner = start_learner(ep, tmp_path / "store", Sink())
    actor = ActorLink(actor_config(ep, tmp_path / "spool"), PLAIN)
    first = episode_steps(0, 5)
    for step in first:
        actor.add(step)
    run_until(learner, actor, lambda: actor.unacknowledged_steps == 0)
    forged = encode_steps("a0", 10**12, episode_steps(100, 3), [True, False, False])
    sock = rogue(ep.transitions)
    reply = send_and_reply(learner, sock, [*forged])
    assert "max_seq_gap" in reply["error"]
    assert learner.status()["a0"]["received"] == 4
    later = episode_steps(10, 17)
    for step in later:
        actor.add(step)
    run_until(learner, actor, lambda: actor.unacknowledged_steps == 0)
    assert len(stored(tmp_path / "store")) == 5 + 17
    assert all(map(same, stored(tmp_path / "store"), first + later))
    sock.close()
    actor.close()
    learner.close()


@pytest.fixture
def curve(tmp_path: Path) -> tuple[SecurityConfig, SecurityConfig, SecurityConfig]:
    """Security for a learner and two actors whose keys it allows."""
    keys = tmp_path / "keys"
    generate_keys(keys, "learner")
    allowed = keys / "allowed"
    allowed.mkdir()
    for name in ("one", "two"):
        public, _ = generate_keys(keys, name)
        (allowed / f"{name}.key").write_bytes(public.read_bytes())
    learner = SecurityConfig(keys_dir=str(keys), name="learner")
    return (
        learner,
        SecurityConfig(keys_dir=str(keys), name="one"),
        SecurityConfig(keys_dir=str(keys), name="two"),
    )


def test_an_actor_id_belongs_to_the_key_that_first_sent_it(tmp_path: Path, curve: tuple) -> None:
    learner_sec, one, two = curve
    ep = free_endpoints()
    sink = Sink()
    context = zmq.Context()  # its own ZAP handler
    learner = LearnerLink(ep, learner_sec, tmp_path / "store", sink, "reach", context=context)
    actor = ActorLink(actor_config(ep, tmp_path / "spool1"), one, context=context)
    for step in episode_steps(0, 4):
        actor.add(step)
    run_until(learner, actor, lambda: actor.unacknowledged_steps == 0)
    impostor = ActorLink(actor_config(ep, tmp_path / "spool2"), two, context=context)
    for step in episode_steps(50, 4):
        impostor.add(step)
    deadline = time.monotonic() + 10
    while impostor.learner_errors == 0:
        assert time.monotonic() < deadline
        learner.poll(timeout_ms=5)
        impostor.pump()
    assert "another CURVE key" in impostor.last_learner_error
    assert len(sink.steps) == 4 and learner.rejected >= 1
    assert next(load_episodes(tmp_path / "store")).meta["actor_key"]
    impostor.close()
    actor.close()
    learner.close()
    context.destroy(linger=0)


def test_the_learner_caps_its_actors_with_a_clear_error(tmp_path: Path) -> None:
    ep = free_endpoints()
    learner = LearnerLink(ep, PLAIN, tmp_path / "store", Sink(), "reach", max_actors=2)
    sock = rogue(ep.transitions)
    for n in range(2):
        reply = send_and_reply(learner, sock, encode("request", 1, {"actor_id": f"a{n}"}))
        assert "error" not in reply
    reply = send_and_reply(learner, sock, encode("request", 1, {"actor_id": "a2"}))
    assert "max_actors=2" in reply["error"]
    assert sorted(learner.actors) == ["a0", "a1"]
    sock.close()
    learner.close()


def test_an_endless_episode_is_stored_in_bounded_parts(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path, "reach", max_episode_steps=5)
    steps = episode_steps(0, 12, end="truncated")
    for seq, step in enumerate(steps):
        store.add("a0", seq, step, seq == 0)
    assert store.episodes_cut == 2
    episodes = list(load_episodes(tmp_path))
    assert [len(e.transitions) for e in episodes] == [5, 5, 2]
    assert [(e.meta["first_seq"], e.meta["last_seq"]) for e in episodes] == [(0, 4), (5, 9),
                                                                             (10, 11)]  # fmt: skip
    assert all(map(same, [t for e in episodes for t in e.transitions], steps))
    assert store.open_steps("a0") == 0


def test_sealed_batches_are_on_disk_before_they_are_sent(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    cfg = actor_config(free_endpoints(), spool, batch_steps=4, seal_every_s=60.0)
    actor = ActorLink(cfg, PLAIN)  # no learner
    for step in episode_steps(0, 10)[:9]:  # an open episode of 9 steps
        actor.add(step)
    # Two full batches sealed, and the 9th step pending.
    names = sorted(p.name for p in spool.glob("batch_*.bin"))
    assert names == ["batch_000000000000_000000000003.bin", "batch_000000000004_000000000007.bin"]
    assert (actor.steps_held, actor.steps_spooled, actor.steps_stored) == (9, 8, 0)
    actor._closing.set()  # the process dies here, without close()
    actor._dealer.close(linger=0)
    actor._sub.close(linger=0)


def test_pending_steps_are_sealed_within_seal_every_s(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    cfg = actor_config(free_endpoints(), spool, batch_steps=100, seal_every_s=0.0)
    actor = ActorLink(cfg, PLAIN)
    for step in episode_steps(0, 10)[:5]:
        actor.add(step)
    # Each add seals what is older than seal_every_s, but keeps the open episode's newest step.
    assert actor.steps_spooled == 4 and actor.steps_held == 5
    actor.end_episode()
    assert actor.steps_spooled == 5
    actor.close()


def test_pending_steps_are_sealed_on_time_while_the_actor_loop_waits(tmp_path: Path) -> None:
    cfg = actor_config(free_endpoints(), tmp_path / "spool", batch_steps=100, seal_every_s=0.05)
    actor = ActorLink(cfg, PLAIN)
    for step in episode_steps(0, 10)[:5]:
        actor.add(step)
    # The loop is paused (no add, no pump): the sealer thread still spools all but the newest.
    deadline = time.monotonic() + 5
    while actor.steps_spooled < 4:
        assert time.monotonic() < deadline, "pending steps were not sealed on time"
        time.sleep(0.01)
    assert actor.steps_spooled == 4 and len(list((tmp_path / "spool").glob("batch_*"))) == 1
    actor.close()
    assert actor.steps_spooled == 5


def test_a_clean_stop_puts_every_step_in_the_spool_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ep, spool = free_endpoints(), tmp_path / "spool"
    actor = ActorLink(actor_config(ep, spool, batch_steps=16), PLAIN)  # the learner is down
    sent = episode_steps(0, 7) + episode_steps(20, 9)[:5]  # one whole episode, one open
    for step in sent:
        actor.add(step)
    with caplog.at_level("INFO", logger="robot_rl.transport.actor_link"):
        actor.close()
    assert "0 steps stored by the learner this run, 12 held in the spool" in caplog.text
    learner = start_learner(ep, tmp_path / "store", Sink())
    restarted = ActorLink(actor_config(ep, spool), PLAIN)
    run_until(learner, restarted, lambda: restarted.unacknowledged_steps == 0)
    assert restarted.steps_stored == 12
    assert all(map(same, stored(tmp_path / "store"), sent))
    assert [len(e.transitions) for e in load_episodes(tmp_path / "store")] == [7, 5]
    restarted.close()
    learner.close()


CHILD = """
import sys, time
sys.path.insert(0, {root!r})
from robot_rl.transport.actor_link import ActorLink
from tests.transport.test_links import PLAIN, actor_config, episode_steps, free_endpoints
from pathlib import Path
actor = ActorLink(actor_config(free_endpoints(), Path({spool!r}), batch_steps=8,
                               seal_every_s=0.0), PLAIN)
for step in episode_steps(0, 20) + episode_steps(100, 20) + episode_steps(200, 30)[:7]:
    actor.add(step)
print("ready", actor.steps_spooled, flush=True)
time.sleep(600)
"""


@pytest.mark.integration
def test_a_kill_9_loses_at_most_the_unsealed_tail(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(CHILD).format(
        root=root, spool=str(spool))], stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        line = child.stdout.readline().split()
        assert line == ["ready", "46"]  # 20 + 20 + 6 of 7 (the open episode's newest pending)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    ep = free_endpoints()
    learner = start_learner(ep, tmp_path / "store", Sink())
    restarted = ActorLink(actor_config(ep, spool), PLAIN)
    for step in episode_steps(300, 3):  # a new episode closes the one the crash left open
        restarted.add(step)
    run_until(learner, restarted, lambda: restarted.unacknowledged_steps == 0)
    expected = episode_steps(0, 20) + episode_steps(100, 20) + episode_steps(200, 30)[:6]
    assert all(map(same, stored(tmp_path / "store"), expected + episode_steps(300, 3)))
    assert len(stored(tmp_path / "store")) == 46 + 3
    restarted.close()
    learner.close()


def test_a_failed_episode_write_is_counted_and_retried_with_nothing_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from robot_rl.transport import episode_store

    real = episode_store.save_episode
    calls = []

    def disk_full_once(*args: Any, **kwargs: Any) -> Path:
        calls.append(1)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(episode_store, "save_episode", disk_full_once)
    ep = free_endpoints()
    learner = start_learner(ep, tmp_path / "store", Sink())
    actor = ActorLink(actor_config(ep, tmp_path / "spool"), PLAIN)
    first = episode_steps(0, 3)
    for step in first:
        actor.add(step)
    run_until(learner, actor, lambda: actor.received == 2)
    assert learner.store_errors == 1 and actor.durable == -1  # the actor keeps its copies
    second = episode_steps(10, 4)
    for step in second:
        actor.add(step)
    run_until(learner, actor, lambda: actor.unacknowledged_steps == 0)
    assert all(map(same, stored(tmp_path / "store"), first + second))
    assert [len(e.transitions) for e in load_episodes(tmp_path / "store")] == [3, 4]
    actor.close()
    learner.close()


def test_a_corrupt_spool_batch_costs_only_its_episode_and_the_stream_goes_on(
    tmp_path: Path,
) -> None:
    ep, spool = free_endpoints(), tmp_path / "spool"
    actor = ActorLink(actor_config(ep, spool, batch_steps=4), PLAIN)  # the learner is down
    one, two, three = episode_steps(0, 6), episode_steps(10, 10), episode_steps(30, 3)
    for step in one + two + three:
        actor.add(step)
    actor.close()
    # Batches: 0-3, 4-5 | 6-9, 10-13, 14-15 | 16-18. The disk mangles 10-13.
    (spool / "batch_000000000010_000000000013.bin").write_bytes(b"\x05\x00\x00")
    learner = start_learner(ep, tmp_path / "store", Sink())
    restarted = ActorLink(actor_config(ep, spool), PLAIN)
    run_until(learner, restarted, lambda: restarted.unacknowledged_steps == 0)
    episodes = [e.transitions for e in load_episodes(tmp_path / "store")]
    assert [len(e) for e in episodes] == [6, 4, 3]  # episode two up to the lost batch
    assert all(map(same, [t for e in episodes for t in e], one + two[:4] + three))
    assert sorted(p.name for p in spool.glob("batch_*")) == [
        "batch_000000000010_000000000013.corrupt",
        "batch_000000000014_000000000015.orphan",
    ]
    restarted.close()
    learner.close()
