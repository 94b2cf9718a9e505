"""A gymnasium env over the twin: 10 Hz end-effector delta actions through the 1 kHz controller.

Observation: Dict with one uint8 (H, W, 3) image per camera (pixel mode) and "state", float32,
  in units of the action's step so that every entry is of order one (the learner does not
  normalize observations):
  TCP position relative to the reset pose, in the reset frame, in ``xyz_step_m`` (3); TCP
  rotation relative to the reset orientation (3, rotation vector, in ``rot_step_rad``); TCP twist
  in the reset frame (6, steps per policy period); gripper opening (1, fraction of fully open);
  in "state" mode also the task's ground-truth features, whose leading displacement (3, m, base
  frame) is rotated into the reset frame and given in ``xyz_step_m`` like the TCP position.
  Joint angles are left out, as in HIL-SERL: the policy acts in TCP space, and seven large,
  task-irrelevant inputs slow learning markedly (measured on ``reach``).
Action: Box(-1, 1, (A,)): TCP position delta (3) in the reset frame scaled by
  ``xyz_step_m``, optionally a rotation delta (3) scaled by ``rot_step_rad``, and last the gripper
  (< -0.5 close, > 0.5 open, else stay). The target is the *measured* pose plus the delta,
  clipped to the task box, then sent through the controller's workspace, speed and torque limits.
Reward: a function of the env (default: the task's success predicate, sparse 0/1). Success
  terminates the episode; the step limit truncates it. With a ``detector`` (a success detector
  from ``rewards``, scoring the rendered cameras), the detector decides instead: reward 1 and the
  end of the episode when it fires; ``info["success"]`` stays the ground truth, so false
  positives can be counted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import gymnasium as gym
import numpy as np

from robot_rl.actions import gripper_value_to_index
from robot_rl.controllers.rotations import orientation_error, quat_exp, quat_mul, quat_to_matrix
from robot_rl.controllers.targets import CartesianTarget
from robot_rl.data.batch import STATE_KEY
from robot_rl.envs.gym_adapter import GymAdapterConfig, make_gym_env
from robot_rl.interfaces import RobotState
from robot_rl.sim.cameras import DEFAULT_CAMERAS
from robot_rl.sim.scene import SceneConfig, TwinScene
from robot_rl.sim.tasks import TASKS, GripperAction
from robot_rl.sim.tasks.base import ExpertAction

GRIPPER_ACTIONS: tuple[GripperAction, ...] = ("close", None, "open")  # by discrete index
PROPRIO_DIM = 3 + 3 + 6 + 1
GRIPPER_OPEN_M = 0.08  # the Franka Hand's full opening


@dataclass(frozen=True)
class RemoteRobotConfig:
    """Where the robot server is (``robot-rl robot-server``, or the real arm's), and the keys."""

    commands: str = "tcp://127.0.0.1:5560"
    state: str = "tcp://127.0.0.1:5561"
    keys_dir: str = "keys"
    key: str = "actor-0"  # this client's key name
    server_key: str = "robot"
    plaintext: bool = False  # refused unless both endpoints are loopback
    # Camera publishers (robot-rl cameras publish / mirror-twin) and their key name: the pixel
    # observations, or with obs "state" the operator console's views.
    camera_endpoints: tuple[str, ...] = ()
    cameras_key: str = "cameras"


@dataclass(frozen=True)
class TwinEnvConfig:
    """task: a name from ``sim.tasks.TASKS``. obs: "pixels" (cameras + proprioception) or "state"
    (proprioception + the task's ground-truth features, no rendering)."""

    task: str = "reach"
    obs: Literal["pixels", "state"] = "pixels"
    image_width: int = 128
    image_height: int = 128
    cameras: tuple[str, ...] = ("front", "wrist")
    policy_period_s: float = 0.1
    max_episode_steps: int | None = None  # None: the task's max_episode_s / policy_period_s
    xyz_step_m: float = 0.03
    rotation_actions: bool = False
    rot_step_rad: float = 0.1
    gripper_penalty: float = 0.0  # charged to the gripper critic per open/close toggle
    box_low_m: tuple[float, float, float] = (0.3, -0.3, 0.005)
    box_high_m: tuple[float, float, float] = (0.7, 0.3, 0.45)
    # A success detector from ``robot-rl reward train`` (classifier folder or probe JSON): it
    # decides reward and termination instead of the ground truth; reward_k frames in a row fire.
    reward_model: str | None = None
    reward_k: int = 3
    # Act through a robot server instead of an in-process twin (state observations; pixels over
    # the network need camera streams, which the twin's server does not publish).
    remote: RemoteRobotConfig | None = None
    # Any gymnasium env instead of the twin (robot_rl.envs.gym_adapter): its id, make() kwargs
    # and the adapter; ``task`` is then only the run's and the episodes' label.
    id: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    adapter: GymAdapterConfig = field(default_factory=GymAdapterConfig)

    def __post_init__(self) -> None:
        if self.id:
            return  # the external env checks its own spaces (GymAdapter)
        if self.task not in TASKS:
            raise ValueError(f"task {self.task!r} unknown; known tasks: {sorted(TASKS)}")
        if self.obs not in ("pixels", "state"):
            raise ValueError(f"obs {self.obs!r}; allowed: pixels, state")
        known = {spec.camera_id for spec in DEFAULT_CAMERAS}
        unknown = sorted(set(self.cameras) - known)
        if unknown:
            raise ValueError(f"cameras {unknown} unknown; allowed: {sorted(known)}")
        if not 0.0 < self.xyz_step_m <= 0.05:
            raise ValueError(f"xyz_step_m={self.xyz_step_m}; allowed (0, 0.05] m per step")
        if self.reward_k < 1:
            raise ValueError(f"reward_k={self.reward_k}; need at least one frame")
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise ValueError(f"max_episode_steps={self.max_episode_steps}; must be >= 1")


RewardFn = Callable[["TwinEnv"], float]


class Detector(Protocol):
    """A success detector (``robot_rl.rewards.detector.SuccessDetector``) as the env uses it."""

    def reset(self) -> None: ...

    def step(self, frames: dict[str, np.ndarray], gate: bool = True) -> tuple[bool, float]: ...


@dataclass(frozen=True)
class ResetFrame:
    """The TCP pose at the episode's reset: actions and observations are relative to it."""

    pos_m: np.ndarray
    quat_xyzw: np.ndarray

    @property
    def rot(self) -> np.ndarray:
        return quat_to_matrix(self.quat_xyzw)

    @staticmethod
    def of(state: RobotState) -> ResetFrame:
        return ResetFrame(state.ee_pos_m.copy(), state.ee_quat_xyzw.copy())


def state_vector(
    cfg: TwinEnvConfig, state: RobotState, reset: ResetFrame, features: np.ndarray | None
) -> np.ndarray:
    """The observation's "state" entry (see the module docstring for units and frames)."""
    rot_t = reset.rot.T
    per_period = cfg.policy_period_s
    parts = [
        rot_t @ (state.ee_pos_m - reset.pos_m) / cfg.xyz_step_m,
        rot_t @ orientation_error(state.ee_quat_xyzw, reset.quat_xyzw) / cfg.rot_step_rad,
        rot_t @ state.ee_twist[:3] * (per_period / cfg.xyz_step_m),
        rot_t @ state.ee_twist[3:] * (per_period / cfg.rot_step_rad),
        [state.gripper_width_m / GRIPPER_OPEN_M],
    ]
    if features is not None:
        features = np.asarray(features, dtype=np.float64)
        parts += [rot_t @ features[:3] / cfg.xyz_step_m, features[3:]]
    return np.concatenate(parts).astype(np.float32)


def check_action(action: np.ndarray, space: gym.spaces.Box) -> np.ndarray:
    """``action`` as float64 clipped to [-1, 1]; ValueError for a wrong shape or non-finite."""
    action = np.asarray(action, dtype=np.float64)
    if action.shape != space.shape or not np.isfinite(action).all():
        raise ValueError(f"action {action.tolist()} must be {space.shape[0]} finite values")
    return np.clip(action, -1.0, 1.0)


def action_to_target(
    cfg: TwinEnvConfig, state: RobotState, reset: ResetFrame, action: np.ndarray
) -> CartesianTarget:
    """The TCP target for an (already checked) action: the measured pose plus the scaled delta
    in the reset frame, clipped to the task box."""
    rot = reset.rot
    pos = np.clip(state.ee_pos_m + rot @ (action[:3] * cfg.xyz_step_m), cfg.box_low_m,
                  cfg.box_high_m)  # fmt: skip
    if cfg.rotation_actions:
        quat = quat_mul(quat_exp(rot @ (action[3:6] * cfg.rot_step_rad)), state.ee_quat_xyzw)
    else:
        quat = reset.quat_xyzw
    return CartesianTarget(pos, quat)


def twist_to_action(
    cfg: TwinEnvConfig,
    reset: ResetFrame,
    linear_m_s: np.ndarray,
    angular_rad_s: np.ndarray,
    gripper: str | None,
) -> np.ndarray:
    """The env action that moves at an operator's base-frame twist for one policy period
    (clipped to [-1, 1]); gripper "close" -> -1, "open" -> +1, None -> 0 (stay)."""
    rot_t = reset.rot.T
    period = cfg.policy_period_s
    parts = [rot_t @ np.asarray(linear_m_s, float) * period / cfg.xyz_step_m]
    if cfg.rotation_actions:
        parts.append(rot_t @ np.asarray(angular_rad_s, float) * period / cfg.rot_step_rad)
    parts.append([{"close": -1.0, None: 0.0, "open": 1.0}[gripper]])
    return np.clip(np.concatenate(parts), -1.0, 1.0).astype(np.float32)


def success_reward(env: TwinEnv) -> float:
    """Sparse reward: 1 when the task's ground-truth success predicate holds, else 0."""
    return float(env.scene.success())


class TwinEnv(gym.Env):
    """See the module docstring. ``info`` carries ``success``, ``gripper_penalty`` and ``seed``."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        config: TwinEnvConfig | None = None,
        reward_fn: RewardFn = success_reward,
        detector: Detector | None = None,
    ) -> None:
        self.config = config = config or TwinEnvConfig()
        if detector is not None and config.obs != "pixels":
            raise ValueError("a success detector scores camera frames: use obs 'pixels'")
        self.detector = detector
        specs = tuple(
            dataclasses.replace(spec, width=config.image_width, height=config.image_height)
            for spec in DEFAULT_CAMERAS
            if spec.camera_id in config.cameras and config.obs == "pixels"
        )
        self.scene = TwinScene(
            SceneConfig(task=config.task, policy_period_s=config.policy_period_s, cameras=specs)
        )
        self.task = self.scene.task
        self.reward_fn = reward_fn
        self.max_episode_steps = config.max_episode_steps or round(
            self.task.max_episode_s / config.policy_period_s
        )
        state_dim = PROPRIO_DIM + (
            len(self.task.features(self.scene.twin)) if config.obs == "state" else 0
        )
        spaces: dict[str, gym.Space] = {
            STATE_KEY: gym.spaces.Box(-np.inf, np.inf, (state_dim,), np.float32)
        }
        for spec in specs:
            spaces[spec.camera_id] = gym.spaces.Box(0, 255, (spec.height, spec.width, 3), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        action_dim = 3 + (3 if config.rotation_actions else 0) + 1
        self.action_space = gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)
        self._steps = 0
        self._reset = ResetFrame(np.zeros(3), np.array([0.0, 0.0, 0.0, 1.0]))
        self._gripper_index = 2  # open

    # -- gymnasium API -------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        episode_seed = int(self.np_random.integers(2**31 - 1))
        self.scene.reset(episode_seed)
        self._reset = ResetFrame.of(self.scene.state())
        self._gripper_index = 0 if self.task.grasp_at_reset else 2
        self._steps = 0
        if self.detector is not None:
            self.detector.reset()
        return self._observation(), {"success": self.scene.success(), "seed": episode_seed}

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        action = check_action(action, self.action_space)
        cfg = self.config
        target = action_to_target(cfg, self.scene.state(), self._reset, action)
        index = int(gripper_value_to_index(float(action[-1])))
        toggled = index != 1 and index != self._gripper_index
        if index != 1:
            self._gripper_index = index
        self.scene.step(target, GRIPPER_ACTIONS[index])
        self._steps += 1
        success = self.scene.success()
        obs = self._observation()
        info = {"success": success, "gripper_penalty": cfg.gripper_penalty if toggled else 0.0}
        if self.detector is None:
            reward = float(self.reward_fn(self))
            terminated = success
        else:
            frames = {k: v for k, v in obs.items() if k != STATE_KEY} or {
                name: frame.image for name, frame in self.scene.render().items()
            }
            fired, info["success_probability"] = self.detector.step(frames)
            reward, terminated = float(fired), fired
        truncated = not terminated and self._steps >= self.max_episode_steps
        return obs, reward, terminated, truncated, info

    def render(self) -> np.ndarray:
        """The first camera's current frame (renders even in state mode)."""
        return next(iter(self.scene.render().values())).image

    def close(self) -> None:
        self.scene.close()

    @property
    def reset_frame(self) -> ResetFrame:
        """The TCP pose at this episode's reset (the frame actions are in)."""
        return self._reset

    def robot_state(self) -> RobotState:
        """The arm's newest measured state."""
        return self.scene.state()

    def software_stop(self, stop: bool = True) -> None:
        """Latch (or clear) the control loop's software stop (damping; targets refused)."""
        if stop:
            self.scene.loop.software_stop()
        else:
            self.scene.loop.clear_stop()

    # -- helpers -------------------------------------------------------------------------------
    def _observation(self) -> dict[str, np.ndarray]:
        features = self.task.features(self.scene.twin) if self.config.obs == "state" else None
        obs = {STATE_KEY: state_vector(self.config, self.scene.state(), self._reset, features)}
        if self.config.obs == "pixels":
            for name, frame in self.scene.render().items():
                obs[name] = frame.image
        return obs

    def expert_action(self, expert_action: ExpertAction) -> np.ndarray:
        """The env action that moves toward a scripted expert's target (clipped to [-1, 1])."""
        cfg = self.config
        state = self.scene.state()
        rot_t = self._reset.rot.T
        delta = rot_t @ (expert_action.target.pos_m - state.ee_pos_m) / cfg.xyz_step_m
        parts = [delta]
        if cfg.rotation_actions:
            rot = orientation_error(expert_action.target.quat_xyzw, state.ee_quat_xyzw)
            parts.append(rot_t @ rot / cfg.rot_step_rad)
        gripper = {"close": -1.0, None: 0.0, "open": 1.0}[expert_action.gripper]
        parts.append([gripper])
        return np.clip(np.concatenate(parts), -1.0, 1.0).astype(np.float32)


def make_env(config: TwinEnvConfig, reward_fn: RewardFn = success_reward) -> TwinEnv:
    """The twin env for ``config`` (kept as a function so sessions can swap in a real-arm env),
    with its success detector when ``config.reward_model`` names one."""
    if config.id:  # an external gymnasium env through the adapter
        return make_gym_env(config.id, config.kwargs, config.adapter, config.max_episode_steps)
    if config.remote is not None:
        return _remote_env(config)
    detector = None
    if config.reward_model:
        from robot_rl.rewards.detector import load_detector

        detector = load_detector(config.reward_model, k=config.reward_k)
    return TwinEnv(config, reward_fn, detector)


def _remote_env(config: TwinEnvConfig) -> gym.Env:
    from robot_rl.envs.remote_env import RemoteEnv
    from robot_rl.transport.camera_stream import CameraSubscriber
    from robot_rl.transport.robot_server import RobotClient, RobotEndpoints
    from robot_rl.transport.security import SecurityConfig

    r = config.remote
    assert r is not None
    if config.obs == "pixels" and not r.camera_endpoints:
        raise ValueError(
            "env.remote with obs 'pixels' needs env.remote.camera_endpoints (the camera "
            "publishers: robot-rl cameras publish), or use obs 'state'"
        )
    security = SecurityConfig(keys_dir=r.keys_dir, name=r.key, server_name=r.server_key,
                              plaintext=r.plaintext)  # fmt: skip
    client = RobotClient(RobotEndpoints(r.commands, r.state), security)
    cameras = None
    if r.camera_endpoints:  # pixel observations; with obs "state", views for the console
        camera_security = dataclasses.replace(security, server_name=r.cameras_key)
        cameras = CameraSubscriber(list(r.camera_endpoints), camera_security, config.cameras)
    return RemoteEnv(config, client, cameras)


__all__ = ["TwinEnv", "TwinEnvConfig", "make_env", "success_reward"]
