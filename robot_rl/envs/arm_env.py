"""One gymnasium env core for an arm, over a small ``ArmBackend`` contract: the in-process twin
(``twin_env.TwinBackend``), a robot client with camera subscribers (``remote_env``), and a real
arm's robot server behind the latter. 10 Hz end-effector delta actions; the backend runs them.

Observation: Dict with one uint8 (H, W, 3) image per camera (pixel mode) and "state", float32,
  in units of the action's step so that every entry is of order one (the learner does not
  normalize observations):
  TCP position relative to the reset pose, in the reset frame, in ``xyz_step_m`` (3); TCP
  rotation relative to the reset orientation (3, rotation vector, in ``rot_step_rad``); TCP twist
  in the reset frame (6, steps per policy period); gripper opening (1, fraction of fully open);
  optionally the external TCP wrench (6, reset frame, in ``wrench_scale_n``); in "state" mode
  also the task's ground-truth features when the backend has them, whose leading displacement
  (3, m, base frame) is rotated into the reset frame and given in ``xyz_step_m``.
  Joint angles are left out, as in HIL-SERL: the policy acts in TCP space, and seven large,
  task-irrelevant inputs slow learning markedly (measured on ``reach``).
Action: Box(-1, 1, (A,)): TCP position delta (3) in the reset frame scaled by
  ``xyz_step_m``, optionally a rotation delta (3) scaled by ``rot_step_rad``, and last the gripper
  (< -0.5 close, > 0.5 open, else stay; ``robot_rl.actions``). The target is the *measured* pose
  plus the delta, clipped to the workspace box, then sent through the controller's workspace,
  speed and torque limits.
Reward: the backend's success (the twin's ground truth, sparse 0/1), which terminates the episode;
  or, with a ``detector`` (a success detector scoring the camera frames), the detector: reward 1
  and the end of the episode when it fires, ``info["success"]`` staying the backend's, so false
  positives can be counted; or nothing (``reward_source="marks"``: the operator's marks, applied
  by the actor loop). The step limit truncates an episode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import gymnasium as gym
import numpy as np

from robot_rl.actions import gripper_value_to_index
from robot_rl.controllers.rotations import orientation_error, quat_exp, quat_mul, quat_to_matrix
from robot_rl.controllers.targets import CartesianTarget
from robot_rl.data.batch import STATE_KEY
from robot_rl.envs.config import EnvConfig
from robot_rl.interfaces import RobotState
from robot_rl.sim.tasks import GripperAction

GRIPPER_ACTIONS: tuple[GripperAction, ...] = ("close", None, "open")  # by discrete index
PROPRIO_DIM = 3 + 3 + 6 + 1
WRENCH_DIM = 6
GRIPPER_OPEN_M = 0.08  # the Franka Hand's full opening
Obs = dict[str, np.ndarray]


class ArmBackend(Protocol):
    """What the env core needs of an arm (see the module docstring)."""

    def reset(self, seed: int) -> None:
        """Start an episode (a sim re-randomizes from ``seed``); returns once the state is new."""

    def apply(self, target: CartesianTarget, gripper: GripperAction) -> None:
        """Send a TCP target and gripper command and return one policy period later."""

    def state(self) -> RobotState:
        """The newest measured state."""

    def features(self) -> np.ndarray | None:
        """The task's ground-truth features (sim), None where there are none."""

    def success(self) -> bool:
        """The task's ground-truth success, False where it is not known (a real arm)."""

    def frames(self) -> dict[str, np.ndarray]:
        """The newest camera frames by camera name (uint8 (H, W, 3)); {} without cameras."""

    def wrench(self) -> np.ndarray | None:
        """(6,) external TCP wrench, N and Nm, base frame; None where it is not measured."""

    def info(self) -> dict[str, Any]:
        """Extra step info (e.g. ``state_age_s``)."""

    def software_stop(self, stop: bool) -> None:
        """Latch (or clear) the arm's software stop (damping; targets refused)."""

    def robot_status(self) -> dict[str, Any]:
        """What the operator console shows of the robot, as a robot server's state meta has it
        (``transport.robot_server``): mode (int ``ControlMode``), stopped, loop_hz,
        loop_hz_target, warnings, ...; callable from any thread while the env steps."""

    def close(self) -> None: ...


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
    cfg: EnvConfig,
    state: RobotState,
    reset: ResetFrame,
    features: np.ndarray | None,
    wrench: np.ndarray | None = None,
    wrench_scale_n: float = 10.0,
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
    if wrench is not None:
        wrench = np.asarray(wrench, dtype=np.float64)
        parts += [rot_t @ wrench[:3] / wrench_scale_n, rot_t @ wrench[3:] / wrench_scale_n]
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
    cfg: EnvConfig, state: RobotState, reset: ResetFrame, action: np.ndarray
) -> CartesianTarget:
    """The TCP target for an (already checked) action: the measured pose plus the scaled delta
    in the reset frame, clipped to the workspace box."""
    rot = reset.rot
    pos = np.clip(state.ee_pos_m + rot @ (action[:3] * cfg.xyz_step_m), cfg.box_low_m,
                  cfg.box_high_m)  # fmt: skip
    if cfg.rotation_actions:
        quat = quat_mul(quat_exp(rot @ (action[3:6] * cfg.rot_step_rad)), state.ee_quat_xyzw)
    else:
        quat = reset.quat_xyzw
    return CartesianTarget(pos, quat)


def twist_to_action(
    cfg: EnvConfig,
    reset: ResetFrame,
    linear_m_s: np.ndarray,
    angular_rad_s: np.ndarray,
    gripper: str | None,
) -> np.ndarray:
    """The env action that moves at an operator's base-frame twist for one policy period
    (clipped to [-1, 1]); gripper "close" -> -1, "open" -> +1, None -> 0 (stay)."""
    period = cfg.policy_period_s
    linear_step = np.asarray(linear_m_s, float) * period
    angular_step = np.asarray(angular_rad_s, float) * period
    return delta_to_action(cfg, reset, linear_step, angular_step, gripper)


def delta_to_action(
    cfg: EnvConfig,
    reset: ResetFrame,
    pos_delta_m: np.ndarray,
    rot_delta_rad: np.ndarray,
    gripper: str | None,
) -> np.ndarray:
    """The env action for a base-frame TCP displacement and rotation vector (clipped)."""
    rot_t = reset.rot.T
    parts = [rot_t @ np.asarray(pos_delta_m, float) / cfg.xyz_step_m]
    if cfg.rotation_actions:
        parts.append(rot_t @ np.asarray(rot_delta_rad, float) / cfg.rot_step_rad)
    parts.append([{"close": -1.0, None: 0.0, "open": 1.0}[gripper]])
    return np.clip(np.concatenate(parts), -1.0, 1.0).astype(np.float32)


RewardFn = Callable[["ArmEnv"], float]


def arm_env(env: gym.Env) -> ArmEnv | None:
    """The arm env under ``env``'s wrappers, None for an env that is not one (``env.id``)."""
    if not isinstance(env, gym.Env):
        return None
    base = env.unwrapped
    return base if isinstance(base, ArmEnv) else None


class ArmEnv(gym.Env):
    """See the module docstring. ``info`` carries ``success``, ``gripper_penalty`` and ``seed``
    (at reset), plus what the backend adds.

    max_episode_steps: the time limit; n_features: length of the backend's task features in the
    "state" entry (0: none); grasp_at_reset: the gripper starts closed; reward_source: "success"
    (the backend's), "detector" (or "both": the detector, with the operator's marks applied by
    the actor loop) or "marks" (no env reward); reward_fn: instead of the backend's success.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    action_frame: ClassVar[str] = "reset frame"  # the frame actions are in (for the console)
    cameras: Any = None  # camera streams the console shows (RemoteEnv's CameraSubscriber)

    def __init__(
        self,
        config: EnvConfig,
        backend: ArmBackend,
        *,
        max_episode_steps: int,
        n_features: int = 0,
        grasp_at_reset: bool = False,
        detector: Detector | None = None,
        reward_source: str = "success",
        reward_fn: RewardFn | None = None,
        wrench: bool = False,
        wrench_scale_n: float = 10.0,
    ) -> None:
        if (detector is None) == (reward_source in ("detector", "both")):
            raise ValueError(f"reward source {reward_source!r} with "
                             f"{'a' if detector else 'no'} detector")  # fmt: skip
        self.config, self.backend, self.detector = config, backend, detector
        self.max_episode_steps, self.grasp_at_reset = max_episode_steps, grasp_at_reset
        self.reward_source, self.reward_fn = reward_source, reward_fn
        self.n_features, self.wrench, self.wrench_scale_n = n_features, wrench, wrench_scale_n
        state_dim = PROPRIO_DIM + (WRENCH_DIM if wrench else 0) + n_features
        spaces: dict[str, gym.Space] = {
            STATE_KEY: gym.spaces.Box(-np.inf, np.inf, (state_dim,), np.float32)
        }
        if config.obs == "pixels":
            shape = (config.image_height, config.image_width, 3)
            for name in config.cameras:
                spaces[name] = gym.spaces.Box(0, 255, shape, np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        action_dim = 3 + (3 if config.rotation_actions else 0) + 1
        self.action_space = gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)
        self._steps = 0
        self._reset = ResetFrame(np.zeros(3), np.array([0.0, 0.0, 0.0, 1.0]))
        self._gripper_index = 2  # open

    # -- gymnasium API -------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Obs, dict[str, Any]]:
        super().reset(seed=seed)
        episode_seed = int(self.np_random.integers(2**31 - 1))
        self.backend.reset(episode_seed)
        self._reset = ResetFrame.of(self.backend.state())
        self._gripper_index = 0 if self.grasp_at_reset else 2
        self._steps = 0
        if self.detector is not None:
            self.detector.reset()
        return self._observation(), {"success": self.backend.success(), "seed": episode_seed}

    def step(self, action: np.ndarray) -> tuple[Obs, float, bool, bool, dict[str, Any]]:
        action = check_action(action, self.action_space)
        cfg = self.config
        target = action_to_target(cfg, self.backend.state(), self._reset, action)
        index = int(gripper_value_to_index(float(action[-1])))
        toggled = index != 1 and index != self._gripper_index
        if index != 1:
            self._gripper_index = index
        self.backend.apply(target, GRIPPER_ACTIONS[index])
        self._steps += 1
        success = self.backend.success()
        obs = self._observation()
        info = {"success": success, "gripper_penalty": cfg.gripper_penalty if toggled else 0.0}
        info.update(self.backend.info())
        if self.detector is not None:
            frames = {k: v for k, v in obs.items() if k != STATE_KEY} or self.backend.frames()
            fired, info["success_probability"] = self.detector.step(frames)
            reward, terminated = float(fired), fired
        elif self.reward_source == "marks":
            reward, terminated = 0.0, False
        else:
            reward = float(self.reward_fn(self)) if self.reward_fn else float(success)
            terminated = success
        truncated = not terminated and self._steps >= self.max_episode_steps
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        self.backend.close()

    @property
    def reset_frame(self) -> ResetFrame:
        """The TCP pose at this episode's reset (the frame actions are in)."""
        return self._reset

    def robot_state(self) -> RobotState:
        """The arm's newest measured state."""
        return self.backend.state()

    def software_stop(self, stop: bool = True) -> None:
        """Latch (or clear) the arm's software stop (damping; targets refused)."""
        self.backend.software_stop(stop)

    def robot_status(self) -> dict[str, Any]:
        """The robot's mode, loop rate and warnings (``ArmBackend.robot_status``; any thread)."""
        return self.backend.robot_status()

    def interrupt_step(self) -> None:
        """Cut a paced step's wait short when the operator acts (a no-op in lockstep)."""

    def still_frames(self) -> dict[str, np.ndarray]:
        """The cameras' view of the arm as it is, for the console while the loop holds; {} where
        camera streams reach the console on their own (``cameras``)."""
        return {} if self.cameras is not None else self.backend.frames()

    def _observation(self) -> Obs:
        features = self.backend.features() if self.n_features else None
        wrench = self.backend.wrench() if self.wrench else None
        state = state_vector(self.config, self.backend.state(), self._reset, features, wrench,
                             self.wrench_scale_n)  # fmt: skip
        obs = {STATE_KEY: state}
        if self.config.obs == "pixels":
            frames = self.backend.frames()
            for name in self.config.cameras:
                obs[name] = frames[name]
        return obs
