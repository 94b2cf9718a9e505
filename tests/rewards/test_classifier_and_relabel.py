"""The fine-tuned classifier (HIL-SERL recipe) and the false-positive relabelling loop, on
synthetic frames with a planted signal: successes show a red square, failures do not; the hard
negatives, unseen at first, show the red square with a blue bar (a near miss)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from robot_rl.rewards.calibration import auroc
from robot_rl.rewards.classifier import (
    ClassifierConfig,
    FrameClassifier,
    TrainConfig,
    train_classifier,
)
from robot_rl.rewards.dataset import FrameDataset
from robot_rl.rewards.decision import DecisionConfig
from robot_rl.rewards.detector import load_detector
from robot_rl.rewards.relabel import add_false_positives, find_false_positives, merge

pytestmark = pytest.mark.timeout(300)
SIZE = 32


def frames_for(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    images = rng.integers(0, 90, (n, SIZE, SIZE, 3)).astype(np.uint8)
    for image in images:
        y, x = rng.integers(4, SIZE - 14, 2)
        if kind in ("success", "near_miss"):
            image[y : y + 10, x : x + 10] = (230, 20, 20)
        if kind == "near_miss":
            image[1:5, :] = (20, 20, 230)
    return images


def dataset(episodes: list[str], rng: np.random.Generator, length: int = 12) -> FrameDataset:
    """Success episodes end with 4 success frames; failures and near misses have none."""
    frames, labels, episode_ids, steps = [], [], [], []
    for e, kind in enumerate(episodes):
        positives = 4 if kind == "success" else 0
        frames.append(frames_for("failure", length - positives, rng))
        if positives:
            frames.append(frames_for("success", positives, rng))
        labels += [False] * (length - positives) + [True] * positives
        episode_ids += [e] * length
        steps += list(range(length))
    if "near_miss" in episodes:  # near misses: the last frames look almost like success
        images = np.concatenate(frames)
        for e, kind in enumerate(episodes):
            if kind == "near_miss":
                images[e * length + 6 : (e + 1) * length] = frames_for("near_miss", length - 6, rng)
        frames = [images]
    return FrameDataset({"front": np.concatenate(frames)}, np.array(labels), np.array(episode_ids),
                        np.array(steps), {"cameras": ["front"], "task": "planted"})  # fmt: skip


def fit(data: FrameDataset, seed: int = 0) -> tuple[FrameClassifier, dict]:
    config = ClassifierConfig(("front",), input_size=SIZE, latent_dim=32, hidden_dim=32)
    return train_classifier(data, config, TrainConfig(steps=150, batch_size=32, lr=1e-3,
                                                      shift_pad=2, seed=seed))  # fmt: skip


@pytest.fixture(scope="module")
def trained() -> tuple[FrameClassifier, dict]:
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    return fit(dataset(["success", "failure"] * 10, rng))


def test_the_classifier_learns_the_planted_signal_and_is_calibrated(trained) -> None:
    model, report = trained
    assert report["final_loss"] < 0.5 * report["first_loss"]  # BCE on balanced batches falls
    test = dataset(["success", "failure"] * 6, np.random.default_rng(1))
    probs = model.score(test.frames)
    assert auroc(probs, test.label) > 0.97
    assert 0.0 < model.threshold <= 1.0 and model.temperature > 0
    fired = probs >= model.threshold
    assert fired[test.label].mean() > 0.8 and not fired[~test.label].any()


def test_frames_of_any_size_are_resized_and_bad_frames_refused(trained) -> None:
    model, _ = trained
    big = np.random.default_rng(2).integers(0, 256, (3, 96, 80, 3), np.uint8)
    assert model.score({"front": big}).shape == (3,)
    with pytest.raises(ValueError, match="uint8"):
        model.score({"front": big.astype(np.float32)})
    with pytest.raises(KeyError, match="front"):
        model.score({"wrist": big})


def test_a_saved_classifier_loads_as_a_detector_with_identical_scores(trained, tmp_path) -> None:
    model, _ = trained
    folder = model.save(tmp_path / "clf")
    frames = {"front": frames_for("success", 5, np.random.default_rng(3))}
    detector = load_detector(folder)
    np.testing.assert_allclose(detector.score(frames), model.score(frames), rtol=1e-6)
    assert detector.decision.config.theta_on == pytest.approx(model.threshold)
    with pytest.raises(FileNotFoundError, match=r"classifier\.json"):
        FrameClassifier.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="reward train"):
        load_detector(tmp_path / "missing")


@pytest.mark.integration
def test_relabelling_false_positives_and_refitting_stops_them() -> None:
    torch.set_num_threads(2)
    rng = np.random.default_rng(4)
    base = dataset(["success", "failure"] * 10, rng)
    model, _ = fit(base)
    new = dataset(["near_miss", "success"] * 6, rng)
    decision = DecisionConfig.from_threshold(model.threshold, k=2)
    found = find_false_positives(model.score(new.frames), new, decision)
    near_misses = np.flatnonzero(np.array(["near_miss", "success"] * 6) == "near_miss")
    assert len(found.episodes) >= 4 and set(found.episodes) <= set(near_misses)
    assert not new.label[found.frames].any()  # the frames that fired are labelled failures
    merged, again = add_false_positives(base, new, model.score(new.frames), decision)
    assert len(merged) == len(base) + 12 * len(again.episodes)
    assert len(np.unique(merged.episode)) == len(np.unique(base.episode)) + len(again.episodes)
    refit, _ = fit(merged, seed=1)
    fresh = dataset(["near_miss", "success"] * 6, np.random.default_rng(5))
    before = find_false_positives(model.score(fresh.frames), fresh, decision)
    after = find_false_positives(
        refit.score(fresh.frames), fresh, DecisionConfig.from_threshold(refit.threshold, k=2)
    )
    assert len(after.episodes) < len(before.episodes)
    assert len(after.episodes) <= 1


def test_merge_refuses_mismatched_cameras() -> None:
    rng = np.random.default_rng(6)
    a = dataset(["success", "failure"], rng)
    b = FrameDataset({"wrist": a.frames["front"]}, a.label, a.episode, a.step, {})
    with pytest.raises(ValueError, match="cameras differ"):
        merge(a, b)
