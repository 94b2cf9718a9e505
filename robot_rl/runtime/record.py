"""Record demos, each episode to disk: the task's scripted expert (sim), or an operator through
any teleop device (``record_teleop_demos``).

Demos are recorded in the env's own action space (``TwinEnv.expert_action``, or the operator's
twist converted by ``twist_to_action``), so a demo step is exactly what a policy would have sent.
Only successful episodes are kept: the env's success (the ground truth on the twin, the detector
on a robot), or the operator's mark on the console (success / failure) when there is one.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from robot_rl.data.batch import Transition
from robot_rl.data.episodes import save_episode
from robot_rl.envs.twin_env import TwinEnv

log = logging.getLogger(__name__)


def record_expert_episode(env: TwinEnv, seed: int | None = None) -> tuple[list[Transition], bool]:
    """One episode of the scripted expert; returns its transitions and whether it succeeded."""
    obs, _ = env.reset(seed=seed)
    expert = env.task.expert()
    transitions = []
    while True:
        action = env.expert_action(expert.act(env.scene.twin))
        next_obs, reward, terminated, truncated, info = env.step(action)
        transitions.append(
            Transition(
                obs, action, float(reward), next_obs, terminated, truncated,
                intervened=True, gripper_penalty=float(info["gripper_penalty"]),
            )
        )  # fmt: skip
        obs = next_obs
        if terminated or truncated:
            return transitions, bool(info["success"])


def record_demos(
    env: TwinEnv, episodes: int, out_dir: Path, seed: int = 0, keep_failures: bool = False
) -> list[Path]:
    """Record ``episodes`` successful expert episodes into ``out_dir``; returns the files.

    Failed expert episodes are skipped (logged) unless ``keep_failures``; gives up with a
    RuntimeError after ``2 * episodes + 5`` attempts.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths: list[Path] = []
    attempts = 0
    with tqdm(total=episodes, desc=f"recording {env.task.name} demos", unit="ep") as bar:
        while len(paths) < episodes:
            attempts += 1
            if attempts > 2 * episodes + 5:
                raise RuntimeError(
                    f"the {env.task.name} expert failed {attempts - 1 - len(paths)} of "
                    f"{attempts - 1} episodes; check the task and the controller"
                )
            transitions, success = record_expert_episode(env, int(rng.integers(2**31 - 1)))
            if not success and not keep_failures:
                log.warning("expert episode failed after %d steps; not kept", len(transitions))
                continue
            meta = {"task": env.task.name, "source": "scripted_expert", "success": success}
            paths.append(save_episode(out_dir, transitions, meta))
            bar.update(1)
    return paths


def record_teleop_demos(
    env: Any,
    device: Any,
    teleop: Any,
    episodes: int,
    out_dir: Path,
    seed: int = 0,
    hub: Any | None = None,
    pace: bool = True,
    max_attempts: int | None = None,
) -> list[Path]:
    """Record ``episodes`` successful operator-driven episodes (see the module docstring).

    ``device`` gives ``TeleopCommand``s (SpaceMouse, gamepad, the console page); with ``hub`` the
    console's marks, reset, pause and stop apply. ``pace`` runs steps at the env's policy period,
    so a person can drive the twin (which would otherwise run faster than real time).
    """
    from robot_rl.console.bridge import ConsoleBridge
    from robot_rl.runtime.loops import apply_label
    from robot_rl.teleop.intervener import operator_action

    out_dir.mkdir(parents=True, exist_ok=True)
    base = getattr(env, "unwrapped", env)
    bridge = ConsoleBridge(hub, env, None) if hub is not None else None
    rng = np.random.default_rng(seed)
    paths: list[Path] = []
    attempts = 0
    period = base.config.policy_period_s
    while len(paths) < episodes:
        attempts += 1
        if max_attempts is not None and attempts > max_attempts:
            log.warning("stopped after %d attempts with %d demos kept", attempts - 1, len(paths))
            break
        obs, _ = env.reset(seed=int(rng.integers(2**31 - 1)))
        transitions: list[Transition] = []
        success, episode_return = False, 0.0
        while True:
            request = bridge.before_step() if bridge is not None else None
            if request is not None and request.reset:
                log.info("demo restarted by the operator; not kept")
                break
            start = time.monotonic()
            command = device.read()
            action = operator_action(env, command, teleop)
            next_obs, reward, terminated, truncated, info = env.step(action)
            label = request.label if request is not None else None
            reward, terminated, truncated = apply_label(label, reward, terminated, truncated, info)
            transitions.append(Transition(
                obs, action, float(reward), next_obs, terminated, truncated, intervened=True,
                gripper_penalty=float(info.get("gripper_penalty", 0.0)),
            ))  # fmt: skip
            episode_return += reward
            obs = next_obs
            if bridge is not None:
                info.update(intervened=True, action=action)
                bridge.after_step(obs, action, info, episode_return)
            if terminated or truncated:
                mark = info.get("operator_label")
                success = mark == "success" or (mark is None and bool(info.get("success")))
                break
            if pace:
                time.sleep(max(0.0, period - (time.monotonic() - start)))
        if hub is not None:
            hub.end_episode(success, episode_return, 1.0)
        if not success:
            log.info("operator episode %d not successful; not kept", attempts)
            continue
        meta = {"task": base.config.task, "source": "teleop", "success": True}
        paths.append(save_episode(out_dir, transitions, meta))
        log.info("demo %d of %d kept (%d steps)", len(paths), episodes, len(transitions))
    return paths
