"""Franka backend benchmark against franky-sim: loop timing, tracking, latency and the watchdog.

For each control mode (``torque``, ``tracker``) a fresh franky-sim (a MuJoCo FR3 speaking the
libfranka protocol, in its own process on its own loopback address) and a ``FrankaBackend`` run:
1. static: a target 3 cm from the start, streamed unchanged at 20 Hz; the position error is
   averaged over the last second of a 3 s settle;
   ``<mode>_integral_force_n_static`` is the force the integral term holds at its end;
2. circle: a horizontal circle (radius 5 cm, 0.5 Hz) streamed at 20 Hz as Hermite targets (point
   plus circle velocity as twist feedforward); one warm-up revolution, then measured ones. Two
   errors, sampled at 100 Hz: *path* (distance from the TCP to the circle, what a task sees) and
   *lag* (distance to where the stream said the TCP should be at that instant; it includes the
   reference pipeline's one-target-period interpolation, about 50 ms here);
3. watchdog: targets stop while the arm moves; the control thread's own stamp of the switch to
   HOLD minus the wall time of the last target;
4. torque mode only: the fraction of 1 ms periods with no new torque, over a window with the
   machine otherwise idle, then with a learner training in another process (a torch MLP trained
   with Adam on random batches, one thread: the load a SAC learner puts on a core). It is counted
   on the robot's clock (``torque_missed_period_fraction_<idle|loaded>``: robot ticks, by
   libfranka ``RobotState.time``, for which no torque was computed from the previous tick's
   state), as a real arm, hard real time, sees it; franky-sim runs below real time and stalls
   with its CPU, and those wall-clock gaps are not misses of our loop. The wall-clock figure is
   beside it (``torque_missed_wall_slot_fraction_<...>``: wall-clock gaps between torque updates
   rounded to whole 1 ms periods, each past the first a missed one),
   with ``sim_realtime_factor_<idle|loaded>_window`` for the same window. The loop runs with
   the rig's pacing (``FrankaConfig.pacing``, robot-paced by default); right after the idle
   window, a third window on the same simulator runs it on its own 1 ms deadlines only
   (``..._idle_wallclock_paced``), the peer the ratio
   ``torque_missed_period_ratio_idle_vs_wallclock_paced`` compares against;
   ``torque_robot_wait_timeouts_idle`` counts the ticks whose wait for the robot ran out, from
   the backend's start to the end of the idle window.
Each window, and the circles of each mode, also report what the host's CPUs did meanwhile
(``host_cpu_busy_fraction_<window>``, ``host_cpu_steal_fraction_<window>``: time a virtual CPU
was ready while the hypervisor ran something else); a run on a host that steals reads as that.
The torque-update interval is the wall time between consecutive ``set_torque`` calls (torque
mode) or tracker reference updates (tracker mode, nominal ``tracker_period_s``).

franky-sim steps its physics in Python; ``sim_realtime_factor_<mode>`` (simulated seconds per wall
second) says how far it falls behind on this machine: tracking figures on a real arm (1 kHz by
construction) should be no worse.

Before any simulator starts, ``offline_tick_figures`` times the torque mode's per-tick compute
alone (``torque_tick_compute_us_p50_offline`` and kin): the backend's ``_torque_step`` fed a
synthetic franky sequence by a fake franky module, next to the same backend on the plain-numpy
stages (``controllers.plain``), interleaved tick by tick (``torque_tick_plain_over_lean_ratio_*``),
with the p99 as a fraction of the 1 ms period.
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType, SimpleNamespace
from typing import Any, ClassVar

import numpy as np

from robot_rl.bench.report import HostCpuWindow
from robot_rl.controllers.targets import CartesianTarget
from robot_rl.controllers.watchdog import ControlMode
from robot_rl.hardware.franka_backend import missed_period_fraction, missed_robot_tick_fraction

SEND_PERIOD_S = 0.05  # 20 Hz target stream
CIRCLE_RADIUS_M = 0.05
CIRCLE_FREQ_HZ = 0.5

_LEARNER_SCRIPT = """
import time, torch
torch.set_num_threads(1)
net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                          torch.nn.ReLU(), torch.nn.Linear(256, 1))
opt = torch.optim.Adam(net.parameters(), 3e-4)
end = time.monotonic() + float(__import__("sys").argv[1])
while time.monotonic() < end:
    x = torch.randn(256, 64)
    loss = (net(x) - x[:, :1]).pow(2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
"""


@dataclass(frozen=True)
class TrackResult:
    """Errors (m) sampled at 100 Hz while streaming a trajectory."""

    path_error_m: np.ndarray
    lag_error_m: np.ndarray


def stream(backend: object, pose_at: Callable[[float], tuple[np.ndarray, np.ndarray | None]],
           quat_xyzw: np.ndarray, duration_s: float,
           sample: Callable[[float], None] | None = None,
           clock: Callable[[], float] | None = None) -> None:  # fmt: skip
    """Send ``pose_at(t)`` (position, optional twist) every ``SEND_PERIOD_S`` of wall time for
    ``duration_s``, calling ``sample(t)`` at 100 Hz in between (monotonic deadlines). ``t`` and
    the duration run on ``clock`` (default the wall clock; ``sim_clock(backend)`` follows the
    simulator, so a slow simulator still gets the whole trajectory)."""
    clock = clock or time.monotonic
    t0 = clock()
    next_send = next_sample = time.monotonic()
    while (t := clock() - t0) < duration_s:
        now = time.monotonic()
        if now >= next_send:
            pos, twist = pose_at(t)
            backend.set_target(CartesianTarget(pos, quat_xyzw, twist), None)  # type: ignore[attr-defined]
            next_send += SEND_PERIOD_S
        if sample is not None and now >= next_sample:
            sample(t)
            next_sample += 0.01
        time.sleep(max(0.0, min(next_send, next_sample) - time.monotonic()))


def sim_clock(backend: object) -> Callable[[], float]:
    """The simulator's own clock (s), read from the newest state the control thread took."""
    return lambda: float(backend.robot.raw_state().time.to_sec())  # type: ignore[attr-defined]


def hold_and_measure(backend: object, goal_m: np.ndarray, quat_xyzw: np.ndarray,
                     duration_s: float, measure_last_s: float,
                     clock: Callable[[], float] | None = None) -> np.ndarray:  # fmt: skip
    """Stream a fixed target; return (n,) position errors (m) over the last ``measure_last_s``."""
    errors: list[float] = []

    def sample(t: float) -> None:
        if t >= duration_s - measure_last_s:
            errors.append(float(np.linalg.norm(backend.state().ee_pos_m - goal_m)))  # type: ignore[attr-defined]

    stream(backend, lambda t: (goal_m, None), quat_xyzw, duration_s, sample, clock)
    return np.asarray(errors)


def track_circle(backend: object, center_m: np.ndarray, quat_xyzw: np.ndarray,
                 revolutions: int, warmup: int = 1,
                 clock: Callable[[], float] | None = None) -> TrackResult:  # fmt: skip
    """Stream a horizontal circle around ``center_m`` (the arm must start at its 0-rad point,
    center + (r, 0, 0)); errors from the revolutions after ``warmup``. On the wall clock the
    targets carry the circle's velocity as twist feedforward; on another clock (the simulator's)
    they do not, as that velocity is per simulated second."""
    w = 2 * math.pi * CIRCLE_FREQ_HZ
    r = CIRCLE_RADIUS_M

    def point(t: float) -> np.ndarray:
        return center_m + r * np.array([math.cos(w * t), math.sin(w * t), 0.0])

    def pose_at(t: float) -> tuple[np.ndarray, np.ndarray | None]:
        if clock is not None:
            return point(t), None
        v = r * w * np.array([-math.sin(w * t), math.cos(w * t), 0.0])
        return point(t), np.concatenate([v, np.zeros(3)])

    path: list[float] = []
    lag: list[float] = []
    period = 1.0 / CIRCLE_FREQ_HZ

    def sample(t: float) -> None:
        if t < warmup * period:
            return
        p = backend.state().ee_pos_m  # type: ignore[attr-defined]
        d = p - center_m
        path.append(math.hypot(math.hypot(d[0], d[1]) - r, d[2]))
        lag.append(float(np.linalg.norm(p - point(t))))

    stream(backend, pose_at, quat_xyzw, (warmup + revolutions) * period, sample, clock)
    return TrackResult(np.asarray(path), np.asarray(lag))


def watchdog_hold_ms(backend: object, quat_xyzw: np.ndarray, start_m: np.ndarray) -> float:
    """Move, stop sending, and return the wall ms from the last target to the switch to HOLD."""
    timing = backend.timing  # type: ignore[attr-defined]
    stream(backend, lambda t: (start_m + np.array([0.0, 0.02 * t, 0.0]), None), quat_xyzw, 0.5)
    last_target_s = time.monotonic()
    backend.set_target(CartesianTarget(start_m + np.array([0.0, 0.011, 0.0]), quat_xyzw), None)  # type: ignore[attr-defined]
    deadline = last_target_s + 2.0
    while time.monotonic() < deadline:
        holds = [t for t, m in list(timing.mode_changes) if m == int(ControlMode.HOLD)
                 and t > last_target_s]  # fmt: skip
        if holds:
            return (holds[0] - last_target_s) * 1e3
        time.sleep(0.005)
    raise RuntimeError("the watchdog did not hold within 2 s of the last target")


def _intervals_ms(stamps_s: np.ndarray) -> np.ndarray:
    return np.diff(stamps_s) * 1e3


def _quiet_window(backend: object, seconds: float, start_m: np.ndarray,
                  quat_xyzw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Hold still ``seconds``; (wall stamps (n,) s, robot-clock stamps (n,) s) of the updates."""
    timing = backend.timing  # type: ignore[attr-defined]
    timing.clear()
    hold_and_measure(backend, start_m, quat_xyzw, seconds, 0.1)
    return timing.stamps().copy(), timing.robot_stamps().copy()


def _window_figures(name: str, wall_s: np.ndarray, robot_s: np.ndarray) -> dict[str, float]:
    """Missed periods on the robot's clock and on the wall's, and the sim's speed, for a window."""
    finite = robot_s[np.isfinite(robot_s)]
    span_wall = float(wall_s[-1] - wall_s[0]) if len(wall_s) > 1 else 0.0
    span_robot = float(finite[-1] - finite[0]) if len(finite) > 1 else 0.0
    return {
        f"torque_missed_period_fraction_{name}": missed_robot_tick_fraction(robot_s),
        f"torque_missed_wall_slot_fraction_{name}": missed_period_fraction(wall_s),
        f"sim_realtime_factor_{name}_window": span_robot / span_wall if span_wall > 0 else 0.0,
    }


def _normal_scheduling() -> None:
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def bench_mode(mode: str, window_s: float, seed: int, rt_priority: int) -> dict[str, float]:
    """All phases for one control mode on a fresh simulator (see the module docstring). The
    calling thread streams the targets, as a robot server's thread on the robot PC would: it asks
    for SCHED_FIFO below the control loop for the run (and gets its own policy back after)."""
    from robot_rl.hardware.franka_backend import realtime_setup

    policy = os.sched_getscheduler(0), os.sched_getparam(0)
    stream_fifo = rt_priority > 0 and bool(realtime_setup(None, max(1, rt_priority - 20))["fifo"])
    try:
        out = _bench_mode(mode, window_s, rt_priority)
    finally:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, *policy)
    out[f"{mode}_stream_sched_fifo"] = stream_fifo
    return out


def _bench_mode(mode: str, window_s: float, rt_priority: int) -> dict[str, float]:
    from robot_rl.hardware.franka import FrankaConfig
    from robot_rl.hardware.franka_backend import FrankaBackend
    from robot_rl.hardware.franka_sim import (
        SIM_FRICTION_COULOMB_NM,
        SIM_HOME_Q_RAD,
        FrankySim,
        sim_loop_config,
    )

    out: dict[str, float] = {}
    with FrankySim() as sim:
        config = FrankaConfig(robot_ip=sim.ip, control=mode, realtime="ignore",  # type: ignore[arg-type]
                              home_q_rad=SIM_HOME_Q_RAD, rt_priority=rt_priority,
                              friction_coulomb_nm=SIM_FRICTION_COULOMB_NM)  # fmt: skip
        backend = FrankaBackend(config, sim_loop_config())
        backend.start()
        try:
            s0 = backend.state()
            sim_t0, wall0 = backend.robot.raw_state().time.to_sec(), time.monotonic()
            quat, home = s0.ee_quat_xyzw, s0.ee_pos_m.copy()
            backend.timing.clear()
            clock = sim_clock(backend)
            goal = home + np.array([0.03, 0.0, 0.0])
            static = hold_and_measure(backend, goal, quat, 4.0, 1.0, clock)
            out[f"{mode}_static_error_mm"] = float(static.mean() * 1e3)
            # what the integral term holds at the end of the settle (N, norm): the static force
            # the impedance spring alone would have left as error (K * error)
            out[f"{mode}_integral_force_n_static"] = float(np.linalg.norm(backend.integral_force_n))
            lat = np.asarray(backend.timing.latencies_s)
            out[f"{mode}_target_to_applied_ms_p99"] = float(np.percentile(lat, 99) * 1e3)
            intervals = _intervals_ms(backend.timing.stamps())
            out[f"{mode}_update_interval_ms_p50"] = float(np.percentile(intervals, 50))
            out[f"{mode}_update_interval_ms_p99"] = float(np.percentile(intervals, 99))
            out[f"{mode}_update_interval_ms_max"] = float(intervals.max())
            center = home.copy()
            start = center + np.array([CIRCLE_RADIUS_M, 0.0, 0.0])
            cpu = HostCpuWindow()
            for name, circle_clock in (("", None), ("_sim_clock", clock)):
                hold_and_measure(backend, start, quat, 1.5, 0.1, clock)
                circle = track_circle(backend, center, quat, 2, clock=circle_clock)
                out[f"{mode}_circle_error_mm_mean{name}"] = float(circle.path_error_m.mean() * 1e3)
                out[f"{mode}_circle_error_mm_max{name}"] = float(circle.path_error_m.max() * 1e3)
                out[f"{mode}_circle_lag_error_mm_mean{name}"] = float(
                    circle.lag_error_m.mean() * 1e3
                )
            out.update(cpu.figures(f"_{mode}_circles"))
            out[f"{mode}_watchdog_hold_wall_ms"] = watchdog_hold_ms(backend, quat, home)
            out[f"{mode}_watchdog_hold_vs_config_ratio"] = out[f"{mode}_watchdog_hold_wall_ms"] / (
                1e3 * backend.loop_config.watchdog.hold_after_s
            )
            if mode == "torque":
                cpu.start()
                idle, idle_robot = _quiet_window(backend, window_s, home, quat)
                out.update(cpu.figures("_idle_window"))
                out.update(_window_figures("idle", idle, idle_robot))
                # the loop's own computation per tick (reference, law, safety), same window
                compute = backend.loop.telemetry.column("compute_us")[-len(idle) :]
                out["torque_compute_us_p50_idle"] = float(np.percentile(compute, 50))
                out["torque_compute_us_p99_idle"] = float(np.percentile(compute, 99))
                out["host_load_avg_1m_idle_window"] = os.getloadavg()[0]
                out["torque_robot_wait_timeouts_idle"] = float(backend.robot_wait_timeouts)
                # The peer, same simulator and run: the loop's own 1 ms deadlines only.
                paced = backend.robot_paced
                backend.robot_paced = False
                try:
                    cpu.start()
                    wall, wall_robot = _quiet_window(backend, window_s, home, quat)
                    out.update(cpu.figures("_idle_wallclock_paced_window"))
                finally:
                    backend.robot_paced = paced
                peer = _window_figures("idle_wallclock_paced", wall, wall_robot)
                out.update(peer)
                out["torque_robot_paced"] = float(paced)
                out["torque_missed_period_ratio_idle_vs_wallclock_paced"] = out[
                    "torque_missed_period_fraction_idle"
                ] / max(peer["torque_missed_period_fraction_idle_wallclock_paced"], 1e-9)
                learner = subprocess.Popen(
                    [sys.executable, "-c", _LEARNER_SCRIPT, str(window_s + 5)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    preexec_fn=_normal_scheduling,  # a learner is not real-time
                )  # fmt: skip
                try:
                    time.sleep(2.0)  # the learner is importing torch and warming up
                    cpu.start()
                    loaded, loaded_robot = _quiet_window(backend, window_s, home, quat)
                    out.update(cpu.figures("_loaded_window"))
                finally:
                    learner.kill()
                    learner.wait()
                out.update(_window_figures("loaded", loaded, loaded_robot))
                out["host_load_avg_1m_loaded_window"] = os.getloadavg()[0]
                li = _intervals_ms(loaded)
                out["torque_update_interval_ms_p99_loaded"] = float(np.percentile(li, 99))
                out["torque_update_interval_ms_max_loaded"] = float(li.max())
            sim_t1, wall1 = backend.robot.raw_state().time.to_sec(), time.monotonic()
            out[f"sim_realtime_factor_{mode}"] = (sim_t1 - sim_t0) / (wall1 - wall0)
            out[f"sim_sched_fifo_{mode}"] = bool(sim.realtime)
            out[f"sim_niced_{mode}"] = bool(sim.niced)
            out[f"sim_nice_{mode}"] = sim.nice if sim.niced else 0
            out[f"{mode}_loop_sched_fifo"] = bool(backend.realtime.get("fifo", False))
        finally:
            backend.close()
    return out


def run_franka_bench(seed: int = 0, quick: bool = False, rt_priority: int = 80) -> dict[str, float]:
    """``robot-rl bench franka``: both modes (needs the ``franka`` extra). The loop asks for
    SCHED_FIFO ``rt_priority`` as on a rig (0: not); franky-sim runs SCHED_OTHER at
    ``franka_sim.SIM_NICE`` where this user may (``sim_niced``, ``sim_sched_fifo``)."""
    window_s = 5.0 if quick else 60.0  # the 60 s, idle and again with a learner training
    results: dict[str, float] = {
        "missed_period_window_s": window_s,
        "cpu_count": os.cpu_count() or 0,
    }
    # the per-tick compute on its own, before any simulator runs (no franky needed)
    results.update(offline_tick_figures(1000 if quick else 5000, seed))
    for mode in ("torque", "tracker"):
        results.update(bench_mode(mode, window_s, seed, rt_priority))
    from robot_rl.hardware.franka_sim import SIM_FRICTION_COULOMB_NM, sim_loop_config

    loop = sim_loop_config()  # the gains both modes ran with
    results["cartesian_stiffness_n_per_m"] = float(loop.cartesian_gains.stiffness[0])
    results["cartesian_stiffness_nm_per_rad"] = float(loop.cartesian_gains.stiffness[3])
    results["cartesian_damping_ratio"] = float(loop.cartesian_gains.damping_ratio[0])
    results["integral_gain_n_per_m_s"] = loop.integral.gain_n_per_m_s
    results["integral_force_max_n"] = loop.integral.force_max_n
    results["accel_feedforward_time_constant_s"] = loop.reference.accel_feedforward_time_constant_s
    results["friction_coulomb_nm_max"] = max(SIM_FRICTION_COULOMB_NM)
    results["target_torque_missed_fraction_idle_max"] = 0.001
    results["target_circle_error_mm_mean_max"] = 2.0
    results["target_watchdog_hold_wall_ms_max"] = 110.0
    return results


# -- offline: the torque mode's per-tick compute, without a simulator ----------------------------
# A recorded-like sequence of franky samples (state and model, as franky returns them) fed through
# the backend's own per-tick path (``FrankaBackend._torque_step``) with a fake franky module and a
# clock that advances one period per tick, timed with perf_counter_ns. Deterministic: the same
# samples and targets give the same torques, so two implementations can be compared tick by tick.


class _OfflineDuration:
    def __init__(self, seconds: float) -> None:
        self._s = seconds

    def to_sec(self) -> float:
        return self._s


class _OfflineAffine:
    def __init__(self, translation: np.ndarray, quaternion: np.ndarray) -> None:
        self._t = translation
        self._q = quaternion

    @property
    def translation(self) -> np.ndarray:
        return self._t.copy()  # franky returns a fresh array on each read

    @property
    def quaternion(self) -> np.ndarray:
        return self._q.copy()


@dataclass(frozen=True)
class OfflineSample:
    """One franky sample: the state's fields the backend reads (q, dq (7,) rad, rad/s; tau_J
    (7,) Nm; TCP pose ``O_T_EE``; robot ``time`` s) and the model at it (zero Jacobian (6, 7),
    mass (7, 7) kg m^2, Coriolis (7,) Nm), base frame."""

    q: np.ndarray
    dq: np.ndarray
    tau_J: np.ndarray  # noqa: N815 (franky's name)
    ee_pos_m: np.ndarray
    ee_quat_xyzw: np.ndarray
    jacobian: np.ndarray
    mass: np.ndarray
    coriolis: np.ndarray
    time_s: float


class _OfflineRawState:
    """A franky ``RobotState`` look-alike (fresh arrays on every attribute read, as pybind's)."""

    robot_mode = "RobotMode.Move"
    current_errors = ""

    def __init__(self, sample: OfflineSample) -> None:
        self.sample = sample
        self.O_T_EE = _OfflineAffine(sample.ee_pos_m, sample.ee_quat_xyzw)
        self.time = _OfflineDuration(sample.time_s)

    @property
    def q(self) -> np.ndarray:
        return self.sample.q.copy()

    @property
    def dq(self) -> np.ndarray:
        return self.sample.dq.copy()

    @property
    def tau_J(self) -> np.ndarray:  # noqa: N802 (franky's name)
        return self.sample.tau_J.copy()

    @property
    def O_F_ext_hat_K(self) -> np.ndarray:  # noqa: N802 (franky's name)
        return np.zeros(6)


class _OfflineModel:
    def zero_jacobian(self, frame: object, state: _OfflineRawState) -> np.ndarray:
        return state.sample.jacobian.copy()

    def mass(self, state: _OfflineRawState) -> np.ndarray:
        return state.sample.mass.copy()

    def coriolis(self, state: _OfflineRawState) -> np.ndarray:
        return state.sample.coriolis.copy()


class _OfflineMotion:
    def __init__(self, **kwargs: object) -> None:
        self.kwargs = kwargs
        self.torques: list[np.ndarray] = []
        self.keep = False  # record the torques (tests); the timing run leaves them

    def set_torque(self, tau: np.ndarray) -> None:
        if self.keep:
            self.torques.append(np.array(tau, dtype=float))


class _OfflineRobot:
    """A franky ``Robot`` that plays ``samples`` back, one per ``state`` read (cycling)."""

    samples: ClassVar[list[OfflineSample]] = []

    def __init__(self, ip: str, realtime_config: object = None) -> None:
        self._raw = [_OfflineRawState(s) for s in type(self).samples]
        self.index = 0
        self.model = _OfflineModel()
        self.has_errors = False
        self.is_in_control = False
        self.motion: _OfflineMotion | None = None

    @property
    def state(self) -> _OfflineRawState:
        raw = self._raw[self.index % len(self._raw)]
        self.index += 1
        return raw

    def set_collision_behavior(self, torque: object, force: object) -> None:
        pass

    def set_load(self, mass: object, com: object, inertia: object) -> None:
        pass

    def move(self, motion: object, asynchronous: bool = False) -> None:
        if isinstance(motion, _OfflineMotion):
            self.motion = motion
        self.is_in_control = True

    def poll_motion(self) -> bool:
        return True

    def join_motion(self, timeout: float) -> bool:
        return True


def offline_franky(samples: list[OfflineSample]) -> ModuleType:
    """A fake franky module whose ``Robot`` plays ``samples`` back (no simulator, no network)."""
    robot_cls = type("OfflineRobot", (_OfflineRobot,), {"samples": list(samples)})
    m = ModuleType("franky_offline")
    m.Robot = robot_cls  # type: ignore[attr-defined]
    m.RealtimeConfig = SimpleNamespace(Enforce="enforce", Ignore="ignore")  # type: ignore[attr-defined]
    m.Frame = SimpleNamespace(EndEffector="EE")  # type: ignore[attr-defined]
    m.SimpleTorqueMotion = _OfflineMotion  # type: ignore[attr-defined]
    m.TorqueStopMotion = _OfflineMotion  # type: ignore[attr-defined]
    return m


def panda_tcp_jacobian(q_rad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(TCP transform (4, 4), geometric Jacobian (6, 7), linear rows first) of the Panda's DH
    table (``controllers.kinematics``), base frame: the zero Jacobian franky would give."""
    from robot_rl.controllers.kinematics import _FLANGE_TO_TCP, PANDA_DH, _dh

    frames = []
    transform = np.eye(4)
    for (a_m, d_m, alpha_rad), q_i in zip(PANDA_DH, q_rad, strict=True):
        transform = transform @ _dh(a_m, d_m, alpha_rad, float(q_i))
        frames.append(transform)
    tcp = transform @ _FLANGE_TO_TCP
    jac = np.empty((6, 7))
    for i, frame in enumerate(frames):
        z, origin = frame[:3, 2], frame[:3, 3]
        jac[:3, i] = np.cross(z, tcp[:3, 3] - origin)
        jac[3:, i] = z
    return tcp, jac


def synthetic_samples(n: int, home_q_rad: tuple[float, ...], seed: int = 0,
                      amplitude_rad: float = 0.15, freq_hz: float = 0.5,
                      period_s: float = 0.001) -> list[OfflineSample]:  # fmt: skip
    """``n`` samples 1 ms apart of a Panda swinging each joint sinusoidally around
    ``home_q_rad`` (``amplitude_rad``; 0: holding still with 1e-5 rad of noise). Kinematics are
    exact (DH); the mass matrix is a symmetric positive definite stand-in (a diagonal of link
    inertias plus J^T W J), Coriolis a smooth function of dq: values of the right size and
    conditioning, not a dynamics model."""
    from robot_rl.controllers.kinematics import rotation_to_quat_xyzw

    rng = np.random.default_rng(seed)
    home = np.asarray(home_q_rad, dtype=float)
    phase = rng.uniform(0.0, 2 * math.pi, 7)
    w = 2 * math.pi * freq_hz
    link = np.array([0.6, 1.8, 0.5, 0.9, 0.08, 0.1, 0.02])
    weight = np.array([2.5, 2.5, 2.5, 0.03, 0.03, 0.03])
    out = []
    for k in range(n):
        t = k * period_s
        q = home + amplitude_rad * np.sin(w * t + phase) + 1e-5 * rng.standard_normal(7)
        dq = amplitude_rad * w * np.cos(w * t + phase)
        tcp, jac = panda_tcp_jacobian(q)
        mass = np.diag(link) + jac.T @ (weight[:, None] * jac)
        coriolis = 0.05 * (mass @ dq) * np.abs(dq).sum()
        out.append(OfflineSample(q, dq, rng.normal(0.0, 0.5, 7), tcp[:3, 3].copy(),
                                 rotation_to_quat_xyzw(tcp[:3, :3]), jac, mass, coriolis,
                                 t))  # fmt: skip
    return out


class _TickClock:
    """The loop's monotonic clock in an offline run: ``now_s`` is set before each tick."""

    def __init__(self, start_s: float) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s


def offline_torque_backend(samples: list[OfflineSample], backend_cls: Any = None,
                           loop_config: Any = None, **config: Any) -> Any:  # fmt: skip
    """A torque-mode ``FrankaBackend`` (or ``backend_cls``) over ``offline_franky(samples)``,
    connected and with its motion started, ready for ``_torque_step`` calls (no thread). Its
    loop's clock is a ``_TickClock`` (``backend.loop.clock``) the caller advances."""
    from robot_rl.hardware.franka_backend import FrankaBackend
    from robot_rl.hardware.franka_sim import (
        SIM_FRICTION_COULOMB_NM,
        SIM_HOME_Q_RAD,
        sim_loop_config,
    )

    cls = backend_cls or FrankaBackend
    config_cls = sys.modules[cls.__module__].FrankaConfig  # the backend's own
    settings = {"robot_ip": "offline", "control": "torque", "realtime": "ignore",
                "home_q_rad": SIM_HOME_Q_RAD, "friction_coulomb_nm": SIM_FRICTION_COULOMB_NM,
                "gripper": False, **config}  # fmt: skip
    backend = cls(config_cls(**settings), loop_config or sim_loop_config(),
                  franky_module=offline_franky(samples))  # fmt: skip
    backend.robot.connect()
    backend._connected = True
    backend._start_motion()
    backend.robot._robot.index = 0  # the first tick reads the first sample
    backend.loop.clock = _TickClock(0.0)
    return backend


def offline_targets(samples: list[OfflineSample], every: int = 50, lead: int = 50,
                    moving: bool = True) -> dict[int, CartesianTarget]:  # fmt: skip
    """Targets by tick index, every ``every`` ticks (20 Hz at 1 kHz): the pose of the sample
    ``lead`` ticks ahead with its twist J dq as feedforward (``moving``), or the first sample's
    pose without a twist (a held target, as the bench's idle window streams)."""
    out = {}
    for k in range(0, len(samples), every):
        s = samples[min(k + lead, len(samples) - 1)] if moving else samples[0]
        twist = s.jacobian @ s.dq if moving else None
        out[k] = CartesianTarget(s.ee_pos_m.copy(), s.ee_quat_xyzw.copy(), twist)
    return out


def run_offline_ticks(backends: list[Any], n: int, targets: list[dict[int, CartesianTarget]],
                      period_s: float = 0.001) -> np.ndarray:  # fmt: skip
    """Run ``n`` ticks of each backend's ``_torque_step`` (the control thread's per-tick call)
    interleaved tick by tick (the order alternating), so that they share the machine's load;
    before tick k each loop's clock moves one ``period_s`` on and ``targets[i][k]`` (if any) is
    sent to backend i, untimed, as the server's thread would. Returns (len(backends), n) int64 ns
    per tick."""
    clocks = [b.loop.clock for b in backends]
    steps = [b._torque_step for b in backends]
    perf = time.perf_counter_ns
    out = np.empty((len(backends), n), dtype=np.int64)
    order = list(range(len(backends)))
    for k in range(n):
        for i in order:
            clocks[i].now_s += period_s
            target = targets[i].get(k)
            if target is not None:
                backends[i].set_target(target, None)
            step = steps[i]
            t0 = perf()
            step()
            out[i, k] = perf() - t0
        order.reverse()
    return out


def offline_tick_figures(ticks: int = 5000, seed: int = 0) -> dict[str, float]:
    """The torque mode's per-tick compute without a simulator (``_torque_step`` over
    ``offline_franky``: state and model read, reference, law, integral, safety, telemetry),
    next to the same backend on the plain-numpy stages (``controllers.plain``, the loop before
    it was made lean), the two interleaved tick by tick so they share the machine's load. Two
    sequences: ``moving`` (joints swinging 0.15 rad at 0.5 Hz, 20 Hz targets with twist: the
    reference moves and its joint speeds are checked each tick) and ``held`` (a still arm holding
    a still target, as in the missed-period windows). The garbage collector is off while timing,
    as in the control thread. The ratio to the 1 ms period is the physical limit's."""
    import gc

    from robot_rl.controllers.plain import plain_loop
    from robot_rl.hardware.franka_sim import SIM_HOME_Q_RAD

    out: dict[str, float] = {"offline_ticks": ticks}
    skip = min(100, ticks // 10)  # warm-up ticks (first target, caches)
    for name, amplitude, moving in (("moving", 0.15, True), ("held", 0.0, False)):
        samples = synthetic_samples(ticks, SIM_HOME_Q_RAD, seed, amplitude_rad=amplitude)
        targets = offline_targets(samples, moving=moving)
        lean = offline_torque_backend(samples)
        plain = offline_torque_backend(samples)
        plain_loop(plain.loop)
        gc.collect()
        gc.disable()
        try:
            ns = run_offline_ticks([lean, plain], ticks, [targets, targets])
        finally:
            gc.enable()
        lean_us, plain_us = ns[0, skip:] / 1e3, ns[1, skip:] / 1e3
        p50, p99 = float(np.percentile(lean_us, 50)), float(np.percentile(lean_us, 99))
        plain_p50 = float(np.percentile(plain_us, 50))
        out[f"torque_tick_compute_us_p50_offline_{name}"] = p50
        out[f"torque_tick_compute_us_p99_offline_{name}"] = p99
        out[f"torque_tick_compute_us_p50_offline_plain_{name}"] = plain_p50
        out[f"torque_tick_plain_over_lean_ratio_p50_offline_{name}"] = plain_p50 / p50
        out[f"torque_tick_compute_p99_vs_period_ratio_offline_{name}"] = p99 / 1e3
    out["torque_tick_compute_us_p50_offline"] = out["torque_tick_compute_us_p50_offline_moving"]
    out["torque_tick_plain_over_lean_ratio_p50_offline"] = out[
        "torque_tick_plain_over_lean_ratio_p50_offline_moving"
    ]
    out["host_load_avg_1m_offline_window"] = os.getloadavg()[0]
    return out
