"""The env section of a training config (``env:``), split by what it configures.

``EnvConfig`` holds what every arm env shares: the task's name, observation mode, cameras, the
action's scaling, the workspace box, the time limit and the reward's detector. Twin-only checks
(task and camera names known to the twin) apply only when the env is the in-process twin.
``RemoteRobotConfig`` (``env.remote``) holds what a robot behind a robot server needs: where the
server and cameras are, the keys, and, for a task the twin does not know, the task itself: episode
length, reset pose and its randomisation, gripper at reset, extra proprioception and the reward
source. A real task is then defined by config alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from robot_rl.endpoints import DEFAULT_ENDPOINTS
from robot_rl.envs.gym_adapter import GymAdapterConfig
from robot_rl.sim.cameras import TWIN_CAMERAS
from robot_rl.sim.tasks import TASKS

Vec3 = tuple[float, float, float]
REWARD_SOURCES = ("server", "detector", "marks", "both")
PROPRIO_EXTRAS = ("wrench",)


@dataclass(frozen=True)
class RemoteRobotConfig:
    """A robot behind a robot server (``robot-rl robot-server``, or a real arm's), its cameras,
    and a real task's settings (see the module docstring; twin task names borrow the twin's)."""

    commands: str = DEFAULT_ENDPOINTS.robot_commands
    state: str = DEFAULT_ENDPOINTS.robot_state
    keys_dir: str = "keys"
    key: str = "actor-0"  # this client's key name
    server_key: str = "robot"
    plaintext: bool = False  # refused unless both endpoints are loopback
    # Camera publishers (robot-rl cameras publish / mirror-twin) and their key name: the pixel
    # observations, or with obs "state" the operator console's views.
    camera_endpoints: tuple[str, ...] = ()
    cameras_key: str = "cameras"
    server_reset_timeout_s: float = 35.0  # a Franka random reset: two moves of up to 15 s each
    # -- a real task (any name the twin does not know) ----------------------------------------
    episode_s: float | None = None  # episode length; required for a real task
    reset_pos_m: Vec3 | None = None  # TCP position to move to after the server's reset
    reset_noise_m: Vec3 = (0.0, 0.0, 0.0)  # uniform +- per axis around reset_pos_m
    reset_tolerance_m: float = 0.005
    reset_timeout_s: float = 5.0
    grasp_at_reset: bool = False  # the gripper starts closed (holding the task's object)
    proprio_extras: tuple[str, ...] = ()  # "wrench": the external TCP wrench (O_F_ext_hat_K)
    wrench_scale_n: float = 10.0  # wrench entries divided by this (N, and Nm alike)
    # "server": the server's success flag (the twin's ground truth); "detector": env.reward_model
    # fires; "marks": only the operator's marks; "both": the detector and the marks.
    reward: str = "server"

    def __post_init__(self) -> None:
        if self.reward not in REWARD_SOURCES:
            raise ValueError(f"env.remote.reward={self.reward!r}; allowed: {REWARD_SOURCES}")
        unknown = sorted(set(self.proprio_extras) - set(PROPRIO_EXTRAS))
        if unknown:
            raise ValueError(f"env.remote.proprio_extras {unknown}; allowed: {PROPRIO_EXTRAS}")
        if self.episode_s is not None and not self.episode_s > 0:
            raise ValueError(f"env.remote.episode_s={self.episode_s}; must be > 0")
        if any(n < 0 for n in self.reset_noise_m) or self.reset_timeout_s <= 0:
            raise ValueError("env.remote.reset_noise_m must be >= 0, reset_timeout_s > 0")


@dataclass(frozen=True)
class EnvConfig:
    """task: a twin task (``sim.tasks.TASKS``), or with ``remote`` any name (a real task).
    obs: "pixels" (cameras + proprioception) or "state" (proprioception, plus on the twin the
    task's ground-truth features). ``id``: any gymnasium env instead (``envs.gym_adapter``)."""

    task: str = "reach"
    obs: Literal["pixels", "state"] = "pixels"
    image_width: int = 128
    image_height: int = 128
    cameras: tuple[str, ...] = ("front", "wrist")
    policy_period_s: float = 0.1
    max_episode_steps: int | None = None  # None: the task's episode length / policy_period_s
    xyz_step_m: float = 0.03
    rotation_actions: bool = False
    rot_step_rad: float = 0.1
    gripper_penalty: float = 0.0  # charged to the gripper critic per open/close toggle
    box_low_m: Vec3 = (0.3, -0.3, 0.005)  # the workspace box the TCP target is clipped to
    box_high_m: Vec3 = (0.7, 0.3, 0.45)
    # A success detector from ``robot-rl reward train`` (classifier folder or probe JSON): it
    # decides reward and termination instead of the ground truth; reward_k frames in a row fire.
    reward_model: str | None = None
    reward_k: int = 3
    # Act through a robot server instead of the in-process twin.
    remote: RemoteRobotConfig | None = None
    # Any gymnasium env instead of the twin (robot_rl.envs.gym_adapter): its id, make() kwargs
    # and the adapter; ``task`` is then only the run's and the episodes' label.
    id: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    adapter: GymAdapterConfig = field(default_factory=GymAdapterConfig)

    def __post_init__(self) -> None:
        if self.id:
            return  # the external env checks its own spaces (GymAdapter)
        if self.obs not in ("pixels", "state"):
            raise ValueError(f"obs {self.obs!r}; allowed: pixels, state")
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"cameras {list(self.cameras)} name a camera twice")
        if self.remote is None:  # the twin: its task and camera names
            if self.task not in TASKS:
                raise ValueError(f"task {self.task!r} unknown; known tasks: {sorted(TASKS)} "
                                 "(a real task needs env.remote)")  # fmt: skip
            known = {spec.camera_id for spec in TWIN_CAMERAS}
            unknown = sorted(set(self.cameras) - known)
            if unknown:
                raise ValueError(f"cameras {unknown} unknown; allowed: {sorted(known)}")
        elif self.task not in TASKS and self.remote.episode_s is None:
            raise ValueError(f"task {self.task!r} is not a twin task: define it with "
                             "env.remote.episode_s (and reset_pos_m, reward, ...)")  # fmt: skip
        if not 0.0 < self.xyz_step_m <= 0.05:
            raise ValueError(f"xyz_step_m={self.xyz_step_m}; allowed (0, 0.05] m per step")
        if self.reward_k < 1:
            raise ValueError(f"reward_k={self.reward_k}; need at least one frame")
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise ValueError(f"max_episode_steps={self.max_episode_steps}; must be >= 1")
        if any(lo >= hi for lo, hi in zip(self.box_low_m, self.box_high_m, strict=True)):
            raise ValueError(f"box_low_m {self.box_low_m} must be below box_high_m "
                             f"{self.box_high_m} on every axis")  # fmt: skip
        if self.reward_model is not None and not Path(self.reward_model).exists():
            raise ValueError(f"env.reward_model={self.reward_model!r} does not exist; train one "
                             "with robot-rl reward train, or leave it unset")  # fmt: skip
        uses_detector = self.remote is not None and self.remote.reward in ("detector", "both")
        if uses_detector and self.reward_model is None:
            raise ValueError(f"env.remote.reward={self.remote.reward!r} needs env.reward_model")
        if self.remote is not None and self.reward_model and not uses_detector:
            raise ValueError(
                f"env.reward_model is set but env.remote.reward="
                f"{self.remote.reward!r} ignores it; set reward: detector or both"
            )
