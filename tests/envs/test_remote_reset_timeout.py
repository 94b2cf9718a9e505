"""A real arm's reset through ``RemoteEnv`` waits ``env.remote.server_reset_timeout_s`` for the
robot server's reply (homing takes seconds; the client's 5 s default would give up first)."""

from __future__ import annotations

import time

import numpy as np

from robot_rl.envs.config import EnvConfig, RemoteRobotConfig
from robot_rl.envs.remote_env import RemoteEnv
from robot_rl.interfaces import RobotState
from robot_rl.transport.robot_server import RemoteState


class _Client:
    """Just what the env calls on a robot client: the newest state and a reset request."""

    def __init__(self) -> None:
        self.reset_timeouts: list[float] = []
        self.seq = 1

    def latest(self, timeout_s: float = 0.0, newer_than_seq: int = 0) -> RemoteState:
        state = RobotState(np.zeros(7), np.zeros(7), np.zeros(7), np.array([0.5, 0.0, 0.3]),
                           np.array([1.0, 0.0, 0.0, 0.0]), np.zeros(6), 0.08, 0.0, 0.0)  # fmt: skip
        self.seq = max(self.seq, newer_than_seq + 1)
        return RemoteState(state, {"mode": 0}, None, time.monotonic(), self.seq, None)

    def reset(self, seed: int, timeout_s: float = 5.0) -> dict:
        self.reset_timeouts.append(timeout_s)
        return {"ok": True, "state_seq": self.seq}

    def close(self) -> None: ...


def test_the_reset_request_waits_the_configured_server_reset_timeout() -> None:
    client = _Client()
    remote = RemoteRobotConfig(plaintext=True, episode_s=1.0)
    env = RemoteEnv(EnvConfig(task="wipe_table", obs="state", remote=remote), client)
    env.reset(seed=0)
    assert client.reset_timeouts == [35.0]  # the documented default: two 15 s moves + 5 s
    slow = RemoteRobotConfig(plaintext=True, episode_s=1.0, server_reset_timeout_s=45.0)
    RemoteEnv(EnvConfig(task="wipe_table", obs="state", remote=slow), client).reset(seed=1)
    assert client.reset_timeouts == [35.0, 45.0]
