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


class AsyncScorer:
    """Scores frames on a background thread so a 10 Hz loop never waits on the backbone.

    ``submit`` hands over the newest frames and returns at once (frames not yet scored are
    replaced: only the newest matter); ``latest`` gives the most recent (tag, probability).
    """

    def __init__(self, detector: SuccessDetector) -> None:
        import threading

        self.detector = detector
        self._cond = threading.Condition()
        self._pending: tuple[object, dict[str, np.ndarray]] | None = None
        self._latest: tuple[object, float] | None = None
        self.skipped = 0  # submissions replaced before they were scored
        self.error: BaseException | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="reward-scorer", daemon=True)
        self._thread.start()

    def submit(self, tag: object, frames: dict[str, np.ndarray]) -> None:
        """Queue one observation's frames (H, W, 3) per camera, labelled ``tag`` (a step)."""
        with self._cond:
            self.skipped += self._pending is not None
            self._pending = (tag, frames)
            self._cond.notify_all()

    def latest(self, timeout_s: float = 0.0) -> tuple[object, float] | None:
        """The newest (tag, probability), waiting up to ``timeout_s`` for a first one."""
        with self._cond:
            if self._latest is None and timeout_s > 0:
                self._cond.wait_for(lambda: self._latest is not None, timeout_s)
            if self.error is not None:
                raise RuntimeError("the reward scorer failed") from self.error
            return self._latest

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._stop)
                if self._stop:
                    return
                tag, frames = self._pending  # type: ignore[misc]
                self._pending = None
            try:
                batch = {c: np.asarray(frames[c])[None] for c in self.detector.cameras}
                p = float(self.detector.score(batch)[0])
            except BaseException as exc:  # surfaced by latest()
                with self._cond:
                    self.error = exc
                    self._cond.notify_all()
                return
            with self._cond:
                self._latest = (tag, p)
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=5.0)
