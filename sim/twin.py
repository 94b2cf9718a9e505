"""PyBullet twin of a Franka Panda, seen through the same torque interface as the real arm.

- DIRECT mode, fixed 1 kHz step, deterministic for a given seed and command sequence.
- The twin adds gravity compensation itself (as the real arm does); ``command_torque`` takes the
  torque on top of it. Commands are clamped to the Panda torque limits and rate-limited to
  1000 Nm/s; the twin counts every command that needed either, so tests can prove the controller
  never relied on it. Joint position limits come from the URDF, velocity limits are set per joint.
- PyBullet's default velocity motors are switched off and all damping zeroed, so torques are not
  fought.
- The gripper (Franka Hand) moves or grasps on its own over later steps; calls never block.
- The base of the arm is the world origin; the table top is the plane z = 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pybullet
from pybullet_utils import bullet_client
from robot_rl.sim import quiet_c_stdout
from robot_rl.sim.faults import FaultConfig, FaultyChannel
from robot_rl.sim.panda_description import panda_urdf_path

from robot_rl.interfaces import PANDA_LIMITS, ArmLimits, RobotModel, RobotState

ARM_JOINTS = tuple(f"panda_joint{i}" for i in range(1, 8))
FINGER_JOINTS = ("panda_finger_joint1", "panda_finger_joint2")
TCP_LINK = "panda_grasptarget"
HAND_LINK = "panda_hand"
READY_Q_RAD = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785)
FINGER_MAX_M = 0.04  # per finger; the hand opens to 0.08 m


@dataclass(frozen=True)
class GripperConfig:
    """Franka Hand behaviour: finger force while moving, and the upper bound on grasp force."""

    move_force_n: float = 20.0
    max_grasp_force_n: float = 140.0
    max_speed_m_s: float = 0.2  # width speed
    finger_friction: float = 1.5


@dataclass(frozen=True)
class TwinConfig:
    seed: int = 0
    period_s: float = 0.001
    solver_iterations: int = 50
    initial_q_rad: tuple[float, ...] = READY_Q_RAD
    initial_gripper_width_m: float = 0.08
    faults: FaultConfig = field(default_factory=FaultConfig)
    gripper: GripperConfig = field(default_factory=GripperConfig)


class PandaTwin:
    """Implements ``robot_rl.interfaces.LockstepRobot`` on PyBullet."""

    def __init__(self, config: TwinConfig | None = None):
        self.config = config = config or TwinConfig()
        self.rng = np.random.default_rng(config.seed)
        with quiet_c_stdout():
            self.client = bullet_client.BulletClient(connection_mode=pybullet.DIRECT)
        # Hot paths call pybullet directly with this id: BulletClient's attribute wrapper costs
        # microseconds per call at 1 kHz. (pybullet is pinned, so the attribute is stable.)
        self.cid: int = self.client._client
        c = self.client
        c.setGravity(0.0, 0.0, -9.81)
        c.setPhysicsEngineParameter(
            fixedTimeStep=config.period_s,
            numSolverIterations=config.solver_iterations,
            deterministicOverlappingPairs=1,
        )
        plane = c.createCollisionShape(pybullet.GEOM_PLANE)
        plane_visual = c.createVisualShape(
            pybullet.GEOM_BOX,
            halfExtents=[1.0, 1.0, 0.005],
            rgbaColor=[0.55, 0.5, 0.45, 1.0],
            visualFramePosition=[0.0, 0.0, -0.005],
        )
        self.table_id = c.createMultiBody(0.0, plane, plane_visual)
        self.robot_id = c.loadURDF(
            str(panda_urdf_path()),
            useFixedBase=True,
            flags=pybullet.URDF_USE_INERTIA_FROM_FILE
            | pybullet.URDF_USE_SELF_COLLISION
            | pybullet.URDF_USE_SELF_COLLISION_EXCLUDE_ALL_PARENTS,
        )
        self._index = self._resolve_names()
        self.arm_idx = [self._index[n] for n in ARM_JOINTS]
        self.finger_idx = [self._index[n] for n in FINGER_JOINTS]
        self.all_idx = self.arm_idx + self.finger_idx
        self.tcp_link = self._index[TCP_LINK]
        self.hand_link = self._index[HAND_LINK]
        self._configure_dynamics()

        self._channel = FaultyChannel(config.faults, np.random.default_rng(config.seed + 1))
        self.reset(np.asarray(config.initial_q_rad), config.initial_gripper_width_m)

    # -- setup ---------------------------------------------------------------------------------
    def _resolve_names(self) -> dict[str, int]:
        index = {}
        for j in range(self.client.getNumJoints(self.robot_id)):
            info = self.client.getJointInfo(self.robot_id, j)
            index[info[1].decode()] = j  # joint name
            index[info[12].decode()] = j  # child link name
        missing = [n for n in (*ARM_JOINTS, *FINGER_JOINTS, TCP_LINK, HAND_LINK) if n not in index]
        if missing:
            raise RuntimeError(f"Panda description lacks {missing}; check sim/assets/panda")
        return index

    def _configure_dynamics(self) -> None:
        c, rid = self.client, self.robot_id
        c.changeDynamics(rid, -1, linearDamping=0.0, angularDamping=0.0)
        for j in range(c.getNumJoints(rid)):
            c.changeDynamics(rid, j, linearDamping=0.0, angularDamping=0.0, jointDamping=0.0)
        for j, vmax in zip(self.arm_idx, self.limits.joint_vel_max_rad_s, strict=True):
            c.changeDynamics(rid, j, maxJointVelocity=float(vmax))
        for j in self.finger_idx:
            c.changeDynamics(
                rid,
                j,
                lateralFriction=self.config.gripper.finger_friction,
                spinningFriction=0.001,
                frictionAnchor=1,
            )
        # The real hand couples its fingers mechanically; PyBullet ignores <mimic>, so a gear
        # constraint keeps the fingers symmetric (otherwise a grasped object slides sideways).
        gear = c.createConstraint(
            rid,
            self.finger_idx[0],
            rid,
            self.finger_idx[1],
            pybullet.JOINT_GEAR,
            [0, 1, 0],
            [0, 0, 0],
            [0, 0, 0],
        )
        c.changeConstraint(
            gear, gearRatio=-1, erp=0.1, maxForce=2 * self.config.gripper.max_grasp_force_n
        )
        # Switch off the default velocity motors so commanded torques are not fought.
        c.setJointMotorControlArray(rid, self.arm_idx, pybullet.VELOCITY_CONTROL, forces=[0.0] * 7)
        tcp_com = c.getLinkState(rid, self.tcp_link)[2]
        if max(abs(v) for v in tcp_com) > 1e-9:
            raise RuntimeError("the TCP link must have its inertial frame at its origin")

    # -- state ---------------------------------------------------------------------------------
    def reset(self, q_rad: np.ndarray, gripper_width_m: float = 0.08) -> None:
        """Teleport the arm to ``q_rad`` at rest (scene setup only, never during control)."""
        c, rid = self.client, self.robot_id
        for j, qi in zip(self.arm_idx, q_rad, strict=True):
            c.resetJointState(rid, j, float(qi), 0.0)
        half = min(max(gripper_width_m / 2, 0.0), FINGER_MAX_M)
        for j in self.finger_idx:
            c.resetJointState(rid, j, half, 0.0)
        self.time_s = 0.0
        self._tau_cmd = np.zeros(7)  # torque the arm is currently applying (on top of gravity)
        self._last_command_s = 0.0
        self.limit_violations = 0  # commands that needed the twin's clamp or rate limit
        self.max_command_rate_nm_per_s = 0.0
        self._last_arrived: np.ndarray | None = None
        self._gripper_target_m = 2 * half
        self._gripper_speed_m_s = 0.1
        self._gripper_force_n = self.config.gripper.move_force_n
        self._gripper_grasping = False
        self._gripper_setpoint_m = 2 * half
        self._refresh()

    def _refresh(self) -> None:
        p, cid, rid = pybullet, self.cid, self.robot_id
        js = p.getJointStates(rid, self.all_idx, physicsClientId=cid)
        self._q_all = [s[0] for s in js]
        self._dq_all = [s[1] for s in js]
        ls = p.getLinkState(
            rid,
            self.tcp_link,
            computeLinkVelocity=1,
            computeForwardKinematics=1,
            physicsClientId=cid,
        )
        self._ee_pos = np.array(ls[4])
        self._ee_quat = np.array(ls[5])
        self._ee_twist = np.array(ls[6] + ls[7])
        zeros = [0.0] * len(self.all_idx)
        gravity = p.calculateInverseDynamics(rid, self._q_all, zeros, zeros, physicsClientId=cid)
        self._gravity = np.array(gravity[:7])
        self._model: RobotModel | None = None

    @property
    def limits(self) -> ArmLimits:
        return PANDA_LIMITS

    @property
    def control_period_s(self) -> float:
        return self.config.period_s

    def read_state(self) -> RobotState:
        q = np.array(self._q_all)
        dq = np.array(self._dq_all)
        return RobotState(
            q_rad=q[:7],
            dq_rad_s=dq[:7],
            tau_measured_nm=self._tau_cmd + self._gravity,
            ee_pos_m=self._ee_pos,
            ee_quat_xyzw=self._ee_quat,
            ee_twist=self._ee_twist,
            gripper_width_m=float(q[7] + q[8]),
            command_age_s=self.time_s - self._last_command_s,
            stamp_s=self.time_s,
        )

    def external_wrench(self) -> np.ndarray:
        """(6,) external wrench at the TCP, base frame: force (N) then torque about the TCP (Nm),
        signed as libfranka's ``O_F_ext_hat_K`` (the wrench the arm exerts on what it touches:
        minus the contact forces on the arm). Summed over the last step's contacts of any arm or
        hand link with another body (self-contacts are internal); friction included. The twin's
        joint torques are the commanded ones, so an estimate from them (J^T pseudo-inverse of
        the external torque) would read nothing; the contact sum is exact and costs one query."""
        fx = fy = fz = tx = ty = tz = 0.0  # plain floats: a handful of contacts, no arrays
        px, py, pz = self._ee_pos.tolist()
        for c in pybullet.getContactPoints(bodyA=self.robot_id, physicsClientId=self.cid):
            if c[2] == self.robot_id:
                continue
            # On A (the arm): normal force along contactNormalOnB, frictions along their dirs.
            (nx, ny, nz), (ax, ay, az), (bx, by, bz) = c[7], c[11], c[13]
            f = (c[9] * nx + c[10] * ax + c[12] * bx, c[9] * ny + c[10] * ay + c[12] * by,
                 c[9] * nz + c[10] * az + c[12] * bz)  # fmt: skip
            rx, ry, rz = c[5][0] - px, c[5][1] - py, c[5][2] - pz
            fx, fy, fz = fx + f[0], fy + f[1], fz + f[2]
            tx += ry * f[2] - rz * f[1]
            ty += rz * f[0] - rx * f[2]
            tz += rx * f[1] - ry * f[0]
        return -np.array([fx, fy, fz, tx, ty, tz])

    def model(self) -> RobotModel:
        """Jacobian (TCP), mass matrix and Coriolis torque now (cached per step)."""
        if self._model is None:
            p, cid, rid, q = pybullet, self.cid, self.robot_id, self._q_all
            zeros = [0.0] * len(self.all_idx)
            lin, ang = p.calculateJacobian(
                rid, self.tcp_link, [0.0, 0.0, 0.0], q, zeros, zeros, physicsClientId=cid
            )
            jac = np.array(lin + ang)[:, :7]
            mass = np.array(p.calculateMassMatrix(rid, q, physicsClientId=cid))[:7, :7]
            bias = p.calculateInverseDynamics(rid, q, self._dq_all, zeros, physicsClientId=cid)
            bias = np.array(bias[:7])
            self._model = RobotModel(jac, mass, bias - self._gravity)
        return self._model

    # -- commands --------------------------------------------------------------------------------
    def command_torque(self, tau_nm: np.ndarray) -> None:
        """Queue a torque (7,) Nm on top of gravity; applied from the next step (after faults)."""
        tau = np.asarray(tau_nm, dtype=float)
        if tau.shape != (7,):
            raise ValueError(f"tau_nm has shape {tau.shape}; expected (7,)")
        if self.config.faults.active:
            self._channel.send(tau.copy(), self.time_s)
        else:
            self._accept(tau, self.time_s)

    def _accept(self, tau: np.ndarray, arrived_s: float) -> None:
        if not np.isfinite(tau).all():
            self.limit_violations += 1  # counted here; rates are tracked over finite commands
            tau = np.zeros(7)  # the real arm would stop; the twin applies nothing extra
        else:
            if self._last_arrived is not None:
                rate = float(np.abs(tau - self._last_arrived).max()) / self.config.period_s
                self.max_command_rate_nm_per_s = max(self.max_command_rate_nm_per_s, rate)
            self._last_arrived = tau
        lim = PANDA_LIMITS.joint_torque_max_nm
        clamped = np.clip(tau, -lim, lim)
        max_step = PANDA_LIMITS.torque_rate_max_nm_per_s * self.config.period_s
        limited = self._tau_cmd + np.clip(clamped - self._tau_cmd, -max_step, max_step)
        if (np.abs(limited - tau) > 1e-9).any():
            self.limit_violations += 1
        self._tau_cmd = limited
        self._last_command_s = arrived_s

    def gripper_move(self, width_m: float, speed_m_s: float) -> None:
        """Start moving the fingers to ``width_m`` at ``speed_m_s`` (width rate). Non-blocking."""
        g = self.config.gripper
        self._gripper_target_m = float(np.clip(width_m, 0.0, 2 * FINGER_MAX_M))
        self._gripper_speed_m_s = float(np.clip(speed_m_s, 1e-3, g.max_speed_m_s))
        self._gripper_force_n = g.move_force_n
        self._gripper_grasping = False

    def gripper_grasp(self, width_m: float, force_n: float, speed_m_s: float = 0.1) -> None:
        """Close toward ``width_m`` and squeeze with up to ``force_n`` per finger. Non-blocking."""
        g = self.config.gripper
        self._gripper_target_m = 0.0  # keep closing until the object stops the fingers
        self._gripper_speed_m_s = float(np.clip(speed_m_s, 1e-3, g.max_speed_m_s))
        self._gripper_force_n = float(np.clip(force_n, 0.0, g.max_grasp_force_n))
        self._gripper_grasping = True

    @property
    def gripper_is_grasping(self) -> bool:
        return self._gripper_grasping

    # -- time --------------------------------------------------------------------------------------
    def step(self) -> None:
        """Advance physics one period: deliver commands, apply torque + gravity, move fingers."""
        p, cid, rid = pybullet, self.cid, self.robot_id
        if self.config.faults.active:
            tau, due = self._channel.receive(self.time_s)
            if tau is not None:
                self._accept(tau, due)
        p.setJointMotorControlArray(
            rid,
            self.arm_idx,
            p.TORQUE_CONTROL,
            forces=(self._tau_cmd + self._gravity).tolist(),
            physicsClientId=cid,
        )
        # Gripper: ramp the width setpoint at the commanded speed; fingers track it, force bounded.
        step_m = self._gripper_speed_m_s * self.config.period_s
        diff = self._gripper_target_m - self._gripper_setpoint_m
        self._gripper_setpoint_m += math.copysign(min(abs(diff), step_m), diff)
        half = self._gripper_setpoint_m / 2
        p.setJointMotorControlArray(
            rid,
            self.finger_idx,
            p.POSITION_CONTROL,
            targetPositions=[half, half],
            forces=[self._gripper_force_n] * 2,
            positionGains=[0.2, 0.2],
            physicsClientId=cid,
        )
        p.stepSimulation(physicsClientId=cid)
        self.time_s += self.config.period_s
        self._refresh()

    def close(self) -> None:
        """Disconnect from PyBullet (the twin is unusable afterwards)."""
        if self.client is not None:
            self.client.disconnect()
            self.client = None
