"""The success-detector workflows behind ``robot-rl reward train | eval | relabel``: fit a probe
or a classifier and save it, score a labelled dataset through the k-frame decision layer, and
relabel the episodes a model fired wrongly on (``detector.load_scorer`` opens a trained model).

Bad input (a missing file, a probe without a backbone, frames without the model's cameras) raises
ValueError, KeyError or FileNotFoundError with the path and what is allowed; the CLI reports it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from robot_rl.rewards.backbone import load_backbone
from robot_rl.rewards.classifier import ClassifierConfig, FrameClassifier, TrainConfig
from robot_rl.rewards.classifier import train_classifier as fit_classifier_model
from robot_rl.rewards.dataset import FrameDataset
from robot_rl.rewards.decision import DecisionConfig
from robot_rl.rewards.detector import BackboneSource, EmbeddingFrameScorer, FrameScorer
from robot_rl.rewards.relabel import FalsePositives, add_false_positives
from robot_rl.rewards.training import evaluate, train_probe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitOptions:
    """How a model is fitted and thresholded. ``steps`` is for classifiers (gradient steps);
    ``k``: the held-out report's decision layer fires after k frames in a row."""

    target_precision: float = 0.99
    max_positives: int = 200
    steps: int = TrainConfig.steps
    k: int = 3

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k={self.k}; the decision layer needs at least 1 frame in a row")


def warn_if_thin(report: dict[str, float], what: str) -> bool:
    """Warn (and return True) when the held-out split of a fit holds at most one successful or
    one failed episode: its threshold and metrics then rest on a single episode."""
    success, failed = int(report["success_episodes"]), int(report["failed_episodes"])
    if success > 1 and failed > 1:
        return False
    log.warning("%s: the held-out split holds %d successful and %d failed episode(s); its "
                "threshold and metrics rest on that alone: collect more episodes of each kind "
                "(robot-rl reward collect --episodes N)", what, success, failed)  # fmt: skip
    return True


def dataset_cameras(data: FrameDataset) -> list[str]:
    """The cameras ``data`` was collected with (its meta), else its frame keys in order."""
    return list(data.meta.get("cameras") or sorted(data.frames))


def fit_probe(data: FrameDataset, out: Path, backbone: BackboneSource,
              success_prompts: Sequence[str], baseline_prompts: Sequence[str],
              options: FitOptions = FitOptions()) -> dict[str, float]:  # fmt: skip
    """Fit and calibrate a probe on ``data`` (initialised from the prompts), save it to ``out``
    (JSON, naming its backbone and cameras); its held-out report."""
    if not success_prompts or not baseline_prompts:
        raise ValueError("a probe needs success and baseline prompts (one or more of each)")
    if not backbone.source:
        raise ValueError("a probe needs a backbone (local-dir:PATH, a checkpoint, hf-hub:)")
    model = load_backbone(backbone.source, backbone.model_name, backbone.preprocess)
    probe, report = train_probe(data, model, success_prompts, baseline_prompts,
                                dataset_cameras(data), target_precision=options.target_precision,
                                max_positives=options.max_positives, k=options.k)  # fmt: skip
    warn_if_thin(report, f"probe {out}")
    probe.backbone = backbone.source
    out.parent.mkdir(parents=True, exist_ok=True)
    probe.save(out)
    return report


def fit_classifier(data: FrameDataset, out: Path, config: ClassifierConfig,
                   options: FitOptions = FitOptions()) -> dict[str, float]:  # fmt: skip
    """Fit, calibrate and threshold a classifier on ``data``, save it to the folder ``out``; its
    held-out report."""
    train = TrainConfig(steps=options.steps, max_positives=options.max_positives,
                        target_precision=options.target_precision, k=options.k)  # fmt: skip
    model, report = fit_classifier_model(data, config, train)
    warn_if_thin(report, f"classifier {out}")
    model.save(out)
    return report


@dataclass(frozen=True)
class Scored:
    """A model's probabilities (N,) over a dataset's frames and the decision layer it fires by."""

    probs: np.ndarray
    decision: DecisionConfig
    threshold: float

    def report(self, data: FrameDataset) -> dict[str, float]:
        """Frame and episode metrics (``training.evaluate``) against ``data``'s labels."""
        return evaluate(self.probs, data.label, data.episode, self.threshold, data.step,
                        self.decision)  # fmt: skip


def score_dataset(scorer: FrameScorer, data: FrameDataset, k: int) -> Scored:
    """Score every frame of ``data``; success fires after ``k`` frames in a row at the model's
    threshold."""
    threshold = float(getattr(scorer, "threshold", 0.5))
    probs = scorer.score({c: data.frames[c] for c in scorer.cameras})
    return Scored(probs, DecisionConfig.from_threshold(threshold, k), threshold)


@dataclass(frozen=True)
class Relabelled:
    merged: FrameDataset  # the base data plus every wrongly fired episode of the new data
    found: FalsePositives
    before: dict[str, float]  # the model's report on the new data


def relabel(base: FrameDataset, new: FrameDataset, scored: Scored) -> Relabelled:
    """Add the episodes of ``new`` that a model (its ``scored`` frames of ``new``) fired wrongly on
    to ``base``."""
    merged, found = add_false_positives(base, new, scored.probs, scored.decision)
    return Relabelled(merged, found, scored.report(new))


def refit(scorer: FrameScorer, data: FrameDataset, out: Path, backbone: BackboneSource,
          success_prompts: Sequence[str], baseline_prompts: Sequence[str],
          options: FitOptions = FitOptions()) -> dict[str, float]:  # fmt: skip
    """Fit a model of ``scorer``'s kind again on ``data``, save it to ``out``: a classifier keeps
    its config; a probe keeps its backbone unless ``backbone`` names one."""
    if isinstance(scorer, FrameClassifier):
        return fit_classifier(data, out, scorer.config, options)
    if not backbone.source and isinstance(scorer, EmbeddingFrameScorer):
        backbone = BackboneSource(getattr(scorer.scorer, "backbone", "") or "",
                                  backbone.model_name, backbone.preprocess)  # fmt: skip
    return fit_probe(data, out, backbone, success_prompts, baseline_prompts, options)
