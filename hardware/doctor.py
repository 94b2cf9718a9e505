"""``robot-rl doctor``: is this machine ready to run a session on a real arm?

Each check gives one ``Check`` (pass or fail, what was found, and how to fix a failure):
the extras installed, the arm's FCI port answering, the kernel (PREEMPT_RT or not), a 1 kHz loop's
measured jitter on this machine, RealSense cameras, a SpaceMouse, the CURVE keys, free disk
for episodes, and (given a rig file) that the arm reaches the rig's whole workspace box. Checks
never raise: a missing package or device is a failed line, not a crash.
"""

from __future__ import annotations

import importlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from robot_rl.hardware.franka import FCI_PORT, probe_fci


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        tail = f" -> {self.fix}" if not self.ok and self.fix else ""
        return f"{'PASS' if self.ok else 'FAIL'}  {self.name}: {self.detail}{tail}"


def check_extra(module: str, extra: str, feature: str) -> Check:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return Check(f"extra {extra}", False, f"{module} missing for {feature} ({exc})",
                     f"pip install 'robot-rl[{extra}]'")  # fmt: skip
    return Check(f"extra {extra}", True, f"{module} importable ({feature})")


def check_robot_ip(ip: str, timeout_s: float = 1.0) -> Check:
    """The FCI port answers a TCP connect (no libfranka session is opened)."""
    try:
        probe_fci(ip, timeout_s)
    except OSError as exc:
        return Check("robot ip", False, f"{ip}:{FCI_PORT} does not answer ({exc})",
                     f"power the arm, unlock its joints and activate FCI in Desk; ping {ip}; "
                     "put this machine on the control box's network")  # fmt: skip
    return Check("robot ip", True, f"{ip}:{FCI_PORT} answers (FCI)")


def kernel_is_rt() -> tuple[bool, str]:
    version = os.uname().version
    flag = Path("/sys/kernel/realtime")
    rt = "PREEMPT_RT" in version or (flag.exists() and flag.read_text().strip() == "1")
    return rt, f"{os.uname().release} ({'PREEMPT_RT' if rt else 'not real-time'})"


def check_kernel() -> Check:
    rt, detail = kernel_is_rt()
    return Check("kernel", rt, detail, "install a PREEMPT_RT kernel (docs/real_robot.md), or run "
                 "control: tracker and realtime: ignore in the rig file")  # fmt: skip


def loop_jitter(seconds: float, period_s: float = 0.001) -> dict[str, float]:
    """Run a bare 1 kHz loop on monotonic deadlines (with SCHED_FIFO if allowed) for
    ``seconds``; interval p99/max (ms) and the fraction of 1 ms periods with no tick."""
    from robot_rl.hardware.franka_backend import missed_period_fraction, realtime_setup

    n = max(2, int(seconds / period_s))
    stamps = np.zeros(n)
    granted: dict[str, object] = {}

    def run() -> None:
        granted.update(realtime_setup(None, 80))
        deadline = time.monotonic()
        for i in range(n):
            stamps[i] = time.monotonic()
            deadline += period_s
            delay = deadline - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    worker = threading.Thread(target=run, name="doctor-jitter")
    worker.start()
    worker.join()
    intervals = np.diff(stamps) * 1e3
    return {
        "interval_ms_p99": float(np.percentile(intervals, 99)),
        "interval_ms_max": float(intervals.max()),
        "missed_fraction": missed_period_fraction(stamps, period_s),
        "fifo": float(bool(granted.get("fifo"))),
    }


def check_jitter(seconds: float) -> Check:
    j = loop_jitter(seconds)
    ok = j["missed_fraction"] <= 0.001
    detail = (f"1 kHz loop over {seconds:.0f} s: interval p99 {j['interval_ms_p99']:.2f} ms, "
              f"max {j['interval_ms_max']:.2f} ms, missed periods {100 * j['missed_fraction']:.2f}%"
              f", SCHED_FIFO {'yes' if j['fifo'] else 'no'}")  # fmt: skip
    return Check("loop jitter", ok, detail, "run on a PREEMPT_RT kernel with rtprio for this user "
                 "(docs/real_robot.md), close other programs, or use control: tracker")  # fmt: skip


def check_cameras() -> Check:
    from robot_rl.hardware import realsense

    try:
        devices = realsense.list_devices(realsense.load_backend())
    except Exception as exc:  # no package, no USB, a driver error: a failed line, not a crash
        return Check("cameras", False, str(exc), "pip install 'robot-rl[hardware]'")
    if not devices:
        return Check("cameras", False, "no RealSense camera found",
                     "plug the cameras into USB 3 ports; robot-rl cameras list")  # fmt: skip
    serials = ", ".join(d.get("serial", "?") for d in devices)
    return Check("cameras", True, f"{len(devices)} RealSense: {serials}")


def check_spacemouse() -> Check:
    from robot_rl.hardware import spacemouse

    try:
        found = spacemouse.list_spacemice()
    except Exception as exc:
        return Check("spacemouse", False, str(exc), "pip install 'robot-rl[hardware]'")
    if not found:
        return Check("spacemouse", False, "no 3Dconnexion device found",
                     "plug it in; give this user access to /dev/hidraw* (udev rule)")  # fmt: skip
    return Check("spacemouse", True, f"{len(found)} found ({found[0].get('product_string', '')})")


def check_keys(keys_dir: Path, names: Sequence[str]) -> Check:
    missing = [n for n in names if not (keys_dir / f"{n}.key").exists()
               or not (keys_dir / f"{n}.key_secret").exists()]  # fmt: skip
    if missing:
        return Check("keys", False, f"{', '.join(missing)} missing in {keys_dir}",
                     " ; ".join(f"robot-rl keys generate --name {n}" for n in missing))  # fmt: skip
    return Check("keys", True, f"{', '.join(names)} in {keys_dir}")


def check_disk(path: Path, min_free_gb: float) -> Check:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free_gb = shutil.disk_usage(probe).free / 1e9
    return Check("disk", free_gb >= min_free_gb, f"{free_gb:.1f} GB free at {probe}",
                 f"free space or point runs elsewhere (need {min_free_gb:.0f} GB)")  # fmt: skip


def check_workspace_reach(rig_path: Path) -> Check:
    """The rig's workspace box, probed at its corners, face centres and centre, is within the
    arm's reach with the tool at the box's nominal orientation (kinematics only)."""
    from robot_rl.hardware.franka_backend import FrankaRig

    from robot_rl.config import ConfigError, load_config

    fix = f"shrink the box; robot-rl robot check-workspace --rig {rig_path} lists every point"
    try:
        rig = load_config(FrankaRig, rig_path)
    except ConfigError as exc:
        return Check("workspace reach", False, str(exc), "fix the rig file")
    results = rig.workspace_reach()
    out = [r for r in results if not r.reachable]
    if not out:
        return Check(
            "workspace reach", True, f"all {len(results)} probe points of the box reachable"
        )
    worst = max(out, key=lambda r: r.position_error_m)
    return Check("workspace reach", False, f"{len(out)} of {len(results)} probe points of the box "
                 f"out of reach, worst {worst.line()}", fix)  # fmt: skip


def run_checks(robot_ip: str | None, keys_dir: Path, key_names: Sequence[str], runs_dir: Path,
               min_free_gb: float, jitter_s: float,
               rig_path: Path | None = None) -> list[Check]:  # fmt: skip
    """Every check, in the order a lab fixes them."""
    checks: list[Callable[[], Check]] = [
        lambda: check_extra("franky", "franka", "a Franka arm"),
        lambda: check_extra("pyrealsense2", "hardware", "RealSense cameras"),
        lambda: check_extra("hid", "hardware", "a SpaceMouse"),
    ]
    if robot_ip:
        checks.append(lambda: check_robot_ip(robot_ip))
    checks += [
        check_kernel,
        lambda: check_jitter(jitter_s),
        check_cameras,
        check_spacemouse,
        lambda: check_keys(keys_dir, key_names),
        lambda: check_disk(runs_dir, min_free_gb),
    ]
    if rig_path is not None:
        checks.append(lambda: check_workspace_reach(rig_path))
    return [c() for c in checks]
