"""A success detector: a backbone, a scorer over one or more cameras, and the decision layer.

``score`` implements ``robot_rl.interfaces.RewardModel`` (batch-first: a live frame or a whole
buffer to relabel). ``step`` feeds one observation's frames through the decision layer and says
whether success fires on this frame; envs call ``reset`` at each episode start.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from rewards.backbone import ClipBackbone
from rewards.decision import DecisionConfig, SuccessDecision


class EmbeddingScorer(Protocol):
    def probability(self, embeddings: torch.Tensor) -> torch.Tensor: ...


class SuccessDetector:
    """Embeds each camera's frames, concatenates them in ``cameras`` order, scores them."""

    def __init__(
        self,
        backbone: ClipBackbone,
        scorer: EmbeddingScorer,
        cameras: Sequence[str],
        decision: DecisionConfig | None = None,
    ) -> None:
        if not cameras:
            raise ValueError("name the cameras the detector looks at")
        self.backbone, self.scorer, self.cameras = backbone, scorer, tuple(cameras)
        self.decision = SuccessDecision(decision or DecisionConfig())

    def embed(self, frames: dict[str, np.ndarray]) -> torch.Tensor:
        """(B, D * cameras) embeddings of uint8 (B, H, W, 3) frames per camera."""
        missing = [c for c in self.cameras if c not in frames]
        if missing:
            raise KeyError(f"frames lack camera(s) {missing}; the detector needs {self.cameras}")
        return torch.cat([self.backbone.embed_images(frames[c]) for c in self.cameras], dim=-1)

    def score(self, frames: dict[str, np.ndarray]) -> np.ndarray:
        """(B,) success probabilities."""
        return self.scorer.probability(self.embed(frames)).detach().cpu().numpy()

    def reset(self) -> None:
        self.decision.reset()

    def step(self, frames: dict[str, np.ndarray], gate: bool = True) -> tuple[bool, float]:
        """One observation's frames (H, W, 3) per camera: (success fired now, probability)."""
        batch = {c: np.asarray(frames[c])[None] for c in self.cameras}
        p = float(self.score(batch)[0])
        return self.decision.update(p, gate), p
