"""The env over a robot server on loopback: same spaces and state as the in-process env, actions
move the arm in the reset frame, and the scripted expert solves reach through the network."""

from __future__ import annotations

import numpy as np
import pytest

from robot_rl.envs.remote_env import RemoteEnv
from robot_rl.envs.twin_env import TwinEnv, TwinEnvConfig
from tests.netutil import free_port, served_twin

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def remote():
    with served_twin("reach") as (_, client):
        yield RemoteEnv(TwinEnvConfig(task="reach", obs="state"), client)


def test_spaces_match_the_in_process_env(remote) -> None:
    env = remote
    local = TwinEnv(TwinEnvConfig(task="reach", obs="state"))
    assert env.observation_space == local.observation_space
    assert env.action_space == local.action_space
    local.close()
    obs, _ = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    np.testing.assert_allclose(obs["state"][:6], 0.0, atol=0.05)  # at the reset pose


def test_actions_move_the_tcp_along_the_reset_frame(remote) -> None:
    env = remote
    env.reset(seed=2)
    xs = []
    for _ in range(4):
        obs, _, terminated, _, info = env.step(np.array([1.0, 0, 0, 0], np.float32))
        assert not terminated  # seed 2's goal is off this path
        xs.append(float(obs["state"][0]))
    # State position is in xyz steps along the reset frame. How far the arm gets in four policy
    # periods depends on how fast the server's loop runs on this machine; what holds at any
    # speed: it moves along +x only, never backwards, and never past one step per action (each
    # target is one step ahead of the state it was computed from).
    assert np.all(np.diff(xs) >= -0.02), xs
    assert 0.2 < xs[-1] < 4.5, xs
    sideways = 0.1 + 0.25 * xs[-1]
    assert abs(obs["state"][1]) < sideways and abs(obs["state"][2]) < sideways
    assert info["state_age_s"] < 0.5
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan, 0, 0, 0], np.float32))


def test_the_expert_solves_reach_through_the_server(remote) -> None:
    env = remote
    obs, _ = env.reset(seed=4)
    for _ in range(env.max_episode_steps):
        goal_offset = obs["state"][13:16]  # goal - TCP in xyz steps, reset frame
        action = np.append(np.clip(goal_offset, -0.8, 0.8), 0.0).astype(np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    assert terminated and reward == 1.0 and info["success"]


def test_robot_server_cli_serves_for_a_duration(capsys) -> None:
    from robot_rl import cli

    argv = ["robot-server", "--task", "reach", "--plaintext", "--duration", "0.5",
            "--commands", f"tcp://127.0.0.1:{free_port()}",
            "--state", f"tcp://127.0.0.1:{free_port()}"]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "reach twin on" in out and "ticks" in out
    assert cli.main(["robot-server", "--task", "stack", "--plaintext"]) == 2
