"""A success detector (tiny backbone + probe + decision layer) as the env's reward."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from robot_rl.rewards.backbone import load_backbone
from robot_rl.rewards.decision import DecisionConfig
from robot_rl.rewards.detector import EmbeddingFrameScorer, SuccessDetector
from robot_rl.rewards.probe import ProbeScorer

from robot_rl.envs.twin_env import TwinEnv, TwinEnvConfig


def constant_probe(dim: int, logit: float) -> ProbeScorer:
    return ProbeScorer(torch.zeros(dim), logit)


def test_detector_scores_batches_over_cameras(tiny_dir: Path) -> None:
    backbone = load_backbone(f"local-dir:{tiny_dir}")
    probe = ProbeScorer(torch.randn(32), 0.0)  # two cameras x 16 dims
    detector = SuccessDetector(EmbeddingFrameScorer(backbone, probe, ["front", "wrist"]))
    frames = {c: np.random.default_rng(1).integers(0, 256, (5, 40, 40, 3), np.uint8)
              for c in ("front", "wrist")}  # fmt: skip
    p = detector.score(frames)
    assert p.shape == (5,) and ((p >= 0) & (p <= 1)).all()
    with pytest.raises(KeyError, match="wrist"):
        detector.score({"front": frames["front"]})


def test_the_env_ends_episodes_when_the_detector_fires(tiny_dir: Path) -> None:
    backbone = load_backbone(f"local-dir:{tiny_dir}")
    sure = SuccessDetector(
        EmbeddingFrameScorer(backbone, constant_probe(16, 5.0), ["front"]), DecisionConfig(k=3)
    )
    config = TwinEnvConfig(task="reach", cameras=("front",), image_width=32, image_height=32)
    env = TwinEnv(config, detector=sure)
    env.reset(seed=0)
    results = [env.step(np.zeros(4, np.float32)) for _ in range(3)]
    rewards = [r[1] for r in results]
    assert rewards == [0.0, 0.0, 1.0] and results[-1][2]  # fired on the third frame: terminated
    assert results[-1][4]["success"] is False  # the ground truth disagrees: a false positive
    assert results[-1][4]["success_probability"] > 0.99
    env.reset(seed=1)  # the decision layer starts over
    assert env.step(np.zeros(4, np.float32))[1] == 0.0
    env.close()
    never = SuccessDetector(EmbeddingFrameScorer(backbone, constant_probe(16, -5.0), ["front"]))
    env = TwinEnv(config, detector=never)
    env.reset(seed=0)
    assert all(env.step(np.zeros(4, np.float32))[1] == 0.0 for _ in range(4))
    env.close()
    with pytest.raises(ValueError, match="pixels"):
        TwinEnv(TwinEnvConfig(task="reach", obs="state"), detector=never)


def test_load_scorer_refuses_a_missing_model_and_a_probe_without_backbone(tmp_path: Path) -> None:
    from robot_rl.rewards.detector import BackboneSource, load_detector, load_scorer

    with pytest.raises(FileNotFoundError, match=r"nowhere\.json"):
        load_scorer(tmp_path / "nowhere.json")
    with pytest.raises(FileNotFoundError, match="robot-rl reward train"):
        load_detector(tmp_path / "nowhere.json")
    bare = tmp_path / "bare.json"
    ProbeScorer(torch.zeros(4), 0.0).save(bare)  # records neither backbone nor cameras
    with pytest.raises(ValueError, match="backbone and cameras"):
        load_scorer(bare, cameras=("front",))
    with pytest.raises(ValueError, match="backbone and cameras"):
        load_scorer(bare, BackboneSource("local-dir:/somewhere"))  # still no cameras


def test_load_scorer_takes_the_probes_backbone_and_cameras(tiny_dir: Path, tmp_path: Path) -> None:
    from robot_rl.rewards.detector import BackboneSource, load_scorer

    dim = load_backbone(f"local-dir:{tiny_dir}").embed_dim
    path = tmp_path / "probe.json"
    probe = ProbeScorer(torch.zeros(2 * dim), 0.0, cameras=("front", "wrist"))
    probe.backbone = f"local-dir:{tiny_dir}"
    probe.save(path)
    scorer = load_scorer(path, cameras=("other",))  # the probe's own cameras win
    assert scorer.cameras == ("front", "wrist")
    frames = {c: np.zeros((3, 32, 32, 3), np.uint8) for c in ("front", "wrist")}
    assert scorer.score(frames) == pytest.approx(np.full(3, 0.5))  # zero weights: p = 0.5
    probe.backbone = ""
    probe.save(path)
    with pytest.raises(ValueError, match="backbone"):
        load_scorer(path)
    assert load_scorer(path, BackboneSource(f"local-dir:{tiny_dir}")).cameras == ("front", "wrist")
