"""What flows between roles: a transition (env -> buffer) and a batch (buffer -> learner).

Observation convention (every env, every buffer, every agent):
  a dict with one uint8 (H, W, 3) RGB image per camera name ("front", "wrist", ...) and
  "state": float32 (D,) proprioception (and, for state-only tasks, task features).
Actions: float32 (A,) in [-1, 1]. For the hybrid gripper agent the last entry is the gripper
command, read as close (< -0.5), stay, or open (> 0.5); see ``robot_rl.agents.gripper``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

STATE_KEY = "state"


def image_keys(obs: dict[str, np.ndarray] | dict[str, torch.Tensor]) -> list[str]:
    """Camera names in an observation, sorted (everything except ``state``)."""
    return sorted(k for k in obs if k != STATE_KEY)


@dataclass(frozen=True)
class Transition:
    """One env step as the actor records it (numpy, unbatched).

    reward: the task reward; gripper_penalty: >= 0, charged to the gripper critic when the
    gripper toggled this step; terminated: a true terminal state (success, failure);
    truncated: a time limit, which is not terminal (bootstrap from next_obs);
    intervened: the action came from the operator / scripted intervener, not the policy.
    """

    obs: dict[str, np.ndarray]
    action: np.ndarray
    reward: float
    next_obs: dict[str, np.ndarray]
    terminated: bool
    truncated: bool
    intervened: bool = False
    gripper_penalty: float = 0.0


def non_finite_fields(step: Transition) -> list[str]:
    """The fields of ``step`` holding a NaN or an infinity (obs and next_obs entries, action,
    reward, gripper_penalty); empty for a finite step."""
    bad: list[str] = []
    for name, obs in (("obs", step.obs), ("next_obs", step.next_obs)):
        for key, value in obs.items():
            array = np.asarray(value)
            if array.dtype.kind in "fc" and not np.isfinite(array).all():
                bad.append(f"{name}[{key!r}]")
    for name, value in (("action", step.action), ("reward", step.reward),
                        ("gripper_penalty", step.gripper_penalty)):  # fmt: skip
        try:
            finite = bool(np.isfinite(np.asarray(value, dtype=np.float64)).all())
        except (TypeError, ValueError):
            finite = False  # not a number at all
        if not finite:
            bad.append(name)
    return bad


@dataclass(frozen=True)
class Batch:
    """A training batch of B samples as torch tensors on one device.

    obs, next_obs: camera -> uint8 (B, H, W, 3); "state" -> float32 (B, D). next_obs is n steps on.
    actions: float32 (B, A). rewards: float32 (B,) n-step discounted sum of rewards.
    discounts: float32 (B,) gamma^n, times 0 if a terminal state was reached within the n steps
        (the target is rewards + discounts * V(next_obs)).
    gripper_penalties: float32 (B,) the penalty of the first step (for the gripper critic).
    intervened: bool (B,).
    obs_features, next_obs_features: None, or, from a buffer with a frozen-backbone feature cache
        (``robot_rl.data.feature_cache``), camera -> the backbone's feature map float16/float32
        (B, C, h, w) of that camera's frame; obs and next_obs then hold only "state".
    """

    obs: dict[str, torch.Tensor]
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: dict[str, torch.Tensor]
    discounts: torch.Tensor
    gripper_penalties: torch.Tensor
    intervened: torch.Tensor
    obs_features: dict[str, torch.Tensor] | None = None
    next_obs_features: dict[str, torch.Tensor] | None = None

    @property
    def size(self) -> int:
        return int(self.actions.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        def move(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {k: v.to(device, non_blocking=non_blocking) for k, v in d.items()}

        return Batch(
            move(self.obs),
            self.actions.to(device, non_blocking=non_blocking),
            self.rewards.to(device, non_blocking=non_blocking),
            move(self.next_obs),
            self.discounts.to(device, non_blocking=non_blocking),
            self.gripper_penalties.to(device, non_blocking=non_blocking),
            self.intervened.to(device, non_blocking=non_blocking),
            None if self.obs_features is None else move(self.obs_features),
            None if self.next_obs_features is None else move(self.next_obs_features),
        )
