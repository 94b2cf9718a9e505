"""Calibrating and judging success detectors: splits by episode, temperature scaling, a threshold
for a target precision, and the metrics (precision, recall, AUROC, ECE).

Held-out data is always split by episode, never by frame: neighbouring frames of one episode are
near-copies, so a frame split would grade the detector on frames it has effectively seen.
"""

from __future__ import annotations

import numpy as np
import torch


def split_by_episode(
    episode_ids: np.ndarray,
    held_out_fraction: float = 0.3,
    seed: int = 0,
    labels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(train_mask, held_out_mask) over frames, whole episodes on one side only.

    With frame ``labels`` the split is stratified: episodes with a success frame and episodes
    without are split separately, so both sides keep both kinds whenever there are two of each.
    """
    episode_ids = np.asarray(episode_ids)
    episodes = np.unique(episode_ids)
    if len(episodes) < 2:
        raise ValueError("need frames from at least two episodes to hold some out")
    rng = np.random.default_rng(seed)
    groups = [episodes]
    if labels is not None:
        successful = np.unique(episode_ids[np.asarray(labels, bool)])
        groups = [g for g in (successful, np.setdiff1d(episodes, successful)) if len(g)]
    held = []
    for group in groups:
        n_out = round(held_out_fraction * len(group))
        if len(group) >= 2:
            n_out = min(len(group) - 1, max(1, n_out))
        held.extend(rng.choice(group, size=min(n_out, len(group)), replace=False))
    if not held or len(held) == len(episodes):  # one group of one: hold out one episode
        held = rng.choice(episodes, size=1, replace=False).tolist()
    held_mask = np.isin(episode_ids, held)
    return ~held_mask, held_mask


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, iterations: int = 100) -> float:
    """The T > 0 minimizing the binary NLL of sigmoid(logits / T) on held-out frames."""
    z = torch.as_tensor(logits, dtype=torch.float64).detach().flatten()
    y = torch.as_tensor(labels, dtype=torch.float64).flatten()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=iterations,
                                  line_search_fn="strong_wolfe")  # fmt: skip

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def threshold_for_precision(probs: np.ndarray, labels: np.ndarray, precision: float) -> float:
    """The lowest threshold whose precision on these frames is >= ``precision`` (most recall);
    1.0 if none reaches it (the detector then never fires)."""
    probs, labels = np.asarray(probs, float), np.asarray(labels, bool)
    for theta in np.unique(probs):  # ascending: the first that qualifies has the most recall
        fired = probs >= theta
        if fired.any() and labels[fired].mean() >= precision:
            return float(theta)
    return 1.0


def precision_recall(probs: np.ndarray, labels: np.ndarray, theta: float) -> tuple[float, float]:
    probs, labels = np.asarray(probs, float), np.asarray(labels, bool)
    fired = probs >= theta
    precision = float(labels[fired].mean()) if fired.any() else 1.0
    recall = float(fired[labels].mean()) if labels.any() else 0.0
    return precision, recall


def auroc(probs: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (the probability a positive outranks a negative; ties half)."""
    probs, labels = np.asarray(probs, float), np.asarray(labels, bool)
    pos, neg = probs[labels], probs[~labels]
    if not len(pos) or not len(neg):
        raise ValueError("AUROC needs positive and negative frames")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Sum over equal-width probability bins of |mean p - frequency| weighted by bin size."""
    probs, labels = np.asarray(probs, float), np.asarray(labels, float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(probs, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        in_bin = index == b
        if in_bin.any():
            total += in_bin.mean() * abs(probs[in_bin].mean() - labels[in_bin].mean())
    return float(total)
