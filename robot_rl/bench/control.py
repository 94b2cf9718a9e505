"""Control benchmark on the twin: timing, accuracy, tracking, torque rate and the watchdog.

One seeded ``PandaTwin`` and one lockstep ``ControlLoop`` at 1 kHz run three phases in sequence:

1. static: random reachable TCP targets (a box in front of the robot, gripper down with a random
   yaw and a small tilt), each streamed unchanged at 100 Hz while the arm settles; the pose error is
   read at the end of the settle time.
2. circle: a horizontal circle streamed at 100 Hz as Hermite targets (position + circle velocity as
   twist feedforward); warm-up revolutions, then measured ones (see ``_circle_metrics`` for how the
   tracking error is defined).
3. watchdog, in wall time on a running robot server: the reach twin served by ``RobotServer`` on
   loopback (its own thread, ticking on wall-clock deadlines), a ``RobotClient`` streaming
   targets at 100 Hz that move the arm; the stream stops and the wall time from the last target
   sent to the first state received in HOLD is measured, ``served_hold_trials`` times. The
   figure includes what a client sees: the transport, the 200 Hz state stream and any tick the
   host delivers late; ``watchdog_hold_ms_config`` is the configured value it is compared to.

Timing: the loop's telemetry gives the controller's compute time per tick (reference, law, safety;
physics and robot I/O excluded). The twin is wrapped in ``_TimedRobot`` so that reading state, the
model and the physics step are timed apart as well. The real-time factor is simulated seconds per
wall second over the circle phase, controller included. Timing figures depend on the machine and on
its load; the accuracy figures are deterministic for a seed.

Units: positions in m (reported in mm), angles in rad (reported in deg), times in s (reported in us
or ms as the key says). Quaternions are (x, y, z, w); twists are linear then angular.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from robot_rl.controllers.loop import ControlLoop, LoopConfig
from robot_rl.controllers.reference import GRIPPER_DOWN_QUAT_XYZW
from robot_rl.controllers.rotations import quat_angle_between, quat_from_euler_xyz, quat_mul
from robot_rl.controllers.targets import CartesianTarget
from robot_rl.controllers.watchdog import ControlMode
from robot_rl.interfaces import ArmLimits, RobotModel, RobotState
from robot_rl.sim.twin import PandaTwin, TwinConfig

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ControlBenchConfig:
    """What the benchmark runs. Positions m, angles rad, times s (simulated)."""

    num_static_targets: int = 20
    static_settle_s: float = 2.5
    static_box_min_m: tuple[float, float, float] = (0.35, -0.2, 0.15)
    static_box_max_m: tuple[float, float, float] = (0.6, 0.2, 0.45)
    static_yaw_rad: float = 0.5  # about the tool z axis, +-
    static_tilt_rad: float = 0.2  # about the tool x and y axes, +-
    target_period_s: float = 0.01  # targets are streamed at 100 Hz in every phase
    circle_center_m: tuple[float, float, float] = (0.5, 0.0, 0.3)
    circle_radius_m: float = 0.05
    circle_frequency_hz: float = 0.5
    circle_approach_s: float = 1.5  # streaming the circle's start point before it starts
    circle_warmup_revolutions: int = 1
    circle_measured_revolutions: int = 2
    hold_timeout_s: float = 1.0
    served_hold_trials: int = 5
    served_stream_s: float = 0.5  # targets streamed before each stop


FULL = ControlBenchConfig()
QUICK = ControlBenchConfig(num_static_targets=3, circle_measured_revolutions=1,
                           served_hold_trials=3)  # fmt: skip


def _stderr_progress(message: str) -> None:
    print(f"[bench control] {message}", file=sys.stderr, flush=True)


def run_control_bench(
    seed: int = 0, quick: bool = False, progress: Progress | None = _stderr_progress
) -> dict[str, float]:
    """Run the control benchmark (``QUICK`` or ``FULL`` config) and return flat metrics.

    ``progress`` receives one line per phase (stderr by default; None for silence).
    """
    return run_control_bench_config(QUICK if quick else FULL, seed, progress)


def run_control_bench_config(
    config: ControlBenchConfig, seed: int = 0, progress: Progress | None = _stderr_progress
) -> dict[str, float]:
    """Run the benchmark with an explicit config; see the module docstring for the phases."""
    say = progress or (lambda _message: None)
    twin = PandaTwin(TwinConfig(seed=seed))
    try:
        robot = _TimedRobot(twin)
        loop = ControlLoop(robot, LoopConfig(period_s=twin.control_period_s))
        timing = _TimingSamples()
        wall0 = time.perf_counter()
        results: dict[str, float] = {"seed": seed}

        say(f"static accuracy: {config.num_static_targets} targets x {config.static_settle_s} s")
        results |= _static_phase(loop, twin, config, np.random.default_rng(seed), timing)
        revolutions = config.circle_warmup_revolutions + config.circle_measured_revolutions
        say(
            f"circle tracking: r = {config.circle_radius_m * 1e3:.0f} mm at "
            f"{config.circle_frequency_hz} Hz, {revolutions} revolutions"
        )
        results |= _circle_phase(loop, twin, config, timing)
        say(
            f"watchdog: {config.served_hold_trials} target streams stopped on a running robot "
            "server (wall time to the first HOLD state; the server logs each switch)"
        )
        results |= _served_hold_latency(config, seed)

        results |= timing.summary()
        results["max_torque_rate_nm_per_s"] = twin.max_command_rate_nm_per_s
        results["twin_limit_violations"] = twin.limit_violations
        results["loop_faults"] = loop.faults
        results["rejected_targets"] = loop.rejected_targets
        say(f"done: {twin.time_s:.1f} s simulated in {time.perf_counter() - wall0:.1f} s wall")
        return results
    finally:
        twin.close()


# -- phases ---------------------------------------------------------------------------------------
def _stream(loop: ControlLoop, target: CartesianTarget, duration_s: float, every: int) -> int:
    """Send ``target`` every ``every`` ticks for ``duration_s``; returns the ticks run."""
    n = round(duration_s / loop.config.period_s)
    for k in range(n):
        if k % every == 0:
            loop.set_cartesian_target(target)
        loop.tick()
    return n


def _random_target(rng: np.random.Generator, config: ControlBenchConfig) -> CartesianTarget:
    pos_m = rng.uniform(config.static_box_min_m, config.static_box_max_m)
    tilt_x, tilt_y = rng.uniform(-config.static_tilt_rad, config.static_tilt_rad, size=2)
    yaw = rng.uniform(-config.static_yaw_rad, config.static_yaw_rad)
    # Right-multiplied: the tilt and yaw are about the tool's own axes, starting from gripper-down.
    quat = quat_mul(
        np.asarray(GRIPPER_DOWN_QUAT_XYZW, dtype=float), quat_from_euler_xyz(tilt_x, tilt_y, yaw)
    )
    return CartesianTarget(pos_m, quat)


def _static_phase(
    loop: ControlLoop,
    twin: PandaTwin,
    config: ControlBenchConfig,
    rng: np.random.Generator,
    timing: _TimingSamples,
) -> dict[str, float]:
    every = _ticks(config.target_period_s, loop)
    pos_err_mm, ang_err_deg, joint_speed_rad_s = [], [], []
    for _ in range(config.num_static_targets):
        target = _random_target(rng, config)
        ticks = _stream(loop, target, config.static_settle_s, every)
        timing.collect(loop, ticks)
        state = twin.read_state()
        pos_err_mm.append(1e3 * float(np.linalg.norm(state.ee_pos_m - target.pos_m)))
        ang_err_deg.append(math.degrees(quat_angle_between(state.ee_quat_xyzw, target.quat_xyzw)))
        joint_speed_rad_s.append(float(np.abs(state.dq_rad_s).max()))
    return {
        "static_error_mm": float(np.median(pos_err_mm)),
        "static_error_mm_max": float(np.max(pos_err_mm)),
        "static_error_deg": float(np.median(ang_err_deg)),
        "static_error_deg_max": float(np.max(ang_err_deg)),
        # The TCP error alone can hide a nullspace oscillation: the arm must also be at rest.
        "static_joint_speed_rad_s_max": float(np.max(joint_speed_rad_s)),
    }


@dataclass(frozen=True)
class _Circle:
    """Horizontal circle starting at center + (r, 0, 0), counter-clockwise seen from above."""

    center_m: np.ndarray
    radius_m: float
    omega_rad_s: float

    def pos_m(self, t_s: np.ndarray | float) -> np.ndarray:
        """(..., 3) position at time(s) t_s."""
        phase = self.omega_rad_s * np.asarray(t_s, dtype=float)
        offset = self.radius_m * np.stack([np.cos(phase), np.sin(phase), np.zeros_like(phase)], -1)
        return self.center_m + offset

    def twist(self, t_s: float) -> np.ndarray:
        """(6,) linear velocity m/s (tangent to the circle), zero angular velocity."""
        phase = self.omega_rad_s * t_s
        speed = self.radius_m * self.omega_rad_s
        return np.array([-speed * math.sin(phase), speed * math.cos(phase), 0.0, 0.0, 0.0, 0.0])


def _circle_phase(
    loop: ControlLoop, twin: PandaTwin, config: ControlBenchConfig, timing: _TimingSamples
) -> dict[str, float]:
    """Stream the circle; returns its metrics."""
    dt = loop.config.period_s
    every = _ticks(config.target_period_s, loop)
    quat = np.asarray(GRIPPER_DOWN_QUAT_XYZW, dtype=float)
    circle = _Circle(
        np.asarray(config.circle_center_m, dtype=float),
        config.circle_radius_m,
        2.0 * math.pi * config.circle_frequency_hz,
    )
    ticks = _stream(loop, CartesianTarget(circle.pos_m(0.0), quat), config.circle_approach_s, every)
    timing.collect(loop, ticks)

    revolution_ticks = _ticks(1.0 / config.circle_frequency_hz, loop)
    n_warmup = config.circle_warmup_revolutions * revolution_ticks
    n_measured = config.circle_measured_revolutions * revolution_ticks
    tcp_pos_m = np.empty((n_measured, 3))  # preallocated: no allocation growth inside the loop
    wall0 = time.perf_counter()
    for k in range(n_warmup + n_measured):
        if k % every == 0:
            t_s = k * dt  # circle time of this tick's state
            loop.set_cartesian_target(CartesianTarget(circle.pos_m(t_s), quat, circle.twist(t_s)))
        loop.tick()
        if k >= n_warmup:
            tcp_pos_m[k - n_warmup] = twin.read_state().ee_pos_m
    wall_s = time.perf_counter() - wall0
    timing.collect(loop, n_warmup + n_measured)

    # Each TCP sample is read after its tick's physics step: at circle time (k + 1) * dt.
    t_s = (np.arange(n_warmup, n_warmup + n_measured) + 1) * dt
    metrics = _circle_metrics(circle, t_s, tcp_pos_m, config.target_period_s)
    metrics["circle_rate_limited_fraction"] = _rate_limited_fraction(loop, n_measured)
    metrics["twin_realtime_factor"] = (n_warmup + n_measured) * dt / wall_s
    metrics["timed_ticks"] = float(sum(len(c) for c in timing._compute_us))
    return metrics


def _circle_metrics(
    circle: _Circle, t_s: np.ndarray, tcp_pos_m: np.ndarray, target_period_s: float
) -> dict[str, float]:
    """Tracking error of the TCP against the ideal circle, two ways.

    The reference pipeline interpolates from its current reference to each new target over one
    target period, so by design it reaches a target one period after it was sent: a fixed latency
    of the interface (10 ms here, 1.6 mm at this speed). ``circle_error_delayed_ref_mm_*`` is the
    TCP against the ideal circle at ``t - target_period_s`` (the controller's own tracking);
    ``circle_error_ref_mm_*`` is the TCP against the ideal point at ``t`` (what a user sees,
    that latency included). ``circle_lag_ms`` is the TCP's mean phase lag behind the ideal point at
    the current time (angle difference over the angular rate; positive = behind), which should
    come out near the target period when the controller itself tracks well.
    ``circle_radial_error_mm_mean`` is the signed mean radial offset (positive = outside the
    circle), the signature of a missing centripetal (acceleration) feedforward.
    """
    delayed_mm = 1e3 * np.linalg.norm(tcp_pos_m - circle.pos_m(t_s - target_period_s), axis=1)
    current_mm = 1e3 * np.linalg.norm(tcp_pos_m - circle.pos_m(t_s), axis=1)
    offset_m = tcp_pos_m[:, :2] - circle.center_m[:2]
    tcp_phase = np.arctan2(offset_m[:, 1], offset_m[:, 0])
    lag_rad = np.angle(np.exp(1j * (circle.omega_rad_s * t_s - tcp_phase)))  # wrapped to (-pi, pi]
    radial_mm = 1e3 * (np.linalg.norm(offset_m, axis=1) - circle.radius_m)
    return {
        "circle_error_delayed_ref_mm_mean": float(delayed_mm.mean()),
        "circle_error_delayed_ref_mm_max": float(delayed_mm.max()),
        "circle_error_ref_mm_mean": float(current_mm.mean()),
        "circle_error_ref_mm_max": float(current_mm.max()),
        "circle_lag_ms": 1e3 * float(lag_rad.mean()) / circle.omega_rad_s,
        "circle_radial_error_mm_mean": float(radial_mm.mean()),
    }


def _rate_limited_fraction(loop: ControlLoop, ticks: int) -> float:
    """Fraction of the newest ``ticks`` torques that moved by the full rate-limit step.

    Computed from the torques sent rather than the safety stage's FLAG_RATE_LIMITED, which also
    fires when ``last + (tau - last) != tau`` by a rounding error, so it over-counts near rest.
    """
    tau_nm = loop.telemetry.column("tau_nm")[-(ticks + 1) :]
    step_nm = np.abs(np.diff(tau_nm, axis=0)).max(axis=1)
    return float(np.mean(step_nm >= (1.0 - 1e-3) * loop.safety.max_step_nm))


def _served_hold_latency(config: ControlBenchConfig, seed: int) -> dict[str, float]:
    """Wall time (ms) from the last target a client sent to the first HOLD state it received,
    on the reach twin served by a running ``RobotServer`` (see the module docstring)."""
    from robot_rl.sim.scene import SceneConfig, TwinScene
    from robot_rl.transport.robot_server import (
        RobotClient,
        RobotEndpoints,
        RobotServer,
        SceneBackend,
    )
    from robot_rl.transport.security import SecurityConfig

    plain = SecurityConfig(plaintext=True)
    scene = TwinScene(SceneConfig(task="reach", seed=seed, cameras=()))
    loop_config = scene.config.loop
    server = RobotServer(SceneBackend(scene), RobotEndpoints("tcp://127.0.0.1:*",
                         "tcp://127.0.0.1:*"), plain)  # fmt: skip
    server.start()
    client = RobotClient(RobotEndpoints(server.commands_endpoint, server.state_endpoint), plain)
    latencies_ms = []
    try:
        client.latest(timeout_s=10.0)
        rng = np.random.default_rng(seed)
        for _ in range(config.served_hold_trials):
            reply = client.reset(seed=int(rng.integers(2**31)))
            start = client.latest(timeout_s=2.0, newer_than_seq=reply["state_seq"]).state
            goal = start.ee_pos_m + rng.uniform(-0.05, 0.05, 3)
            target = CartesianTarget(goal, start.ee_quat_xyzw)
            deadline = time.monotonic()
            for _ in range(max(1, round(config.served_stream_s / config.target_period_s))):
                client.send_target(target)
                deadline += config.target_period_s
                time.sleep(max(0.0, deadline - time.monotonic()))
            client.send_target(target)
            sent_s = time.monotonic()
            seq = client.latest().seq
            while True:
                state = client.latest(timeout_s=config.hold_timeout_s, newer_than_seq=seq)
                seq = state.seq
                if state.meta["mode"] == ControlMode.HOLD:
                    latencies_ms.append(1e3 * (state.received_s - sent_s))
                    break
                if state.received_s - sent_s > config.hold_timeout_s:
                    raise RuntimeError(
                        f"the served loop did not report HOLD within {config.hold_timeout_s} s "
                        f"of the last target (watchdog hold_after_s="
                        f"{loop_config.watchdog.hold_after_s}; mode {state.meta['mode']})"
                    )
    finally:
        client.close()
        server.stop()
        scene.close()
    configured_ms = 1e3 * loop_config.watchdog.hold_after_s
    return {
        "watchdog_hold_ms": float(np.median(latencies_ms)),
        "watchdog_hold_ms_max": float(np.max(latencies_ms)),
        "watchdog_hold_ms_config": configured_ms,
        "watchdog_hold_ratio_vs_config": float(np.median(latencies_ms)) / configured_ms,
        "server_late_ticks": float(server.stats.late_ticks),
    }


def _ticks(duration_s: float, loop: ControlLoop) -> int:
    return max(1, round(duration_s / loop.config.period_s))


# -- timing ---------------------------------------------------------------------------------------
_IO_COLUMNS = ("read_state", "model", "command", "step")


class _TimedRobot:
    """Passes every call to the twin, timing reads, model, command and physics step (us) per tick.

    Keeps the newest ``capacity`` ticks in a preallocated ring; a tick ends with ``step()``, which
    the lockstep loop calls last. Adds two ``perf_counter`` calls per method (well under 1 us).
    """

    def __init__(self, twin: PandaTwin, capacity: int = 60_000):
        self.twin = twin
        self.capacity = capacity
        self._us = np.zeros((capacity, len(_IO_COLUMNS)))
        self._row = 0
        self.count = 0  # ticks recorded

    @property
    def limits(self) -> ArmLimits:
        return self.twin.limits

    @property
    def control_period_s(self) -> float:
        return self.twin.control_period_s

    def read_state(self) -> RobotState:
        t0 = time.perf_counter()
        state = self.twin.read_state()
        self._us[self._row, 0] = (time.perf_counter() - t0) * 1e6
        return state

    def model(self) -> RobotModel:
        t0 = time.perf_counter()
        model = self.twin.model()
        self._us[self._row, 1] = (time.perf_counter() - t0) * 1e6
        return model

    def command_torque(self, tau_nm: np.ndarray) -> None:
        t0 = time.perf_counter()
        self.twin.command_torque(tau_nm)
        self._us[self._row, 2] = (time.perf_counter() - t0) * 1e6

    def step(self) -> None:
        t0 = time.perf_counter()
        self.twin.step()
        self._us[self._row, 3] = (time.perf_counter() - t0) * 1e6
        self.count += 1
        self._row = self.count % self.capacity

    def gripper_move(self, width_m: float, speed_m_s: float) -> None:
        self.twin.gripper_move(width_m, speed_m_s)

    def gripper_grasp(self, width_m: float, force_n: float, speed_m_s: float = 0.1) -> None:
        self.twin.gripper_grasp(width_m, force_n, speed_m_s)

    def recent(self, n: int) -> np.ndarray:
        """(n, 4) newest n ticks, oldest first: read_state, model, command, step (us)."""
        if n > min(self.count, self.capacity):
            raise ValueError(f"asked for {n} ticks; {min(self.count, self.capacity)} are kept")
        idx = np.arange(self.count - n, self.count) % self.capacity
        return self._us[idx]


class _TimingSamples:
    """Per-tick timings pooled over the measured phases (one array per phase: bounded)."""

    def __init__(self) -> None:
        self._compute_us: list[np.ndarray] = []
        self._io_us: list[np.ndarray] = []

    def collect(self, loop: ControlLoop, ticks: int) -> None:
        """Take the newest ``ticks`` ticks from the loop's telemetry and the timed robot."""
        if not isinstance(loop.robot, _TimedRobot):
            raise TypeError("timing needs the loop to run over a _TimedRobot")
        self._compute_us.append(loop.telemetry.column("compute_us")[-ticks:].astype(float))
        self._io_us.append(loop.robot.recent(ticks))

    def summary(self) -> dict[str, float]:
        compute = np.concatenate(self._compute_us)
        io = np.concatenate(self._io_us)
        return {
            "tick_compute_us_p50": float(np.percentile(compute, 50)),
            "tick_compute_us_p99": float(np.percentile(compute, 99)),
            # What a real arm's I/O would cost here: state, model and the torque command.
            "io_us_p50": float(np.percentile(io[:, :3].sum(axis=1), 50)),
            "model_us_p50": float(np.percentile(io[:, 1], 50)),
            "physics_step_us_p50": float(np.percentile(io[:, 3], 50)),
        }
