"""`robot-rl demo`: the twin and its controllers solving each task with the scripted experts.

Until the learner lands this is the main job: it proves that the twin, the 1 kHz impedance loop,
the safety limits, the tasks and the cameras work together on this machine, and prints what it did.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from robot_rl.interfaces import PANDA_LIMITS
from robot_rl.sim.scene import SceneConfig, TwinScene
from robot_rl.sim.tasks import TASKS

log = logging.getLogger(__name__)


def run_demo(task: str = "all", seed: int = 0, episodes: int = 2) -> int:
    """Run ``episodes`` expert episodes per task and print a summary; returns an exit code."""
    names = sorted(TASKS) if task == "all" else [task]
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        print(f"unknown task {unknown[0]!r}; choose one of: all, {', '.join(sorted(TASKS))}")
        return 2
    header = (
        f"{'task':<11} {'seed':>4} {'success':>7} {'sim s':>6} {'wall s':>6} {'RTF':>5} "
        f"{'|tau|/limit':>11} {'max dtau/dt':>11} {'limit hits':>10}"
    )
    print(header)
    print("-" * len(header))
    failures = 0
    limit_hits = 0  # commands the twin itself had to clamp: the loop's safety should leave none
    for name in names:
        scene = TwinScene(SceneConfig(task=name, seed=seed))
        for episode in range(episodes):
            episode_seed = seed + episode
            scene.reset(episode_seed)
            scene.loop.telemetry.clear()
            start = time.perf_counter()
            run = scene.run_expert()
            wall = time.perf_counter() - start
            tau = scene.loop.telemetry.column("tau_nm")
            tau_fraction = float((np.abs(tau) / PANDA_LIMITS.joint_torque_max_nm).max())
            failures += not run.success
            print(
                f"{name:<11} {episode_seed:>4} {'yes' if run.success else 'NO':>7} "
                f"{run.time_s:>6.1f} {wall:>6.2f} {run.time_s / wall:>5.1f} {tau_fraction:>11.2f} "
                f"{scene.twin.max_command_rate_nm_per_s:>8.0f} Nm/s "
                f"{scene.twin.limit_violations:>7d}"
            )
            limit_hits += scene.twin.limit_violations
        frames = scene.render()
        described = ", ".join(
            f"{cam} {f.image.shape[1]}x{f.image.shape[0]} mean {f.image.mean():.0f}"
            for cam, f in frames.items()
        )
        print(f"{'':<11} cameras: {described}")
        scene.close()
    total = len(names) * episodes
    print(f"\n{total - failures}/{total} episodes solved by the scripted experts.")
    if limit_hits:
        print(
            f"WARNING: the twin clamped {limit_hits} commands that passed the loop's torque safety."
        )
    else:
        print("Every torque the loop sent was within the Panda limits (87/12 Nm, 1000 Nm/s).")
    return 0 if failures == 0 and limit_hits == 0 else 1
