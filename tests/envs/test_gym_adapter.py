"""The gymnasium adapter: observation, action and info conventions over a fake external env."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from robot_rl.config import ConfigError, from_dict
from robot_rl.envs.gym_adapter import (
    GymAdapter,
    GymAdapterConfig,
    make_gym_env,
    prepare_mujoco_gl,
)
from robot_rl.envs.twin_env import TwinEnvConfig, make_env
from robot_rl.extras import MissingExtraError

HIL_LIKE = GymAdapterConfig(
    state_keys=("agent_pos", "environment_state"),
    gripper_sign=-1,
    intervention_key="is_intervention",
    operator_action_key="teleop_action",
    success_key="succeed",
    penalty_key="discrete_penalty",
)


class FakeHilEnv(gym.Env):
    """Shaped like gym-hil's wrapped PandaPickCube: xyz in [-1, 1], gripper in [0, 2] (1 stays,
    2 closes), nested pixels, and the intervention wrapper's info keys."""

    metadata = {"render_modes": []}  # noqa: RUF012

    def __init__(self, image_obs: bool = False, chw: bool = False) -> None:
        self.image_obs = image_obs
        spaces: dict[str, gym.Space] = {
            "agent_pos": gym.spaces.Box(-np.inf, np.inf, (4,), np.float32),
            "environment_state": gym.spaces.Box(-np.inf, np.inf, (3,), np.float32),
        }
        shape = (3, 8, 6) if chw else (8, 6, 3)
        if image_obs:
            spaces["pixels"] = gym.spaces.Dict(
                {"front": gym.spaces.Box(0, 255, shape, np.uint8),
                 "wrist": gym.spaces.Box(0, 255, shape, np.uint8)}
            )  # fmt: skip
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(
            np.array([-1, -1, -1, 0], np.float32), np.array([1, 1, 1, 2], np.float32)
        )
        self.shape = shape
        self.received: list[np.ndarray] = []
        self.operator: np.ndarray | None = None  # the next step's teleop action, env units
        self.t = 0

    def _obs(self) -> dict[str, Any]:
        obs: dict[str, Any] = {
            "agent_pos": np.full(4, self.t, np.float32),
            "environment_state": np.array([0.5, 0.0, 0.02 * self.t], np.float32),
        }
        if self.image_obs:
            front = np.zeros(self.shape, np.uint8)
            front.flat[0] = self.t
            obs["pixels"] = {"front": front, "wrist": np.full(self.shape, 7, np.uint8)}
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action: np.ndarray):
        self.received.append(np.asarray(action).copy())
        self.t += 1
        info: dict[str, Any] = {"succeed": self.t == 3, "discrete_penalty": -0.05}
        if self.operator is not None:
            info["is_intervention"] = True
            info["teleop_action"] = self.operator
        info.setdefault("is_intervention", False)
        return self._obs(), float(self.t == 3), self.t == 3, False, info


def test_state_is_the_named_entries_in_order_and_cameras_are_the_images():
    env = GymAdapter(FakeHilEnv(image_obs=True), HIL_LIKE)
    assert env.observation_space["state"].shape == (7,)
    assert env.observation_space["front"].shape == (8, 6, 3)
    assert sorted(env.observation_space) == ["front", "state", "wrist"]
    obs, info = env.reset(seed=0)
    assert obs["state"].dtype == np.float32
    np.testing.assert_array_equal(obs["state"], [0, 0, 0, 0, 0.5, 0.0, 0.0])
    assert obs["wrist"].dtype == np.uint8 and int(obs["wrist"][0, 0, 0]) == 7
    assert info["success"] is False
    assert env.observation_space.contains(obs)


def test_channel_first_images_are_transposed():
    env = GymAdapter(FakeHilEnv(image_obs=True, chw=True), HIL_LIKE)
    assert env.observation_space["front"].shape == (8, 6, 3)
    env.reset()
    obs, *_ = env.step(np.zeros(4, np.float32))
    assert obs["front"].shape == (8, 6, 3)
    assert int(obs["front"][0, 0, 0]) == 1  # flat[0] of the (3, H, W) frame is channel 0 at (0, 0)


def test_gripper_is_flipped_and_mapped_onto_the_env_bounds():
    fake = FakeHilEnv()
    env = GymAdapter(fake, HIL_LIKE)
    env.reset()
    env.step(np.array([1.0, -1.0, 0.0, 1.0]))  # ours: +1 opens -> gym-hil 0 (opens)
    env.step(np.array([0.5, 0.0, 0.0, -1.0]))  # ours: -1 closes -> gym-hil 2 (closes)
    env.step(np.array([0.0, 0.0, 0.0, 0.0]))  # stay -> 1
    np.testing.assert_allclose(fake.received[0], [1.0, -1.0, 0.0, 0.0])
    np.testing.assert_allclose(fake.received[1], [0.5, 0.0, 0.0, 2.0])
    np.testing.assert_allclose(fake.received[2], [0.0, 0.0, 0.0, 1.0])


def test_action_scale_multiplies_and_out_of_range_actions_are_clipped():
    fake = FakeHilEnv()
    cfg = GymAdapterConfig(action_scale=(0.5,), success_key="succeed")
    env = GymAdapter(fake, cfg)
    env.reset()
    env.step(np.array([2.0, -0.5, 0.2, 1.0]))
    np.testing.assert_allclose(fake.received[0], [0.5, -0.25, 0.1, 0.5])


def test_the_operators_action_comes_back_in_robot_rl_units():
    fake = FakeHilEnv()
    env = GymAdapter(fake, HIL_LIKE)
    env.reset()
    _, _, _, _, info = env.step(np.array([0.3, 0.0, 0.0, 0.0]))
    assert info["intervened"] is False
    np.testing.assert_allclose(info["action"], [0.3, 0.0, 0.0, 0.0], atol=1e-6)
    fake.operator = np.array([0.0, 1.0, -0.5, 2.0], np.float32)  # gym-hil: 2 closes
    _, reward, terminated, _, info = env.step(np.array([0.3, 0.0, 0.0, 1.0]))
    assert info["intervened"] is True
    np.testing.assert_allclose(info["action"], [0.0, 1.0, -0.5, -1.0])  # ours: -1 closes
    assert info["gripper_penalty"] == pytest.approx(0.05)
    fake.operator = None
    _, reward, terminated, _, info = env.step(np.zeros(4))
    assert (reward, terminated, info["success"]) == (1.0, True, True)


def test_an_intervention_without_the_operators_action_is_refused():
    class NoAction(FakeHilEnv):
        def step(self, action):
            obs, r, te, tr, info = super().step(action)
            info["is_intervention"] = True
            info.pop("teleop_action", None)
            return obs, r, te, tr, info

    env = GymAdapter(NoAction(), HIL_LIKE)
    env.reset()
    with pytest.raises(ValueError, match="info\\['is_intervention'\\] is true but info has no"):
        env.step(np.zeros(4))


def test_success_from_a_terminal_positive_reward_when_no_key_is_named():
    env = GymAdapter(FakeHilEnv(), GymAdapterConfig(success_key=None))
    env.reset()
    assert env.step(np.zeros(4))[4]["success"] is False
    env.step(np.zeros(4))
    assert env.step(np.zeros(4))[4]["success"] is True


@pytest.mark.parametrize(
    ("action", "match"),
    [(np.zeros(3), "must be 4 finite values"), (np.array([0, np.nan, 0, 0]), "finite")],
)
def test_bad_actions_are_refused(action, match):
    env = GymAdapter(FakeHilEnv(), HIL_LIKE)
    env.reset()
    with pytest.raises(ValueError, match=match):
        env.step(action)


def test_non_finite_state_is_refused_naming_the_entry():
    class Nan(FakeHilEnv):
        def _obs(self):
            obs = super()._obs()
            obs["environment_state"][1] = np.nan
            return obs

    env = GymAdapter(Nan(), HIL_LIKE)
    with pytest.raises(ValueError, match="'environment_state' has NaN"):
        env.reset()


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (GymAdapterConfig(state_keys=("joints",)), r"key 'joints' not found; the env has"),
        (GymAdapterConfig(camera_keys=("agent_pos",)), "cameras must be uint8"),
        (GymAdapterConfig(action_scale=(1.0, 2.0)), "action_scale has 2 values; give 1 or 4"),
        (GymAdapterConfig(gripper_dim=4), "gripper_dim=4 outside 4 action dims"),
    ],
)
def test_mismatched_spaces_are_clear_errors(config, match):
    with pytest.raises(ValueError, match=match):
        GymAdapter(FakeHilEnv(), config)


def test_a_discrete_action_space_is_refused():
    class Discrete(FakeHilEnv):
        def __init__(self):
            super().__init__()
            self.action_space = gym.spaces.Discrete(3)

    with pytest.raises(ValueError, match="is not a flat Box"):
        GymAdapter(Discrete(), HIL_LIKE)


def test_unbounded_actions_need_a_scale():
    class Unbounded(FakeHilEnv):
        def __init__(self):
            super().__init__()
            self.action_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)

    with pytest.raises(ValueError, match=r"action dims \[0, 1, 2, 3\] are unbounded"):
        GymAdapter(Unbounded(), HIL_LIKE)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"gripper_sign": 0}, "gripper_sign=0; allowed: 1, -1"),
        ({"action_scale": (0.0,)}, "need finite values > 0"),
        ({"mujoco_gl": "wgl"}, "mujoco_gl='wgl'"),
        ({"state_keys": ("a",), "camera_keys": ("a",)}, "in both"),
    ],
)
def test_bad_adapter_configs_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GymAdapterConfig(**kwargs)


def test_a_train_config_names_an_external_env_by_id():
    gym.register("robot_rl_test/FakeHil-v0", entry_point=FakeHilEnv)
    try:
        cfg = from_dict(
            TwinEnvConfig,
            {
                "id": "robot_rl_test/FakeHil-v0",
                "task": "fake_hil",
                "kwargs": {"image_obs": True},
                "adapter": {"state_keys": ["agent_pos"], "gripper_sign": -1},
            },
        )
        env = make_env(cfg)
        assert isinstance(env, GymAdapter)
        assert sorted(env.observation_space) == ["front", "state", "wrist"]
        assert env.observation_space["state"].shape == (4,)
        env.close()
    finally:
        gym.registry.pop("robot_rl_test/FakeHil-v0")


def test_an_unknown_key_in_the_adapter_config_is_an_error():
    with pytest.raises(ConfigError, match=r"unknown key.*adapter\.success"):
        from_dict(TwinEnvConfig, {"id": "x/Y-v0", "adapter": {"success": "succeed"}})


def test_an_unknown_env_id_names_close_matches():
    with pytest.raises(ValueError, match=r"'robot_rl/Reach-v9' is not a registered .*Reach-v0"):
        make_gym_env("robot_rl/Reach-v9")


def test_an_env_from_a_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gym_hil", None)  # as if not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'robot-rl\[gym-hil\]'"):
        make_gym_env("gym_hil/PandaPickCubeBase-v0")


def test_osmesa_imports_torch_dynamo_before_the_env(monkeypatch):
    import importlib

    imported: list[str] = []
    real = importlib.import_module
    monkeypatch.setattr(
        importlib, "import_module", lambda n, *a, **k: imported.append(n) or real(n, *a, **k)
    )
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    prepare_mujoco_gl("osmesa")
    assert os.environ["MUJOCO_GL"] == "osmesa" and imported[:1] == ["torch._dynamo"]
    monkeypatch.setenv("MUJOCO_GL", "egl")  # the user's own setting wins
    imported.clear()
    prepare_mujoco_gl("osmesa")
    assert os.environ["MUJOCO_GL"] == "egl" and imported == []


# -- gym-hil (optional) ---------------------------------------------------------------------
needs_gym_hil = pytest.mark.skipif(
    importlib.util.find_spec("gym_hil") is None,
    reason="gym-hil is not installed (pip install '.[gym-hil]')",
)


TELEOP_STEPS = (3, 4, 5)  # episode steps (mod 10) where the scripted operator drives
TELEOP_ENV_ACTION = np.array([0.0, 0.0, 1.0, 2.0], np.float32)  # up, gym-hil's 2 = close


def _hil_with_scripted_operator(**kwargs: Any) -> gym.Env:
    """gym-hil's wrapped pick-cube with an operator who takes over on ``TELEOP_STEPS``, reporting
    it as gym-hil's own intervention wrapper does (is_intervention, teleop_action)."""
    from gym_hil.wrappers.factory import make_env

    class ScriptedOperator(gym.Wrapper):
        def reset(self, *, seed=None, options=None):
            self.t = 0
            return self.env.reset(seed=seed, options=options)

        def step(self, action):
            takes_over = self.t % 10 in TELEOP_STEPS
            self.t += 1
            executed = TELEOP_ENV_ACTION if takes_over else action
            obs, reward, terminated, truncated, info = self.env.step(executed)
            info["is_intervention"] = takes_over
            info["teleop_action"] = executed
            return obs, reward, terminated, truncated, info

    env = make_env("gym_hil/PandaPickCubeBase-v0", reset_delay_seconds=0.0, **kwargs)
    return ScriptedOperator(env)


@needs_gym_hil
@pytest.mark.integration
def test_training_on_gym_hil_stores_transitions_interventions_and_episodes(tmp_path):
    from robot_rl.agents.config import SACConfig
    from robot_rl.data.episodes import load_episodes
    from robot_rl.runtime.train import TrainConfig, TrainingSession

    gym.register("robot_rl_test/HilOperator-v0", entry_point=_hil_with_scripted_operator)
    try:
        adapter = dataclasses.replace(HIL_LIKE, mujoco_gl="osmesa")
        env = TwinEnvConfig(id="robot_rl_test/HilOperator-v0", task="gym_hil_pick_cube",
                            adapter=adapter, max_episode_steps=40)  # fmt: skip
        config = TrainConfig(
            env=env, agent=SACConfig(utd_ratio=1, hidden_dims=(32, 32)), env_steps=300,
            demos=0, interventions=False, learning_starts=50, batch_size=16, concurrent=False,
            eval_every=0, eval_episodes=1, checkpoint_every=0, run_dir=str(tmp_path), name="hil",
        )  # fmt: skip
        session = TrainingSession(config)
        session.run()
    finally:
        gym.registry.pop("robot_rl_test/HilOperator-v0")
    episodes = list(load_episodes(tmp_path / "hil" / "episodes", strict=True))
    assert sum(len(e.transitions) for e in episodes) == 300
    assert all(e.meta["task"] == "gym_hil_pick_cube" for e in episodes)
    finished = [e for e in episodes if e.transitions[-1].terminated or e.transitions[-1].truncated]
    assert len(finished) >= 300 // 40 - 1
    for e in finished:  # the time limit cuts an episode at 40 steps unless the cube was lifted
        assert len(e.transitions) == 40 or e.transitions[-1].terminated
    operator_action = np.array([0.0, 0.0, 1.0, -1.0], np.float32)  # robot-rl: -1 closes
    taken_over = 0
    for e in episodes:
        for t, step in enumerate(e.transitions):
            assert step.intervened == (t % 10 in TELEOP_STEPS), f"{e.path} step {t}"
            assert step.obs["state"].shape == (21,) and np.isfinite(step.obs["state"]).all()
            if step.intervened:
                np.testing.assert_allclose(step.action, operator_action)
                taken_over += 1
            else:
                assert np.all(np.abs(step.action) <= 1.0)
    assert session.counters.interventions == taken_over > 0
    assert len(session.demo) == taken_over  # interventions reach the demo buffer, as HIL-SERL
    assert session.counters.updates > 0
