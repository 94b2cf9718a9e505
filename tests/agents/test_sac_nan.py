"""A non-finite loss or gradient never reaches the SAC weights: the step is skipped and counted,
and the next finite batch trains as usual."""

from __future__ import annotations

import dataclasses

import torch

from robot_rl.agents.sac import SACAgent
from tests.agents.fakes import make_agent, random_batch


def snapshot(agent: SACAgent) -> dict[str, torch.Tensor]:
    state = agent.state_dict()["networks"]
    return {f"{m}/{k}": v.clone() for m, sd in state.items() for k, v in sd.items()}


def all_finite(agent: SACAgent) -> bool:
    return all(torch.isfinite(v).all() for v in snapshot(agent).values())


def test_a_nan_reward_skips_the_critic_steps_and_leaves_every_weight_finite() -> None:
    agent = make_agent(utd_ratio=2)
    batch = random_batch(agent, 16)
    rewards = batch.rewards.clone()
    rewards[3] = float("nan")  # one poisoned sample in the first minibatch
    before = snapshot(agent)
    agent.update(dataclasses.replace(batch, rewards=rewards))
    assert agent.skipped_steps == 1  # the first critic step; the second minibatch is finite
    assert agent.critic_steps == 1 and agent.actor_steps == 1
    assert all_finite(agent)
    assert any(not torch.equal(before[k], v) for k, v in snapshot(agent).items())


def test_an_infinite_state_skips_every_step_it_touches_and_training_goes_on() -> None:
    agent = make_agent(utd_ratio=1)
    batch = random_batch(agent, 8)
    state = batch.obs["state"].clone()
    state[:] = float("inf")
    before = snapshot(agent)
    agent.update(dataclasses.replace(batch, obs={**batch.obs, "state": state}))
    assert agent.skipped_steps == 2  # the critic step and the actor step
    assert agent.critic_steps == 0 and agent.actor_steps == 0
    after = snapshot(agent)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    # Nothing the optimizers own moved; only the targets' Polyak step toward unchanged weights.
    assert all(k.startswith("target_") for k in changed), changed
    agent.update(random_batch(agent, 8, seed=1))
    assert agent.critic_steps == 1 and agent.actor_steps == 1 and all_finite(agent)
