"""Relabelling false positives: find the episodes where a detector fired wrongly, add them (with
their true labels) to the training frames, and refit.

This is the HIL-SERL loop for success classifiers: a classifier that fires on a near miss is
caught (by the operator's marks on a robot, by the ground truth on the twin), the frames it was
wrong about become labelled negatives, and the refit no longer fires there. New frames come in the
same ``FrameDataset`` format as the training set, labels included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from robot_rl.rewards.dataset import FrameDataset
from robot_rl.rewards.decision import DecisionConfig, first_fire


@dataclass(frozen=True)
class FalsePositives:
    episodes: np.ndarray  # episode ids (of the new data) with a false fire
    frames: np.ndarray  # for each of them, the frame index (into the new data) that fired


def find_false_positives(
    probs: np.ndarray, data: FrameDataset, decision: DecisionConfig
) -> FalsePositives:
    """Episodes whose first fire through the decision layer lands on a frame labelled failure."""
    probs = np.asarray(probs, float)
    if len(probs) != len(data):
        raise ValueError(f"{len(probs)} scores for {len(data)} frames")
    episodes, frames = [], []
    for episode in np.unique(data.episode):
        index = np.flatnonzero(data.episode == episode)
        index = index[np.argsort(data.step[index], kind="stable")]
        first = first_fire(probs[index], decision)
        if first is not None and not data.label[index[first]]:
            episodes.append(int(episode))
            frames.append(int(index[first]))
    return FalsePositives(np.array(episodes, np.int64), np.array(frames, np.int64))


def merge(base: FrameDataset, extra: FrameDataset) -> FrameDataset:
    """``base`` then ``extra``, extra's episode ids shifted past base's (episodes stay whole)."""
    if sorted(base.frames) != sorted(extra.frames):
        raise ValueError(f"cameras differ: {sorted(base.frames)} and {sorted(extra.frames)}")
    for camera in base.frames:
        if base.frames[camera].shape[1:] != extra.frames[camera].shape[1:]:
            raise ValueError(
                f"camera {camera}: frames {base.frames[camera].shape[1:]} and "
                f"{extra.frames[camera].shape[1:]} differ; collect both at the same size"
            )
    shift = int(base.episode.max()) + 1 if len(base) else 0
    meta = dict(base.meta)
    meta["relabelled_episodes"] = int(meta.get("relabelled_episodes", 0)) + len(
        np.unique(extra.episode)
    )
    return FrameDataset(
        {c: np.concatenate([base.frames[c], extra.frames[c]]) for c in base.frames},
        np.concatenate([base.label, extra.label]),
        np.concatenate([base.episode, extra.episode + shift]),
        np.concatenate([base.step, extra.step]),
        meta,
    )


def add_false_positives(
    base: FrameDataset, new: FrameDataset, probs: np.ndarray, decision: DecisionConfig
) -> tuple[FrameDataset, FalsePositives]:
    """``base`` plus every episode of ``new`` the detector fired wrongly on (all its frames)."""
    found = find_false_positives(probs, new, decision)
    return merge(base, new.subset(np.isin(new.episode, found.episodes))), found
