"""The twin env: spaces, seeding, actions, the scripted expert through the env, interventions."""

from __future__ import annotations

import numpy as np
import pytest

from robot_rl.envs.intervention import (
    InterventionWrapper,
    ScriptedIntervener,
    ScriptedIntervenerConfig,
)
from robot_rl.envs.twin_env import PROPRIO_DIM, TwinEnv, TwinEnvConfig
from robot_rl.runtime.record import record_expert_episode


@pytest.fixture(scope="module")
def pixel_env() -> TwinEnv:
    env = TwinEnv(TwinEnvConfig(task="pick_cube", image_width=32, image_height=24))
    yield env
    env.close()


def test_pixel_observations_match_the_space(pixel_env: TwinEnv) -> None:
    space = pixel_env.observation_space
    assert set(space.spaces) == {"front", "wrist", "state"}
    assert space["front"].shape == (24, 32, 3)
    obs, info = pixel_env.reset(seed=0)
    assert space.contains(obs), "reset observation outside the space"
    assert not info["success"]
    # At the reset pose the relative pose part of the state is zero.
    np.testing.assert_allclose(obs["state"][:6], 0.0, atol=1e-5)
    for _ in range(3):
        obs, reward, *_ = pixel_env.step(pixel_env.action_space.sample())
        assert space.contains(obs)
        assert reward in (0.0, 1.0)
        assert np.isfinite(obs["state"]).all()


def test_same_seed_same_observations(pixel_env: TwinEnv) -> None:
    def rollout() -> list[np.ndarray]:
        obs, _ = pixel_env.reset(seed=5)
        out = [obs["state"], obs["front"]]
        for a in ([1, 0, 0, 0], [0, 1, -1, -1]):
            obs, *_ = pixel_env.step(np.array(a, dtype=np.float32))
            out += [obs["state"], obs["front"]]
        return out

    first, second = rollout(), rollout()
    for a, b in zip(first, second, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_action_moves_the_tcp_by_the_scaled_delta() -> None:
    env = TwinEnv(TwinEnvConfig(task="reach", obs="state", xyz_step_m=0.02))
    env.reset(seed=1)
    start = env.scene.state().ee_pos_m.copy()
    for _ in range(10):  # hold still, then one step +x in the reset frame
        env.step(np.zeros(4, dtype=np.float32))
    env.step(np.array([1.0, 0, 0, 0], dtype=np.float32))
    for _ in range(5):
        env.step(np.zeros(4, dtype=np.float32))
    moved_in_reset_frame = env._reset.rot.T @ (env.scene.state().ee_pos_m - start)
    # One +1 action moves 2 cm along the reset frame's x axis and (nearly) nothing else.
    np.testing.assert_allclose(moved_in_reset_frame, [0.02, 0.0, 0.0], atol=2e-3)
    env.close()


def test_state_is_in_step_units_and_in_the_reset_frame() -> None:
    cfg = TwinEnvConfig(task="reach", obs="state", xyz_step_m=0.02)
    env = TwinEnv(cfg)
    obs, _ = env.reset(seed=3)
    assert obs["state"].shape == (PROPRIO_DIM + 3,)  # no joint angles, reach's goal offset
    for _ in range(4):
        obs, *_ = env.step(np.array([1.0, -0.5, 0.5, 0.0], dtype=np.float32))
    tcp = env.scene.state().ee_pos_m
    rot_t = env._reset.rot.T
    np.testing.assert_allclose(obs["state"][:3], rot_t @ (tcp - env._reset.pos_m) / 0.02, atol=1e-4)
    # The goal offset is seen in the same frame and units, so the two add up to the goal.
    goal_offset = obs["state"][PROPRIO_DIM:]
    np.testing.assert_allclose(goal_offset, rot_t @ (env.task.goal_m - tcp) / 0.02, atol=1e-4)
    assert obs["state"][12] == pytest.approx(env.scene.state().gripper_width_m / 0.08, abs=1e-5)
    env.close()


@pytest.mark.parametrize("bad", [[np.nan, 0, 0, 0], [0, 0, 0], [0, 0, 0, 0, 0]])
def test_bad_actions_are_rejected(bad: list[float]) -> None:
    env = TwinEnv(TwinEnvConfig(task="reach", obs="state"))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="finite values"):
        env.step(np.array(bad, dtype=np.float32))
    env.close()


def test_bad_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="cameras"):
        TwinEnvConfig(cameras=("roof",))
    with pytest.raises(ValueError, match="twice"):
        TwinEnvConfig(cameras=("front", "front"))
    with pytest.raises(ValueError, match="xyz_step_m"):
        TwinEnvConfig(xyz_step_m=0.5)


def test_time_limit_truncates_without_terminating() -> None:
    env = TwinEnv(TwinEnvConfig(task="reach", obs="state", max_episode_steps=3))
    env.reset(seed=0)
    flags = [env.step(np.zeros(4, dtype=np.float32))[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]
    env.close()


def test_gripper_toggle_is_penalised_and_stay_keeps_the_command() -> None:
    env = TwinEnv(TwinEnvConfig(task="pick_cube", obs="state", gripper_penalty=0.1))
    env.reset(seed=0)  # the hand starts open
    penalties = [
        env.step(np.array([0, 0, 0, g], dtype=np.float32))[4]["gripper_penalty"]
        for g in (1.0, 0.0, -0.6, -1.0, 0.3, 0.9)
    ]
    # open (already open), stay, close (toggle), close, stay, open (toggle)
    assert penalties == [0.0, 0.0, 0.1, 0.0, 0.0, 0.1]
    env.close()


@pytest.mark.parametrize("task", ["reach", "pick_cube", "peg_insert"])
def test_scripted_expert_solves_the_task_through_the_env(task: str) -> None:
    env = TwinEnv(TwinEnvConfig(task=task, obs="state"))
    for seed in (0, 1):
        transitions, success = record_expert_episode(env, seed)
        assert success, f"{task} expert failed through the env (seed {seed})"
        assert transitions[-1].terminated and not transitions[-1].truncated
        assert all(env.action_space.contains(t.action) for t in transitions)
    assert env.observation_space["state"].shape[0] > PROPRIO_DIM  # task features included
    env.close()


def test_scripted_intervener_takes_over_a_straying_policy_and_hands_back() -> None:
    env = InterventionWrapper(
        TwinEnv(TwinEnvConfig(task="reach", obs="state")), ScriptedIntervener()
    )
    env.reset(seed=0)
    base = env.unwrapped
    flags = []
    for _ in range(12):
        expert = base.expert_action(env.intervener._expert.act(base.scene.twin))
        wrong = -expert.copy()  # always against the expert
        wrong[-1] = 0.0
        _, _, terminated, truncated, info = env.step(wrong)
        flags.append(info["intervened"])
        if info["intervened"]:
            assert not np.allclose(info["action"], wrong)
        if terminated or truncated:
            break
    # patience 3: steps 1-2 stray, step 3 triggers a takeover of 5 steps, then the policy again.
    assert flags[:8] == [False, False, True, True, True, True, True, False]
    env.close()


def _straying_takeovers(env: InterventionWrapper, steps: int) -> int:
    """Steps taken over while the policy always moves against the expert."""
    base = env.unwrapped
    for _ in range(steps):
        wrong = -base.expert_action(base.task.expert().act(base.scene.twin))
        wrong[-1] = 0.0
        _, _, terminated, truncated, _ = env.step(wrong)
        if terminated or truncated:
            break
    return env.interventions


def test_scripted_intervener_watches_only_its_share_of_episodes() -> None:
    env = InterventionWrapper(
        TwinEnv(TwinEnvConfig(task="reach", obs="state")),
        ScriptedIntervener(ScriptedIntervenerConfig(episode_fraction=0.0)),
    )
    env.reset(seed=0)
    assert not env.intervener.watching
    assert _straying_takeovers(env, 8) == 0  # a straying policy is left to itself
    env.intervener.config = ScriptedIntervenerConfig(episode_fraction=1.0)
    env.reset(seed=0)
    assert env.intervener.watching and _straying_takeovers(env, 8) > 0

    def draws(seed: int, fraction: float) -> list[bool]:
        intervener = ScriptedIntervener(ScriptedIntervenerConfig(episode_fraction=fraction), seed)
        out = []
        for _ in range(200):
            intervener.reset(env.unwrapped)
            out.append(intervener.watching)
        return out

    half = draws(0, 0.5)
    assert 70 <= sum(half) <= 130  # binomial(200, 0.5): 6 sd either side
    assert draws(0, 0.5) == half and draws(1, 0.5) != half  # seeded: reproducible per seed
    assert all(draws(0, 1.0)) and not any(draws(0, 0.0))
    env.close()


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan")])
def test_intervener_episode_fraction_outside_0_1_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match="episode_fraction must be in"):
        ScriptedIntervenerConfig(episode_fraction=fraction)


def test_side_camera_joins_the_observation_when_named() -> None:
    env = TwinEnv(TwinEnvConfig(task="reach", obs="pixels", cameras=("side", "front"),
                                image_width=32, image_height=32))  # fmt: skip
    obs, _ = env.reset(seed=0)
    assert {"side", "front"} <= set(obs) and "wrist" not in obs
    assert env.observation_space["side"].shape == obs["side"].shape == (32, 32, 3)
    assert env.observation_space.contains(obs)
    env.close()
