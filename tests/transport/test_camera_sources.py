"""The robot server's mirror cameras: a process renders only the cameras it is given, from the
next state the server sends, and stamps each frame when that state was sent (the arm was in that
pose then), so the state's trip, the render and the stream all count as latency."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from robot_rl.sim.mirror import body_poses
from robot_rl.sim.scene import SceneConfig, TwinScene

from robot_rl import cli
from robot_rl.transport.camera_sources import MirrorFrames, square_cameras, state_stamp_s
from tests.netutil import free_port

pytestmark = pytest.mark.timeout(120)


def remote(seq: int, meta: dict[str, Any], received_s: float, bodies: np.ndarray | None = None,
           q_rad: np.ndarray | None = None) -> Any:  # fmt: skip
    state = SimpleNamespace(q_rad=np.zeros(7) if q_rad is None else q_rad, gripper_width_m=0.04)
    return SimpleNamespace(state=state, meta=meta, received_s=received_s, seq=seq, bodies=bodies)


class ServerStates:
    """A robot client stand-in: its newest state is seq ``newest``; asked for one newer, it
    gives the next (sent ``age_s`` ago), as the server's next publication would."""

    def __init__(self, bodies: np.ndarray, q_rad: np.ndarray, age_s: float) -> None:
        self.bodies, self.q_rad, self.age_s = bodies, q_rad, age_s
        self.newest = 40
        self.asked: list[int] = []

    def latest(self, timeout_s: float = 0.0, newer_than_seq: int = 0) -> Any:
        self.asked.append(newer_than_seq)
        seq = max(self.newest, newer_than_seq + 1)
        self.newest = seq
        meta = {"published_wall_s": time.time() - self.age_s}
        return remote(seq, meta, time.monotonic() - self.age_s / 2, self.bodies, self.q_rad)


def test_a_mirror_renders_its_cameras_from_the_next_state_stamped_when_it_was_sent() -> None:
    source = TwinScene(SceneConfig(task="reach", cameras=square_cameras(16)))
    try:
        source.reset(3)
        q_rad = source.state().q_rad + 0.05  # not the pose the mirror starts in
        states = ServerStates(body_poses(source.twin), q_rad, age_s=0.2)
        wrist = MirrorFrames(states, "reach", 16, cameras=["wrist"])  # type: ignore[arg-type]
        try:
            assert wrist.camera_ids == ["wrist"]
            before = time.monotonic()
            (frame,) = list(wrist.next_frames())
            after = time.monotonic()
            assert frame.camera_id == "wrist" and frame.image.shape == (16, 16, 3)
            assert states.asked == [0, 40]  # the newest (seq 40), then the one after it
            # the state was sent 0.2 s before it was handed over: the stamp says so
            assert before - 0.2 - 0.01 <= frame.stamp_s <= after - 0.2 + 0.01
            np.testing.assert_allclose(wrist.mirror.scene.state().q_rad, q_rad, atol=1e-6)
            list(wrist.next_frames())
            assert states.asked[2:] == [41, 42]  # each round waits for a state it has not shown
        finally:
            wrist.close()
    finally:
        source.close()


def test_a_state_stamp_falls_back_to_its_arrival_and_never_follows_it() -> None:
    arrived = time.monotonic() - 1.0
    assert state_stamp_s(remote(1, {}, arrived)) == arrived  # an older server: no send time
    for bad in (float("nan"), True, "now", None):
        assert state_stamp_s(remote(1, {"published_wall_s": bad}, arrived)) == arrived
    # a sender whose clock runs ahead cannot make a frame younger than its state's arrival
    assert state_stamp_s(remote(1, {"published_wall_s": time.time() + 5.0}, arrived)) == arrived
    sent = state_stamp_s(remote(1, {"published_wall_s": time.time() - 2.0}, arrived))
    assert sent < arrived and sent == pytest.approx(time.monotonic() - 2.0, abs=0.05)


@pytest.mark.parametrize("cameras", [["roof"], [], ["front", "front"]])
def test_a_mirror_refuses_cameras_the_task_does_not_have(cameras: list[str]) -> None:
    with pytest.raises(
        ValueError, match=r"expected distinct names among \['front', 'wrist', 'side', 'top'\]"
    ):
        MirrorFrames(None, "reach", 16, cameras=cameras)  # type: ignore[arg-type]


def test_a_mirror_renders_the_opt_in_side_camera_when_named() -> None:
    source = MirrorFrames(None, "reach", 16, cameras=["side", "front"])  # type: ignore[arg-type]
    try:
        assert source.camera_ids == ["side", "front"]
        images = source.mirror.render()
        assert list(images) == ["side", "front"]
        assert all(image.shape == (16, 16, 3) for image in images.values())
        # two different viewpoints of one scene: the side image is not the front one
        assert not np.array_equal(images["side"], images["front"])
    finally:
        source.close()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--camera", "roof"], "expected distinct names"),
        (["--fps", "0"], "--fps 0.0; expected > 0"),
    ],
)
def test_mirror_twin_flags_are_checked(flags: list[str], message: str, caplog) -> None:
    port = free_port()
    argv = ["cameras", "mirror-twin", "--task", "reach", "--plaintext", "--commands",
            f"tcp://127.0.0.1:{port}", "--state", f"tcp://127.0.0.1:{port + 1}",
            "--endpoint", f"tcp://127.0.0.1:{free_port()}", "--duration", "0", *flags]  # fmt: skip
    assert cli.main(argv) == 2
    assert message in caplog.text


def robot_state_message(seq: int) -> list:
    from robot_rl.transport.codec import encode

    arrays = {"q": np.full(7, float(seq)), "dq": np.zeros(7), "tau": np.zeros(7),
              "ee_pos": np.zeros(3), "ee_quat": np.array([0.0, 0.0, 0.0, 1.0]),
              "ee_twist": np.zeros(6)}  # fmt: skip
    meta = {"gripper_width_m": 0.04, "command_age_s": 0.0, "stamp_s": float(seq),
            "published_wall_s": time.time()}  # fmt: skip
    return encode("robot_state", seq, meta, arrays)


def test_a_busy_robot_client_skips_a_backlog_of_states_to_the_newest() -> None:
    """A mirror's render holds its process for tens of ms while the server publishes at 200 Hz:
    the states that queue meanwhile are skipped, not decoded one by one behind the newest."""
    import zmq

    from robot_rl.transport.robot_server import RobotClient, RobotEndpoints
    from robot_rl.transport.security import SecurityConfig

    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.bind("inproc://states")
    client = RobotClient(RobotEndpoints("inproc://commands", "inproc://states"),
                         SecurityConfig(plaintext=True), context=context)  # fmt: skip
    try:
        deadline = time.monotonic() + 5
        while client.states_received == 0:  # PUB/SUB joins asynchronously: send until one lands
            assert time.monotonic() < deadline, "the client never received a state"
            pub.send_multipart(robot_state_message(1))
            time.sleep(0.01)
        client.latest(timeout_s=5.0)
        with client._cond:  # the receive thread stalls at its next state, as a busy process would
            received = client.states_received
            pub.send_multipart(robot_state_message(2))  # the one it stalls on
            while client.states_received == received:  # it took it and now waits for the lock
                assert time.monotonic() < deadline, "the client never took state 2"
                time.sleep(0.001)
            for seq in range(3, 9):  # the backlog: inproc queues them at once
                pub.send_multipart(robot_state_message(seq))
        newest = client.latest(timeout_s=5.0, newer_than_seq=7)
        assert newest.seq == 8 and newest.state.q_rad[0] == 8.0
        assert client.states_skipped >= 5  # seq 3..7 replaced by 8 before they were decoded
    finally:
        client.close()
        pub.close(linger=0)
        context.term()
