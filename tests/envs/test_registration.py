"""The twin's tasks as gymnasium ids: registered on import, made by gymnasium.make, checked."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import robot_rl.envs  # noqa: F401  (registers the ids)
from robot_rl.envs.registered import RegisteredTwinEnv
from robot_rl.envs.registration import env_ids, register_envs

SMALL = {"image_width": 32, "image_height": 32}  # keeps the pixel checks quick


def test_every_task_has_a_state_and_a_pixel_id():
    assert env_ids() == [
        "robot_rl/Reach-v0", "robot_rl/ReachPixels-v0",
        "robot_rl/PickCube-v0", "robot_rl/PickCubePixels-v0",
        "robot_rl/PegInsert-v0", "robot_rl/PegInsertPixels-v0",
    ]  # fmt: skip
    assert all(i in gym.registry for i in env_ids())
    register_envs()  # a second registration is harmless


@pytest.mark.parametrize("env_id", env_ids())
def test_check_env_passes(env_id):
    env = gym.make(env_id, **SMALL)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env.unwrapped)
        # Tolerated: unbounded Box observations (ours are, by design) and step observations
        # equal only to float tolerance for one seed and action (pick_cube's contacts differ in
        # the last bits between two runs). Any other warning (types, spaces, seeding) fails.
        allowed = ("infinity", "Step observations are not equal although similar")
        serious = [str(w.message) for w in caught if not any(a in str(w.message) for a in allowed)]
        assert serious == []
    finally:
        env.close()


def test_pixel_ids_give_cameras_and_state_ids_none():
    pixels = gym.make("robot_rl/ReachPixels-v0", **SMALL)
    state = gym.make("robot_rl/Reach-v0")
    try:
        assert sorted(pixels.observation_space) == ["front", "state", "wrist"]
        assert pixels.observation_space["front"].shape == (32, 32, 3)
        assert list(state.observation_space) == ["state"]
        assert state.action_space == gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    finally:
        pixels.close()
        state.close()


def test_rgb_array_renders_in_state_mode_too():
    env = gym.make("robot_rl/Reach-v0", render_mode="rgb_array", **SMALL)
    try:
        env.reset(seed=3)
        frame = env.render()
        assert frame.shape == (32, 32, 3) and frame.dtype == np.uint8
        assert frame.std() > 0  # a scene, not a blank image
        assert isinstance(env.unwrapped, RegisteredTwinEnv)
    finally:
        env.close()


def test_module_prefix_loads_the_registration():
    # "module:id" is gymnasium's own way to make an env whose package was not imported yet
    env = gym.make("robot_rl.envs:robot_rl/PickCube-v0")
    try:
        assert env.unwrapped.config.task == "pick_cube"
    finally:
        env.close()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"render_mode": "human"}, "render_mode='human'; allowed: rgb_array"),
        ({"xyz_step": 0.01}, "unknown key"),
        ({"xyz_step_m": 0.5}, r"xyz_step_m=0.5; allowed \(0, 0.05\]"),
    ],
)
def test_bad_make_arguments_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gym.make("robot_rl/Reach-v0", **kwargs)
