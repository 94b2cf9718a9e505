"""The demo warm start runs N updates, on demo data only."""

from __future__ import annotations

import numpy as np
import pytest

from robot_rl.agents.warm_start import pretrain_on_demos
from robot_rl.data.batch import Transition
from robot_rl.data.replay import ReplayBuffer
from tests.agents.fakes import make_agent, small_config


def demo_buffer(steps: int, marker: float) -> ReplayBuffer:
    """Steps whose state[0] is ``marker`` (how a test tells demo rows from others)."""
    buffer = ReplayBuffer(capacity=1_000, gamma=0.9, seed=0)
    rng = np.random.default_rng(0)
    for step in range(steps):
        obs = {
            name: rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for name in ("front", "wrist")
        }
        obs["state"] = np.full(5, marker, np.float32)
        action = rng.uniform(-1, 1, 4).astype(np.float32)
        buffer.add(Transition(obs, action, 1.0, obs, step % 10 == 9, False, True))
    return buffer


class Recording:
    """Wraps an agent: counts updates and keeps each batch's state column 0."""

    def __init__(self, agent):
        self.agent, self.config, self.seen = agent, agent.config, []

    def update(self, batch):
        self.seen.append(batch.obs["state"][:, 0].clone())
        return self.agent.update(batch)


def test_the_phase_runs_n_updates_on_demo_batches_only():
    agent = Recording(make_agent(image_size=16, utd_ratio=2))
    metrics = pretrain_on_demos(agent, demo_buffer(30, marker=7.0), updates=3, batch_size=4)
    assert len(metrics) == 3 == len(agent.seen)
    assert agent.agent.critic_steps == 6 and agent.agent.actor_steps == 3  # utd 2 per update
    for column in agent.seen:
        assert column.shape == (8,) and bool((column == 7.0).all())


def test_zero_updates_do_nothing_and_bad_input_is_refused():
    agent = make_agent(image_size=16)
    assert pretrain_on_demos(agent, ReplayBuffer(capacity=10, gamma=0.9), 0, 4) == []
    assert agent.critic_steps == 0
    with pytest.raises(ValueError, match="demo buffer is empty"):
        pretrain_on_demos(agent, ReplayBuffer(capacity=10, gamma=0.9), 2, 4)
    with pytest.raises(ValueError, match="demo_pretrain_updates=-1"):
        pretrain_on_demos(agent, demo_buffer(5, 1.0), -1, 4)


def test_train_runs_the_warm_start_before_acting_on_demos_only(tmp_path):
    from robot_rl.envs.twin_env import TwinEnvConfig
    from robot_rl.runtime.train import TrainConfig, TrainingSession

    config = TrainConfig(
        env=TwinEnvConfig(task="reach", obs="state"), agent=small_config(utd_ratio=2),
        demos=1, demo_pretrain_updates=3, batch_size=8, run_dir=str(tmp_path), name="w",
        logger="tensorboard",
    )  # fmt: skip
    session = TrainingSession(config)
    assert session.agent.critic_steps == 6 and session.agent.actor_steps == 3  # 3 x utd 2
    assert session.counters.env_steps == 0 and len(session.online) == 0  # nothing acted yet
    with pytest.raises(ValueError, match="demo_pretrain_updates=-1"):
        TrainConfig(demo_pretrain_updates=-1)
