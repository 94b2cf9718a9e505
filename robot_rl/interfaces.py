"""The small typed contracts every part of robot-rl is written against.

Conventions used throughout the project (stated once, here):
- SI units: metres, radians, seconds, newtons, newton-metres. Names carry the unit where it could be
  ambiguous (``stiffness_n_per_m``, ``timeout_s``).
- Quaternions are (x, y, z, w). Poses are in the robot base frame unless a name says otherwise.
- A twist or wrench is linear first, then angular: (vx, vy, vz, wx, wy, wz).
- Arrays are float64 numpy arrays; images are uint8 HxWx3 RGB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

NUM_ARM_JOINTS = 7


@dataclass(frozen=True)
class ArmLimits:
    """Hard limits of a 7-DoF torque-controlled arm. Every array is (7,), joint order 1..7."""

    joint_pos_min_rad: np.ndarray
    joint_pos_max_rad: np.ndarray
    joint_vel_max_rad_s: np.ndarray
    joint_torque_max_nm: np.ndarray
    torque_rate_max_nm_per_s: float


# Franka Emika Panda datasheet figures (joint ranges, velocity, torque and torque-rate limits).
PANDA_LIMITS = ArmLimits(
    joint_pos_min_rad=np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973]),
    joint_pos_max_rad=np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973]),
    joint_vel_max_rad_s=np.array([2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61]),
    joint_torque_max_nm=np.array([87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0]),
    torque_rate_max_nm_per_s=1000.0,
)


@dataclass(frozen=True)
class RobotState:
    """One measurement of the arm.

    q_rad, dq_rad_s, tau_measured_nm: (7,) joint positions, velocities and measured joint torques.
    ee_pos_m (3,), ee_quat_xyzw (4,): tool-centre-point pose, base frame.
    ee_twist (6,): TCP linear (m/s) and angular (rad/s) velocity, base frame.
    gripper_width_m: distance between the fingers.
    command_age_s: time since the arm last received a torque command.
    stamp_s: monotonic time of the measurement (simulated time for the twin).
    """

    q_rad: np.ndarray
    dq_rad_s: np.ndarray
    tau_measured_nm: np.ndarray
    ee_pos_m: np.ndarray
    ee_quat_xyzw: np.ndarray
    ee_twist: np.ndarray
    gripper_width_m: float
    command_age_s: float
    stamp_s: float


# The robot server's state meta key for the external TCP wrench: 6 floats, force (N) then torque
# (Nm), base frame, signed as libfranka's O_F_ext_hat_K (the wrench the arm exerts on what it
# touches). Left out of a state whose estimate is not finite.
EXT_WRENCH_META_KEY = "ext_wrench"


def wrench_meta(wrench: Any) -> dict[str, list[float]]:
    """``{EXT_WRENCH_META_KEY: [6 floats]}`` for a state message's meta, or {} when the estimate
    is not finite: a non-finite wrench never goes out (the env keeps the last one it had)."""
    values = np.asarray(wrench, dtype=np.float64).reshape(6)
    return {EXT_WRENCH_META_KEY: values.tolist()} if np.isfinite(values).all() else {}


@dataclass(frozen=True)
class RobotModel:
    """Rigid-body model of the arm at the current state (what libfranka's model library gives).

    jacobian: (6, 7) TCP Jacobian in the base frame, linear rows first.
    mass_matrix: (7, 7) joint-space inertia, kg m^2.
    coriolis_nm: (7,) Coriolis and centrifugal torque C(q, dq) dq. Gravity is not included:
        a torque-level robot compensates gravity itself.
    """

    jacobian: np.ndarray
    mass_matrix: np.ndarray
    coriolis_nm: np.ndarray


@runtime_checkable
class Robot(Protocol):
    """A torque-controlled arm with a parallel gripper (the twin, or a real arm backend).

    The robot compensates gravity itself: ``command_torque`` takes the torque on top of that.
    Gripper calls never block; they start a motion that the robot carries out on its own.
    """

    @property
    def limits(self) -> ArmLimits: ...

    def read_state(self) -> RobotState: ...

    def command_torque(self, tau_nm: np.ndarray) -> None: ...

    def gripper_move(self, width_m: float, speed_m_s: float) -> None: ...

    def gripper_grasp(self, width_m: float, force_n: float, speed_m_s: float = 0.1) -> None: ...

    def model(self) -> RobotModel: ...


@runtime_checkable
class LockstepRobot(Robot, Protocol):
    """A simulated robot whose time advances only when stepped (the twin)."""

    @property
    def control_period_s(self) -> float: ...

    def step(self) -> None: ...


@dataclass(frozen=True)
class Frame:
    """One camera image: uint8 (H, W, 3) RGB, capture stamp (s), sequence number. The stamp is
    host ``time.monotonic()`` for real cameras and streams; inside the twin it is sim time (the
    publishers restamp twin frames with host time before they go on the wire)."""

    image: np.ndarray
    stamp_s: float
    seq: int
    camera_id: str


@runtime_checkable
class Camera(Protocol):
    """A source of RGB frames."""

    @property
    def camera_id(self) -> str: ...

    def read(self) -> Frame: ...


@runtime_checkable
class RewardModel(Protocol):
    """A success detector: a batch of frames per camera in, success probabilities (B,) out."""

    def score(self, frames: dict[str, np.ndarray]) -> np.ndarray: ...
