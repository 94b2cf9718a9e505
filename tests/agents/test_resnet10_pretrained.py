"""The ResNet-10 loads the published (HIL-SERL / LeRobot) weights by their real key names.

No pretrained file can be fetched here, so the test writes a synthetic state dict with the
published layout's key names and shapes, loads it, and checks the backbone's features against a
forward pass written out by hand with torch.nn.functional from the same tensors.
"""

import json
import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from safetensors.torch import save_file

from robot_rl.agents.encoders import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ResNet10Backbone,
    load_backbone_weights,
    same_padding,
)

WIDTHS = (64, 128, 256, 512)


def published_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the published checkpoint's names (incl. a pooler-free HF layout)."""
    g = torch.Generator().manual_seed(seed)

    def conv(out_c: int, in_c: int, k: int) -> torch.Tensor:
        return torch.randn(out_c, in_c, k, k, generator=g) / math.sqrt(in_c * k * k)

    def norm(prefix: str, c: int) -> dict[str, torch.Tensor]:
        return {
            f"{prefix}.group_norm.weight": 1 + 0.1 * torch.randn(c, generator=g),
            f"{prefix}.group_norm.bias": 0.1 * torch.randn(c, generator=g),
        }

    state = {"embedder.0.weight": conv(64, 3, 7), **norm("embedder.1", 64)}
    in_c = 64
    for i, c in enumerate(WIDTHS):
        s = f"encoder.stages.{i}"
        state[f"{s}.conv1.conv.weight"] = conv(c, in_c, 3)
        state.update(norm(f"{s}.norm1", c))
        state[f"{s}.conv2.conv.weight"] = conv(c, c, 3)
        state.update(norm(f"{s}.norm2", c))
        if in_c != c:
            state[f"{s}.shortcut.0.conv.weight"] = conv(c, in_c, 1)
            state.update(norm(f"{s}.shortcut.1", c))
        in_c = c
    return state


def reference_forward(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The published network by hand: JAX "SAME" padding puts an odd extra pixel after."""

    def gn(t: torch.Tensor, prefix: str) -> torch.Tensor:
        w, b = state[f"{prefix}.group_norm.weight"], state[f"{prefix}.group_norm.bias"]
        return F.group_norm(t, 4, w, b, eps=1e-5)

    def same_conv(t: torch.Tensor, w: torch.Tensor, stride: int) -> torch.Tensor:
        k = w.shape[-1]
        total_h = max(0, (math.ceil(t.shape[-2] / stride) - 1) * stride + k - t.shape[-2])
        total_w = max(0, (math.ceil(t.shape[-1] / stride) - 1) * stride + k - t.shape[-1])
        pad = (total_w // 2, total_w - total_w // 2, total_h // 2, total_h - total_h // 2)
        return F.conv2d(F.pad(t, pad), w, stride=stride)

    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    h = F.conv2d((x - mean) / std, state["embedder.0.weight"], stride=2, padding=3)
    h = F.relu(gn(h, "embedder.1"))
    h = F.max_pool2d(F.pad(h, (0, 1, 0, 1), value=-math.inf), 3, 2)  # even sizes: (0, 1)
    in_c = 64
    for i, c in enumerate(WIDTHS):
        s = f"encoder.stages.{i}"
        stride = 1 if i == 0 else 2
        y = F.relu(gn(same_conv(h, state[f"{s}.conv1.conv.weight"], stride), f"{s}.norm1"))
        y = gn(same_conv(y, state[f"{s}.conv2.conv.weight"], 1), f"{s}.norm2")
        shortcut = h
        if in_c != c:
            projected = same_conv(h, state[f"{s}.shortcut.0.conv.weight"], stride)
            shortcut = gn(projected, f"{s}.shortcut.1")
        h = F.relu(y + shortcut)
        in_c = c
    return h


def test_same_padding_puts_the_odd_pixel_after():
    assert same_padding(64, 3, 2) == (0, 1)  # 64 -> 32 needs one extra row: at the bottom
    assert same_padding(65, 3, 2) == (1, 1)
    assert same_padding(32, 3, 1) == (1, 1)
    assert same_padding(64, 1, 2) == (0, 0)


@pytest.mark.parametrize("as_folder", [True, False])
def test_published_weights_load_and_give_the_reference_features(tmp_path, as_folder):
    state = published_state_dict()
    folder = tmp_path / "resnet10"
    folder.mkdir()
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "resnet10"}))
    backbone = ResNet10Backbone().eval()
    load_backbone_weights(backbone, folder if as_folder else folder / "model.safetensors")

    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = backbone(x)
        expected = reference_forward(state, x)
    assert ours.shape == (2, 512, 2, 2)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


def test_a_published_file_with_a_missing_stage_is_refused_by_name(tmp_path):
    state = published_state_dict()
    del state["encoder.stages.3.conv2.conv.weight"]
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    with pytest.raises(ValueError, match=r"missing keys \['blocks\.3\.conv2\.weight'\]"):
        load_backbone_weights(ResNet10Backbone(), path)
