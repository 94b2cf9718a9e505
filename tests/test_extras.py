"""The lean install: the base dependencies are what `robot-rl train` needs, every optional
feature names the extra that brings it when that extra is missing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from robot_rl.extras import MissingExtraError

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
BASE = " ".join(PYPROJECT["project"]["dependencies"])
EXTRAS = PYPROJECT["project"]["optional-dependencies"]


@pytest.mark.parametrize(
    ("package", "extra"),
    [
        ("open-clip-torch", "clip"),
        ("torchvision", "clip"),
        ("aiohttp", "console"),
        ("opencv-python-headless", "console"),
        ("opencv-python-headless", "cameras"),
        ("wandb", "wandb"),
        ("rerun-sdk", "viewer"),
        ("lerobot-dataset", "lerobot"),
        ("gym-hil", "gym-hil"),
    ],
)
def test_optional_packages_live_in_their_extra_not_the_base(package, extra):
    assert package not in BASE
    assert any(req.startswith(package) for req in EXTRAS[extra])


def test_the_dev_extra_brings_what_the_default_tests_use():
    (self_ref,) = [r for r in EXTRAS["dev"] if r.startswith("robot-rl[")]
    assert set(self_ref[len("robot-rl[") : -1].split(",")) == {
        "clip", "console", "cameras", "wandb", "viewer",
    }  # fmt: skip


def _without(monkeypatch, *modules: str) -> None:
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed


def test_clip_detectors_without_the_extra_name_it(monkeypatch, tmp_path):
    from robot_rl.rewards.backbone import load_backbone

    _without(monkeypatch, "open_clip")
    with pytest.raises(MissingExtraError, match=r"CLIP success detectors .* 'robot-rl\[clip\]'"):
        load_backbone(f"local-dir:{tmp_path}")


def test_camera_streams_without_the_extra_name_it(monkeypatch):
    from robot_rl.transport import camera_stream

    _without(monkeypatch, "cv2")
    with pytest.raises(MissingExtraError, match=r"pip install 'robot-rl\[cameras\]'"):
        camera_stream._jpeg_encode(np.zeros((4, 4, 3), np.uint8), 80)


def test_the_console_without_the_extra_names_it(monkeypatch):
    from robot_rl.console.hub import ConsoleHub
    from robot_rl.console.server import ConsoleConfig, ConsoleServer

    _without(monkeypatch, "aiohttp")
    server = ConsoleServer(ConsoleHub(), ConsoleConfig(), [])
    with pytest.raises(MissingExtraError, match=r"operator console .* 'robot-rl\[console\]'"):
        server.start()
