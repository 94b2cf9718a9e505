"""Gymnasium environments over a robot (the twin or a real arm) with cameras and a reward.

Importing this package registers the twin's tasks as gymnasium ids (``robot_rl/Reach-v0``, ...;
see ``robot_rl.envs.registration``); nothing heavy is imported for it.
"""

from robot_rl.envs.registration import register_envs

register_envs()
