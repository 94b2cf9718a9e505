"""The arm env (``envs.arm_env``) over a robot client: the same policy runs against a robot
server, local or across the network (the twin served by ``robot-rl robot-server``, or a real
arm's server), with camera frames from camera publishers.

``RobotClientBackend`` is the ``ArmBackend``: time is the wall clock. Each step sends the target,
a heartbeat half a period later (so the server's 100 ms watchdog never sees a 10 Hz stream as
stalled, without restarting the reference) and returns the newest state at the next policy tick;
``interrupt_step`` cuts the wait short when the operator acts. A task the twin knows borrows its
episode length and gripper at reset, and in state mode needs the server's task features (a sim
server sends them); a real task is defined by ``env.remote`` alone: its episode length, a reset
pose with a random offset (driven to after the server's reset), the external wrench in the state
and the reward source (the server's success flag, a detector, the operator's marks, or both).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import numpy as np

from robot_rl.controllers.targets import CartesianTarget
from robot_rl.envs.arm_env import ArmEnv, Detector, ResetFrame
from robot_rl.envs.config import EnvConfig, RemoteRobotConfig
from robot_rl.interfaces import EXT_WRENCH_META_KEY, RobotState
from robot_rl.sim.tasks import TASKS, GripperAction, make_task
from robot_rl.transport.camera_stream import CameraSubscriber
from robot_rl.transport.robot_server import RemoteState, RobotClient

WRENCH_META_KEY = EXT_WRENCH_META_KEY  # (6,) N and Nm, base frame, in the state message's meta


class RobotClientBackend:
    """A robot server and camera publishers as an ``ArmBackend`` (see the module docstring)."""

    def __init__(
        self,
        config: EnvConfig,
        client: RobotClient,
        cameras: CameraSubscriber | None = None,
        state_timeout_s: float = 1.0,
        max_skew_s: float = 0.05,
    ) -> None:
        self.config, self.client, self.cameras = config, client, cameras
        self.remote = config.remote or RemoteRobotConfig()
        self.state_timeout_s, self.max_skew_s = state_timeout_s, max_skew_s
        self.latest: RemoteState = client.latest(timeout_s=state_timeout_s)
        self._next_tick = time.monotonic()
        self._interrupt = threading.Event()
        self._rng = np.random.default_rng(0)
        self._wrench: np.ndarray | None = None
        self.wrench_missing = 0  # states whose ext_wrench was absent or malformed

    def interrupt_step(self) -> None:
        """Cut the current step's wait short (from any thread)."""
        self._interrupt.set()

    def reset(self, seed: int) -> None:
        reply = self.client.reset(seed, timeout_s=self.remote.server_reset_timeout_s)
        # The first state after a reset gets the reset's allowance too (it ends on arrival): a
        # loaded machine has delayed it past the 1 s a step allows (franky-sim session test).
        self.latest = self.client.latest(
            max(self.state_timeout_s, self.remote.server_reset_timeout_s),
            newer_than_seq=reply["state_seq"],
        )
        if self.remote.reset_pos_m is not None:
            self._rng = np.random.default_rng(seed)
            self._move_to_reset_pose()
        self._next_tick = time.monotonic() + self.config.policy_period_s

    def _move_to_reset_pose(self) -> None:
        """Drive the TCP to the reset position plus a uniform offset, inside the workspace box,
        keeping the orientation the server's reset left; RuntimeError if it is not reached."""
        r = self.remote
        noise = self._rng.uniform(-1.0, 1.0, 3) * np.asarray(r.reset_noise_m)
        goal = np.clip(np.asarray(r.reset_pos_m) + noise, self.config.box_low_m,
                       self.config.box_high_m)  # fmt: skip
        target = CartesianTarget(goal, self.latest.state.ee_quat_xyzw.copy())
        deadline = time.monotonic() + r.reset_timeout_s
        while np.linalg.norm(self.latest.state.ee_pos_m - goal) > r.reset_tolerance_m:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"reset: TCP at {np.round(self.latest.state.ee_pos_m, 3).tolist()} m did not "
                    f"reach {np.round(goal, 3).tolist()} m within {r.reset_timeout_s} s; check "
                    "env.remote.reset_pos_m against the workspace and the robot's mode"
                )
            self.apply(target, None)

    def apply(self, target: CartesianTarget, gripper: GripperAction) -> None:
        period = self.config.policy_period_s
        start = max(time.monotonic(), self._next_tick - period)
        self.client.send_target(target, gripper)
        cut = self._interrupt.wait(max(0.0, start + period / 2 - time.monotonic()))
        if not cut:
            self.client.keep_alive()  # so the server's 100 ms watchdog never sees a 10 Hz stall
            cut = self._interrupt.wait(max(0.0, start + period - time.monotonic()))
        self._interrupt.clear()
        self._next_tick = time.monotonic() if cut else start + period
        self.latest = self.client.latest(timeout_s=self.state_timeout_s)

    def state(self) -> RobotState:
        return self.latest.state

    def features(self) -> np.ndarray | None:
        return self.latest.features

    def success(self) -> bool:
        return bool(self.latest.meta.get("success", False))

    def frames(self) -> dict[str, np.ndarray]:
        if self.cameras is None:
            return {}
        frames = self.cameras.wait_synchronized(self.max_skew_s, self.state_timeout_s)
        return {name: received.frame.image for name, received in frames.items()}

    def wrench(self) -> np.ndarray | None:
        """(6,) N and Nm, base frame, from the newest state; a state without a usable one (the
        server leaves out a non-finite estimate) repeats the last good value and is counted in
        ``wrench_missing``. None until the server has sent one."""
        value = self.latest.meta.get(WRENCH_META_KEY)
        try:
            wrench = np.asarray(value, dtype=np.float64).reshape(6)
        except (TypeError, ValueError):
            wrench = None
        if wrench is not None and np.isfinite(wrench).all():
            self._wrench = wrench
        elif self._wrench is not None:
            self.wrench_missing += 1
        return self._wrench

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"state_age_s": time.monotonic() - self.latest.received_s}
        if self.wrench_missing:
            info["wrench_missing"] = self.wrench_missing
        return info

    def software_stop(self, stop: bool) -> None:
        self.client.software_stop(stop)

    def robot_status(self) -> dict[str, Any]:
        """The robot server's newest state meta (mode, stopped, loop_hz, warnings, a Franka's
        fault_text, connected, control, recoveries), its age (``state_age_s``) and the TCP and
        gripper of that state; from the client's receiving thread, so it stays live while the
        actor holds. Before any state: ``no_state``."""
        try:
            latest = self.client.latest()
        except TimeoutError:
            return {"no_state": True}
        return {
            **latest.meta,
            "state_age_s": time.monotonic() - latest.received_s,
            "tcp_pos_m": latest.state.ee_pos_m,
            "gripper_width_m": latest.state.gripper_width_m,
        }

    def close(self) -> None:
        self.client.close()
        if self.cameras is not None:
            self.cameras.close()


class RemoteEnv(ArmEnv):
    """The arm env over a robot client (see the module docstring). ``cameras``: the camera
    subscriber (pixel observations, the detector's frames, or the console's views)."""

    def __init__(
        self,
        config: EnvConfig,
        client: RobotClient,
        cameras: CameraSubscriber | None = None,
        detector: Detector | None = None,
        state_timeout_s: float = 1.0,
        max_skew_s: float = 0.05,
    ) -> None:
        remote = config.remote or RemoteRobotConfig()
        needs_frames = config.obs == "pixels" or detector is not None
        if needs_frames and cameras is None:
            raise ValueError("pixel observations and a detector need camera streams: set "
                             "env.remote.camera_endpoints (robot-rl cameras publish)")  # fmt: skip
        backend = RobotClientBackend(config, client, cameras, state_timeout_s, max_skew_s)
        self.cameras = cameras
        if config.task in TASKS and remote.episode_s is None:  # a twin task on a sim server
            task = make_task(config.task)
            episode_s, grasp = task.max_episode_s, task.grasp_at_reset
        else:
            episode_s, grasp = remote.episode_s, remote.grasp_at_reset
        n_features = 0
        if config.obs == "state" and config.task in TASKS:
            if backend.latest.features is None:
                raise ValueError(f"obs 'state' on the twin task {config.task!r} needs its "
                                 "features; this server sends none")  # fmt: skip
            n_features = len(backend.latest.features)
        wrench = "wrench" in remote.proprio_extras
        if wrench and backend.wrench() is None:
            raise ValueError(f"env.remote.proprio_extras has 'wrench' but the robot server sends "
                             f"no {WRENCH_META_KEY!r} in its state")  # fmt: skip
        source = {"server": "success"}.get(remote.reward, remote.reward)
        steps = config.max_episode_steps or round(episode_s / config.policy_period_s)
        super().__init__(
            config, backend, max_episode_steps=steps, n_features=n_features,
            grasp_at_reset=grasp, detector=detector, reward_source=source, wrench=wrench,
            wrench_scale_n=remote.wrench_scale_n,
        )  # fmt: skip
        self._reset = ResetFrame.of(backend.latest.state)

    def interrupt_step(self) -> None:
        """Cut the current step's wait short (from any thread): the operator took over or moved,
        so the next step, with their action, goes out now instead of at the next period."""
        self.backend.interrupt_step()


def connect_remote_env(config: EnvConfig, detector: Detector | None = None) -> RemoteEnv:
    """Connect to the robot server and camera publishers ``config.remote`` names."""
    from robot_rl.transport.robot_server import RobotEndpoints
    from robot_rl.transport.security import SecurityConfig

    r = config.remote or RemoteRobotConfig()
    security = SecurityConfig(keys_dir=r.keys_dir, name=r.key, server_name=r.server_key,
                              plaintext=r.plaintext)  # fmt: skip
    client = RobotClient(RobotEndpoints(r.commands, r.state), security)
    cameras = None
    if r.camera_endpoints:  # pixel observations, the detector's frames, the console's views
        camera_security = dataclasses.replace(security, server_name=r.cameras_key)
        cameras = CameraSubscriber(list(r.camera_endpoints), camera_security, config.cameras)
    try:
        return RemoteEnv(config, client, cameras, detector)
    except BaseException:
        client.close()
        if cameras is not None:
            cameras.close()
        raise
