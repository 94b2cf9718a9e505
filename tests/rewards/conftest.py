"""A tiny, randomly initialized open_clip model on disk as a local-dir: folder (no downloads)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"

TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
PREPROCESS = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "size": 32}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A local-dir: folder with a randomly initialized tiny CLIP and its preprocessing."""
    import open_clip
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("tiny-clip")
    torch.manual_seed(0)
    model = open_clip.model.CLIP(**TINY)
    config = {"model_cfg": TINY, "preprocess_cfg": PREPROCESS}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    save_file(model.state_dict(), str(folder / "open_clip_model.safetensors"))
    return folder
