"""Fixed-rate control loop over any ``Robot``: targets in, safe torques out, telemetry kept.

Each tick: read state and model -> take the newest target (if any) -> watchdog decides the mode ->
reference pipeline + impedance law (or pure damping) -> torque safety -> command the robot.
Lockstep mode steps a simulated robot once per tick; wall-clock mode runs on monotonic deadlines for
a real arm. ``set_*_target`` may be called from any thread; a bad target raises InvalidTargetError
in the caller and the loop runs on with its previous target.

What bounds where the TCP goes: Cartesian targets are clipped to the workspace (rejected far
outside it), their twist feedforward is scaled into the speed limits (rejected far over them), and
the reference brakes at the box faces (``reference``). Joint targets must lie inside the soft
joint limits, with their TCP (``forward_kinematics``, the Panda's by default) inside the box; while
the joint reference moves, a step that would take its TCP further out of the box is not taken.
Torque safety then adds joint-limit repulsion, a joint-velocity guard, torque and torque-rate
limits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from robot_rl.controllers.cartesian_impedance import CartesianImpedanceLaw
from robot_rl.controllers.gains import CartesianGains, JointGains
from robot_rl.controllers.integral import IntegralConfig, PositionIntegrator
from robot_rl.controllers.joint_impedance import damping_torque, joint_impedance_torque
from robot_rl.controllers.kinematics import panda_tcp_position
from robot_rl.controllers.reference import (
    CartesianReferenceGenerator,
    JointReferenceGenerator,
    ReferenceConfig,
    bound_twist,
)
from robot_rl.controllers.targets import (
    CartesianTarget,
    InvalidTargetError,
    JointTarget,
    validate_cartesian_target,
    validate_joint_target,
)
from robot_rl.controllers.telemetry import TelemetryRing
from robot_rl.controllers.torque_safety import SafetyConfig, TorqueSafety
from robot_rl.controllers.watchdog import ControlMode, WatchdogConfig, watchdog_mode

from robot_rl.interfaces import LockstepRobot, Robot, RobotState

log = logging.getLogger(__name__)

# Panda "ready" posture, used as the nullspace posture target.
PANDA_READY_Q_RAD = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785)
MAX_GRIPPER_WIDTH_M = 0.08


# The modes as module constants: the tick compares them a dozen times, and an enum member is a
# class attribute lookup each time.
_ACTIVE, _HOLD = ControlMode.ACTIVE, ControlMode.HOLD
_DAMP, _FAULT = ControlMode.DAMP, ControlMode.FAULT

_STOPPED = "the arm is under a software stop: clear it (console: Clear stop) before new targets"


class SmoothedClock:
    """A wall-clock loop's time, read once per tick: each read advances it by one ``period_s``
    plus ``gain`` times its distance from ``source()`` (time.monotonic), so it follows the wall
    clock's rate without its tick-to-tick jitter. The reference samples its segment at this
    time; on the raw clock a tick 0.5 ms late put the segment point half a period ahead, the
    profile turned that into a correction at its acceleration limit, and the next tick back:
    a chattering reference. Behind by more than ``reanchor_s`` (the first read, a stalled or
    paused loop) it jumps to the wall clock; ahead (ticks bunched after a stall) it slows and
    never goes back. A loop ticking every D seconds steadily, D > period, lags the wall clock by
    (1 - gain) (D - period) / gain (a robot-paced loop on franky-sim at 0.86x real time, gain
    0.1: 1.5 ms); tick-to-tick jitter in the wall clock reaches its steps scaled by about
    sqrt(gain / (2 - gain)) (0.23 at 0.1)."""

    def __init__(self, period_s: float, gain: float = 0.1, reanchor_s: float = 0.02,
                 source: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        if not 0.0 < gain <= 1.0:
            raise ValueError(f"gain={gain}; expected 0 < gain <= 1")
        self.period_s = period_s
        self.gain = gain
        self.reanchor_s = reanchor_s
        self.source = source
        self._t: float | None = None

    def reset(self) -> None:
        """The next read starts from the wall clock."""
        self._t = None

    def __call__(self) -> float:
        now = self.source()
        t = self._t
        if t is None or now - t > self.reanchor_s:
            self._t = now
            return now
        step = t + self.period_s
        self._t = _fmax(step + self.gain * (now - step), t)
        return self._t


def _fmax(a: float, b: float) -> float:
    return a if a >= b else b


@dataclass(frozen=True)
class LoopConfig:
    """Everything the loop needs besides the robot."""

    period_s: float = 0.001
    clock: Literal["lockstep", "wallclock"] = "lockstep"
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    cartesian_gains: CartesianGains = field(default_factory=CartesianGains)
    # The Cartesian law's integral force on the position error (IntegralConfig(0.0): off).
    integral: IntegralConfig = field(default_factory=IntegralConfig)
    joint_gains: JointGains = field(default_factory=JointGains)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    posture_q_rad: tuple[float, ...] = PANDA_READY_Q_RAD
    joint_speed_fraction: float = 0.5
    telemetry_capacity: int = 60_000
    # TCP position (3,) m, base frame, of joint angles (7,) rad: checks joint targets against the
    # workspace box. The Panda's (Franka's DH table and hand); another arm passes its own.
    forward_kinematics: Callable[[np.ndarray], np.ndarray] = panda_tcp_position
    # How far (m) a joint reference's TCP may stray outside the box while it moves (FK is exact,
    # the path between two checked ticks is 1 ms long).
    joint_box_tolerance_m: float = 0.002


@dataclass(frozen=True)
class LoopStatus:
    """What the loop did on its latest tick; ``target_age_s`` is the age of the newest target."""

    mode: ControlMode
    target_age_s: float
    stamp_s: float
    safety_flags: int
    tau_nm: np.ndarray
    law: Literal["cartesian", "joint"]
    rejected_targets: int
    faults: int


class ControlLoop:
    """Runs impedance control at a fixed rate over a robot (see module docstring)."""

    def __init__(self, robot: Robot, config: LoopConfig | None = None):
        self.robot = robot
        self.config = config = config or LoopConfig()
        if config.clock == "lockstep" and not isinstance(robot, LockstepRobot):
            raise TypeError("lockstep clock needs a robot with step() (the twin); use 'wallclock'")
        self.limits = robot.limits
        # Checked once: a runtime Protocol isinstance check is too slow for every tick.
        self._lockstep = config.clock == "lockstep"
        # The wall-clock mode's time source (s): time.monotonic; an offline replay (the bench's
        # per-tick timing, tests) sets a clock that advances one period per tick.
        self.clock: Callable[[], float] = time.monotonic
        self.telemetry = TelemetryRing(config.telemetry_capacity)
        self.safety = TorqueSafety(self.limits, config.period_s, config.safety)
        self.cartesian = CartesianReferenceGenerator(
            config.reference, config.period_s, config.cartesian_gains
        )
        self.joint = JointReferenceGenerator(
            self.limits.joint_pos_min_rad + config.safety.joint_margin_rad,
            self.limits.joint_pos_max_rad - config.safety.joint_margin_rad,
            config.joint_speed_fraction * self.limits.joint_vel_max_rad_s,
            config.period_s,
        )
        self._posture = np.asarray(config.posture_q_rad, dtype=float)
        self.integrator = PositionIntegrator(config.integral, config.period_s)
        self.law = CartesianImpedanceLaw()  # cartesian_impedance_torque, preallocated and lean
        self._pos_error = np.zeros(3)
        self._lock = threading.Lock()
        self._pending: CartesianTarget | JointTarget | None = None
        self._keep_alive = False
        self._law: Literal["cartesian", "joint"] = "cartesian"
        self._mode = ControlMode.HOLD
        self._last_target_s: float | None = None
        self._targets_seen = False
        self._start_s: float | None = None
        self._last_tick_wall: float | None = None
        self.rejected_targets = 0
        self.scaled_twists = 0  # targets whose twist feedforward was scaled into the speed limits
        self.joint_box_stops = 0  # ticks a joint reference was stopped at the workspace box
        self.faults = 0
        self.stopped = False  # software stop: latched damping until clear_stop()
        self.status: LoopStatus | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.thread_error: BaseException | None = None

    # -- inputs (any thread) -----------------------------------------------------------------
    def set_cartesian_target(self, target: CartesianTarget) -> None:
        """Validate and queue a Cartesian target; raises InvalidTargetError (logged) if bad."""
        try:
            checked = validate_cartesian_target(target)
            # Far outside the workspace is an error for the caller, not for the 1 kHz tick.
            self.config.reference.workspace.clip(checked.pos_m, checked.quat_xyzw)
            if checked.twist is not None:  # feedforward within the reference's speed limits
                twist, scaled = bound_twist(checked.twist, self.config.reference)
                if scaled:
                    self.scaled_twists += 1
                    checked = CartesianTarget(checked.pos_m, checked.quat_xyzw, twist,
                                              checked.stiffness)  # fmt: skip
        except InvalidTargetError as exc:
            self.rejected_targets += 1
            log.warning("rejected Cartesian target: %s", exc)
            raise
        with self._lock:
            if self.stopped:
                raise InvalidTargetError(_STOPPED)
            self._pending = checked

    def set_joint_target(self, target: JointTarget) -> None:
        """Validate and queue a joint target; raises InvalidTargetError (logged) if bad: not
        finite, outside the soft joint limits, or with its TCP outside the workspace box."""
        try:
            checked = validate_joint_target(target)
            self._check_joint_goal(checked.q_rad)
        except InvalidTargetError as exc:
            self.rejected_targets += 1
            log.warning("rejected joint target: %s", exc)
            raise
        with self._lock:
            if self.stopped:
                raise InvalidTargetError(_STOPPED)
            self._pending = checked

    def _check_joint_goal(self, q_rad: np.ndarray) -> None:
        lo, hi = self.joint.q_min_rad, self.joint.q_max_rad
        bad = np.flatnonzero((q_rad < lo) | (q_rad > hi))
        if bad.size:
            i = int(bad[0])
            raise InvalidTargetError(
                f"q_rad[{i}] (joint {i + 1}) = {q_rad[i]:.4f} rad is outside its allowed range "
                f"{lo[i]:.4f}..{hi[i]:.4f} rad (the joint limits less a "
                f"{self.config.safety.joint_margin_rad} rad margin)"
            )
        tcp = np.asarray(self.config.forward_kinematics(q_rad), dtype=float)
        ws = self.config.reference.workspace
        if ws.outside_m(tcp) > 0.0:
            raise InvalidTargetError(
                f"q_rad={np.round(q_rad, 4).tolist()} puts the TCP at {np.round(tcp, 4).tolist()} "
                f"m, outside the workspace box {list(ws.pos_min_m)}..{list(ws.pos_max_m)}"
            )

    def keep_alive(self) -> None:
        """The target stream is alive but has nothing new (a client between two 10 Hz targets):
        refresh the watchdog without restarting the reference. Ignored unless the loop is
        tracking a target, so it can never wake a holding or damping arm."""
        with self._lock:
            self._keep_alive = True

    def gripper_move(self, width_m: float, speed_m_s: float = 0.1) -> None:
        """Start a gripper motion (non-blocking); raises InvalidTargetError for bad values."""
        self._check_gripper(width_m, speed_m_s)
        self.robot.gripper_move(float(width_m), float(speed_m_s))

    def gripper_grasp(self, width_m: float, force_n: float, speed_m_s: float = 0.1) -> None:
        """Start a grasp (non-blocking); raises InvalidTargetError for bad values."""
        self._check_gripper(width_m, speed_m_s)
        if not (np.isfinite(force_n) and 0.0 <= force_n <= 140.0):
            raise InvalidTargetError(f"grasp force_n={force_n!r}; allowed 0..140 N")
        self.robot.gripper_grasp(float(width_m), float(force_n), float(speed_m_s))

    @staticmethod
    def _check_gripper(width_m: float, speed_m_s: float) -> None:
        if not (np.isfinite(width_m) and 0.0 <= width_m <= MAX_GRIPPER_WIDTH_M):
            raise InvalidTargetError(
                f"gripper width_m={width_m!r}; allowed 0..{MAX_GRIPPER_WIDTH_M} m"
            )
        if not (np.isfinite(speed_m_s) and 0.0 < speed_m_s <= 0.2):
            raise InvalidTargetError(f"gripper speed_m_s={speed_m_s!r}; allowed (0, 0.2] m/s")

    def software_stop(self) -> None:
        """Latch a stop: from the next tick the arm is damped to rest and targets are refused
        until ``clear_stop``. A software convenience for the console: the hardware stop stays
        mandatory."""
        with self._lock:
            self.stopped = True
            self._pending = None
        log.warning("software stop: damping the arm; targets are refused until it is cleared")

    def clear_stop(self) -> None:
        """Release a software stop: the arm holds where it is until new targets arrive."""
        with self._lock:
            if not self.stopped:
                return
            self.stopped = False
            self._pending = None
        self.restart()
        log.warning("software stop cleared: holding the current pose")

    def restart(self) -> None:
        """Forget targets and history; the next tick starts holding wherever the arm is.

        For scene resets (the twin was teleported); on a real arm the loop simply keeps running.
        """
        with self._lock:
            self._pending = None
        self._start_s = None
        self._last_tick_wall = None
        self._mode = ControlMode.HOLD
        self._law = "cartesian"
        self.integrator.reset()

    @property
    def integral_force_n(self) -> np.ndarray:
        """The integral force (3,) N, base frame, the Cartesian law adds now (a copy)."""
        return self.integrator.force_n.copy()

    # -- the tick ------------------------------------------------------------------------------
    def _now(self, state: RobotState) -> float:
        return state.stamp_s if self._lockstep else self.clock()

    def _begin(self, state: RobotState, now_s: float) -> None:
        self._start_s = now_s
        self._last_target_s = now_s  # starting counts as a target: hold where the arm is
        self._targets_seen = False
        self.cartesian.reset(state.ee_pos_m, state.ee_quat_xyzw, now_s)
        self.joint.reset(state.q_rad)
        self.safety.reset()

    def tick(self) -> LoopStatus:
        """Run one control period. In lockstep mode the robot is stepped once."""
        wall0 = time.perf_counter()
        state = self.robot.read_state()
        model = self.robot.model()
        wall1 = time.perf_counter()
        now = self._now(state)
        if self._start_s is None:
            self._begin(state, now)

        with self._lock:
            pending, self._pending = self._pending, None
            keep_alive, self._keep_alive = self._keep_alive, False
        if keep_alive and pending is None and self._mode == _ACTIVE:
            self._last_target_s = now
        if pending is not None:
            if self._mode != _ACTIVE:  # resume from where the arm is, not a stale pose
                self.cartesian.reset(state.ee_pos_m, state.ee_quat_xyzw, now)
                self.joint.reset(state.q_rad)
            if isinstance(pending, JointTarget):
                self.integrator.reset()
                if self._law == "cartesian":  # start the joint reference from where the arm is
                    self.joint.reset(state.q_rad)
                self._law = "joint"
                self.joint.set_goal(pending.q_rad)
            else:
                if self._law == "joint":
                    self.cartesian.reset(state.ee_pos_m, state.ee_quat_xyzw, now)
                self._law = "cartesian"
                self.cartesian.set_goal(pending, now)
            self._last_target_s = now
            self._targets_seen = True

        age = now - self._last_target_s
        mode = watchdog_mode(age, self.config.watchdog)
        if self.stopped:
            mode = _DAMP
        if mode != _ACTIVE:  # hold, damp, stop: no integral force, none stored
            self.integrator.reset()
        if mode == _HOLD and self._mode == _ACTIVE:
            # A stalled stream is worth a warning; idling after a (re)start without targets is not.
            level = logging.WARNING if self._targets_seen else logging.DEBUG
            log.log(level, "no target for %.0f ms: holding the current pose", age * 1e3)
            self.cartesian.brake_to_rest(now)  # within the acceleration limits, then hold
            self.joint.reset(state.q_rad)
        elif mode == _DAMP and self._mode != _DAMP and not self.stopped:
            log.warning("no target for %.0f ms: damping the arm to rest", age * 1e3)

        try:
            if mode == _DAMP:
                tau = damping_torque(state.dq_rad_s, self.config.safety.damping)
            elif self._law == "cartesian":
                ref = self.cartesian.step(now, model.jacobian, self.limits.joint_vel_max_rad_s)
                integral = None
                if mode == _ACTIVE and self.integrator.enabled:
                    np.subtract(ref.pos_m, state.ee_pos_m, out=self._pos_error)
                    integral = self.integrator.update(self._pos_error, ref.twist)
                tau = self.law.torque(
                    state, model, ref, self.cartesian.gains, self._posture, integral
                )
            else:
                q_ref, dq_ref = self._joint_step()
                tau = joint_impedance_torque(state, model, q_ref, dq_ref, self.config.joint_gains)
        except Exception:  # a controller failure must not kill the loop: damp and report
            self.faults += 1
            if self.faults == 1 or self.faults % 1000 == 0:
                log.exception("controller failed (%d so far); damping this tick", self.faults)
            mode = _FAULT
            self.integrator.reset()
            tau = damping_torque(np.nan_to_num(state.dq_rad_s), self.config.safety.damping)
        self._mode = mode

        tau, flags = self.safety.process(tau, state.q_rad, state.dq_rad_s, model.mass_matrix)
        wall2 = time.perf_counter()
        self.robot.command_torque(tau)
        if self._lockstep:
            self.robot.step()
        wall3 = time.perf_counter()

        period_us = 0.0 if self._last_tick_wall is None else (wall0 - self._last_tick_wall) * 1e6
        self._last_tick_wall = wall0
        missed = not self._lockstep and period_us > 1.5e6 * self.config.period_s
        self.telemetry.record(
            now,
            (wall2 - wall1) * 1e6,
            ((wall1 - wall0) + (wall3 - wall2)) * 1e6,
            period_us,
            missed,
            int(mode),
            age,
            flags,
            tau,
        )
        self.status = LoopStatus(
            mode, age, now, flags, tau, self._law, self.rejected_targets, self.faults
        )
        return self.status

    def _joint_step(self) -> tuple[np.ndarray, np.ndarray]:
        """The joint reference's next step, unless it would take the TCP further outside the box
        (beyond the tolerance): then the reference stays where it is (and says so once)."""
        before = self.joint.q_rad.copy()
        q_ref, dq_ref = self.joint.step()
        if not dq_ref.any():
            return q_ref, dq_ref
        ws, fk = self.config.reference.workspace, self.config.forward_kinematics
        outside = ws.outside_m(np.asarray(fk(q_ref), dtype=float))
        if outside > self.config.joint_box_tolerance_m and outside > ws.outside_m(
            np.asarray(fk(before), dtype=float)
        ):
            self.joint.reset(before)  # stop here; the goal is dropped
            self.joint_box_stops += 1
            if self.joint_box_stops == 1 or self.joint_box_stops % 1000 == 0:
                log.warning("joint reference stopped: its TCP would leave the workspace box")
            return before, np.zeros_like(dq_ref)
        return q_ref, dq_ref

    # -- running ---------------------------------------------------------------------------------
    def run_for(self, duration_s: float) -> LoopStatus | None:
        """Run ticks for ``duration_s`` of robot time (lockstep) or wall time (wall-clock)."""
        n = max(1, round(duration_s / self.config.period_s))
        if self.config.clock == "lockstep":
            for _ in range(n):
                self.tick()
            return self.status
        deadline = time.monotonic()
        for _ in range(n):
            self.tick()
            deadline += self.config.period_s
            delay = deadline - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -10 * self.config.period_s:  # far behind: re-anchor instead of bursting
                deadline = time.monotonic()
        return self.status

    def start(self) -> None:
        """Run in a background thread on wall-clock deadlines until ``stop()``."""
        if self.config.clock != "wallclock":
            raise RuntimeError("start() runs on the wall clock; use run_for() in lockstep mode")
        if self._thread is not None:
            raise RuntimeError("control loop already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run_thread, name="control-loop", daemon=True)
        self._thread.start()

    def _run_thread(self) -> None:
        try:
            while not self._stop.is_set():
                self.run_for(0.1)
        except BaseException as exc:  # surfaced through thread_error and the log, never swallowed
            self.thread_error = exc
            log.exception("control loop stopped on an error")

    def stop(self, timeout_s: float = 1.0) -> None:
        """Stop the background thread; re-raises the error that stopped it, if any."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        if self.thread_error is not None:
            raise RuntimeError("control loop thread failed") from self.thread_error
