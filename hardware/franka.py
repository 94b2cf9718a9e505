"""A Franka arm (Panda or FR3) as a ``robot_rl.interfaces.Robot``, over franky (libfranka).

Conventions are the project's (``robot_rl.interfaces``): SI units, base frame, quaternions
(x, y, z, w), twists linear then angular. The TCP is libfranka's ``O_T_EE`` (the end effector that
Desk's tool settings define) and its twist is ``J dq`` with J the zero Jacobian of that frame.

What this module does:
- connects to the FCI (one clear line naming the IP and what to check when it cannot), sets the
  payload and the collision thresholds from ``FrankaConfig``;
- ``read_state`` / ``model`` / ``command_torque`` for a 1 kHz torque loop: one franky state
  snapshot per tick is read, and the model (zero Jacobian, mass matrix, Coriolis) is evaluated at
  that same snapshot; torques go to a ``SimpleTorqueMotion`` whose own torque-rate limit,
  joint-limit repulsion and signal timeout sit underneath ours as a second layer;
- a gripper that never blocks the caller: moves and grasps run on a worker thread (newest command
  wins), which also polls the width;
- errors are turned into ``FrankaFaultError`` with libfranka's own text.

franky is imported lazily and can be injected (``franky_module``) so the rest of robot-rl imports
without the ``franka`` extra. Never import pylibfranka in the same process: its pybind types clash
with franky's.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import numpy as np

from robot_rl.interfaces import PANDA_LIMITS, ArmLimits, RobotModel, RobotState

log = logging.getLogger(__name__)

# FR3 limits, from Franka's "Robot and interface specifications" for the FR3 (joint space limits
# table): its joint ranges differ from the Panda's (joint 4 stops at -0.1518 rad, joint 6 spans
# 0.5445..4.5169 rad, joints 1/7 are narrower/wider), and joints 5-7 may turn faster.
FR3_LIMITS = ArmLimits(
    joint_pos_min_rad=np.array([-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159]),
    joint_pos_max_rad=np.array([2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159]),
    joint_vel_max_rad_s=np.array([2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26]),
    joint_torque_max_nm=np.array([87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0]),
    torque_rate_max_nm_per_s=1000.0,
)
# The Panda's figures (its datasheet) live in robot_rl.interfaces.PANDA_LIMITS.
ARM_LIMITS: dict[str, ArmLimits] = {"panda": PANDA_LIMITS, "fr3": FR3_LIMITS}

MAX_GRIPPER_WIDTH_M = 0.08
MAX_GRASP_FORCE_N = 140.0  # Franka Hand continuous force 70 N, 140 N peak


class FrankaError(RuntimeError):
    """The arm cannot be used (unreachable FCI, missing franky); the message says what to check."""


class FrankaFaultError(RuntimeError):
    """libfranka stopped the motion (reflex, collision, lost connection); text is libfranka's."""


@dataclass(frozen=True)
class FrankaConfig:
    """Site and safety settings of one Franka rig (a per-rig YAML; never in code).

    robot_ip: the FCI address (Desk's IP on the control box's robot network).
    model: "fr3" or "panda" (their joint ranges differ; see FR3_LIMITS).
    control: "torque" (our impedance law and safety at 1 kHz in Python) or "tracker" (franky's C++
        Cartesian impedance tracker fed by our reference pipeline).
    load_mass_kg / load_com_m / load_inertia_kg_m2: the payload beyond the end effector Desk knows
        (a tool, a camera mount): mass, flange-frame centre of mass, diagonal inertia.
    collision_torque_nm (7,) / collision_force_n (6,): libfranka's contact/collision thresholds;
        above them the robot stops with a reflex.
    signal_timeout_s: franky ends the torque motion (a fault) if no torque arrives this long.
    pacing: torque mode's tick: "robot" (default) starts each tick when the robot's next state is
        there (waiting at most ``ROBOT_TICK_WAIT_S`` past the loop's own 1 ms deadline), so every
        robot tick gets a torque computed from its own state, as a libfranka control callback
        would; "wallclock" keeps the loop's own 1 ms deadlines only (it drifts against the
        robot's clock: two robot ticks inside one of its periods leave one without a new torque).
    max_delta_tau_nm: franky's per-cycle torque change limit (1 Nm per 1 ms = 1000 Nm/s).
    realtime: "ignore" runs without a PREEMPT_RT kernel (sim, tests); "enforce" refuses to run
        without one (a real arm should).
    cpu: core to pin the 1 kHz loop to (None: leave it); rt_priority: SCHED_FIFO priority to ask
        for (ignored where the user may not set it).
    home_q_rad: the joint-space home posture; home_speed_fraction: of each joint's velocity limit.
    tracker_period_s: how often the reference pipeline feeds franky's tracker.
    gripper: whether a Franka Hand is attached.
    friction_coulomb_nm (7,): Coulomb friction the Cartesian law feeds forward per joint, signed by
        the joint velocity the reference asks for (torque mode; tracker mode moves the target by
        the equivalent tool force over the stiffness). Below the arm's own: 70-80 % of the
        Panda's identified values (Gaz et al., RA-L 2019: half the sigmoid amplitude, 0.15-0.64
        Nm), so it never drives a joint by itself; 0 turns it off.
    """

    robot_ip: str
    model: Literal["fr3", "panda"] = "fr3"
    control: Literal["torque", "tracker"] = "torque"
    load_mass_kg: float = 0.0
    load_com_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_inertia_kg_m2: tuple[float, float, float] = (0.0, 0.0, 0.0)
    collision_torque_nm: tuple[float, ...] = (20.0, 20.0, 18.0, 18.0, 16.0, 14.0, 12.0)
    collision_force_n: tuple[float, ...] = (20.0, 20.0, 20.0, 25.0, 25.0, 25.0)
    signal_timeout_s: float = 0.05
    pacing: Literal["robot", "wallclock"] = "robot"
    max_delta_tau_nm: float = 1.0
    realtime: Literal["ignore", "enforce"] = "enforce"
    cpu: int | None = None
    rt_priority: int = 80
    home_q_rad: tuple[float, ...] = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785)
    home_speed_fraction: float = 0.2
    tracker_period_s: float = 0.002
    gripper: bool = True
    friction_coulomb_nm: tuple[float, ...] = (0.2, 0.35, 0.25, 0.5, 0.3, 0.1, 0.2)

    def __post_init__(self) -> None:
        if not self.robot_ip:
            raise ValueError("robot_ip is empty; give the FCI address, e.g. 172.16.0.2")
        # every number finite first: NaN passes the range comparisons below (they are all False)
        for name in ("collision_torque_nm", "collision_force_n", "home_q_rad", "load_com_m",
                     "load_inertia_kg_m2"):  # fmt: skip
            if not all(math.isfinite(v) for v in getattr(self, name)):
                raise ValueError(f"{name}={list(getattr(self, name))}; every value must be finite")
        for name in ("home_speed_fraction", "load_mass_kg", "signal_timeout_s",
                     "max_delta_tau_nm", "tracker_period_s"):  # fmt: skip
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name}={getattr(self, name)}; must be finite")
        if len(self.collision_torque_nm) != 7 or min(self.collision_torque_nm) <= 0:
            raise ValueError(
                f"collision_torque_nm={self.collision_torque_nm}; need 7 positive values (Nm)"
            )
        if len(self.collision_force_n) != 6 or min(self.collision_force_n) <= 0:
            raise ValueError(f"collision_force_n={self.collision_force_n}; need 6 positive (N)")
        if len(self.home_q_rad) != 7:
            raise ValueError(f"home_q_rad has {len(self.home_q_rad)} values; need 7 (rad)")
        limits = ARM_LIMITS[self.model]
        q = np.asarray(self.home_q_rad)
        if (q < limits.joint_pos_min_rad).any() or (q > limits.joint_pos_max_rad).any():
            raise ValueError(
                f"home_q_rad={list(self.home_q_rad)} is outside the {self.model}'s joint ranges "
                f"{limits.joint_pos_min_rad.tolist()}..{limits.joint_pos_max_rad.tolist()}"
            )
        if not 0.0 < self.home_speed_fraction <= 0.5:
            raise ValueError(f"home_speed_fraction={self.home_speed_fraction}; allowed (0, 0.5]")
        if not 0.0 <= self.load_mass_kg <= 3.0:
            raise ValueError(f"load_mass_kg={self.load_mass_kg}; allowed 0..3 kg (the payload)")
        if self.pacing not in ("robot", "wallclock"):
            raise ValueError(f"pacing={self.pacing!r}; allowed: robot, wallclock")
        if not 0.0 < self.signal_timeout_s <= 0.1:
            raise ValueError(f"signal_timeout_s={self.signal_timeout_s}; allowed (0, 0.1] s")
        if not 0.0 < self.max_delta_tau_nm <= 1.0:
            raise ValueError(f"max_delta_tau_nm={self.max_delta_tau_nm}; allowed (0, 1] Nm/cycle")
        fc = self.friction_coulomb_nm
        if len(fc) != 7 or not all(math.isfinite(v) and 0.0 <= v <= 2.0 for v in fc):
            raise ValueError(f"friction_coulomb_nm={fc}; need 7 values in 0..2 Nm")
        if not 0.001 <= self.tracker_period_s <= 0.01:
            raise ValueError(f"tracker_period_s={self.tracker_period_s}; allowed 0.001..0.01 s")

    @property
    def limits(self) -> ArmLimits:
        return ARM_LIMITS[self.model]


def current_scheduling() -> tuple[int, int] | None:
    """(policy, priority) of the calling thread, or None where the OS does not say."""
    try:
        return os.sched_getscheduler(0), os.sched_getparam(0).sched_priority
    except (OSError, AttributeError):
        return None


def restore_scheduling(policy: tuple[int, int] | None) -> None:
    """Put the calling thread back on ``policy`` (from ``current_scheduling``)."""
    if policy is None or current_scheduling() == policy:
        return
    try:
        os.sched_setscheduler(0, policy[0], os.sched_param(policy[1]))
    except (OSError, AttributeError) as exc:
        log.warning("could not restore this thread's scheduling after connecting: %s", exc)


def load_franky() -> ModuleType:
    """Import franky, or say how to install it."""
    try:
        import franky
    except ImportError as exc:
        raise FrankaError(
            f"franky is not installed ({exc}); install the extra: pip install 'robot-rl[franka]'"
        ) from None
    return franky


FCI_PORT = 1337  # libfranka's robot command port on the control box
# How long connect() gives the FCI port to answer before libfranka is asked: libfranka's own TCP
# connect waits 60 s for an address that does not answer (an unplugged arm), and spins a core
# meanwhile; a control box on the same network answers within milliseconds.
FCI_PROBE_TIMEOUT_S = 2.0


def probe_fci(ip: str, timeout_s: float = FCI_PROBE_TIMEOUT_S) -> None:
    """Open and close a TCP connection to the FCI port (no libfranka session); OSError if it
    does not answer within ``timeout_s``."""
    with socket.create_connection((ip, FCI_PORT), timeout=timeout_s):
        pass


def fci_unreachable_message(ip: str, exc: BaseException) -> str:
    """The one line an operator gets when the arm's FCI does not answer."""
    return (
        f"cannot reach the Franka FCI at {ip} ({exc}); check that the arm is powered and its "
        f"joints unlocked in Desk, FCI is activated (Desk menu > Activate FCI), this machine is "
        f"on the control box's network (ping {ip}), and no other FCI client is connected"
    )


@dataclass
class _GripperCommand:
    op: Literal["move", "grasp"]
    width_m: float
    speed_m_s: float
    force_n: float = 0.0


@dataclass
class GripperStats:
    commands: int = 0
    replaced: int = 0  # commands dropped because a newer one arrived first
    failures: int = 0
    last_error: str = ""
    last_result: bool | None = None


class FrankaGripper:
    """Franka Hand over franky's ``Gripper``; calls never block (see module docstring).

    A worker thread runs one command at a time (the newest waiting one; older waiting ones are
    replaced) and polls the width at ``poll_hz`` while idle. ``width_m`` is the newest reading.
    """

    def __init__(self, gripper: Any, poll_hz: float = 50.0) -> None:
        self._gripper = gripper
        self._poll_period_s = 1.0 / poll_hz
        self._cond = threading.Condition()
        self._pending: _GripperCommand | None = None
        self._busy = False
        self._stop = False
        self.stats = GripperStats()
        self.width_m = float(gripper.width)
        self.done_count = 0  # finished commands (tests and callers wait on this)
        self._thread = threading.Thread(target=self._run, name="franka-gripper", daemon=True)
        self._thread.start()

    def move(self, width_m: float, speed_m_s: float) -> None:
        self._submit(_GripperCommand("move", width_m, speed_m_s))

    def grasp(self, width_m: float, force_n: float, speed_m_s: float) -> None:
        self._submit(_GripperCommand("grasp", width_m, speed_m_s, force_n))

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._busy or self._pending is not None

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until no command is queued or running (for tests and resets)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._busy or self._pending is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _submit(self, command: _GripperCommand) -> None:
        if not (np.isfinite(command.width_m) and 0.0 <= command.width_m <= MAX_GRIPPER_WIDTH_M):
            raise ValueError(f"gripper width_m={command.width_m!r}; allowed 0..0.08 m")
        if not (np.isfinite(command.speed_m_s) and 0.0 < command.speed_m_s <= 0.2):
            raise ValueError(f"gripper speed_m_s={command.speed_m_s!r}; allowed (0, 0.2] m/s")
        if not (np.isfinite(command.force_n) and 0.0 <= command.force_n <= MAX_GRASP_FORCE_N):
            raise ValueError(f"grasp force_n={command.force_n!r}; allowed 0..140 N")
        with self._cond:
            if self._pending is not None:
                self.stats.replaced += 1
            self._pending = command
            self.stats.commands += 1
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._pending is None and not self._stop:
                    self._cond.wait(self._poll_period_s)
                if self._stop:
                    return
                command, self._pending = self._pending, None
                self._busy = command is not None
            if command is not None:
                self._execute(command)
            self._poll_width()  # before "done", so a waiter sees the width the command left
            if command is not None:
                with self._cond:
                    self._busy = False
                    self.done_count += 1
                    self._cond.notify_all()

    def _execute(self, c: _GripperCommand) -> None:
        try:
            if c.op == "move":
                ok = bool(self._gripper.move(c.width_m, c.speed_m_s))
            else:  # a grasp with wide tolerances: "closed on whatever is there" counts
                ok = bool(self._gripper.grasp(c.width_m, c.speed_m_s, c.force_n, 0.08, 0.08))
            self.stats.last_result = ok
        except Exception as exc:  # a gripper error must not end the worker: counted, logged
            self.stats.failures += 1
            self.stats.last_error = str(exc)
            log.warning("gripper %s to %.3f m failed: %s", c.op, c.width_m, exc)

    def _poll_width(self) -> None:
        try:
            self.width_m = float(self._gripper.width)
        except Exception as exc:
            self.stats.failures += 1
            self.stats.last_error = str(exc)
            log.debug("gripper width read failed: %s", exc)
            time.sleep(self._poll_period_s)  # a dead link: do not spin

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=5.0)


@dataclass
class _Snapshot:
    """The franky state of the current tick, kept so ``model()`` uses the same sample."""

    raw: Any = None
    state: RobotState | None = None


class FrankaRobot:
    """A Franka arm as a ``Robot`` (see module docstring). Construct with ``connect``."""

    def __init__(self, config: FrankaConfig, franky_module: ModuleType | None = None,
                 probe: bool | None = None) -> None:  # fmt: skip
        """``probe``: check the FCI port answers before libfranka connects (``probe_fci``);
        default on with the real franky, off with an injected one (a fake has no port)."""
        self.config = config
        self._probe = franky_module is None if probe is None else probe
        self._franky = franky_module or load_franky()
        self._limits = config.limits
        self._robot: Any = None
        self._model: Any = None
        self._frame: Any = None
        self.gripper: FrankaGripper | None = None
        self._motion: Any = None
        self._snap = _Snapshot()
        self._last_command_s: float | None = None
        self.last_tau_nm = np.zeros(7)
        self.torque_commands = 0

    # -- connection ------------------------------------------------------------------------------
    def connect(self) -> None:
        """Connect to the FCI and apply the payload and collision thresholds (FrankaError if the
        arm does not answer)."""
        f, c = self._franky, self.config
        if self._probe:
            try:
                probe_fci(c.robot_ip)
            except OSError as exc:
                why = OSError(f"port {FCI_PORT} silent for {FCI_PROBE_TIMEOUT_S} s: {exc}")
                raise FrankaError(fci_unreachable_message(c.robot_ip, why)) from None
        rt = f.RealtimeConfig.Enforce if c.realtime == "enforce" else f.RealtimeConfig.Ignore
        policy = current_scheduling()
        try:
            robot = f.Robot(c.robot_ip, realtime_config=rt)
        except Exception as exc:  # franky raises NetworkException, RealtimeException, ...
            raise FrankaError(fci_unreachable_message(c.robot_ip, exc)) from None
        finally:
            # libfranka makes the connecting thread SCHED_FIFO 99 where it may, and every thread
            # or process started from it later inherits that; only the control loop should run
            # real-time (FrankaConfig.rt_priority), so the caller gets its own policy back.
            restore_scheduling(policy)
        try:
            if robot.has_errors:
                log.warning("the arm reports errors at connect; they stay until a recover")
            robot.set_collision_behavior(
                np.asarray(c.collision_torque_nm, float), np.asarray(c.collision_force_n, float)
            )
            inertia = np.diag(np.asarray(c.load_inertia_kg_m2, float)).flatten(order="F")
            robot.set_load(float(c.load_mass_kg), list(c.load_com_m), inertia.tolist())
        except Exception as exc:
            raise FrankaError(
                f"the arm at {c.robot_ip} refused the payload or collision settings: {exc}"
            ) from None
        self._robot = robot
        self._model = robot.model
        self._frame = f.Frame.EndEffector
        if c.gripper and self.gripper is None:
            try:
                self.gripper = FrankaGripper(f.Gripper(c.robot_ip))
            except Exception as exc:
                raise FrankaError(
                    f"no Franka Hand answers at {c.robot_ip} ({exc}); set gripper: false in the "
                    "rig file if none is attached"
                ) from None
        self._snap = _Snapshot()
        self._last_command_s = time.monotonic()  # the age counts from the connection on
        log.info("connected to the %s at %s", c.model, c.robot_ip)

    @property
    def franky_robot(self) -> Any:
        """The franky ``Robot`` (None before ``connect``)."""
        return self._robot

    @property
    def connected(self) -> bool:
        return self._robot is not None

    def disconnect(self) -> None:
        """Drop the franky robot (after a lost connection); ``connect`` makes a fresh one."""
        self._robot = None
        self._model = None
        self._motion = None

    # -- motions ---------------------------------------------------------------------------------
    def start_torque_motion(self) -> None:
        """Start franky's ``SimpleTorqueMotion`` (zero torque on top of gravity until the first
        ``command_torque``), with franky's torque safety underneath ours."""
        c, lim = self.config, self._limits
        margin = 0.05  # franky's repulsion starts just outside ours (ours: SafetyConfig margin)
        motion = self._franky.SimpleTorqueMotion(
            signal_timeout=c.signal_timeout_s,
            max_delta_tau=c.max_delta_tau_nm,
            lower_joint_limits=lim.joint_pos_min_rad + margin,
            upper_joint_limits=lim.joint_pos_max_rad - margin,
            joint_limit_activation_distance=0.05,
        )
        self._robot.move(motion, asynchronous=True)
        self._motion = motion
        self.last_tau_nm = np.zeros(7)

    def poll(self) -> None:
        """Raise ``FrankaFaultError`` (libfranka's text) if the motion has ended on an error."""
        if self._robot is None:
            raise FrankaFaultError("not connected to the arm")
        try:
            self._robot.poll_motion()
        except Exception as exc:
            raise FrankaFaultError(str(exc) or type(exc).__name__) from None

    @property
    def in_control(self) -> bool:
        return self._robot is not None and bool(self._robot.is_in_control)

    def recover(self) -> None:
        """libfranka's automatic error recovery (FrankaFaultError if it fails)."""
        try:
            ok = self._robot.recover_from_errors()
        except Exception as exc:
            raise FrankaFaultError(f"automatic error recovery failed: {exc}") from None
        if not ok:
            raise FrankaFaultError("automatic error recovery did not succeed; see Desk")

    def stop_motion(self, timeout_s: float = 3.0) -> None:
        """End the running torque motion gently (franky's TorqueStopMotion damps to rest)."""
        if self._robot is None:
            return
        try:
            if self._robot.is_in_control:
                self._robot.move(self._franky.TorqueStopMotion(), asynchronous=True)
            self._robot.join_motion(timeout_s)
        except Exception as exc:  # the motion may already have died; that is reported elsewhere
            log.info("stopping the torque motion: %s", exc)
        self._motion = None

    # -- Robot protocol --------------------------------------------------------------------------
    @property
    def limits(self) -> ArmLimits:
        return self._limits

    def read_state(self) -> RobotState:
        """One state sample (see ``robot_rl.interfaces.RobotState``); the model is evaluated at it.
        ``stamp_s`` is host monotonic time at the read; ``command_age_s`` counts from the last
        command (a torque, or a tracker reference: ``mark_command``), or from the connection."""
        raw = self._robot.state
        now = time.monotonic()
        pose = raw.O_T_EE
        q = np.asarray(raw.q, dtype=float).reshape(7)
        dq = np.asarray(raw.dq, dtype=float).reshape(7)
        jac = np.asarray(self._model.zero_jacobian(self._frame, raw), dtype=float)
        state = RobotState(
            q_rad=q,
            dq_rad_s=dq,
            tau_measured_nm=np.asarray(raw.tau_J, dtype=float).reshape(7),
            ee_pos_m=np.asarray(pose.translation, dtype=float).reshape(3),
            ee_quat_xyzw=np.asarray(pose.quaternion, dtype=float).reshape(4),
            ee_twist=jac.dot(dq),  # (J @ dq without the matmul dispatch)
            gripper_width_m=self.gripper.width_m if self.gripper is not None else 0.0,
            command_age_s=0.0 if self._last_command_s is None else now - self._last_command_s,
            stamp_s=now,
        )
        self._snap = _Snapshot(raw, state)
        self._jacobian = jac
        return state

    def raw_state(self) -> Any:
        """The franky ``RobotState`` of the latest ``read_state`` (robot_mode, errors, wrench)."""
        return self._snap.raw

    def robot_time_s(self, fresh: bool = False) -> float | None:
        """The robot's own clock (libfranka ``RobotState.time``, s) of the latest ``read_state``
        sample, or with ``fresh`` of the newest state franky holds now; None when there is none
        (no state read yet, or a franky without the field)."""
        raw = self._robot.state if fresh else self._snap.raw
        stamp = getattr(raw, "time", None)
        return stamp.to_sec() if stamp is not None else None

    def model(self) -> RobotModel:
        """libfranka's model at the latest ``read_state`` sample."""
        raw = self._snap.raw
        if raw is None:
            self.read_state()
            raw = self._snap.raw
        return RobotModel(
            jacobian=self._jacobian,
            mass_matrix=np.asarray(self._model.mass(raw), dtype=float),
            coriolis_nm=np.asarray(self._model.coriolis(raw), dtype=float).reshape(7),
        )

    def command_torque(self, tau_nm: np.ndarray) -> None:
        """Send (7,) Nm on top of gravity to the running torque motion (its signal timeout ends
        the motion if these stop)."""
        if self._motion is None:
            raise FrankaFaultError("no torque motion is running; start one (or recover) first")
        self._motion.set_torque(tau_nm)
        self._last_command_s = time.monotonic()
        self.last_tau_nm = tau_nm
        self.torque_commands += 1

    def mark_command(self) -> None:
        """A command reached the arm by another path (franky's tracker): restart the age."""
        self._last_command_s = time.monotonic()

    def gripper_move(self, width_m: float, speed_m_s: float) -> None:
        if self.gripper is not None:
            self.gripper.move(width_m, speed_m_s)

    def gripper_grasp(self, width_m: float, force_n: float, speed_m_s: float = 0.1) -> None:
        if self.gripper is not None:
            self.gripper.grasp(width_m, force_n, speed_m_s)

    def external_wrench(self) -> np.ndarray:
        """(6,) estimated external wrench at the TCP, base frame (``O_F_ext_hat_K``), N and Nm."""
        raw = self._snap.raw
        return np.zeros(6) if raw is None else np.asarray(raw.O_F_ext_hat_K, float).reshape(6)

    def close(self) -> None:
        self.stop_motion()
        if self.gripper is not None:
            self.gripper.close()
            self.gripper = None
        self.disconnect()
