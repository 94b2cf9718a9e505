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
   with ``sim_realtime_factor_<idle|loaded>_window`` for the same window.
The torque-update interval is the wall time between consecutive ``set_torque`` calls (torque
mode) or tracker reference updates (tracker mode, nominal ``tracker_period_s``).

franky-sim steps its physics in Python; ``sim_realtime_factor_<mode>`` (simulated seconds per wall
second) says how far it falls behind on this machine: tracking figures on a real arm (1 kHz by
construction) should be no worse.
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

import numpy as np

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
            for name, circle_clock in (("", None), ("_sim_clock", clock)):
                hold_and_measure(backend, start, quat, 1.5, 0.1, clock)
                circle = track_circle(backend, center, quat, 2, clock=circle_clock)
                out[f"{mode}_circle_error_mm_mean{name}"] = float(circle.path_error_m.mean() * 1e3)
                out[f"{mode}_circle_error_mm_max{name}"] = float(circle.path_error_m.max() * 1e3)
                out[f"{mode}_circle_lag_error_mm_mean{name}"] = float(
                    circle.lag_error_m.mean() * 1e3
                )
            out[f"{mode}_watchdog_hold_wall_ms"] = watchdog_hold_ms(backend, quat, home)
            out[f"{mode}_watchdog_hold_vs_config_ratio"] = out[f"{mode}_watchdog_hold_wall_ms"] / (
                1e3 * backend.loop_config.watchdog.hold_after_s
            )
            if mode == "torque":
                idle, idle_robot = _quiet_window(backend, window_s, home, quat)
                out.update(_window_figures("idle", idle, idle_robot))
                # the loop's own computation per tick (reference, law, safety), same window
                compute = backend.loop.telemetry.column("compute_us")[-len(idle) :]
                out["torque_compute_us_p50_idle"] = float(np.percentile(compute, 50))
                out["torque_compute_us_p99_idle"] = float(np.percentile(compute, 99))
                out["host_load_avg_1m_idle_window"] = os.getloadavg()[0]
                learner = subprocess.Popen(
                    [sys.executable, "-c", _LEARNER_SCRIPT, str(window_s + 5)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    preexec_fn=_normal_scheduling,  # a learner is not real-time
                )  # fmt: skip
                try:
                    time.sleep(2.0)  # the learner is importing torch and warming up
                    loaded, loaded_robot = _quiet_window(backend, window_s, home, quat)
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
    for mode in ("torque", "tracker"):
        results.update(bench_mode(mode, window_s, seed, rt_priority))
    from robot_rl.controllers.loop import LoopConfig
    from robot_rl.hardware.franka_sim import SIM_FRICTION_COULOMB_NM

    loop = LoopConfig()  # the gains both modes ran with (the sim's box aside)
    results["cartesian_stiffness_n_per_m"] = float(loop.cartesian_gains.stiffness[0])
    results["cartesian_stiffness_nm_per_rad"] = float(loop.cartesian_gains.stiffness[3])
    results["cartesian_damping_ratio"] = float(loop.cartesian_gains.damping_ratio[0])
    results["integral_gain_n_per_m_s"] = loop.integral.gain_n_per_m_s
    results["integral_force_max_n"] = loop.integral.force_max_n
    results["friction_coulomb_nm_max"] = max(SIM_FRICTION_COULOMB_NM)
    results["target_torque_missed_fraction_idle_max"] = 0.001
    results["target_circle_error_mm_mean_max"] = 2.0
    results["target_watchdog_hold_wall_ms_max"] = 110.0
    return results
