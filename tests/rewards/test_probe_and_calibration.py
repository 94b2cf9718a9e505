"""The few-shot probe on embeddings of planted-signal frames, temperature scaling, thresholds,
episode splits and the metrics."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"

from robot_rl.rewards.backbone import load_backbone
from robot_rl.rewards.calibration import (
    auroc,
    expected_calibration_error,
    fit_temperature,
    precision_recall,
    split_by_episode,
    threshold_for_precision,
)
from robot_rl.rewards.probe import ProbeScorer


def planted(n: int, positive: bool, seed: int) -> np.ndarray:
    """Noisy frames; positives carry a bright red square (the 'success' signal)."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 120, (n, 32, 32, 3), dtype=np.uint8)
    if positive:
        frames[:, 8:24, 8:24] = (250, 20, 20)
    return frames


def test_probe_separates_planted_signal_frames(tiny_dir: Path, tmp_path: Path) -> None:
    backbone = load_backbone(f"local-dir:{tiny_dir}")
    train_x = torch.cat([backbone.embed_images(planted(12, True, 1)),
                         backbone.embed_images(planted(36, False, 2))])  # fmt: skip
    train_y = torch.cat([torch.ones(12), torch.zeros(36)])  # imbalanced, as successes are
    direction = backbone.embed_texts(["red"])[0] - backbone.embed_texts(["grey"])[0]
    probe = ProbeScorer.fit(train_x, train_y, init_direction=direction)
    test_pos = probe.probability(backbone.embed_images(planted(10, True, 3)))
    test_neg = probe.probability(backbone.embed_images(planted(10, False, 4)))
    assert auroc(torch.cat([test_pos, test_neg]).numpy(), np.r_[np.ones(10), np.zeros(10)]) >= 0.95
    assert (test_pos > 0.5).float().mean() >= 0.9 and (test_neg < 0.5).float().mean() >= 0.9
    probe.temperature = 2.0
    probe.save(tmp_path / "probe.json")
    assert "weight" in json.loads((tmp_path / "probe.json").read_text())
    loaded = ProbeScorer.load(tmp_path / "probe.json")
    torch.testing.assert_close(loaded.probability(train_x), probe.probability(train_x))
    with pytest.raises(FileNotFoundError, match="robot-rl reward train"):
        ProbeScorer.load(tmp_path / "none.json")


def test_probe_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="both"):
        ProbeScorer.fit(torch.randn(5, 4), torch.ones(5))


def test_temperature_scaling_softens_overconfident_logits() -> None:
    rng = np.random.default_rng(0)
    labels = rng.random(4000) < 0.5
    true_logit = np.where(labels, 1.0, -1.0) + rng.normal(0, 1.0, 4000)
    # Labels drawn from sigmoid(true_logit); the detector reports 4x that: overconfident.
    drawn = rng.random(4000) < 1 / (1 + np.exp(-true_logit))
    temperature = fit_temperature(torch.tensor(4 * true_logit), torch.tensor(drawn))
    assert 3.0 < temperature < 5.0
    before = 1 / (1 + np.exp(-4 * true_logit))
    after = 1 / (1 + np.exp(-4 * true_logit / temperature))
    assert expected_calibration_error(after, drawn) < expected_calibration_error(before, drawn)
    assert expected_calibration_error(after, drawn) < 0.05


def test_threshold_meets_the_target_precision_with_the_most_recall() -> None:
    probs = np.array([0.1, 0.4, 0.55, 0.6, 0.7, 0.8, 0.9, 0.95])
    labels = np.array([0, 0, 1, 0, 1, 1, 1, 1], bool)
    theta = threshold_for_precision(probs, labels, precision=0.99)
    assert theta == 0.7
    assert precision_recall(probs, labels, theta) == (1.0, 0.8)
    assert threshold_for_precision(probs, np.zeros(8, bool), 0.9) == 1.0


def test_split_keeps_each_episode_on_one_side() -> None:
    episodes = np.repeat(np.arange(10), 7)
    train, held = split_by_episode(episodes, held_out_fraction=0.3, seed=1)
    assert not set(episodes[train]) & set(episodes[held])
    assert len(set(episodes[held])) == 3 and (train | held).all()
    with pytest.raises(ValueError, match="two episodes"):
        split_by_episode(np.zeros(5))


def test_auroc_and_ece_by_hand() -> None:
    assert auroc(np.array([0.9, 0.8, 0.3, 0.1]), np.array([1, 1, 0, 0], bool)) == 1.0
    assert auroc(np.array([0.5, 0.5]), np.array([1, 0], bool)) == 0.5
    assert expected_calibration_error(np.array([1.0, 0.0]), np.array([1, 0])) == 0.0
    assert expected_calibration_error(
        np.array([0.95] * 4), np.array([1, 0, 1, 0])
    ) == pytest.approx(0.45)
