"""The one actor loop: pacing by deadlines, the policy-only module, the one step check, marks,
resets and weight swaps at step boundaries."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from robot_rl.agents.config import SACConfig
from robot_rl.agents.sac import SACAgent
from robot_rl.console.bridge import StepRequest
from robot_rl.data.batch import Transition
from robot_rl.envs.twin_env import TwinEnv, TwinEnvConfig
from robot_rl.runtime.actor import ActorLoop, EpisodeStats, Pacer, Policy, WeightSwap, check_step


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_pacer_keeps_deadlines_one_period_apart_and_restarts_when_far_behind() -> None:
    clock = FakeClock()
    pacer = Pacer(0.1, clock=clock, sleep=clock.sleep)
    pacer.wait()  # the first deadline is one period from now
    assert clock.slept == [pytest.approx(0.1)]
    clock.now += 0.03  # work of 30 ms: the next sleep makes up the rest of the period
    pacer.wait()
    assert clock.slept[-1] == pytest.approx(0.07)
    assert clock.now == pytest.approx(100.2)  # two periods, no drift
    clock.now += 0.5  # far behind (a pause): no burst of catch-up steps, a fresh schedule
    pacer.wait()
    assert clock.slept[-1] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="period_s"):
        Pacer(0.0)


@pytest.fixture(scope="module")
def env() -> TwinEnv:
    env = TwinEnv(TwinEnvConfig(task="reach", obs="state", max_episode_steps=6))
    yield env
    env.close()


def test_the_policy_module_acts_as_the_agent_does(env: TwinEnv) -> None:
    config = SACConfig(hidden_dims=(32, 32))
    agent = SACAgent(env.observation_space, env.action_space, config, seed=3)
    policy = Policy(env.observation_space, env.action_space, config, seed=3)
    policy.load_policy_state_dict(agent.policy_state_dict())
    obs, _ = env.reset(seed=0)
    for deterministic in (True, False, False):  # exploration draws the same noise, in order
        np.testing.assert_array_equal(policy.act(obs, deterministic), agent.act(obs, deterministic))
    assert not hasattr(policy, "critic") and not hasattr(policy, "actor_optimizer")
    with pytest.raises(ValueError, match="observation keys"):
        policy.act({"state": obs["state"], "front": np.zeros((8, 8, 3), np.uint8)}, True)


def _step(env: TwinEnv, **changes: Any) -> Transition:
    obs, _ = env.reset(seed=0)
    fields = dict(obs=obs, action=np.zeros(4, np.float32), reward=0.0, next_obs=obs,
                  terminated=False, truncated=False)  # fmt: skip
    fields.update(changes)
    return Transition(**fields)


def test_a_step_is_checked_once_at_the_actor(env: TwinEnv) -> None:
    space = env.observation_space
    check_step(_step(env), space, 4)
    good = _step(env).obs
    bad_state = {"state": np.full_like(good["state"], np.nan)}
    with pytest.raises(ValueError, match=r"step.next_obs\['state'\] is not finite"):
        check_step(_step(env, next_obs=bad_state), space, 4)
    with pytest.raises(ValueError, match=r"step.obs\['state'\] is float64"):
        check_step(_step(env, obs={"state": good["state"].astype(np.float64)}), space, 4)
    with pytest.raises(ValueError, match="keys"):
        check_step(_step(env, obs={**good, "front": np.zeros((2, 2, 3), np.uint8)}), space, 4)
    with pytest.raises(ValueError, match=r"step\.action"):
        check_step(_step(env, action=np.zeros(3, np.float32)), space, 4)
    with pytest.raises(ValueError, match=r"step\.action"):
        check_step(_step(env, action=np.array([0, np.inf, 0, 0], np.float32)), space, 4)
    with pytest.raises(ValueError, match="reward"):
        check_step(_step(env, reward=float("nan")), space, 4)


class ListRecorder:
    def __init__(self) -> None:
        self.episodes: list[tuple[list[Transition], bool]] = []
        self.steps: list[Transition] = []

    def add(self, step: Transition, info: dict[str, Any]) -> bool:
        self.steps.append(step)
        return False

    def end_episode(self, info: dict[str, Any], stats: EpisodeStats, finished: bool) -> None:
        assert stats.steps == len(self.steps)
        self.episodes.append((self.steps, finished))
        self.steps = []


class ScriptedBridge:
    """The console's requests by step number (counted over before_step calls)."""

    def __init__(self, requests: dict[int, StepRequest]) -> None:
        self.requests, self.calls, self.starts, self.ends = requests, 0, 0, []

    def before_step(self, wait_s: float = 0.1, should_stop: Any = None) -> StepRequest:
        self.calls += 1
        return self.requests.get(self.calls, StepRequest())

    def start_episode(self) -> None:
        self.starts += 1

    def after_step(self, *args: Any) -> None:
        pass

    def end_episode(self, info: dict[str, Any], ret: float, interventions: int, steps: int) -> bool:
        self.ends.append((info.get("operator_label"), ret, steps))
        return True


def test_marks_and_resets_end_episodes_as_the_operator_says(env: TwinEnv) -> None:
    # Calls 1-2 step, the 3rd resets (an unfinished episode of 2 steps); the 5th marks success
    # (an episode of 2: calls 4-5), the 9th failure (4: calls 6-9); the time limit ends the next
    # after 6 steps.
    bridge = ScriptedBridge({3: StepRequest(reset=True), 5: StepRequest(label="success"),
                             9: StepRequest(label="failure")})  # fmt: skip
    recorder = ListRecorder()
    loop = ActorLoop(env, lambda obs: np.zeros(4, np.float32), recorder, bridge=bridge)
    assert loop.run(max_episodes=3) == 2 + 2 + 4 + 6
    lengths = [(len(steps), finished) for steps, finished in recorder.episodes]
    assert lengths == [(2, False), (2, True), (4, True), (6, True)]
    success, failure, limit = (recorder.episodes[i][0][-1] for i in (1, 2, 3))
    assert success.terminated and success.reward == 1.0
    assert failure.truncated and not failure.terminated and failure.reward == 0.0
    assert limit.truncated and not limit.terminated
    assert [label for label, _, _ in bridge.ends] == ["success", "failure", None]
    assert bridge.starts == 4  # every episode, the cut one too


class FakeWeights:
    def __init__(self, versions: list[tuple[int, dict] | None]) -> None:
        self.versions, self.expected = versions, None

    def expect_weights(self, state: dict) -> None:
        self.expected = state

    def latest_weights(self) -> tuple[int, dict] | None:
        return self.versions.pop(0) if self.versions else None


def test_weights_are_swapped_between_steps_never_inside_one(env: TwinEnv) -> None:
    config = SACConfig(hidden_dims=(32, 32))
    policy = Policy(env.observation_space, env.action_space, config, seed=0)
    other = SACAgent(env.observation_space, env.action_space, config, seed=9)
    source = FakeWeights([None, (4, other.policy_state_dict()), None])
    swap = WeightSwap(source, policy)
    assert set(source.expected) == {"encoder", "actor", "gripper_critic"}
    seen: list[int] = []
    loop = ActorLoop(env, lambda obs: seen.append(swap.version) or np.zeros(4, np.float32),
                     ListRecorder(), before_act=swap)  # fmt: skip
    loop.run(max_steps=3)
    assert seen == [-1, 4, 4]
    obs, _ = env.reset(seed=1)
    np.testing.assert_array_equal(policy.act(obs, True), other.act(obs, True))
