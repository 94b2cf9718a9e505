"""A success detector: a frame scorer over one or more cameras, and the decision layer.

``score`` implements ``robot_rl.interfaces.RewardModel`` (batch-first: a live frame or a whole
buffer to relabel). The scorer is either a frozen CLIP backbone with an embedding scorer
(``EmbeddingFrameScorer``: the probe or zero-shot) or the fine-tuned ``FrameClassifier``;
``load_detector`` opens what ``robot-rl reward train`` wrote. ``step`` feeds one observation's
frames through the decision layer and says whether success fires on this frame; envs call
``reset`` at each episode start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from robot_rl.rewards.backbone import ClipBackbone
from robot_rl.rewards.decision import DecisionConfig, SuccessDecision


class EmbeddingScorer(Protocol):
    def probability(self, embeddings: torch.Tensor) -> torch.Tensor: ...


class FrameScorer(Protocol):
    """Anything that turns frames per camera into success probabilities, batch-first."""

    @property
    def cameras(self) -> tuple[str, ...]: ...

    def score(self, frames: dict[str, np.ndarray]) -> np.ndarray: ...


class EmbeddingFrameScorer:
    """A frozen open_clip backbone and an embedding scorer (the probe or zero-shot): each
    camera's frames are embedded, concatenated in ``cameras`` order and scored."""

    def __init__(
        self, backbone: ClipBackbone, scorer: EmbeddingScorer, cameras: Sequence[str]
    ) -> None:
        if not cameras:
            raise ValueError("name the cameras the detector looks at")
        self.backbone, self.scorer, self.cameras = backbone, scorer, tuple(cameras)

    @property
    def threshold(self) -> float:
        return float(getattr(self.scorer, "threshold", 0.5))

    def embed(self, frames: dict[str, np.ndarray]) -> torch.Tensor:
        """(B, D * cameras) embeddings of uint8 (B, H, W, 3) frames per camera."""
        missing = [c for c in self.cameras if c not in frames]
        if missing:
            raise KeyError(f"frames lack camera(s) {missing}; the detector needs {self.cameras}")
        return torch.cat([self.backbone.embed_images(frames[c]) for c in self.cameras], dim=-1)

    def score(self, frames: dict[str, np.ndarray]) -> np.ndarray:
        """(B,) success probabilities."""
        return self.scorer.probability(self.embed(frames)).detach().cpu().numpy()


class SuccessDetector:
    """A frame scorer (``EmbeddingFrameScorer`` or ``rewards.classifier.FrameClassifier``) and
    the decision layer."""

    def __init__(self, scorer: FrameScorer, decision: DecisionConfig | None = None) -> None:
        self.scorer = scorer
        self.decision = SuccessDecision(decision or DecisionConfig())

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.scorer.cameras)

    def score(self, frames: dict[str, np.ndarray]) -> np.ndarray:
        """(B,) success probabilities."""
        return np.asarray(self.scorer.score(frames), np.float64)

    def reset(self) -> None:
        self.decision.reset()

    def step(self, frames: dict[str, np.ndarray], gate: bool = True) -> tuple[bool, float]:
        """One observation's frames (H, W, 3) per camera: (success fired now, probability)."""
        batch = {c: np.asarray(frames[c])[None] for c in self.cameras if c in frames}
        p = float(self.score(batch)[0])
        return self.decision.update(p, gate), p


@dataclass(frozen=True)
class BackboneSource:
    """Where a probe's open_clip backbone comes from: ``source`` is local-dir:PATH, a checkpoint
    file or hf-hub:ORG/REPO (already in the local cache); ``model_name`` and ``preprocess`` (a
    JSON file) are needed for a bare checkpoint file. An empty source: the one the probe names."""

    source: str = ""
    model_name: str | None = None
    preprocess: Path | None = None


def load_scorer(path: str | Path, backbone: BackboneSource = BackboneSource(),
                cameras: Sequence[str] = ()) -> FrameScorer:  # fmt: skip
    """What ``robot-rl reward train`` wrote at ``path`` (a classifier folder or a probe JSON) as a
    frame scorer. A probe looks at the cameras it records, else at ``cameras``."""
    path = Path(path)
    if path.is_dir():
        from robot_rl.rewards.classifier import FrameClassifier

        return FrameClassifier.load(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"reward model {path} not found; train one with robot-rl reward train"
        )
    from robot_rl.rewards.backbone import load_backbone
    from robot_rl.rewards.probe import ProbeScorer

    probe = ProbeScorer.load(path)
    source = backbone.source or probe.backbone
    chosen = probe.cameras or tuple(cameras)
    if not source or not chosen:
        raise ValueError(
            f"probe {path} does not name its backbone and cameras; pass the backbone, or "
            "retrain it with robot-rl reward train (which records both)"
        )
    model = load_backbone(source, backbone.model_name, backbone.preprocess)
    return EmbeddingFrameScorer(model, probe, chosen)


def load_detector(
    path: str | Path,
    backbone: str | None = None,
    decision: DecisionConfig | None = None,
    k: int = 3,
) -> SuccessDetector:
    """A detector from ``robot-rl reward train``'s output: a classifier folder, or a probe JSON
    (which names its backbone and cameras; ``backbone`` overrides where the weights are). Without
    ``decision``, success fires after ``k`` frames at or above the model's threshold."""
    scorer = load_scorer(path, BackboneSource(backbone or ""))
    theta = float(getattr(scorer, "threshold", 0.5))
    return SuccessDetector(scorer, decision or DecisionConfig.from_threshold(theta, k))
