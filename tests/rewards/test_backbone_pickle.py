"""A reward-backbone checkpoint that carries pickled code is refused, and the code never runs
(torch.load with weights_only=True on the open_clip path)."""

from __future__ import annotations

import json
import pathlib
from pathlib import Path

import open_clip
import pytest
import torch
from robot_rl.rewards.backbone import load_backbone

from tests.rewards.conftest import TINY


class Payload:
    """Unpickling this runs ``Path(marker).touch()``: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_a_checkpoint_with_pickled_code_is_refused_without_running_it(tmp_path: Path) -> None:
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    (config_dir / "tiny-pickle.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(config_dir)
    marker = tmp_path / "code-ran"
    checkpoint = tmp_path / "hostile.pt"
    torch.save({"state_dict": {}, "extra": Payload(marker)}, checkpoint)
    with pytest.raises(Exception, match=r"(?i)weights_only|unpickl|global"):
        load_backbone(checkpoint, model_name="tiny-pickle")
    assert not marker.exists()
