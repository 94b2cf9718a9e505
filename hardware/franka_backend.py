"""The robot server's backend for a Franka arm (``robot_rl.transport.robot_server.RobotBackend``).

Two control modes (``FrankaConfig.control``):
- ``torque`` (default): our ``ControlLoop`` (reference pipeline, impedance law, torque safety,
  watchdog) computes the torque every 1 ms on a dedicated thread that keeps time on monotonic
  deadlines and, by default (``FrankaConfig.pacing: robot``), then waits up to 5 ms for the
  robot's next state, so each robot tick gets a torque from its own state. The garbage collector
  is kept out of it (``quiet_gc``: collected, frozen and disabled before the motion starts; a
  young-generation pass runs only in a tick's slack), and it gets SCHED_FIFO priority and a CPU
  pin where the user may set them. franky's ``SimpleTorqueMotion`` applies the torque, with its
  own rate limit, joint-limit repulsion and signal timeout underneath.
- ``tracker``: franky's C++ ``CartesianImpedanceTracker`` runs the 1 kHz law; a Python thread at
  ``tracker_period_s`` feeds it from our reference pipeline (validation, workspace clip, velocity
  limit, gain smoothing) under the same watchdog.
Both: hold 100 ms after the last target and damp at 500 ms (``WatchdogConfig``), a latched software
stop, the twin's state message. A reflex, a collision or a lost connection puts the mode at
``fault`` (``ControlMode.FAULT``) with libfranka's error text in ``fault_text``; nothing moves
until an explicit ``recover()`` (which reconnects first when the link was lost). The server's
thread (``tick``, ``state``, ``status``) never calls franky: it reads what the control thread
left, so a dead link cannot stall it.

Resets (``reset(options)``, option ``mode``): ``home`` moves home in joint space at the capped
speed; ``random`` goes home, then to a TCP offset drawn uniformly in ``random_box_m`` (seeded); an
``operator`` reset holds the arm and answers with the prompt for the console.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any, Literal

import numpy as np
from robot_rl.controllers.cartesian_impedance import CartesianReference, friction_task_wrench
from robot_rl.controllers.integral import PositionIntegrator
from robot_rl.controllers.loop import ControlLoop, LoopConfig, SmoothedClock
from robot_rl.controllers.reachability import ProbeResult, check_workspace_reach
from robot_rl.controllers.reference import (
    CartesianReferenceGenerator,
    ReferenceConfig,
    Workspace,
)
from robot_rl.controllers.targets import (
    CartesianTarget,
    InvalidTargetError,
    JointTarget,
    validate_cartesian_target,
)
from robot_rl.controllers.watchdog import ControlMode, watchdog_mode
from robot_rl.hardware.franka import FrankaConfig, FrankaError, FrankaFaultError, FrankaRobot

from robot_rl.interfaces import RobotState, wrench_meta

log = logging.getLogger(__name__)

# The GIL switch interval while the torque loop runs (see ``start``).
GIL_SWITCH_INTERVAL_S = 0.0002
# Robot pacing (``FrankaConfig.pacing``): after its own deadline, a torque tick waits at most this
# long for the robot's next state, looking this often (a sleep: the GIL is free meanwhile). A
# tick that gives up computes from the state it has; a robot state arriving meanwhile waits for
# that computation, and if the robot's next comes within it, a robot tick gets no torque of its
# own. At 0.6 ms, franky-sim (below real time, with stalls) ran out on 10-11 % of ticks and
# 0.7-0.95 % of its ticks got no torque; at 5 ms, on 0.01 % and 0.26-0.37 %. Only a silent robot
# waits it out every tick: the loop then ticks at about 170 Hz, enough for the watchdog's hold
# (100 ms) and damp, and for the link watchdog; nothing can reach that arm anyway.
ROBOT_TICK_WAIT_S = 0.005
ROBOT_TICK_POLL_S = 0.00005
# Once a state came, the next tick's deadline is this long before it is due (one period on).
ROBOT_TICK_LEAD_S = 0.0001
# The link watchdog: a running motion whose robot clock (libfranka ``RobotState.time``) has not
# moved for this long of host time is a lost link, a fault. libfranka's own UDP receive gives up
# after the same 1 s, but a motion that lost the arm while it started can wait on it far longer
# (seen on franky-sim killed just after a torque motion started: in control, a clock stopped at
# 15 ms, no error after 15 s), and meanwhile every read answers the last state.
LINK_TIMEOUT_S = 1.0
OPERATOR_PROMPT = "reset the scene, then press r"
_STOPPED = "the arm is under a software stop: clear it (console: Clear stop) before new targets"


class _QuietGC:
    """The process's garbage collector kept out of the control loop, reference-counted.

    The collector is process-wide: a full collection in any thread holds the GIL for as long as
    the heap takes to scan (51-130 ms in a test process with torch imported), and the torque loop
    misses franky's 50 ms signal timeout meanwhile. So ``enter`` collects, freezes what survives
    (never scanned again) and disables automatic collection, before the first motion starts (a
    collection after it started faulted every start on a large heap). The last ``exit`` turns it
    back on; a backend closing while another one runs leaves it off.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._was_enabled = True

    def enter(self) -> None:
        with self._lock:
            if self._holders == 0:
                self._was_enabled = gc.isenabled()
                gc.collect()
                gc.freeze()
                gc.disable()
            self._holders += 1

    def exit(self) -> None:
        with self._lock:
            if self._holders == 0:
                return
            self._holders -= 1
            if self._holders == 0:
                gc.unfreeze()
                if self._was_enabled:
                    gc.enable()

    @property
    def holders(self) -> int:
        return self._holders


quiet_gc = _QuietGC()


@dataclass(frozen=True)
class ResetConfig:
    """How a real arm resets between episodes."""

    mode: Literal["home", "random", "operator"] = "home"
    random_box_m: tuple[float, float, float] = (0.03, 0.03, 0.02)  # half-widths around home TCP
    settle_pos_m: float = 0.005  # a reset pose needs no more (a sim or a payload sags a few mm)
    timeout_s: float = 15.0

    def __post_init__(self) -> None:
        box = self.random_box_m
        try:
            halves = [float(v) for v in box]
        except (TypeError, ValueError):
            halves = []
        if len(halves) != 3 or not all(math.isfinite(v) and v >= 0.0 for v in halves):
            raise ValueError(f"random_box_m={box!r}; allowed: 3 half-widths >= 0 (metres)")
        for name in ("settle_pos_m", "timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0.0):
                raise ValueError(f"{name}={value!r}; allowed: a number > 0")


# The reference's own ramps and brakes reach the torque through a 20 ms first-order filter on a
# real arm's clock (the twin, lockstep, runs unfiltered): see ReferenceConfig.
FRANKA_ACCEL_FEEDFORWARD_TIME_CONSTANT_S = 0.02


def franka_loop_config(workspace: Workspace | None = None) -> LoopConfig:
    """The control loop's settings for a Franka arm (real or franky-sim): the defaults, the
    reference's feedforward filter, and ``workspace`` (the default box if None)."""
    return LoopConfig(
        reference=ReferenceConfig(
            workspace=workspace if workspace is not None else Workspace(),
            accel_feedforward_time_constant_s=FRANKA_ACCEL_FEEDFORWARD_TIME_CONSTANT_S,
        )
    )


@dataclass(frozen=True)
class FrankaRig:
    """One rig's file (``robot-rl robot-server --backend franka --rig RIG.yaml``): the arm's site
    and safety settings, the workspace box its targets are clipped to (``robot-rl robot
    capture-pose`` prints corners to paste), and how it resets."""

    franka: FrankaConfig
    workspace: Workspace = field(default_factory=Workspace)
    reset: ResetConfig = field(default_factory=ResetConfig)

    def loop_config(self) -> LoopConfig:
        """The control loop's settings for this rig: its workspace, the Franka defaults."""
        return franka_loop_config(self.workspace)

    def workspace_reach(self) -> list[ProbeResult]:
        """The workspace box's probe points, solved for this rig's arm from its home posture
        (``controllers.reachability``: kinematics only, no arm needed)."""
        return check_workspace_reach(
            self.workspace, self.franka.limits, np.asarray(self.franka.home_q_rad, float)
        )


@dataclass
class TimingRing:
    """Preallocated stamps of torque updates and target latencies (no growth at 1 kHz)."""

    capacity: int = 200_000
    command_stamps_s: np.ndarray = field(init=False)
    # the robot's clock (libfranka RobotState.time, s) of the state each torque was computed from
    robot_stamps_s: np.ndarray = field(init=False)
    count: int = 0
    total: int = 0  # every stamp since start, never cleared (the console's loop rate)
    latencies_s: list[float] = field(default_factory=list)  # capped at 10_000
    mode_changes: list[tuple[float, int]] = field(default_factory=list)  # capped at 1_000

    def __post_init__(self) -> None:
        self.command_stamps_s = np.zeros(self.capacity)
        self.robot_stamps_s = np.full(self.capacity, np.nan)

    def stamp(self, t_s: float, robot_t_s: float = math.nan) -> None:
        self.command_stamps_s[self.count % self.capacity] = t_s
        self.robot_stamps_s[self.count % self.capacity] = robot_t_s
        self.count += 1
        self.total += 1

    def stamps(self) -> np.ndarray:
        return self._recent(self.command_stamps_s)

    def robot_stamps(self) -> np.ndarray:
        """(n,) robot-clock times (s) matching ``stamps()``; NaN where none was read."""
        return self._recent(self.robot_stamps_s)

    def _recent(self, ring: np.ndarray) -> np.ndarray:
        """The ring's entries since ``clear()``, oldest first (the newest ``capacity`` at most)."""
        n = min(self.count, self.capacity)
        return ring[np.arange(self.count - n, self.count) % self.capacity]

    def clear(self) -> None:
        self.count = 0
        self.latencies_s.clear()
        self.mode_changes.clear()


def missed_period_fraction(stamps_s: np.ndarray, period_s: float = 0.001) -> float:
    """Fraction of the ``period_s`` periods between the first and last stamp with no new stamp:
    each interval between stamps counts ``round(interval / period_s) - 1`` missed periods (a 2 ms
    gap misses one), so jitter within a period, whatever its phase, misses none."""
    if len(stamps_s) < 2:
        return 1.0
    periods = np.rint(np.diff(stamps_s) / period_s)
    total = int(periods.sum()) + 1
    return float(np.maximum(periods - 1.0, 0.0).sum()) / total


def missed_robot_tick_fraction(robot_times_s: np.ndarray, tick_s: float = 0.001) -> float:
    """Fraction of the robot's ``tick_s`` control ticks, between the first and last stamp, that
    got no new torque, counted on the robot's clock: ``robot_times_s`` is (n,) the robot time (s)
    of the state each torque was computed from, so a tick T+1 got a new torque if some stamp is
    T. A robot slower than real time (franky-sim) or stalled together with the loop misses no
    tick; the loop stalling while the robot runs on does. NaN stamps (no state read) are
    ignored; fewer than two stamps: 1.0."""
    times = np.asarray(robot_times_s, dtype=float)
    return missed_period_fraction(times[np.isfinite(times)], tick_s)


def realtime_setup(cpu: int | None, priority: int) -> dict[str, Any]:
    """Ask for SCHED_FIFO ``priority`` and a CPU pin for the calling thread; say what was
    granted (an unprivileged user gets neither, which is logged, not fatal)."""
    granted: dict[str, Any] = {"fifo": False, "cpu": None}
    if cpu is not None:
        try:
            os.sched_setaffinity(0, {cpu})
            granted["cpu"] = cpu
        except (OSError, AttributeError) as exc:
            log.warning("could not pin the control loop to CPU %d: %s", cpu, exc)
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        granted["fifo"] = True
    except (OSError, AttributeError, PermissionError) as exc:
        log.info("control loop runs without SCHED_FIFO (%s); see docs/real_robot.md", exc)
    return granted


class FrankaBackend:
    """A Franka arm behind the robot server (see the module docstring)."""

    def __init__(
        self,
        config: FrankaConfig,
        loop_config: LoopConfig | None = None,
        reset_config: ResetConfig | None = None,
        franky_module: ModuleType | None = None,
        server_period_s: float = 0.002,
    ) -> None:
        self.config = config
        self.control = config.control
        base = loop_config or franka_loop_config()
        gains = replace(
            base.cartesian_gains,
            friction_coulomb_nm=np.asarray(config.friction_coulomb_nm, dtype=float),
        )
        self.loop_config = replace(
            base,
            cartesian_gains=gains,
            clock="wallclock",
            period_s=0.001,
            posture_q_rad=tuple(config.home_q_rad),
            joint_speed_fraction=config.home_speed_fraction,
        )
        self.reset_config = reset_config or ResetConfig()
        self.period_s = server_period_s  # the server thread's rate; control runs on its own
        self.robot = FrankaRobot(config, franky_module)
        self._franky = self.robot._franky
        self.loop: ControlLoop | None = None
        self.timing = TimingRing()
        self._lock = threading.Lock()
        self._state: RobotState | None = None
        self._fault_text = ""
        self._connected = False
        self._run = threading.Event()  # set while the control thread may command the arm
        self._paused = threading.Event()  # the control thread acknowledges a pause
        self._quit = threading.Event()
        self._thread: threading.Thread | None = None
        self._target_stamp_s: float | None = None
        self.realtime: dict[str, Any] = {}
        self.recoveries = 0
        self._switch_interval_s: float | None = None  # the process's own, while torque mode runs
        self._gc_quiet = False  # holds quiet_gc from start() to close()
        # torque mode: wait for the robot's next state each tick (FrankaConfig.pacing); the
        # bench flips it to compare both on one simulator
        self.robot_paced = config.control == "torque" and config.pacing == "robot"
        self.robot_waits = 0  # ticks that waited for a fresh robot state and got one
        self.robot_wait_timeouts = 0  # ticks whose wait ran out (the robot is late or silent)
        self._served_robot_s: float | None = None  # robot clock of the last tick's state
        # the link watchdog (LINK_TIMEOUT_S): the newest robot clock seen, and when it last moved
        self._link_clock: tuple[float, float] | None = None
        # tracker mode
        self._tracker: Any = None
        self._tref: CartesianReferenceGenerator | None = None
        self._tpending: CartesianTarget | None = None
        self._tkeep_alive = False
        self._tmode = ControlMode.HOLD
        self._tlast_target_s = 0.0
        self._tstopped = False
        self._tdamped = False
        self._trejected = 0
        self._tfaults = 0
        self._tstiffness = np.asarray(self.loop_config.cartesian_gains.stiffness, float).copy()
        # The integral force, as a shift of the tracker's target: K * shift = force.
        self._tintegral = PositionIntegrator(self.loop_config.integral, config.tracker_period_s)
        self._terror = np.zeros(3)
        self._tfriction = bool(np.any(self.loop_config.cartesian_gains.friction_coulomb_nm))

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect, start the motion and the control thread (FrankaError if the arm is not
        there)."""
        self.robot.connect()
        self._connected = True
        if self.control == "torque":
            # A thread waiting for the GIL gets it after at most this long (Python's default is
            # 5 ms: five torque periods lost whenever another thread of the process computes).
            self._switch_interval_s = sys.getswitchinterval()
            sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        quiet_gc.enter()  # before the motion starts: franky's signal timeout runs from then on
        self._gc_quiet = True
        try:
            self._start_motion()
            self._thread = threading.Thread(target=self._control_thread, name="franka-control",
                                            daemon=True)  # fmt: skip
            self._thread.start()
        except BaseException:
            self._gc_quiet = False
            quiet_gc.exit()
            if self._switch_interval_s is not None:
                sys.setswitchinterval(self._switch_interval_s)
                self._switch_interval_s = None
            raise
        self._run.set()

    def close(self) -> None:
        self._run.clear()
        self._quit.set()
        if self._thread is not None:
            self._thread.join(timeout=3.0)
        with contextlib.suppress(Exception):
            self._stop_motion()
        self.robot.close()
        if self._gc_quiet:
            self._gc_quiet = False
            quiet_gc.exit()
        if self._switch_interval_s is not None:
            sys.setswitchinterval(self._switch_interval_s)
            self._switch_interval_s = None

    def _start_motion(self) -> None:
        self.robot.read_state()
        if self.control == "torque":
            self.robot.start_torque_motion()
            if self.loop is None:
                self.loop = ControlLoop(self.robot, self.loop_config)
                # the reference's time: the wall clock's rate without its tick jitter
                self.loop.clock = SmoothedClock(self.loop_config.period_s)
            self.loop.restart()
            if isinstance(self.loop.clock, SmoothedClock):
                self.loop.clock.reset()
        else:
            self._start_tracker()
        self._state = self.robot.read_state()

    def _stop_motion(self) -> None:
        if self.control == "torque":
            self.robot.stop_motion()
        elif self._tracker is not None:
            try:
                self._tracker.stop()
            finally:
                self._tracker = None

    def _require_loop(self) -> ControlLoop:
        if self.loop is None:
            raise RuntimeError("the Franka backend has not started: call start() first")
        return self.loop

    def _pause(self, timeout_s: float = 1.0) -> None:
        """Make the control thread stop commanding (and wait until it has)."""
        self._paused.clear()
        self._run.clear()
        if not self._paused.wait(timeout_s):
            raise RuntimeError("the control thread did not pause within 1 s")

    # -- the control thread ----------------------------------------------------------------------
    def _control_thread(self) -> None:
        self.realtime = realtime_setup(self.config.cpu, self.config.rt_priority)
        # The collector is off (quiet_gc, from start()): collections run only where this loop
        # says, a young pass in a tick's slack.
        period = self.control_period_s
        step = self._torque_step if self.control == "torque" else self._tracker_step
        deadline = time.monotonic()
        ticks = 0
        try:
            while not self._quit.is_set():
                if not self._run.is_set():
                    self._paused.set()
                    self._link_clock = None  # a pause is not a silent arm
                    self._run.wait(0.05)
                    deadline = time.monotonic()
                    continue
                try:
                    if ticks % 20 == 0:  # a motion libfranka ended (reflex, timeout): 20 ms at most
                        self.robot.poll()
                    step()
                except Exception as exc:  # any franky error is a fault to report, never a crash
                    self._enter_fault(self._fault_reason(exc))
                    continue
                if self._link_lost(time.monotonic()):
                    continue
                ticks += 1
                deadline += period
                slack = deadline - time.monotonic()
                if slack > 0.0003 and ticks % 1000 == 0:
                    # Young objects each second, the middle generation each 10 s, and only in a
                    # tick's slack: cyclic garbage is still freed, never mid-computation.
                    gc.collect(1 if ticks % 10_000 == 0 else 0)
                    slack = deadline - time.monotonic()
                if slack > 0:
                    time.sleep(slack)
                elif slack < -20 * period:  # far behind (a stall): re-anchor, do not burst
                    deadline = time.monotonic()
                if self.robot_paced:
                    seen = self._await_robot_tick(time.monotonic() + ROBOT_TICK_WAIT_S)
                    if seen is not None:
                        # Lock onto the robot's phase: the next tick wakes just before the
                        # robot's next state is due, so the wait stays short.
                        deadline = seen - ROBOT_TICK_LEAD_S
        finally:
            self._paused.set()

    def _await_robot_tick(self, until_s: float) -> float | None:
        """Robot pacing: wait, in short sleeps until ``until_s`` at most, for a robot state newer
        than the one the last torque was computed from. A robot slower than the loop (franky-sim
        below real time) then sets the pace; one on time gets each tick's torque from its own
        state. Never waits past ``until_s``: a silent robot must not stop the loop's ticks (the
        watchdog's hold and damp, franky's signal timeout). A failed read returns at once: the
        tick reads again and faults with libfranka's reason. Returns the monotonic time the new
        state was seen, or None (none came, no stamp to compare, a failed read)."""
        served = self._served_robot_s
        if served is None:
            return None
        try:
            while True:
                newest = self.robot.robot_time_s(fresh=True)
                now = time.monotonic()
                if newest is None:
                    return None
                if newest > served:
                    self.robot_waits += 1
                    return now
                if now >= until_s:
                    self.robot_wait_timeouts += 1
                    return None
                time.sleep(ROBOT_TICK_POLL_S)
        except Exception:
            return None

    def _torque_step(self) -> None:
        loop = self._require_loop()
        stamp = self._target_stamp_s
        previous = loop.status.mode if loop.status is not None else None
        status = loop.tick()
        now = time.monotonic()
        served = self.robot.robot_time_s()  # None: no state read yet
        self._served_robot_s = served  # what robot pacing waits to see passed
        self.timing.stamp(now, served if served is not None else math.nan)
        self._state = self.robot._snap.state
        if stamp is not None:
            self._target_stamp_s = None
            if len(self.timing.latencies_s) < 10_000:
                self.timing.latencies_s.append(now - stamp)
        if status.mode != previous and len(self.timing.mode_changes) < 1000:
            self.timing.mode_changes.append((now, int(status.mode)))

    def _link_lost(self, now_s: float) -> bool:
        """The link watchdog (``LINK_TIMEOUT_S``), after each tick: fault, marked disconnected,
        when the robot clock of the tick's state has not moved for that long. A franky without
        the clock (None) is never judged."""
        robot_s = self._served_robot_s  # the tick's own read (either mode's step sets it)
        if robot_s is None:
            return False
        seen = self._link_clock
        if seen is None or robot_s != seen[0]:
            self._link_clock = (robot_s, now_s)
            return False
        if now_s - seen[1] < LINK_TIMEOUT_S:
            return False
        text = (
            f"link lost: no new state from the arm for {now_s - seen[1]:.1f} s (its clock "
            f"stopped at {robot_s:.3f} s); check the network link to the control box and that "
            f"FCI is on, then send recover"
        )
        try:
            self.robot.poll()  # libfranka's own word, where the motion has ended with one
        except Exception as exc:
            text = f"{text} ({exc})"
        self._enter_fault(text, link_lost=True)
        return True

    def _fault_reason(self, exc: BaseException) -> str:
        """libfranka's reason: the ended motion's own error when there is one (a reflex, a
        signal timeout), else what was raised (a lost link shows as a failed state read)."""
        text = f"{type(exc).__name__}: {exc}"
        try:
            self.robot.poll()
        except FrankaFaultError as motion_error:
            if str(motion_error) not in text:
                text = f"{motion_error} ({text})"
        except Exception as other:  # the poll itself can fail on a dead link
            log.debug("poll after a fault: %s", other)
        return text

    def _enter_fault(self, text: str, link_lost: bool = False) -> None:
        self._run.clear()
        self._paused.set()
        self._link_clock = None
        with self._lock:
            first = not self._fault_text
            self._fault_text = text
        if link_lost or any(w in text for w in ("Net", "UDP", "TCP")) or "network" in text.lower():
            self._connected = False
        if first:
            log.error("franka fault: %s (send a recover request to continue)", text)

    # -- tracker mode ----------------------------------------------------------------------------
    def _start_tracker(self) -> None:
        f, c, lc = self._franky, self.config, self.loop_config
        gains = lc.cartesian_gains
        self._tstiffness = np.asarray(gains.stiffness, float).copy()
        lim = self.config.limits
        self._tracker = f.CartesianImpedanceTracker(
            self.robot.franky_robot,
            gains=f.CartesianImpedanceGains.diagonal(self._tstiffness),
            translational_error_clip=np.asarray(gains.error_clip[:3], float),
            rotational_error_clip=np.asarray(gains.error_clip[3:], float),
            posture_task=f.PostureTask(np.asarray(c.home_q_rad, float), 5.0, max_torque=5.0),
            max_delta_tau=c.max_delta_tau_nm,
            lower_joint_limits=lim.joint_pos_min_rad + 0.05,
            upper_joint_limits=lim.joint_pos_max_rad - 0.05,
            gains_time_constant=lc.reference.gain_time_constant_s,
        )
        state = self.robot.read_state()
        self._tref = CartesianReferenceGenerator(lc.reference, c.tracker_period_s, gains)
        now = time.monotonic()
        self._tref.reset(state.ee_pos_m, state.ee_quat_xyzw, now)
        self._tlast_target_s = now
        self._tmode = ControlMode.HOLD
        self._tdamped = False
        self._tpending = None
        self._tintegral.reset()

    def _tracker_send(self, ref: CartesianReference, shift_m: np.ndarray | None) -> None:
        """The reference as the tracker's target: pose (moved by ``shift_m`` (3,) m, the
        integral force over the stiffness), twist and acceleration feedforward."""
        f = self._franky
        pos = np.asarray(ref.pos_m, float)
        if shift_m is not None:
            pos = pos + shift_m
        self._tracker.set_target(
            f.Affine(pos, np.asarray(ref.quat_xyzw, float)),
            f.Twist(np.asarray(ref.twist[:3], float), np.asarray(ref.twist[3:], float)),
            f.TwistAcceleration(np.asarray(ref.accel[:3], float), np.asarray(ref.accel[3:], float)),
        )

    @property
    def control_period_s(self) -> float:
        """The control loop's period: 1 ms torque updates, or the tracker's target period."""
        return 0.001 if self.control == "torque" else self.config.tracker_period_s

    @property
    def integral_force_n(self) -> np.ndarray:
        """The integral force (3,) N, base frame, the arm's law adds now (either mode; a copy)."""
        if self.control == "torque":
            return self._require_loop().integral_force_n
        return self._tintegral.force_n.copy()

    def _tracker_step(self) -> None:
        state = self.robot.read_state()
        self._served_robot_s = self.robot.robot_time_s()  # for the link watchdog
        now = time.monotonic()
        ref_gen = self._tref
        if ref_gen is None:
            raise RuntimeError("tracker mode without a reference generator: start() first")
        if self._tracker_over_speed(state):
            return
        with self._lock:
            pending, self._tpending = self._tpending, None
            keep_alive, self._tkeep_alive = self._tkeep_alive, False
            stamp, self._target_stamp_s = self._target_stamp_s, None
        if keep_alive and pending is None and self._tmode == ControlMode.ACTIVE:
            self._tlast_target_s = now
        if pending is not None:
            if self._tmode != ControlMode.ACTIVE:  # resume from where the arm is
                ref_gen.reset(state.ee_pos_m, state.ee_quat_xyzw, now)
            ref_gen.set_goal(pending, now)
            self._tlast_target_s = now
        mode = watchdog_mode(now - self._tlast_target_s, self.loop_config.watchdog)
        if self._tstopped:
            mode = ControlMode.DAMP
        if mode != ControlMode.ACTIVE:  # hold, damp, stop: no integral force, none stored
            self._tintegral.reset()
        f = self._franky
        if mode == ControlMode.DAMP:
            self._tracker_damp()
        else:
            if self._tdamped:
                self._tracker.set_gains(gains=f.CartesianImpedanceGains.diagonal(self._tstiffness))
                self._tdamped = False
            if mode == ControlMode.HOLD and self._tmode != ControlMode.HOLD:
                ref_gen.reset(state.ee_pos_m, state.ee_quat_xyzw, now)
            if mode == ControlMode.ACTIVE or self._tmode != ControlMode.HOLD:
                ref = ref_gen.step(now)
                stiffness = ref_gen.gains.stiffness
                if not np.array_equal(stiffness, self._tstiffness):
                    self._tstiffness = np.asarray(stiffness, float).copy()
                    self._tracker.set_gains(gains=f.CartesianImpedanceGains.diagonal(stiffness))
                # The integral force and the Coulomb friction feedforward (as the torque law's),
                # as a shift of the target: K * shift = force.
                force = np.zeros(3)
                if mode == ControlMode.ACTIVE and self._tintegral.enabled:
                    np.subtract(ref.pos_m, state.ee_pos_m, out=self._terror)
                    force += self._tintegral.update(self._terror, ref.twist)
                if mode == ControlMode.ACTIVE and self._tfriction:
                    model = self.robot.model()
                    force += friction_task_wrench(
                        model, ref.twist, self.loop_config.cartesian_gains
                    )[:3]
                shift = force / np.maximum(self._tstiffness[:3], 100.0)
                self._tracker_send(ref, shift)
                self.robot.mark_command()
        sent = time.monotonic()
        self.timing.stamp(sent)
        if stamp is not None and len(self.timing.latencies_s) < 10_000:
            self.timing.latencies_s.append(sent - stamp)
        if mode != self._tmode and len(self.timing.mode_changes) < 1000:
            self.timing.mode_changes.append((sent, int(mode)))
        self._tmode = mode
        self._state = state

    def _tracker_damp(self) -> None:
        """The tracker at stiffness 0 with its damping pinned (once; ``_tdamped`` until undone)."""
        if self._tdamped:
            return
        d = self.loop_config.safety.damping.damping_nm_s_per_rad
        self._tracker.set_gains(
            gains=self._franky.CartesianImpedanceGains.diagonal(
                np.zeros(6), np.array([4 * d[0]] * 3 + [d[4]] * 3)
            )
        )
        self._tdamped = True

    def _tracker_over_speed(self, state: Any) -> bool:
        """Tracker mode's speed guard. franky's law has no velocity guard of its own (torque mode
        has ours): streamed toward a target beyond the arm's reach it took a joint on franky-sim
        to 111 % of its speed limit. A joint over ``velocity_hold_fraction`` of its limit damps
        the tracker (stiffness 0), ends its motion (the arm's own controller then holds it) and
        latches a fault, as a reflex would, so that only an explicit recover restarts it. From
        the stretched posture such a trip leaves, tracking straight back can trip it again: reset
        (home, a joint move) after the recover. True when it tripped."""
        limit = self.config.limits.joint_vel_max_rad_s
        fraction = np.abs(state.dq_rad_s) / limit
        worst = int(np.argmax(fraction))
        if not fraction[worst] > self.loop_config.safety.velocity_hold_fraction:
            return False
        self._tracker_damp()
        self._stop_motion_quietly()  # the tracker's motion ends: the arm's own controller holds it
        self._state = state
        self._enter_fault(
            f"tracker speed guard: joint {worst + 1} at {abs(state.dq_rad_s[worst]):.2f} rad/s, "
            f"{fraction[worst]:.0%} of its limit; the motion is stopped. Recover, then reset "
            f"(home) before tracking again, and keep targets within the arm's reach"
        )
        return True

    # -- RobotBackend ----------------------------------------------------------------------------
    def tick(self) -> Any:
        """The server's periodic call: notice a motion that libfranka ended (reflex, collision,
        lost link) without touching franky from this thread when the link may be dead."""
        if self._fault_text or not self._run.is_set():
            return None
        if self.control == "torque" and self.loop is not None:
            st = self.robot._snap.raw
            if st is not None and "Reflex" in str(getattr(st, "robot_mode", "")):
                self._enter_fault(f"reflex: {st.current_errors}")
        return None

    def set_target(self, target: CartesianTarget, gripper: Literal["open", "close"] | None) -> None:
        """Queue a Cartesian target (InvalidTargetError if bad, stopped, or faulted)."""
        if self._fault_text:
            raise InvalidTargetError(f"the arm is in fault ({self._fault_text}); send recover")
        if self.control == "torque":
            loop = self._require_loop()
            self._target_stamp_s = time.monotonic()
            loop.set_cartesian_target(target)
        else:
            try:
                checked = validate_cartesian_target(target)
                self.loop_config.reference.workspace.clip(checked.pos_m, checked.quat_xyzw)
            except InvalidTargetError as exc:
                self._trejected += 1
                log.warning("rejected Cartesian target: %s", exc)
                raise
            with self._lock:
                if self._tstopped:
                    raise InvalidTargetError(_STOPPED)
                self._tpending = checked
                self._target_stamp_s = time.monotonic()
        if gripper == "open":
            self.robot.gripper_move(0.08, 0.1)
        elif gripper == "close":
            self.robot.gripper_grasp(0.0, 40.0, 0.1)

    def keep_alive(self) -> None:
        if self.control == "torque":
            if self.loop is not None:
                self.loop.keep_alive()
        else:
            with self._lock:
                self._tkeep_alive = True

    def state(self) -> RobotState:
        """The newest state the control thread read (never a franky call from here)."""
        s = self._state
        if s is None:
            raise RuntimeError("no state yet: the backend has not started")
        return s

    def status(self) -> dict[str, Any]:
        if self.control == "torque" and self.loop is not None:
            st = self.loop.status
            mode = int(st.mode) if st else int(ControlMode.HOLD)
            law = st.law if st else "cartesian"
            age = float(st.target_age_s) if st else 0.0
            rejected, faults, stopped = (
                self.loop.rejected_targets,
                self.loop.faults,
                self.loop.stopped,
            )
        else:
            mode, law = int(self._tmode), "cartesian"
            age = time.monotonic() - self._tlast_target_s
            rejected, faults, stopped = self._trejected, self._tfaults, self._tstopped
        fault = self._fault_text
        return {
            "law": law,
            "mode": int(ControlMode.FAULT) if fault else mode,
            "target_age_s": age,
            "rejected_targets": int(rejected),
            "faults": int(faults),
            "stopped": bool(stopped),
            "fault_text": fault,
            "connected": bool(self._connected),
            "control": self.control,
            "recoveries": self.recoveries,
            # the control loop's own updates (not the server thread's ticks) for the console's rate
            "loop_ticks": self.timing.total,
            "loop_hz_target": 1.0 / self.control_period_s,
            # robot pacing (torque mode): ticks whose wait for the robot's next state ran out
            "robot_paced": self.robot_paced,
            "robot_wait_timeouts": self.robot_wait_timeouts,
            # O_F_ext_hat_K of the control thread's last read (a stored value, no franky call)
            **wrench_meta(self.robot.external_wrench()),
        }

    def software_stop(self, stop: bool) -> None:
        if self.control == "torque":
            if self.loop is not None:
                (self.loop.software_stop if stop else self.loop.clear_stop)()
            return
        with self._lock:
            self._tstopped = stop
            self._tpending = None
            if not stop:  # hold where the arm is until new targets arrive
                self._tlast_target_s = time.monotonic() - self.loop_config.watchdog.hold_after_s
        log.warning("software stop %s", "latched" if stop else "cleared")

    def set_joint_target(self, q_rad: np.ndarray) -> None:
        """Joint impedance toward ``q_rad`` (torque mode); in tracker mode, a capped-speed joint
        move (blocking, like a reset)."""
        if self._fault_text:
            raise InvalidTargetError(f"the arm is in fault ({self._fault_text}); send recover")
        if self.control == "torque":
            self._require_loop().set_joint_target(JointTarget(q_rad))
        else:
            self._joint_move(np.asarray(q_rad, float))

    def recover(self) -> dict[str, Any]:
        """Clear a fault: reconnect if the link was lost, run libfranka's automatic error
        recovery, restart the motion holding the current pose. RuntimeError if it cannot."""
        with contextlib.suppress(RuntimeError):
            self._pause()
        try:
            if not self._connected:
                self.robot.disconnect()
                self.robot.connect()
                self._connected = True
            if self.robot.franky_robot.has_errors or self._fault_text:
                self.robot.recover()
            self._stop_motion_quietly()
            self._start_motion()
        except (FrankaError, FrankaFaultError) as exc:
            self._fault_text = str(exc)
            if isinstance(exc, FrankaError):
                self._connected = False
            raise RuntimeError(str(exc)) from None
        was = self._fault_text
        self._fault_text = ""
        self.recoveries += 1
        self._run.set()
        log.warning("recovered from: %s", was or "(no fault)")
        return {"recovered": was}

    def _stop_motion_quietly(self) -> None:
        try:
            self._stop_motion()
        except Exception as exc:  # a dead motion's stored error: already reported as the fault
            log.info("old motion ended with: %s", exc)

    # -- resets ----------------------------------------------------------------------------------
    def reset(self, options: dict[str, Any]) -> dict[str, Any]:
        """Reset between episodes (module docstring); ValueError for bad options, RuntimeError
        when the arm cannot (fault, timeout)."""
        unknown = set(options) - {"seed", "mode"}
        if unknown:
            raise ValueError(f"reset options {sorted(unknown)} unknown; allowed: seed, mode")
        seed = options.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"reset seed={seed!r}; expected an int")
        mode = options.get("mode", self.reset_config.mode)
        if mode not in ("home", "random", "operator"):
            raise ValueError(f"reset mode={mode!r}; allowed: home, random, operator")
        if self._fault_text:
            raise RuntimeError(f"the arm is in fault ({self._fault_text}); send recover first")
        if mode == "operator":
            self.software_stop(False)
            return {"seed": seed, "mode": mode, "prompt": OPERATOR_PROMPT}
        self._joint_move(np.asarray(self.config.home_q_rad, float))
        reply: dict[str, Any] = {"seed": seed, "mode": mode}
        if mode == "random":
            rng = np.random.default_rng(seed)
            box = np.asarray(self.reset_config.random_box_m)
            home = self.state()
            goal = home.ee_pos_m + rng.uniform(-box, box)
            self._move_to(goal, home.ee_quat_xyzw)
            reply["offset_m"] = (goal - home.ee_pos_m).tolist()
        return reply

    def _joint_move(self, q_goal: np.ndarray) -> None:
        """A capped-speed joint-space move to ``q_goal`` (7,) rad, returning once settled.

        Torque mode: our joint impedance law toward a reference limited to
        ``home_speed_fraction`` of each joint's velocity limit, inside the running torque motion
        (the arm is never handed over). Tracker mode: franky's joint planner at that fraction of
        the dynamics limits, then the tracker restarts holding there. RuntimeError on a fault or
        a timeout."""
        if self.control == "tracker":
            self._pause()
            try:
                self._stop_motion()
                motion = self._franky.JointMotion(
                    q_goal.tolist(), relative_dynamics_factor=self.config.home_speed_fraction
                )
                robot = self.robot.franky_robot
                clock_before = self.robot.robot_time_s(fresh=True)
                # Joined with a timeout, never waited on without one: a motion that lost the arm
                # as it started can wait on it far longer than libfranka's own timeouts (see
                # LINK_TIMEOUT_S), and this runs on the server's thread.
                robot.move(motion, asynchronous=True)
                if not robot.join_motion(self.reset_config.timeout_s):
                    stalled = self.robot.robot_time_s(fresh=True) == clock_before
                    text = f"joint move did not finish within {self.reset_config.timeout_s} s" + (
                        " and the arm's clock did not move: link lost" if stalled else ""
                    )
                    self._enter_fault(text, link_lost=stalled)
                    raise RuntimeError(text)
                self._start_motion()
            except Exception as exc:
                if not self._fault_text:  # (the timeout above has entered its own)
                    self._enter_fault(f"joint move failed: {type(exc).__name__}: {exc}")
                raise RuntimeError(f"joint move failed: {exc}") from None
            self._run.set()
            return
        self._require_loop().set_joint_target(JointTarget(q_goal))
        deadline = time.monotonic() + self.reset_config.timeout_s
        while time.monotonic() < deadline and not self._fault_text:
            s = self.state()
            if np.abs(s.q_rad - q_goal).max() < 0.005 and np.abs(s.dq_rad_s).max() < 0.02:
                return
            self.keep_alive()
            time.sleep(0.01)
        raise RuntimeError(
            f"the arm did not settle at {q_goal.tolist()} within "
            f"{self.reset_config.timeout_s} s: {self._fault_text or 'timeout'}"
        )

    def _move_to(self, pos_m: np.ndarray, quat_xyzw: np.ndarray) -> None:
        """Track a Cartesian goal through the normal pipeline until within ``settle_pos_m``."""
        deadline = time.monotonic() + self.reset_config.timeout_s
        target = CartesianTarget(np.asarray(pos_m, float), np.asarray(quat_xyzw, float))
        self.set_target(target, None)
        while time.monotonic() < deadline:
            time.sleep(0.01)
            if self._fault_text:
                raise RuntimeError(f"fault during reset: {self._fault_text}")
            self.keep_alive()
            s = self.state()
            if (
                np.linalg.norm(s.ee_pos_m - pos_m) < self.reset_config.settle_pos_m
                and np.linalg.norm(s.ee_twist[:3]) < 0.02
            ):
                return
            if int(self.status()["mode"]) != int(ControlMode.ACTIVE):
                self.set_target(target, None)
        s = self.state()
        raise RuntimeError(
            f"reset did not reach {np.round(pos_m, 4).tolist()} in {self.reset_config.timeout_s} s "
            f"(TCP {1e3 * np.linalg.norm(s.ee_pos_m - pos_m):.1f} mm away, moving "
            f"{np.linalg.norm(s.ee_twist[:3]):.3f} m/s; allowed "
            f"{1e3 * self.reset_config.settle_pos_m:.0f} mm, 0.02 m/s; mode "
            f"{self.status()['mode']}, integral force "
            f"{np.round(self.integral_force_n, 1).tolist()} N)"
        )
