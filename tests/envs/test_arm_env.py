"""The one arm env core over a fake backend (actions, gripper, time limit, reward sources,
wrench), a real task defined by config alone through a robot server, and the env config's
refusals."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from robot_rl.controllers.targets import CartesianTarget

from robot_rl.envs.arm_env import PROPRIO_DIM, ArmEnv, arm_env
from robot_rl.envs.config import EnvConfig, RemoteRobotConfig
from robot_rl.envs.remote_env import RemoteEnv
from robot_rl.interfaces import RobotState
from tests.netutil import served_twin

pytestmark = pytest.mark.timeout(120)


class PointArm:
    """A TCP that is wherever it was last sent: an ArmBackend without physics."""

    def __init__(self, success_after: int | None = None, wrench: np.ndarray | None = None):
        self.pos = np.array([0.5, 0.0, 0.2])
        self.width, self.applied, self.stopped = 0.08, 0, None
        self.success_after, self._wrench = success_after, wrench
        self.gripper_commands: list[Any] = []

    def reset(self, seed: int) -> None:
        self.pos, self.applied = np.array([0.5, 0.0, 0.2]), 0

    def apply(self, target: CartesianTarget, gripper: Any) -> None:
        self.pos = np.asarray(target.pos_m, float).copy()
        self.applied += 1
        self.gripper_commands.append(gripper)

    def state(self) -> RobotState:
        z = np.zeros(7)
        return RobotState(z, z, z, self.pos.copy(), np.array([0.0, 0.0, 0.0, 1.0]), np.zeros(6),
                          self.width, 0.0, 0.0)  # fmt: skip

    def features(self) -> None:
        return None

    def success(self) -> bool:
        return self.success_after is not None and self.applied >= self.success_after

    def frames(self) -> dict[str, np.ndarray]:
        return {"front": np.full((8, 8, 3), self.applied, np.uint8)}

    def wrench(self) -> np.ndarray | None:
        return self._wrench

    def info(self) -> dict[str, Any]:
        return {"backend": "point"}

    def software_stop(self, stop: bool) -> None:
        self.stopped = stop

    def close(self) -> None:
        pass


def _config(**changes: Any) -> EnvConfig:
    return EnvConfig(**{"task": "reach", "obs": "state", "xyz_step_m": 0.02, **changes})


def test_actions_become_clipped_targets_and_gripper_commands() -> None:
    arm = PointArm()
    env = ArmEnv(_config(), arm, max_episode_steps=50)
    env.reset(seed=0)
    obs, *_ = env.step(np.array([1.0, -0.5, 0.0, 0.0], np.float32))
    np.testing.assert_allclose(arm.pos, [0.52, -0.01, 0.2])  # 1 and -0.5 steps of 2 cm
    np.testing.assert_allclose(obs["state"][:3], [1.0, -0.5, 0.0], atol=1e-6)  # in steps
    for _ in range(30):  # pushing up past the box stops at its top
        env.step(np.array([0.0, 0.0, 1.0, 0.0], np.float32))
    assert arm.pos[2] == pytest.approx(0.45)
    penalties = []
    for gripper in (-1.0, -1.0, 0.0, 1.0):  # close (a toggle), hold it, stay, open (a toggle)
        penalties.append(env.step(np.array([0, 0, 0, gripper], np.float32))[4]["gripper_penalty"])
    assert arm.gripper_commands[-4:] == ["close", "close", None, "open"]
    assert penalties == [0.0, 0.0, 0.0, 0.0]  # no penalty configured
    env = ArmEnv(_config(gripper_penalty=0.1), PointArm(), max_episode_steps=50)
    env.reset(seed=0)
    penalties = [env.step(np.array([0, 0, 0, g], np.float32))[4]["gripper_penalty"]
                 for g in (-1.0, -1.0, 0.0, 1.0)]  # fmt: skip
    assert penalties == [0.1, 0.0, 0.0, 0.1]
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan, 0, 0, 0], np.float32))
    with pytest.raises(ValueError, match="4 finite values"):
        env.step(np.zeros(3, np.float32))


def test_success_terminates_and_the_time_limit_truncates() -> None:
    env = ArmEnv(_config(), PointArm(success_after=3), max_episode_steps=5)
    env.reset(seed=0)
    results = [env.step(np.zeros(4, np.float32))[1:4] for _ in range(3)]
    assert results == [(0.0, False, False), (0.0, False, False), (1.0, True, False)]
    env = ArmEnv(_config(), PointArm(), max_episode_steps=5)
    env.reset(seed=0)
    results = [env.step(np.zeros(4, np.float32))[1:4] for _ in range(5)]
    assert results[-1] == (0.0, False, True) and not any(r[2] for r in results[:-1])


class CountingDetector:
    """Fires on a frame whose pixels are >= 2 (the PointArm's frames count its steps)."""

    def __init__(self) -> None:
        self.resets = 0
        self.seen: list[int] = []

    def reset(self) -> None:
        self.resets += 1

    def step(self, frames: dict[str, np.ndarray], gate: bool = True) -> tuple[bool, float]:
        self.seen.append(int(frames["front"][0, 0, 0]))
        return self.seen[-1] >= 2, 0.9 if self.seen[-1] >= 2 else 0.1


def test_reward_sources_detector_and_marks() -> None:
    detector = CountingDetector()
    env = ArmEnv(_config(), PointArm(success_after=1), max_episode_steps=9, detector=detector,
                 reward_source="detector")  # fmt: skip
    env.reset(seed=0)
    first = env.step(np.zeros(4, np.float32))
    second = env.step(np.zeros(4, np.float32))
    # The backend's success (step 1) is reported, but the detector decides (step 2).
    assert first[1:3] == (0.0, False) and first[4]["success"]
    assert second[1:3] == (1.0, True) and second[4]["success_probability"] == 0.9
    assert detector.resets == 1 and detector.seen == [1, 2]
    marks = ArmEnv(_config(), PointArm(success_after=1), max_episode_steps=2,
                   reward_source="marks")  # fmt: skip
    marks.reset(seed=0)
    assert [marks.step(np.zeros(4, np.float32))[1:4] for _ in range(2)] == [
        (0.0, False, False), (0.0, False, True)]  # fmt: skip
    with pytest.raises(ValueError, match="no detector"):
        ArmEnv(_config(), PointArm(), max_episode_steps=2, reward_source="detector")


def test_the_external_wrench_enters_the_state_in_the_reset_frame() -> None:
    wrench = np.array([5.0, 0.0, -20.0, 0.0, 1.0, 0.0])
    env = ArmEnv(_config(), PointArm(wrench=wrench), max_episode_steps=5, wrench=True,
                 wrench_scale_n=10.0)  # fmt: skip
    obs, _ = env.reset(seed=0)
    assert env.observation_space["state"].shape == (PROPRIO_DIM + 6,)
    np.testing.assert_allclose(obs["state"][PROPRIO_DIM:], [0.5, 0.0, -2.0, 0.0, 0.1, 0.0])


def test_the_env_config_refuses_what_it_cannot_run(tmp_path) -> None:
    remote = RemoteRobotConfig(plaintext=True)
    with pytest.raises(ValueError, match="episode_s"):
        EnvConfig(task="insert_plug", remote=remote)
    with pytest.raises(ValueError, match=r"a real task needs env\.remote"):
        EnvConfig(task="insert_plug")
    missing = str(tmp_path / "nope.json")
    with pytest.raises(ValueError, match=r"env.reward_model=.*nope.json.*does not exist"):
        EnvConfig(task="reach", reward_model=missing)
    with pytest.raises(ValueError, match=r"needs env\.reward_model"):
        EnvConfig(task="reach", remote=RemoteRobotConfig(reward="detector"))
    model = tmp_path / "probe.json"
    model.write_text("{}")
    with pytest.raises(ValueError, match="ignores it"):  # no longer silently ignored
        EnvConfig(task="reach", reward_model=str(model), remote=remote)
    with pytest.raises(ValueError, match="proprio_extras"):
        RemoteRobotConfig(proprio_extras=("torques",))
    with pytest.raises(ValueError, match="reward"):
        RemoteRobotConfig(reward="sometimes")
    with pytest.raises(ValueError, match="box_low_m"):
        EnvConfig(box_low_m=(0.3, 0.3, 0.0), box_high_m=(0.7, 0.3, 0.4))


def test_make_env_gives_a_remote_env_its_detector(monkeypatch, tmp_path) -> None:
    from robot_rl.envs import remote_env, twin_env

    model = tmp_path / "probe.json"
    model.write_text("{}")
    detector = CountingDetector()
    monkeypatch.setattr(twin_env, "load_env_detector", lambda config: detector)
    got = {}
    monkeypatch.setattr(remote_env, "connect_remote_env",
                        lambda config, det: got.setdefault("detector", det))  # fmt: skip
    config = EnvConfig(
        task="reach",
        obs="state",
        reward_model=str(model),
        remote=RemoteRobotConfig(reward="both", camera_endpoints=("tcp://x:1",)),
    )
    twin_env.make_env(config)
    assert got["detector"] is detector


def test_a_real_task_defined_by_config_alone_runs_through_a_robot_server() -> None:
    """A task the twin does not know, over the twin's robot server: proprioception only, its
    own episode length, a randomized reset pose it drives to, and reward from the marks only
    (the server's success flag is not this task's)."""
    remote = RemoteRobotConfig(plaintext=True, episode_s=0.5, reset_pos_m=(0.45, 0.05, 0.3),
                               reset_noise_m=(0.02, 0.02, 0.0), reset_tolerance_m=0.01,
                               reset_timeout_s=30.0, reward="marks")  # fmt: skip
    # reset_timeout_s: a loaded machine runs the twin slower than real time; it ends on arrival
    config = EnvConfig(task="wipe_table", obs="state", remote=remote, cameras=("side",))
    with served_twin("reach") as (_, client):
        env = RemoteEnv(config, client)
        assert env.observation_space["state"].shape == (PROPRIO_DIM,)
        assert env.max_episode_steps == 5 and arm_env(env) is env
        for seed in (1, 2):
            env.reset(seed=seed)
            pos = env.robot_state().ee_pos_m
            assert np.all(np.abs(pos[:2] - [0.45, 0.05]) <= 0.02 + 0.01), pos
            assert abs(pos[2] - 0.3) <= 0.01
        steps = [env.step(np.zeros(4, np.float32))[1:4] for _ in range(5)]
        assert steps == [(0.0, False, False)] * 4 + [(0.0, False, True)]
