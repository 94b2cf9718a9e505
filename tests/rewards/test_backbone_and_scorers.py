"""Reward backbones from local files (a tiny random open_clip config built here, no downloads),
the zero-shot scorer's math on hand-made embeddings, and the decision layer."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - the torch idiom

os.environ["HF_HUB_OFFLINE"] = "1"
import open_clip
from robot_rl.rewards.backbone import MissingWeightsError, load_backbone
from robot_rl.rewards.decision import DecisionConfig, SuccessDecision
from robot_rl.rewards.zero_shot import ZeroShotScorer, dense_score, projection

from tests.rewards.conftest import PREPROCESS, TINY


def frames(n: int = 3, size: int = 48) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_local_dir_and_checkpoint_file_load_the_same_model(tiny_dir: Path, tmp_path: Path) -> None:
    from_dir = load_backbone(f"local-dir:{tiny_dir}")
    # The same weights as a checkpoint file with a registered config and a preprocess file.
    open_clip.add_model_config(_write_config(tmp_path))
    preprocess = tmp_path / "preprocess.json"
    preprocess.write_text(json.dumps(PREPROCESS))
    from_file = load_backbone(
        tiny_dir / "open_clip_model.safetensors", model_name="tiny-test", preprocess=preprocess
    )
    images = frames()
    a, b = from_dir.embed_images(images), from_file.embed_images(images)
    assert a.shape == (3, 16)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(from_dir.embed_texts(["a cube"]), from_file.embed_texts(["a cube"]))
    assert from_dir.preprocess.std == (0.25, 0.25, 0.25)  # the folder's own preprocessing


def _write_config(folder: Path) -> Path:
    configs = folder / "configs"
    configs.mkdir()
    (configs / "tiny-test.json").write_text(json.dumps(TINY))
    return configs


def test_text_embeddings_are_cached(tiny_dir: Path) -> None:
    backbone = load_backbone(f"local-dir:{tiny_dir}")
    first = backbone.embed_texts(["the cube is lifted", "the cube is on the table"])
    calls = []
    original = backbone.model.encode_text
    backbone.model.encode_text = lambda tokens: calls.append(len(tokens)) or original(tokens)
    again = backbone.embed_texts(["the cube is on the table", "the cube is lifted"])
    assert calls == []  # nothing recomputed
    torch.testing.assert_close(again, first.flip(0))


@pytest.mark.parametrize("source", ["local-dir:{missing}", "{missing}/model.safetensors"])
def test_missing_weights_fail_fast_and_say_where(tmp_path: Path, source: str) -> None:
    with pytest.raises(MissingWeightsError, match="open_clip"):
        load_backbone(source.format(missing=tmp_path / "nope"), model_name="ViT-B-32")


def test_uncached_hub_model_is_not_downloaded(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(MissingWeightsError, match="local Hugging Face cache"):
        load_backbone("hf-hub:nobody/no-such-clip")


def test_frames_of_the_wrong_kind_are_rejected(tiny_dir: Path) -> None:
    backbone = load_backbone(f"local-dir:{tiny_dir}")
    with pytest.raises(ValueError, match="uint8"):
        backbone.embed_images(np.zeros((2, 32, 32, 3), np.float32))


# -- zero-shot scorer math ---------------------------------------------------------------------
def unit(*v: float) -> torch.Tensor:
    return F.normalize(torch.tensor(v, dtype=torch.float64), dim=-1)


def test_alpha_zero_is_cosine_similarity_to_the_goal() -> None:
    goal, base = unit(1, 0, 0), unit(0, 1, 0)
    x = torch.stack([unit(1, 1, 0), unit(0, 0, 1), unit(-1, 0.2, 0.3)])
    score = dense_score(x, goal, projection(goal, base, alpha=0.0))
    torch.testing.assert_close(score, x @ goal)


def test_alpha_one_ignores_what_is_orthogonal_to_goal_minus_baseline() -> None:
    goal, base = unit(1, 0, 0), unit(0, 1, 0)
    proj = projection(goal, base, alpha=1.0)
    x = unit(0.6, 0.2, 0.0)
    moved = x + 0.7 * unit(1, 1, 0) + 0.4 * unit(0, 0, 1)  # both orthogonal to d = g - b
    torch.testing.assert_close(
        dense_score(x[None], goal, proj), dense_score(moved[None], goal, proj)
    )
    closer = x + 0.1 * (goal - base)  # along d, toward the goal
    assert dense_score(closer[None], goal, proj) > dense_score(x[None], goal, proj)
    with pytest.raises(ValueError, match="alpha"):
        projection(goal, base, alpha=1.5)


def test_scorer_probability_prefers_frames_like_the_success_prompt(tiny_dir: Path) -> None:
    backbone = load_backbone(f"local-dir:{tiny_dir}")
    scorer = ZeroShotScorer(backbone, ["a lifted cube"], ["a cube on a table"], alpha=0.5)
    p_goal = scorer.probability(scorer.success)  # the success prompt's own embedding
    p_base = scorer.probability(scorer.baseline)
    assert p_goal.item() > 0.5 > p_base.item()
    assert scorer.dense(scorer.success) > scorer.dense(scorer.baseline)
    torch.testing.assert_close(scorer.direction.norm(), torch.tensor(1.0))


# -- decision layer ----------------------------------------------------------------------------
def run(decision: SuccessDecision, ps: list[float], gates: list[bool] | None = None) -> list[int]:
    gates = gates or [True] * len(ps)
    return [i for i, (p, g) in enumerate(zip(ps, gates, strict=True)) if decision.update(p, g)]


def test_one_spike_never_fires_and_k_in_a_row_fires(caplog) -> None:
    decision = SuccessDecision(DecisionConfig(theta_on=0.9, theta_off=0.6, k=3))
    assert run(decision, [0.1, 0.99, 0.1, 0.2, 0.95, 0.1]) == []
    decision.reset()
    with caplog.at_level(logging.INFO):
        assert run(decision, [0.1, 0.92, 0.95, 0.97, 0.99]) == [3]
    assert decision.fired[-1].frame == 3 and decision.fired[-1].score == pytest.approx(0.97)
    assert "success fired at frame 3" in caplog.text


def test_hysteresis_holds_through_jitter_and_a_dip_resets() -> None:
    decision = SuccessDecision(DecisionConfig(theta_on=0.9, theta_off=0.6, k=3))
    assert run(decision, [0.95, 0.8, 0.93, 0.7, 0.91]) == [4]  # jitter between off and on
    decision.reset()
    assert run(decision, [0.95, 0.93, 0.5, 0.95, 0.96]) == []  # the dip below off resets


def test_the_state_gate_must_hold() -> None:
    decision = SuccessDecision(DecisionConfig(k=2))
    assert run(decision, [0.95, 0.95, 0.95], [True, False, True]) == []
    with pytest.raises(ValueError, match="probability"):
        decision.update(float("nan"))
    with pytest.raises(ValueError, match="theta"):
        DecisionConfig(theta_on=0.5, theta_off=0.7)
