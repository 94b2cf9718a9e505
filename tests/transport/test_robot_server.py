"""The robot server over the twin on loopback: state stream, targets move the arm, bad targets
are rejected, requests honour deadlines, the watchdog holds then damps a silent arm, no message
ends the loop, a supervisor stops the arm when a tick fails, one client owns control and replayed
requests are refused."""

from __future__ import annotations

import secrets
import time

import msgpack
import numpy as np
import pytest
import zmq
from robot_rl.controllers.targets import CartesianTarget
from robot_rl.controllers.watchdog import ControlMode

from robot_rl.transport.codec import decode, encode
from robot_rl.transport.robot_server import KNOWN_OPS, RobotClient, RobotEndpoints
from tests.netutil import PLAIN, loopback_endpoints, served_twin

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def served():
    with served_twin("reach") as pair:
        yield pair


def test_state_streams_with_task_extras(served) -> None:
    _server, client = served
    first = client.latest(timeout_s=2.0)
    later = client.latest(timeout_s=2.0, newer_than_seq=first.seq + 10)
    assert later.seq > first.seq + 10
    assert later.state.q_rad.shape == (7,) and np.isfinite(later.state.ee_pos_m).all()
    assert later.features is not None and later.features.shape == (3,)  # reach: goal - TCP
    assert later.meta["success"] in (True, False)
    assert later.state.stamp_s > first.state.stamp_s


def test_targets_move_the_arm_and_the_watchdog_holds_then_damps(served) -> None:
    _server, client = served
    client.reset(seed=3)
    start = client.latest(timeout_s=2.0)
    goal = start.state.ee_pos_m + np.array([0.05, 0.0, 0.0])
    target = CartesianTarget(goal, start.state.ee_quat_xyzw)

    def moved_2cm() -> bool:  # a 20 Hz target stream until the arm has moved, at any speed
        assert client.send_target(target)
        time.sleep(0.05)
        return bool(np.linalg.norm(client.latest().state.ee_pos_m - start.state.ee_pos_m) > 0.02)

    assert wait_for(moved_2cm, timeout_s=30.0)
    assert client.latest(timeout_s=2.0).meta["mode"] == ControlMode.ACTIVE
    # Silence: hold after 100 ms, damp after 500 ms (sim time, which the server paces).
    seen = set()
    t_end = time.monotonic() + 30.0  # a bound for a very slow machine, not a speed check
    while time.monotonic() < t_end and ControlMode.DAMP not in seen:
        s = client.latest(timeout_s=1.0, newer_than_seq=client.latest().seq)
        seen.add(ControlMode(s.meta["mode"]))
    assert {ControlMode.HOLD, ControlMode.DAMP} <= seen
    assert s.meta["target_age_s"] >= 0.5 - 1e-6  # the watchdog damps from 500 ms


def test_bad_targets_and_messages_are_rejected_and_the_server_runs_on(served) -> None:
    server, client = served
    before = client.latest(timeout_s=2.0).meta["rejected_targets"]
    pose = client.latest().state
    client.send_target(CartesianTarget(np.array([np.nan, 0.0, 0.3]), pose.ee_quat_xyzw))
    client.send_target(CartesianTarget(pose.ee_pos_m, np.array([0.0, 0.0, 0.0, 3.0])))
    raw = zmq.Context.instance().socket(zmq.DEALER)
    raw.linger = 0
    raw.connect(server.commands_endpoint)
    raw.send_multipart([b"not a message"])
    raw.send_multipart(encode("robot_target", 1, {"gripper": "open"}))  # no pose arrays
    deadline = time.monotonic() + 10  # a bound for a slow machine
    while server.stats.rejected_messages < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    raw.close()
    assert server.stats.rejected_messages >= 3
    # NaN and a non-unit quaternion; the client's newest state may lag the stream, so wait for
    # the first one that counts them (bounded; ends as soon as it holds)
    assert wait_for(lambda: client.latest().meta["rejected_targets"] >= before + 2, 10.0)
    assert client.request("ping")["ok"]


def test_requests_have_deadlines_and_clear_refusals(served) -> None:
    _server, client = served
    assert client.reset(seed=7)["seed"] == 7
    with pytest.raises(RuntimeError, match="seed"):
        client.request("reset", options={"seed": "x"})
    with pytest.raises(RuntimeError, match="unknown op"):
        client.request("fly")
    # A request that is already late when the server reads it is refused, not run late.
    with RawClient(_server) as raw:
        assert "after its deadline" in raw.request({"op": "reset", "deadline": 1.0})["error"]
    assert client.request("status")["ticks"] > 0


def test_client_without_a_server_times_out_clearly() -> None:
    client = RobotClient(loopback_endpoints(), PLAIN)
    try:
        with pytest.raises(TimeoutError, match="robot server"):
            client.request("ping", timeout_s=0.2)
        with pytest.raises(TimeoutError, match="publishing"):
            client.latest(timeout_s=0.2)
    finally:
        client.close()


def test_a_target_can_change_the_stiffness_and_bad_gains_are_rejected(served) -> None:
    server, client = served
    pose = client.latest(timeout_s=2.0).state
    soft = np.array([300.0, 300.0, 300.0, 30.0, 30.0, 30.0])
    reference = server.backend.scene.loop.cartesian
    before_k = reference.gains.stiffness.copy()
    assert (before_k > 2 * soft).all()  # a real change to ramp through
    target = CartesianTarget(pose.ee_pos_m, pose.ee_quat_xyzw, stiffness=soft)
    client.send_target(target)
    # Sample the gains the law uses while the server ticks (the target streamed at 20 Hz keeps the
    # arm tracking): they must pass through values between the old and the new stiffness (a
    # first-order ramp of 50 ms), never jump, and arrive.
    samples = [before_k]
    deadline = time.monotonic() + 10  # a bound for a slow machine
    next_send = time.monotonic() + 0.05
    while time.monotonic() < deadline and not np.allclose(samples[-1], soft, rtol=1e-3):
        samples.append(reference.gains.stiffness.copy())
        time.sleep(0.002)  # leave the server thread the interpreter
        if time.monotonic() > next_send:
            client.send_target(target)
            next_send += 0.05
    k_x = np.array([k[0] for k in samples])
    np.testing.assert_allclose(samples[-1], soft, rtol=1e-3)
    assert (np.diff(k_x) <= 1e-9).all()  # monotone from the old toward the new value
    between = (k_x > soft[0] + 0.05 * (before_k[0] - soft[0])) & (
        k_x < before_k[0] - 0.05 * (before_k[0] - soft[0])
    )
    assert between.sum() >= 3, f"no ramp seen: {np.unique(k_x)}"
    before = client.latest().meta["rejected_targets"]
    bad = np.array([-1.0, 300.0, 300.0, 30.0, 30.0, 30.0])
    client.send_target(CartesianTarget(pose.ee_pos_m, pose.ee_quat_xyzw, stiffness=bad))
    deadline = time.monotonic() + 10  # a bound for a slow machine
    while time.monotonic() < deadline and client.latest().meta["rejected_targets"] == before:
        time.sleep(0.02)
    assert client.latest().meta["rejected_targets"] == before + 1


def test_joint_mode_request_switches_the_law_and_a_pose_target_switches_back(served) -> None:
    _, client = served
    client.reset(seed=1)
    home = client.latest(timeout_s=2.0).state.q_rad.copy()
    home[6] += 0.2
    assert client.request("joint_mode", q_rad=[float(v) for v in home])["ok"]
    deadline = time.monotonic() + 10  # a bound for a slow machine
    while time.monotonic() < deadline and client.latest().meta["law"] != "joint":
        time.sleep(0.02)
    assert client.latest().meta["law"] == "joint"
    with pytest.raises(RuntimeError, match="q_rad"):
        client.request("joint_mode", q_rad=[0.0, 1.0])
    pose = client.latest().state
    client.send_target(CartesianTarget(pose.ee_pos_m, pose.ee_quat_xyzw))
    deadline = time.monotonic() + 10  # a bound for a slow machine
    while time.monotonic() < deadline and client.latest().meta["law"] != "cartesian":
        time.sleep(0.02)
    assert client.latest().meta["law"] == "cartesian"


# -- hostile messages, the supervisor, control ownership, replays --------------------------------


class RawClient:
    """A DEALER that writes frames by hand, as a buggy or hostile client would."""

    def __init__(self, server, session: str | None = None) -> None:
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(server.commands_endpoint)
        self.session = session or secrets.token_hex(16)
        self.seq = 0

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def frames(self, msg_type: str, meta: dict, arrays: dict | None = None) -> list[bytes]:
        self.seq += 1
        meta = {"session": self.session, **meta}
        return [bytes(f) for f in encode(msg_type, self.seq, meta, arrays)]

    def send(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)

    def receive(self, timeout_s: float = 3.0) -> dict:
        assert self.sock.poll(int(timeout_s * 1000)), "no reply"
        return decode(self.sock.recv_multipart()).meta

    def request(self, meta: dict) -> dict:
        self.send(self.frames("request", {"deadline": time.time() + 5.0, **meta}))
        return self.receive()


def raw_header(**fields) -> bytes:
    base = {"v": 1, "type": "request", "seq": 1, "stamp": 0.0, "meta": {}, "arrays": []}
    base.update(fields)
    return msgpack.packb(base, use_bin_type=True)


def nested(depth: int) -> object:
    value: object = "op"
    for _ in range(depth):
        value = [value]
    return value


def wait_for(predicate, timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_no_single_message_stops_the_server(served) -> None:
    server, client = served
    reply = client.reset(seed=2)
    tcp0 = client.latest(timeout_s=2.0, newer_than_seq=reply["state_seq"]).state.ee_pos_m.copy()
    rejected0 = server.stats.rejected_messages
    client.request("release")  # the raw client below owns control, so its requests get checked
    with RawClient(server) as raw:
        assert raw.request({"op": "acquire"})["ok"]
        # The one-message kills, each straight at the decoder ...
        for frames in (
            [raw_header(arrays=[["a", "uint8", [0, 2**63 - 1]]]), b""],
            [raw_header(arrays=[["a", ["uint8"], [1]]]), b"\x00"],
            [raw_header(type=["request"])],
            [raw_header(meta={"op": nested(1000)})],
        ):
            raw.send(frames)
        assert wait_for(lambda: server.stats.rejected_messages >= rejected0 + 4)
        # ... and the ones that reached the request handler: each gets a short error reply.
        reply = raw.request({"op": "reset", "options": 5})
        assert not reply["ok"] and "options=5" in reply["error"]
        reply = raw.request({"op": "\x00" * 17_000})
        assert not reply["ok"] and "unknown op" in reply["error"]
        assert len(reply["error"]) < 300  # the 17 000 characters are not echoed back
        for bad in ({"op": "joint_mode", "q_rad": ["a"] * 7}, {"op": "joint_mode", "q_rad": 5},
                    {"op": "reset", "options": {"seed": 3, "x": 1}},
                    {"op": "reset", "options": {"seed": -1}}, {"op": "ping", "deadline": "soon"},
                    {"op": "ping", "deadline": None}):  # fmt: skip
            reply = raw.request(bad)
            assert reply["ok"] is False and reply["error"], bad
        raw.request({"op": "release"})
    assert server.alive and server.error is None
    ticks = client.request("status")["ticks"]
    assert wait_for(lambda: client.request("status")["ticks"] > ticks + 50)
    # the arm was never driven by any of it
    np.testing.assert_allclose(client.latest().state.ee_pos_m, tcp0, atol=2e-3)


def test_requests_counters_are_bounded_by_the_known_ops(served) -> None:
    server, _client = served
    other0 = server.stats.requests["other"]
    with RawClient(server) as raw:
        for i in range(200):
            raw.send(raw.frames("request", {"op": f"op-{i}", "deadline": time.time() + 5}))
        for _ in range(200):
            assert "unknown op" in raw.receive()["error"]
    assert set(server.stats.requests) == {*KNOWN_OPS, "other"}
    assert server.stats.requests["other"] == other0 + 200


def test_a_failing_tick_latches_a_stop_and_the_loop_runs_on(served, monkeypatch) -> None:
    server, client = served
    client.reset(seed=4)
    backend = server.backend
    real_tick = backend.tick
    failures = {"left": 5}

    def flaky_tick():
        if failures["left"] > 0:
            failures["left"] -= 1
            raise RuntimeError("injected: the robot did not answer")
        return real_tick()

    before = server.stats.tick_failures
    monkeypatch.setattr(backend, "tick", flaky_tick)
    assert wait_for(lambda: failures["left"] == 0)
    assert server.stats.tick_failures == before + 5

    # The newest state the client has received may predate the failures on a slow machine (its
    # subscriber lags the stream): wait for the first state published after them that shows the
    # damping (bounded; ends as soon as it holds), then check that the stop is latched in it.
    def damping_after_the_failures() -> bool:
        meta = client.latest(timeout_s=2.0).meta
        return meta["tick_failures"] >= before + 5 and meta["mode"] == ControlMode.DAMP

    assert wait_for(damping_after_the_failures, timeout_s=10.0)
    assert client.latest().meta["stopped"] is True
    ticks = server.stats.ticks
    assert wait_for(lambda: server.stats.ticks > ticks + 50)  # still ticking: damping the arm
    # a stopped arm refuses targets until its owner clears the stop
    pose = client.latest().state
    rejected = server.stats.rejected_messages
    client.send_target(CartesianTarget(pose.ee_pos_m + 0.03, pose.ee_quat_xyzw))
    assert wait_for(lambda: server.stats.rejected_messages > rejected)
    client.software_stop(False)
    goal = pose.ee_pos_m + np.array([0.0, 0.03, 0.0])

    def reached() -> bool:  # keeps the stream alive while waiting; holds at any machine speed
        client.send_target(CartesianTarget(goal, pose.ee_quat_xyzw))
        time.sleep(0.05)
        return bool(np.linalg.norm(client.latest().state.ee_pos_m - goal) < 5e-3)

    assert wait_for(reached, timeout_s=30.0)


def test_a_failing_serving_loop_is_restarted_with_the_arm_stopped(served, monkeypatch) -> None:
    server, client = served
    real_drain = server._drain
    failures = {"left": 1}

    def broken_drain(max_messages: int) -> None:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise RuntimeError("injected: a bug in the serving loop")
        real_drain(max_messages)

    restarts = server.stats.loop_restarts
    monkeypatch.setattr(server, "_drain", broken_drain)
    assert wait_for(lambda: server.stats.loop_restarts == restarts + 1)
    assert server.backend.status()["stopped"] is True  # latched before the loop restarted
    # States published before the failure may still be queued at the client: wait for the news.
    assert wait_for(lambda: client.latest().meta["stopped"] is True, timeout_s=10.0)
    assert server.alive and server.error is None
    assert client.request("ping")["ok"]
    client.software_stop(False)
    assert wait_for(lambda: client.latest().meta["stopped"] is False, timeout_s=10.0)


def test_only_the_owner_moves_the_arm_or_clears_a_stop(served) -> None:
    server, owner = served
    reply = owner.reset(seed=5)  # the owner-only reset makes this client the owner
    assert owner.request("status")["owner"] == "you"
    pose = owner.latest(timeout_s=2.0, newer_than_seq=reply["state_seq"]).state
    other = RobotClient(RobotEndpoints(server.commands_endpoint, server.state_endpoint), PLAIN)
    try:
        assert other.request("status")["owner"] == "other"
        assert other.request("ping")["ok"]
        refused0 = server.stats.refused_not_owner
        for op, meta in (("clear_stop", {}), ("reset", {"options": {"seed": 1}}),
                         ("joint_mode", {"q_rad": [float(v) for v in pose.q_rad]}),
                         ("acquire", {})):  # fmt: skip
            with pytest.raises(RuntimeError, match="another client holds control"):
                other.request(op, **meta)
        # its targets and heartbeats are dropped: the arm does not move
        far = CartesianTarget(pose.ee_pos_m + np.array([0.1, 0.0, 0.0]), pose.ee_quat_xyzw)
        for _ in range(10):
            other.send_target(far)
            other.keep_alive()
            owner.request("ping")  # the owner is alive throughout
            time.sleep(0.03)
        assert wait_for(lambda: server.stats.refused_not_owner >= refused0 + 4 + 20)
        np.testing.assert_allclose(owner.latest().state.ee_pos_m, pose.ee_pos_m, atol=2e-3)
        # anyone may stop the arm; only the owner may release it
        assert other.software_stop(True)["ok"]
        assert wait_for(lambda: owner.latest().meta["stopped"] is True)
        with pytest.raises(RuntimeError, match="another client holds control"):
            other.software_stop(False)
        assert owner.latest(timeout_s=1.0, newer_than_seq=owner.latest().seq + 2).meta["stopped"]
        owner.software_stop(False)
        assert wait_for(lambda: owner.latest().meta["stopped"] is False)
        # once the owner releases control, the other client may take it
        owner.request("release")
        assert other.request("acquire")["ok"]
        assert other.request("status")["owner"] == "you"
        other.request("release")
    finally:
        other.close()


def test_replayed_requests_and_targets_are_refused(served) -> None:
    server, _client = served
    with RawClient(server) as raw:
        first = raw.frames("request", {"op": "ping", "deadline": time.time() + 5})
        raw.send(first)
        assert raw.receive()["ok"]
        replays = server.stats.replayed
        raw.send(first)  # byte for byte the same message again
        reply = raw.receive()
        assert not reply["ok"] and "replayed" in reply["error"]
        older = raw.frames("request", {"op": "ping", "deadline": time.time() + 5})
        newer = raw.frames("request", {"op": "ping", "deadline": time.time() + 5})
        raw.send(newer)
        assert raw.receive()["ok"]
        raw.send(older)  # a lower seq than one already seen
        assert "replayed" in raw.receive()["error"]
        assert server.stats.replayed == replays + 2
        no_session = [bytes(f) for f in encode("request", 99, {"op": "ping", "deadline": 1e12})]
        raw.send(no_session)
        assert "session" in raw.receive()["error"]
