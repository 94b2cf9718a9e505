"""Hybrid gripper: a discrete close / stay / open action learned by a double-DQN critic.

The gripper's value <-> index convention (thresholds at +-0.5) lives in ``robot_rl.actions``,
below both the agents and the envs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from robot_rl.actions import (  # noqa: F401  (gripper_*: the agents' names for the convention)
    NUM_GRIPPER_ACTIONS,
    gripper_index_to_value,
    gripper_value_to_index,
)
from robot_rl.agents.networks import mlp


class GripperCritic(nn.Module):
    """Q(z, .) for the three gripper actions: features (B, F) -> (B, 3)."""

    def __init__(self, feature_dim: int, hidden_dims: Sequence[int]) -> None:
        super().__init__()
        self.net = mlp(feature_dim, hidden_dims, NUM_GRIPPER_ACTIONS)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


def double_dqn_target(
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    next_q_online: torch.Tensor,
    next_q_target: torch.Tensor,
) -> torch.Tensor:
    """Double-DQN target r + discount * Q_target(s', argmax_a Q_online(s', a)).

    rewards, discounts: (B,); next_q_online, next_q_target: (B, 3). Returns (B,).
    """
    best = next_q_online.argmax(dim=-1, keepdim=True)  # the online net picks the action ...
    return rewards + discounts * next_q_target.gather(-1, best).squeeze(-1)  # ... target rates it
