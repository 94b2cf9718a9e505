"""Zero-shot success scores from prompts: the VLM-RM goal-baseline projection (a dense score) and a
softmax over prompts (a binary detector's probability).

With image embedding x, goal g (mean of the success prompts' embeddings) and baseline b (mean of
the baseline prompts'), all L2-normalized, and d = g - b:
  P = alpha * d d^T / |d|^2 + (1 - alpha) * I,     dense(x) = 1 - 0.5 * |P (x - g)|^2.
alpha = 0 gives 1 - 0.5 |x - g|^2 = cos(x, g) for unit vectors; alpha = 1 keeps only the part of
x - g along d, so anything orthogonal to "goal versus baseline" is ignored (Rocamonde et al.,
"Vision-Language Models are Zero-Shot Reward Models", 2023).

probability(x): softmax of logit_scale * cos(x, prompt) over every prompt, summed over the success
prompts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812 - the torch idiom
from robot_rl.rewards.backbone import ClipBackbone


def projection(goal: torch.Tensor, baseline: torch.Tensor, alpha: float) -> torch.Tensor:
    """(D, D) P = alpha * d d^T / |d|^2 + (1 - alpha) I with d = goal - baseline."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha}; allowed [0, 1]")
    d = goal - baseline
    norm = torch.dot(d, d)
    if norm <= 0:
        raise ValueError("goal and baseline embeddings coincide: choose distinct prompts")
    eye = torch.eye(len(d), dtype=d.dtype, device=d.device)
    return alpha * torch.outer(d, d) / norm + (1.0 - alpha) * eye


def dense_score(x: torch.Tensor, goal: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    """(B,) 1 - 0.5 |P (x - g)|^2 for (B, D) unit embeddings x."""
    return 1.0 - 0.5 * ((x - goal) @ proj.T).pow(2).sum(dim=-1)


class ZeroShotScorer:
    """Scores embeddings against success and baseline prompt sets (batch-first)."""

    def __init__(
        self,
        backbone: ClipBackbone,
        success_prompts: Sequence[str],
        baseline_prompts: Sequence[str],
        alpha: float = 0.5,
    ) -> None:
        if not success_prompts or not baseline_prompts:
            raise ValueError("give at least one success prompt and one baseline prompt")
        self.success = backbone.embed_texts(success_prompts)
        self.baseline = backbone.embed_texts(baseline_prompts)
        self.goal = F.normalize(self.success.mean(dim=0), dim=-1)
        self.base = F.normalize(self.baseline.mean(dim=0), dim=-1)
        self.proj = projection(self.goal, self.base, alpha)
        self.logit_scale = float(backbone.model.logit_scale.detach().exp())

    def dense(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B,) VLM-RM dense score (higher is closer to the goal)."""
        return dense_score(embeddings, self.goal, self.proj)

    def probability(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B,) softmax probability mass on the success prompts."""
        prompts = torch.cat([self.success, self.baseline])
        p = torch.softmax(self.logit_scale * embeddings @ prompts.T, dim=-1)
        return p[:, : len(self.success)].sum(dim=-1)

    @property
    def direction(self) -> torch.Tensor:
        """(D,) unit goal-minus-baseline direction (the few-shot probe starts from it)."""
        return F.normalize(self.goal - self.base, dim=-1)
