"""Behaviour cloning: the baseline HIL-SERL compares RL against, on the same demos and encoder.

``BCAgent`` has the SAC agent's observation encoder (same config fields: backbone, latent sizes,
pretrained and frozen weights, DrQ shift) and an MLP head. Loss: mean squared error between
tanh(head) and the demo's continuous action dims, plus, under ``hybrid_gripper``, the
cross-entropy of three gripper logits (close / stay / open) against the demo's gripper index.
``act(obs, deterministic)`` matches ``SACAgent.act``, so ``evaluate_policy`` runs it.
Checkpoint: ``{"kind": "bc", "config": SACConfig as a dict, "networks": {...}}`` (tensors and
plain types: loads with ``weights_only=True``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the torch idiom

from robot_rl.actions import gripper_index_to_value, gripper_value_to_index
from robot_rl.agents.config import SACConfig
from robot_rl.agents.encoders import build_observation_encoder, random_shift
from robot_rl.agents.networks import mlp
from robot_rl.agents.sac import architecture_differences
from robot_rl.agents.spaces import check_spaces
from robot_rl.data.batch import STATE_KEY, Batch
from robot_rl.data.replay import ReplayBuffer

GRIPPER_CLASSES = 3


class BCAgent:
    """A deterministic policy fitted to demo actions (see the module docstring)."""

    def __init__(
        self,
        observation_space: gymnasium.spaces.Dict,
        action_space: gymnasium.spaces.Box,
        config: SACConfig,
        seed: int,
    ) -> None:
        self.config = config
        self.device = config.resolved_device()
        self.spec = check_spaces(
            observation_space, action_space, config.encoder, config.hybrid_gripper
        )
        self.continuous_dim = self.spec.continuous_action_dim(config.hybrid_gripper)
        gripper_out = GRIPPER_CLASSES if config.hybrid_gripper else 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.encoder = build_observation_encoder(self.spec, config)
            outputs = self.continuous_dim + gripper_out
            self.head = mlp(self.encoder.out_dim, config.hidden_dims, outputs)
        self.encoder.to(self.device)
        self.head.to(self.device)
        params = [p for p in self.encoder.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params + list(self.head.parameters()), lr=config.lr)
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.steps = 0

    def _outputs(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.head(self.encoder(obs))
        continuous = torch.tanh(out[:, : self.continuous_dim])
        return continuous, out[:, self.continuous_dim :] if self.config.hybrid_gripper else None

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """MSE on the continuous dims (+ gripper cross-entropy); the batch's obs, DrQ-shifted."""
        pad = self.config.image_augmentation_pad
        obs = {k: v if k == STATE_KEY else random_shift(v, pad, self.generator)
               for k, v in batch.obs.items()}  # fmt: skip
        continuous, logits = self._outputs(obs)
        mse = F.mse_loss(continuous, batch.actions[:, : self.continuous_dim])
        info = {"mse": float(mse.detach())}
        loss = mse
        if logits is not None:
            target = gripper_value_to_index(batch.actions[:, -1])
            ce = F.cross_entropy(logits, target)
            info["gripper_ce"] = float(ce.detach())
            loss = loss + ce
        return loss, info

    def update(self, batch: Batch) -> dict[str, float]:
        """One Adam step on ``batch`` (moved to the agent's device); the loss terms."""
        loss, info = self.loss(batch.to(self.device))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if not torch.isfinite(loss.detach()):
            raise FloatingPointError(f"BC loss is {float(loss)} at step {self.steps}")
        self.optimizer.step()
        self.steps += 1
        return info

    def fit(self, demos: ReplayBuffer, updates: int, batch_size: int) -> list[dict[str, float]]:
        """``updates`` steps on batches of ``batch_size`` drawn from ``demos``."""
        if isinstance(updates, bool) or not isinstance(updates, int) or updates < 1:
            raise ValueError(f"updates={updates!r}; allowed: an integer >= 1")
        if len(demos) == 0:
            raise ValueError("the demo buffer is empty: behaviour cloning needs demos")
        return [self.update(demos.sample(batch_size)) for _ in range(updates)]

    @torch.no_grad()
    def act(self, obs: dict[str, np.ndarray], deterministic: bool = True) -> np.ndarray:
        """Action (A,) float32 in [-1, 1] for one observation (BC is deterministic: the flag is
        accepted for ``evaluate_policy``)."""
        tensors = {k: torch.as_tensor(np.asarray(v), device=self.device).unsqueeze(0)
                   for k, v in obs.items()}  # fmt: skip
        continuous, logits = self._outputs(tensors)
        if logits is not None:
            gripper = gripper_index_to_value(logits.argmax(dim=-1)).unsqueeze(-1)
            continuous = torch.cat([continuous, gripper.to(continuous.dtype)], dim=-1)
        return continuous[0].float().cpu().numpy()

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "bc",
            "config": dataclasses.asdict(self.config),
            "networks": {"encoder": self.encoder.state_dict(), "head": self.head.state_dict()},
            "steps": self.steps,
        }

    def save(self, path: str | Path) -> None:
        torch.save(self.state_dict(), Path(path))

    def load(self, path: str | Path) -> None:
        """Load ``save`` output; ValueError if it is not a BC checkpoint of this architecture."""
        state = torch.load(Path(path), map_location=self.device, weights_only=True)
        if not isinstance(state, dict) or state.get("kind") != "bc":
            raise ValueError(f"{path} is not a behaviour-cloning checkpoint (kind: bc)")
        differ = architecture_differences(state.get("config", {}), self.config)
        if differ:
            raise ValueError(f"{path} does not fit this BC agent: " + "; ".join(differ))
        try:
            self.encoder.load_state_dict(state["networks"]["encoder"])
            self.head.load_state_dict(state["networks"]["head"])
        except RuntimeError as exc:
            raise ValueError(f"{path} does not fit this BC agent: {exc}") from None
        self.steps = int(state.get("steps", 0))
