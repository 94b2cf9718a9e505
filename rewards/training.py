"""Train and judge a few-shot probe on a labelled frame dataset (``robot_rl.rewards.dataset``).

``train_probe``: split by episode, at most ``max_positives`` positive training frames, embed
every camera, fit the probe from the prompt direction, fit its temperature on the held-out
episodes and choose the threshold that reaches ``target_precision`` there. ``evaluate``: frame
metrics (precision, recall, AUROC, ECE, confusion at the threshold) and episode metrics (a
successful episode is found if any of its positive frames fires; a failed episode is falsely
called a success if any frame fires).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from robot_rl.rewards.backbone import ClipBackbone
from robot_rl.rewards.calibration import (
    auroc,
    expected_calibration_error,
    fit_temperature,
    precision_recall,
    split_by_episode,
    threshold_for_precision,
)
from robot_rl.rewards.dataset import FrameDataset
from robot_rl.rewards.decision import DecisionConfig, first_fire
from robot_rl.rewards.probe import ProbeScorer
from robot_rl.rewards.zero_shot import ZeroShotScorer


def embed_dataset(
    backbone: ClipBackbone, data: FrameDataset, cameras: Sequence[str]
) -> torch.Tensor:
    """(N, D * cameras) embeddings, cameras in the given order."""
    return torch.cat([backbone.embed_images(data.frames[c]) for c in cameras], dim=-1)


def train_probe(
    data: FrameDataset,
    backbone: ClipBackbone,
    success_prompts: Sequence[str],
    baseline_prompts: Sequence[str],
    cameras: Sequence[str] | None = None,
    target_precision: float = 0.99,
    max_positives: int = 200,
    held_out_fraction: float = 0.3,
    seed: int = 0,
    k: int = 1,
) -> tuple[ProbeScorer, dict[str, float]]:
    """The fitted, calibrated probe and its held-out report (see the module docstring); the
    report's episode metrics fire after ``k`` frames in a row at the threshold."""
    cameras = list(cameras or data.meta.get("cameras") or sorted(data.frames))
    train_mask, held_mask = split_by_episode(data.episode, held_out_fraction, seed, data.label)
    positives = np.flatnonzero(train_mask & data.label)
    if len(positives) > max_positives:  # the budget of labelled successes
        rng = np.random.default_rng(seed)
        drop = rng.choice(positives, len(positives) - max_positives, replace=False)
        train_mask = train_mask.copy()
        train_mask[drop] = False
    x = embed_dataset(backbone, data, cameras)
    y = torch.as_tensor(data.label, dtype=torch.float32)
    direction = ZeroShotScorer(backbone, success_prompts, baseline_prompts).direction
    init = torch.cat([direction] * len(cameras)) / len(cameras) ** 0.5
    probe = ProbeScorer.fit(x[train_mask], y[train_mask], init_direction=init)
    probe.cameras = tuple(cameras)
    held_logits, held_y = probe.logits(x[held_mask]), data.label[held_mask]
    if held_y.any() and not held_y.all():
        probe.temperature = fit_temperature(held_logits, torch.as_tensor(held_y))
    probs = probe.probability(x[held_mask]).numpy()
    probe.threshold = threshold_for_precision(probs, held_y, target_precision)
    decision = DecisionConfig.from_threshold(probe.threshold, k)
    report = evaluate(probs, held_y, data.episode[held_mask], probe.threshold,
                      data.step[held_mask], decision)  # fmt: skip
    report.update(train_frames=float(train_mask.sum()), train_positives=float(
        (train_mask & data.label).sum()), held_out_frames=float(held_mask.sum()))  # fmt: skip
    return probe, report


def evaluate(
    probs: np.ndarray,
    labels: np.ndarray,
    episodes: np.ndarray,
    threshold: float,
    steps: np.ndarray | None = None,
    decision: DecisionConfig | None = None,
) -> dict[str, float]:
    """Frame metrics at ``threshold`` and episode metrics through the decision layer.

    Without ``decision`` a single frame at or above ``threshold`` fires. A successful episode is
    found when the decision first fires on one of its success frames; firing earlier is premature
    (``episode_premature_rate``). A failed episode is falsely called a success if it fires at all.
    ``event_precision``: the share of fired success events (one per episode at most) that are right.
    Frames are taken in ``steps`` order within each episode (array order without ``steps``).
    """
    probs, labels = np.asarray(probs, float), np.asarray(labels, bool)
    episodes = np.asarray(episodes)
    decision = decision or DecisionConfig(threshold, threshold, 1)
    fired = probs >= threshold
    precision, recall = precision_recall(probs, labels, threshold)
    found, premature, false = [], [], []
    for episode in np.unique(episodes):
        index = np.flatnonzero(episodes == episode)
        if steps is not None:
            index = index[np.argsort(np.asarray(steps)[index], kind="stable")]
        first = first_fire(probs[index], decision)
        if labels[index].any():
            found.append(first is not None and bool(labels[index][first]))
            premature.append(first is not None and not labels[index][first])
        else:
            false.append(first is not None)
    both = labels.any() and not labels.all()
    events = sum(found) + sum(premature) + sum(false)  # success events the decision fired
    return {
        "precision": precision,
        "event_precision": sum(found) / events if events else float("nan"),
        "recall": recall,
        "episode_recall": float(np.mean(found)) if found else float("nan"),
        "episode_premature_rate": float(np.mean(premature)) if premature else float("nan"),
        "episode_false_success_rate": float(np.mean(false)) if false else float("nan"),
        "success_episodes": float(len(found)),
        "failed_episodes": float(len(false)),
        "auroc": auroc(probs, labels) if both else float("nan"),
        "ece": expected_calibration_error(probs, labels),
        "threshold": float(threshold),
        "k": float(decision.k),
        "tp": float((fired & labels).sum()),
        "fp": float((fired & ~labels).sum()),
        "tn": float((~fired & ~labels).sum()),
        "fn": float((~fired & labels).sum()),
    }


def pr_curve_png(probs: np.ndarray, labels: np.ndarray, threshold: float, path: str | Path) -> Path:
    """Precision-recall curve with the chosen threshold marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    thetas = np.unique(np.asarray(probs, float))
    points = np.array([precision_recall(probs, labels, t) for t in thetas])
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(points[:, 1], points[:, 0], marker=".")
    p, r = precision_recall(probs, labels, threshold)
    ax.scatter([r], [p], color="red", zorder=3, label=f"threshold {threshold:.3f}")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
