"""The few-shot probe (the default success detector): logistic regression on frozen, L2-normalized
image embeddings of one or more cameras (concatenated in a fixed camera order).

It starts from the zero-shot prompt direction (goal minus baseline text embedding, per camera), so
with no labels it already ranks frames like the zero-shot scorer, and is then fit on 10-200
labelled frames with class weights (positives are rare) by L-BFGS: about a second on a CPU. A
temperature (``robot_rl.rewards.calibration``) is fit afterwards on held-out episodes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class ProbeScorer:
    """p(success | x) = sigmoid((x . w + b) / temperature) for (B, D) concatenated embeddings."""

    weight: torch.Tensor  # (D,)
    bias: float
    temperature: float = 1.0
    threshold: float = 0.5  # the decision layer's theta_on, chosen for a target precision
    cameras: tuple[str, ...] = ()  # the embedding order (recorded by training)
    backbone: str = ""  # the backbone source the embeddings came from (recorded by the CLI)

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return embeddings.float() @ self.weight + self.bias

    def probability(self, embeddings: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(embeddings) / self.temperature)

    @staticmethod
    def fit(
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        init_direction: torch.Tensor | None = None,
        init_scale: float = 10.0,
        l2: float = 1e-3,
        iterations: int = 100,
    ) -> ProbeScorer:
        """Fit on (N, D) embeddings and (N,) 0/1 labels with both classes present."""
        x = embeddings.detach().float()
        y = torch.as_tensor(labels, dtype=torch.float32).flatten()
        if x.ndim != 2 or len(x) != len(y):
            raise ValueError(f"embeddings {tuple(x.shape)} and labels {tuple(y.shape)} disagree")
        positives, negatives = float(y.sum()), float(len(y) - y.sum())
        if positives == 0 or negatives == 0:
            raise ValueError(
                f"labels hold {positives:.0f} positive and {negatives:.0f} negative frames; the "
                "probe needs both (collect failures as well as successes)"
            )
        # Balanced class weights: each class counts as half of the data.
        sample_weight = torch.where(y > 0.5, len(y) / (2 * positives), len(y) / (2 * negatives))
        w0 = (
            init_scale * init_direction.float().flatten()
            if init_direction is not None
            else torch.zeros(x.shape[1])
        )
        if w0.shape != (x.shape[1],):
            raise ValueError(
                f"init_direction has {w0.numel()} values; embeddings have {x.shape[1]}"
            )
        weight = w0.clone().requires_grad_(True)
        bias = (-(x @ w0).mean()).clone().detach().requires_grad_(True)  # start centred
        optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=iterations,
                                      line_search_fn="strong_wolfe")  # fmt: skip

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            logits = x @ weight + bias
            loss = (
                torch.nn.functional.binary_cross_entropy_with_logits(
                    logits, y, weight=sample_weight
                )
                + l2 * (weight - w0).pow(2).sum()
            )  # shrink toward the prompt direction
            loss.backward()
            return loss

        optimizer.step(closure)
        return ProbeScorer(weight.detach(), float(bias.detach()))

    def save(self, path: str | Path) -> None:
        """A small JSON file (weights as a list): readable, diffable, no pickle."""
        data = {"kind": "probe", "weight": self.weight.tolist(), "bias": self.bias,
                "temperature": self.temperature, "threshold": self.threshold,
                "cameras": list(self.cameras), "backbone": self.backbone}  # fmt: skip
        Path(path).write_text(json.dumps(data))

    @staticmethod
    def load(path: str | Path) -> ProbeScorer:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"probe {path} not found; train one with robot-rl reward train")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return ProbeScorer(torch.tensor(data["weight"], dtype=torch.float32),
                               float(data["bias"]), float(data.get("temperature", 1.0)),
                               float(data.get("threshold", 0.5)), tuple(data.get("cameras", ())),
                               str(data.get("backbone", "")))  # fmt: skip
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            why = f"no {exc}" if isinstance(exc, KeyError) else type(exc).__name__
            raise ValueError(f"probe {path} is not a probe written by robot-rl reward train "
                             f"({why}); train one again") from None  # fmt: skip
