"""The external wrench from a Franka's state to the env's observation: the Franka backend publishes
franky's ``O_F_ext_hat_K`` in the robot server's state meta (``ext_wrench``), a non-finite
estimate is left out, and a ``RemoteEnv`` with ``env.remote.proprio_extras: [wrench]`` carries
it in its state vector in the reset frame. franky is an injected fake (no simulator)."""

from __future__ import annotations

import time
import types

import numpy as np
import pytest
from robot_rl.hardware.franka import FrankaConfig
from robot_rl.hardware.franka_backend import FrankaBackend, ResetConfig

from robot_rl.envs.arm_env import PROPRIO_DIM
from robot_rl.envs.config import EnvConfig, RemoteRobotConfig
from robot_rl.envs.remote_env import WRENCH_META_KEY, RemoteEnv
from robot_rl.interfaces import EXT_WRENCH_META_KEY, wrench_meta
from robot_rl.transport.robot_server import RobotClient, RobotServer
from tests.netutil import PLAIN, loopback_endpoints

pytestmark = pytest.mark.timeout(60)

WRENCH = [4.0, -2.0, 12.0, 0.5, 0.25, -1.0]  # N, N, N, Nm, Nm, Nm (base frame)


class _Pose:
    translation = np.array([0.45, 0.0, 0.3])
    quaternion = np.array([1.0, 0.0, 0.0, 0.0])  # xyzw: 180 deg about x (gripper down)


class _State:
    def __init__(self) -> None:
        self.q = np.array([0.0, -0.5, 0.0, -2.0, 0.0, 1.5, 0.7])
        self.dq = np.zeros(7)
        self.tau_J = np.zeros(7)
        self.O_T_EE = _Pose()
        self.O_F_ext_hat_K = np.array(WRENCH)
        self.robot_mode = "RobotMode.Move"
        self.current_errors = ""


class _Model:
    def zero_jacobian(self, frame, state):
        return np.hstack([np.eye(6), np.zeros((6, 1))])

    def mass(self, state):
        return np.eye(7)

    def coriolis(self, state):
        return np.zeros(7)


class _Motion:
    def __init__(self, **kwargs) -> None:
        self.torques = 0

    def set_torque(self, tau) -> None:
        self.torques += 1


class _Robot:
    def __init__(self, ip: str, realtime_config=None) -> None:
        self.state = _State()
        self.model = _Model()
        self.has_errors = False
        self.is_in_control = False

    def set_collision_behavior(self, torque, force) -> None: ...

    def set_load(self, mass, com, inertia) -> None: ...

    def move(self, motion, asynchronous=False) -> None:
        self.is_in_control = True

    def join_motion(self, timeout_s) -> None: ...

    def poll_motion(self) -> bool:
        return True


def _franky() -> types.ModuleType:
    m = types.ModuleType("franky_fake")
    m.Robot = _Robot
    m.RealtimeConfig = types.SimpleNamespace(Enforce="enforce", Ignore="ignore")
    m.Frame = types.SimpleNamespace(EndEffector="EE")
    m.SimpleTorqueMotion = m.TorqueStopMotion = _Motion
    return m


def test_the_meta_key_is_one_name_and_a_non_finite_wrench_never_goes_out() -> None:
    assert WRENCH_META_KEY == EXT_WRENCH_META_KEY == "ext_wrench"
    assert wrench_meta(np.array(WRENCH)) == {"ext_wrench": WRENCH}
    assert wrench_meta([0.0, np.nan, 0.0, 0.0, 0.0, 0.0]) == {}
    assert wrench_meta([np.inf, 0.0, 0.0, 0.0, 0.0, 0.0]) == {}
    with pytest.raises(ValueError):
        wrench_meta([1.0, 2.0, 3.0])  # not 6 values


def test_a_franka_wrench_reaches_the_remote_envs_state_in_the_reset_frame() -> None:
    config = FrankaConfig(robot_ip="10.0.0.2", realtime="ignore", gripper=False)
    backend = FrankaBackend(config, reset_config=ResetConfig(mode="operator"),
                            franky_module=_franky())  # fmt: skip
    endpoints = loopback_endpoints()
    backend.start()
    server = RobotServer(backend, endpoints, PLAIN)
    server.start()
    client = RobotClient(endpoints, PLAIN)
    env = None
    try:
        first = client.latest(timeout_s=10.0)
        assert first.meta[EXT_WRENCH_META_KEY] == WRENCH
        remote = RemoteRobotConfig(commands=endpoints.commands, state=endpoints.state,
                                   plaintext=True, episode_s=1.0, proprio_extras=("wrench",),
                                   wrench_scale_n=10.0)  # fmt: skip
        env = RemoteEnv(EnvConfig(task="insert_peg", obs="state", remote=remote), client)
        assert env.observation_space["state"].shape == (PROPRIO_DIM + 6,)
        obs, _ = env.reset(seed=0)
        # The reset frame is the TCP's, 180 deg about x: y and z flip; divided by 10 N (Nm).
        expected = [0.4, 0.2, -1.2, 0.05, -0.025, 0.1]
        np.testing.assert_allclose(obs["state"][PROPRIO_DIM:], expected, rtol=1e-6)

        # A non-finite estimate is left out of the state; the env repeats the last good one.
        backend.robot.franky_robot.state.O_F_ext_hat_K = np.array([np.nan, 0, 0, 0, 0, 0.0])
        seq = client.latest().seq
        deadline = time.monotonic() + 10.0  # a bound for a slow machine; ends when it holds
        state = client.latest(timeout_s=2.0, newer_than_seq=seq)
        while EXT_WRENCH_META_KEY in state.meta and time.monotonic() < deadline:
            state = client.latest(timeout_s=2.0, newer_than_seq=state.seq)
        assert EXT_WRENCH_META_KEY not in state.meta and server.stats.publish_errors == 0
        obs, *_, info = env.step(np.zeros(env.action_space.shape, np.float32))
        np.testing.assert_allclose(obs["state"][PROPRIO_DIM:], expected, rtol=1e-6)
        assert info["wrench_missing"] >= 1
    finally:
        if env is not None:
            env.close()
        else:
            client.close()
        server.stop()
        backend.close()


def test_the_status_counts_the_control_loops_own_updates_for_the_console() -> None:
    """The console's loop rate comes from the backend's ``loop_ticks`` (torque updates sent), which
    never goes back, not even when a benchmark clears its timing window."""
    config = FrankaConfig(robot_ip="10.0.0.2", realtime="ignore", gripper=False)
    backend = FrankaBackend(config, reset_config=ResetConfig(mode="operator"),
                            franky_module=_franky())  # fmt: skip
    backend.start()
    try:
        status = backend.status()
        assert status["loop_hz_target"] == 1000.0  # torque mode: one update per 1 ms period
        deadline = time.monotonic() + 10.0  # a bound for a slow machine; ends when it holds
        while backend.status()["loop_ticks"] < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        before = backend.status()["loop_ticks"]
        assert before >= 20
        backend.timing.clear()
        assert backend.status()["loop_ticks"] >= before
    finally:
        backend.close()
