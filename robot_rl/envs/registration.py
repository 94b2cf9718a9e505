"""The twin's tasks as registered gymnasium envs, for other libraries' ``gymnasium.make``.

==========================  =========================================================
id                          env
==========================  =========================================================
``robot_rl/Reach-v0``       ``TwinEnv`` on ``reach``, state observations
``robot_rl/PickCube-v0``    ``pick_cube``, state observations
``robot_rl/PegInsert-v0``   ``peg_insert``, state observations
``robot_rl/<Task>Pixels-v0``  the same tasks with the two 128x128 cameras + proprioception
==========================  =========================================================

Importing ``robot_rl.envs`` registers them (as gym-hil and gymnasium-robotics do); without that
import, ``gymnasium.make("robot_rl.envs:robot_rl/Reach-v0")`` loads the module itself. Keyword
arguments of ``make`` are ``TwinEnvConfig`` fields (``gymnasium.make("robot_rl/Reach-v0",
xyz_step_m=0.02)``). The env truncates at the task's own step limit, so the ids carry no
``max_episode_steps`` of their own. Registering imports nothing heavy: the entry point
(``robot_rl.envs.registered``) loads the twin when an env is made.
"""

from __future__ import annotations

import gymnasium as gym

NAMESPACE = "robot_rl"
TASK_IDS = {"Reach": "reach", "PickCube": "pick_cube", "PegInsert": "peg_insert"}
VERSION = "v0"


def env_ids() -> list[str]:
    """Every id this module registers."""
    return [
        f"{NAMESPACE}/{name}{suffix}-{VERSION}" for name in TASK_IDS for suffix in ("", "Pixels")
    ]


def register_envs() -> None:
    """Register every id (idempotent: ids already registered are left alone)."""
    for name, task in TASK_IDS.items():
        for suffix, obs in (("", "state"), ("Pixels", "pixels")):
            env_id = f"{NAMESPACE}/{name}{suffix}-{VERSION}"
            if env_id in gym.registry:
                continue
            gym.register(
                id=env_id,
                entry_point="robot_rl.envs.registered:make_twin",
                kwargs={"task": task, "obs": obs},
                disable_env_checker=False,
            )


__all__ = ["env_ids", "register_envs"]
