"""franky-sim as a child process: a MuJoCo FR3 that speaks the libfranka network protocol.

The robot's code runs unchanged against it (tests, the bench, ``session_franka_sim.yaml``). It
binds the FCI ports (1337 robot, 1338 gripper) on one loopback address, so each simulator gets its
own 127.x.y.z. It runs in its own process so its 1 kHz physics loop does not share our GIL.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from robot_rl.controllers.loop import LoopConfig
from robot_rl.controllers.reference import Workspace
from robot_rl.hardware.franka_backend import franka_loop_config

# franky-sim's MuJoCo FR3 starts here (franky_sim.DEFAULT_INITIAL_JOINT_POS), its TCP at about
# (0.554, 0.0, 0.521) m, gripper down.
SIM_HOME_Q_RAD = (0.0, 0.0, 0.0, -1.57, 0.0, 1.57, 0.785)
# Its joints' Coulomb friction is MuJoCo's frictionloss in franky_sim/assets/fr3.xml (1.137 Nm on
# joints 1-4, 0.763, 0.44, 0.248 on 5-7); the rig feeds forward 80 % of it, as a lab would of its
# arm's identified friction.
SIM_FRICTION_COULOMB_NM = (0.9, 0.9, 0.9, 0.9, 0.6, 0.35, 0.2)
# franky-sim's scheduling: SCHED_OTHER, raised to this nice value where this user may. Not
# SCHED_FIFO: slower than real time, it never sleeps, spends its CPU's real-time budget
# (sched_rt_runtime_us) and the kernel then stalls every FIFO thread on that CPU, the control
# loop's included, ~50 ms each second. Measured on 2 cores (load 2.5-3.3, 20 s holds, before
# the missed-period count became phase-free): FIFO 50 sim: wall slots missed 5.7-11 %, robot
# ticks missed 11-13 %, 0.94 x real time; nice -5: 0.5-0.9 %, 4.7-5.2 %, 0.77 x real time (0.93
# in bench franka --quick). The franky-sim session test passed 4 of 5 runs at nice -5.
SIM_NICE = -5
# A workspace box around that start (the default box's top, 0.5 m, is below it).
SIM_WORKSPACE = Workspace(pos_min_m=(0.3, -0.3, 0.1), pos_max_m=(0.75, 0.3, 0.65))


def sim_loop_config() -> LoopConfig:
    """The control loop's settings for franky-sim: the Franka defaults with ``SIM_WORKSPACE``."""
    return franka_loop_config(SIM_WORKSPACE)


def free_loopback_ip() -> str:
    """A random 127.x.y.z: parallel simulators (other tests, other users) never share ports."""
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"


class FrankySim:
    """``franky-sim`` on ``ip`` until ``stop()`` (or the end of a ``with`` block)."""

    def __init__(
        self,
        ip: str | None = None,
        log_path: Path | None = None,
        rt_priority: int = 0,
        cpu: int | None = None,
        nice: int = SIM_NICE,
    ) -> None:
        self.ip = ip or free_loopback_ip()
        self.log_path = log_path
        self.rt_priority = rt_priority  # > 0: SCHED_FIFO at this priority (see _make_realtime)
        self.nice = nice  # with rt_priority 0: SCHED_OTHER at this nice value (0: left alone)
        self.realtime = False
        self.niced = False
        # Pin the simulator here (None: anywhere). Slower than real time it never sleeps, spends
        # its CPU's real-time budget and gets every SCHED_FIFO thread there throttled 50 ms each
        # second; on a machine with cores to spare, keep it off the control loop's (rig) CPU.
        self.cpu = cpu
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60.0) -> FrankySim:
        """Start it and wait until it says it accepts connections (RuntimeError otherwise)."""
        cmd = [sys.executable, "-m", "franky_sim.run_server", "--simulator", "mujoco",
               "--hostname", self.ip]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        self.process = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        self.realtime = self._make_realtime()
        self.niced = not self.realtime and self._renice()
        deadline = time.monotonic() + timeout_s
        seen: list[str] = []
        assert_out = self.process.stdout
        if assert_out is None:
            raise RuntimeError("franky-sim started without a stdout pipe")
        for line in assert_out:
            seen.append(line.rstrip())
            if "Connect to the server" in line:
                self._drain_in_background()
                return self
            if time.monotonic() > deadline:
                break
        self.stop()
        raise RuntimeError(f"franky-sim did not come up on {self.ip}: {' | '.join(seen[-5:])}")

    def _make_realtime(self) -> bool:
        """SCHED_FIFO ``rt_priority`` where asked (> 0) and this user may: the arm's 1 kHz cycle
        is hard real time, but a FIFO simulator below real time gets the control loop throttled
        (see ``SIM_NICE``, the default). Whether it got it is ``self.realtime``."""
        if self.process is None:
            return False
        if self.cpu is not None:  # before it starts threads: they inherit it
            try:
                os.sched_setaffinity(self.process.pid, {self.cpu})
            except OSError as exc:
                print(f"franky-sim: could not pin to CPU {self.cpu}: {exc}", file=sys.stderr)
        if self.rt_priority <= 0:
            return False
        try:
            os.sched_setscheduler(self.process.pid, os.SCHED_FIFO, os.sched_param(self.rt_priority))
        except (OSError, AttributeError):
            return False
        return True

    def _renice(self) -> bool:
        """Set the simulator's threads (those that exist; later ones inherit it from the main
        thread) to ``self.nice``; False where it is 0 or this user may not."""
        if self.process is None or self.nice == 0:
            return False
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{self.process.pid}/task")]
        except OSError:
            tids = [self.process.pid]
        try:
            for tid in tids:
                os.setpriority(os.PRIO_PROCESS, tid, self.nice)
        except OSError as exc:
            print(f"franky-sim: could not set nice {self.nice}: {exc}", file=sys.stderr)
            return False
        return True

    def _drain_in_background(self) -> None:
        """Keep reading its output so a full pipe never stalls the simulator."""
        import threading

        def drain() -> None:
            out = self.process.stdout if self.process else None
            if out is None:
                return
            sink = self.log_path.open("a") if self.log_path else None
            try:
                for line in out:
                    if sink is not None:
                        sink.write(line)
            finally:
                if sink is not None:
                    sink.close()

        threading.Thread(target=drain, name="franky-sim-log", daemon=True).start()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """Take it away abruptly (the test of a lost arm)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> FrankySim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SimReachBackend:
    """A reach task on franky-sim, for whole sessions on one machine (``robot-server --backend
    franka-sim --task reach``): a ``FrankaBackend`` whose reset goes home, then to a random TCP
    offset, and draws a goal; it publishes ``features`` (goal minus TCP, (3,) m, base frame) and
    ``success`` (TCP within ``success_radius_m`` of the goal), as the twin's reach does."""

    # A box around the start TCP: a reset is a real move (about 0.1 m/s under the impedance's
    # error clip), so the box keeps it within a few seconds.
    workspace = Workspace(pos_min_m=(0.4, -0.15, 0.35), pos_max_m=(0.7, 0.15, 0.6))
    goal_low_m = (0.45, -0.12, 0.38)
    # Goals the arm can reach with the gripper down: toward (0.67, +-0.12, 0.58) it stops 23 mm
    # short (its reach limit), beyond the success radius.
    goal_high_m = (0.64, 0.12, 0.55)
    min_goal_distance_m = 0.1
    success_radius_m = 0.015

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.period_s = backend.period_s
        self.goal_m = np.zeros(3)
        self._start: tuple[np.ndarray, np.ndarray] | None = None

    def __getattr__(self, name: str) -> Any:  # tick, set_target, state, ... of the arm
        return getattr(self.backend, name)

    def reset(self, options: dict[str, Any]) -> dict[str, Any]:
        """A Cartesian move to the start TCP plus a seeded offset (fast: no joint homing), then a
        goal at least ``min_goal_distance_m`` away."""
        seed = options.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"reset seed={seed!r}; expected an int")
        if self._start is None:
            s = self.backend.state()
            self._start = (s.ee_pos_m.copy(), s.ee_quat_xyzw.copy())
        rng = np.random.default_rng(seed)
        box = np.asarray(self.backend.reset_config.random_box_m)
        self.backend._move_to(self._start[0] + rng.uniform(-box, box), self._start[1])
        reply: dict[str, Any] = {"seed": seed}
        tcp = self.backend.state().ee_pos_m
        for _ in range(100):
            self.goal_m = rng.uniform(self.goal_low_m, self.goal_high_m)
            if np.linalg.norm(self.goal_m - tcp) >= self.min_goal_distance_m:
                break
        return {**reply, "goal_m": self.goal_m.tolist()}

    def features(self) -> np.ndarray:
        return self.goal_m - self.backend.state().ee_pos_m

    def status(self) -> dict[str, Any]:
        dist = float(np.linalg.norm(self.features()))
        return {**self.backend.status(), "success": dist <= self.success_radius_m}
