"""Record demos: the task's scripted expert acts through the env; each episode goes to disk.

Demos are recorded in the env's own action space (``TwinEnv.expert_action``), so a demo step is
exactly what a policy or an operator would have sent.
"""

from __future__ import annotations

import logging
from pathlib import Path

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
