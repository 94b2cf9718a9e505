"""Observation encoders: per-camera image encoders, a proprioception MLP, DrQ augmentation.

Images enter as uint8 (B, H, W, 3) RGB (the observation convention of ``robot_rl.data.batch``)
and are scaled to [0, 1] floats inside the encoder. Each camera has its own backbone (a small
strided CNN or a ResNet-10), whose feature map (B, C, h, w) a spatial learned embedding reduces to
a vector: every channel is weighted by ``num_spatial_features`` learned (h, w) kernels and summed
over locations, so where a feature fires is kept (SERL's design, where global pooling would
discard it). Then Linear -> LayerNorm -> Tanh gives the camera's latent.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the torch idiom
from torch import nn

from robot_rl.agents.config import STATE_INPUTS
from robot_rl.data.batch import STATE_KEY

# On CPU, images are converted and run through the backbone in chunks of at most this many bytes
# of float input. glibc serves allocations over 32 MB with fresh mmaps that page-fault on every
# call: one (256, 3, 128, 128) float batch (50 MB) that way made a CPU update ~1.6x slower.
_CPU_CHUNK_BYTES = 24 * 2**20

# ImageNet statistics: the input convention of pretrained ResNet weights.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def random_shift(
    images: torch.Tensor,
    pad: int,
    generator: torch.Generator | None = None,
    block_copies: bool = True,
) -> torch.Tensor:
    """DrQ augmentation: shift each image by its own random (dy, dx) in [-pad, pad] pixels.

    Same as replicate-padding by ``pad`` and cropping back at a random offset, with no padded
    copy. images: (B, H, W, C) any dtype. Returns (B, H, W, C), same dtype; ``pad == 0`` returns
    images. On the CPU each image is one block copy plus its edge rows and columns
    (``_shift_by_slices``, ~5x faster than the gather, same result); elsewhere, or with
    ``block_copies=False``, one gather. Both draw the same shifts from ``generator``.
    """
    if pad == 0:
        return images
    if images.dim() != 4:
        raise ValueError(f"images must be (B, H, W, C), got shape {tuple(images.shape)}")
    H, W = images.shape[1:3]
    shifts = _draw_shifts(images, pad, generator)
    if block_copies and images.device.type == "cpu" and pad < min(H, W):
        return _shift_by_slices(images, shifts)
    return _shift_by_gather(images, shifts)


def _draw_shifts(images: torch.Tensor, pad: int, generator: torch.Generator | None) -> torch.Tensor:
    """``random_shift``'s draw: (B, 2) (dy, dx) in [-pad, pad] from ``generator``."""
    B, H, W, _ = images.shape
    # int32 indices where they fit: the gather's (B, H, W) index is then half the memory.
    dtype = torch.int32 if B * H * W < 2**31 else torch.int64
    return torch.randint(
        -pad, pad + 1, (B, 2), generator=generator, device=images.device, dtype=dtype
    )


def _shift_by_gather(images: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """``random_shift`` with given shifts (B, 2) (dy, dx) as one index_select (any device)."""
    B, H, W, C = images.shape
    device, dtype = images.device, shifts.dtype
    # Clamping the source indices to the image is the same as replicate padding.
    rows = (torch.arange(H, device=device, dtype=dtype) + shifts[:, :1]).clamp_(0, H - 1)
    cols = (torch.arange(W, device=device, dtype=dtype) + shifts[:, 1:]).clamp_(0, W - 1)
    first_pixel = torch.arange(B, device=device, dtype=dtype)[:, None] * (H * W)
    row_start = (first_pixel + rows * W)[:, :, None]  # (B, H, 1): small
    pixel_index = (row_start + cols[:, None, :]).view(-1)  # (B * H * W,): one full-size pass
    # Whole pixels (C values each) as rows of one table: ~3x faster than gather on CPU.
    return images.reshape(B * H * W, C).index_select(0, pixel_index).reshape(B, H, W, C)


def _shift_by_slices(images: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """``random_shift`` with given shifts (B, 2) (dy, dx), |dy| < H and |dx| < W, of CPU images,
    per image: the part of the source that stays in view is copied as one block, then the edge
    columns and rows are replicated outwards. Copies of whole rows run at memory speed, where the
    gather moves one 3-byte pixel at a time. Done in numpy (a view of the same memory): torch's
    copy opens an OpenMP region per slice, which with 2 threads on a busy machine cost ~100x more
    than the copy (measured: 256 images of 128x128, 4 ms here, 18-27 ms by the gather)."""
    source = images.numpy()
    return torch.from_numpy(_shift_into(source, shifts, np.empty_like(source)))


def _shift_into(source: np.ndarray, shifts: torch.Tensor, out: np.ndarray) -> np.ndarray:
    """``_shift_by_slices`` of ``source`` (B, H, W, C) written into ``out`` (same shape, any
    dtype: a float32 ``out`` takes the conversion in the same pass). Returns ``out``."""
    H, W = source.shape[1:3]
    for i, (dy, dx) in enumerate(shifts.tolist()):
        h, w = H - abs(dy), W - abs(dx)  # the source block that stays in view
        top, left = max(0, -dy), max(0, -dx)  # where it lands
        src, dst = source[i], out[i]
        dst[top : top + h, left : left + w] = src[max(0, dy) : max(0, dy) + h,
                                                  max(0, dx) : max(0, dx) + w]  # fmt: skip
        rows = dst[top : top + h]
        if left:
            rows[:, :left] = rows[:, left : left + 1]
        if left + w < W:
            rows[:, left + w :] = rows[:, left + w - 1 : left + w]
        if top:
            dst[:top] = dst[top : top + 1]
        if top + h < H:
            dst[top + h :] = dst[top + h - 1 : top + h]
    return out


class ShiftedFloatImages:
    """DrQ shift and uint8 -> float conversion in one pass, into reusable float32 buffers: the
    input of the folded conv path (``ConvBackbone.forward_unscaled``) on the CPU.

    ``stage`` draws the same shifts from the generator as ``random_shift`` and gives the same
    values as ``ConvBackbone.uint8_input(random_shift(...))``, without the uint8 shifted copy and
    without a fresh 50 MB float tensor per call: glibc maps allocations that large anew each time,
    and their page faults made the conversion ~3x slower than the copy itself (256 images of
    128x128, measured). One buffer per ``key`` (e.g. "obs/front"); staging a key again
    overwrites it and bumps its autograd version, so a graph still holding the previous images
    fails its backward with an in-place-modification error rather than using the new ones.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def stage(
        self, key: str, images: torch.Tensor, pad: int, generator: torch.Generator | None
    ) -> torch.Tensor:
        """uint8 CPU images (B, H, W, C), shifted by up to ``pad`` pixels (0: none, no draw) ->
        float32 (B, C, H, W) in [0, 255], channels-last memory, a view of ``key``'s buffer."""
        if images.dim() != 4 or images.dtype != torch.uint8 or images.device.type != "cpu":
            raise ValueError(
                f"images must be uint8 (B, H, W, C) on the CPU, got {images.dtype} "
                f"{tuple(images.shape)} on {images.device}"
            )
        buffer = self._buffers.get(key)
        if buffer is None or buffer.shape != images.shape:
            buffer = self._buffers[key] = torch.empty(images.shape, dtype=torch.float32)
        out = buffer.numpy()
        H, W = images.shape[1:3]
        if pad == 0:
            np.copyto(out, images.numpy())
        else:
            shifts = _draw_shifts(images, pad, generator)
            if pad < min(H, W):
                _shift_into(images.numpy(), shifts, out)
            else:
                np.copyto(out, _shift_by_gather(images, shifts).numpy())
        torch.autograd.graph.increment_version(buffer)
        return buffer.permute(0, 3, 1, 2)


class ConvBackbone(nn.Module):
    """Small CNN for CPU-speed training: a 4x4 stride-4 patch stem, then 3x3 convs.

    Default at 128x128: 16-channel patch stem -> (16, 32, 32), 3x3 stride 2 -> (32, 16, 16),
    3x3 stride 1 -> (32, 16, 16); each output cell sees 28x28 px. The cheap 16-channel stem on
    full-resolution input keeps a CPU update within budget (32 channels cost ~25% more).
    Input (B, 3, H, W) float in [0, 1]; output (B, C, h, w). ``ImageEncoder`` feeds it uint8
    images through ``forward_uint8`` unless ``fold_input_scale`` is False (the pre-fold path,
    kept for ``robot-rl bench learner``'s same-run comparison).
    """

    fold_input_scale: bool = True
    # False: no-grad passes run the plain conv and ReLU (the previous path, for the bench's peer).
    fuse_relu: bool = True

    def __init__(
        self,
        channels: Sequence[int] = (16, 32, 32),
        kernel_sizes: Sequence[int] = (4, 3, 3),
        strides: Sequence[int] = (4, 2, 1),
    ) -> None:
        super().__init__()
        if not len(channels) == len(kernel_sizes) == len(strides):
            raise ValueError("channels, kernel_sizes and strides must have the same length")
        layers: list[nn.Module] = []
        in_channels = 3
        for out_channels, k, s in zip(channels, kernel_sizes, strides, strict=True):
            # 3x3 convs keep "same" padding; the patch stem tiles the image exactly.
            padding = 0 if k == s else k // 2
            layers += [nn.Conv2d(in_channels, out_channels, k, s, padding), nn.ReLU(inplace=True)]
            in_channels = out_channels
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward_uint8(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> (B, C, h, w): the same as ``forward(images / 255)``.

        The 1/255 scale is folded into the first conv's weights (conv(x / 255, W) =
        conv(x, W / 255)), so the images take one conversion pass to float and no scaling pass:
        ~13% less encoder time on CPU (fwd + bwd at batch 128, measured). The gradient reaching
        the weights is the same up to float rounding.
        """
        return self.forward_unscaled(self.uint8_input(images))

    @staticmethod
    def uint8_input(images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> float32 (B, 3, H, W) in [0, 255], channels-last memory (the
        permute keeps the order: one conversion pass, no transpose)."""
        return images.permute(0, 3, 1, 2).to(torch.float32)

    def forward_unscaled(self, x: torch.Tensor) -> torch.Tensor:
        """float (B, 3, H, W) in [0, 255] (``uint8_input``) -> (B, C, h, w), the 1/255 folded
        into the first conv. ``x`` is only read, so several backbones can share it.

        Without autograd on the CPU (target and next_obs passes, acting) each conv runs with its
        ReLU fused in (oneDNN's post-op, ``_conv_relu``): the same values, one pass fewer over
        every activation."""
        stem = self.net[0]
        stem_weight = stem.weight * (1.0 / 255.0)
        fused = self.fuse_relu and _CONV_RELU is not None and x.device.type == "cpu"
        if fused and not torch.is_grad_enabled():
            x = _conv_relu(x, stem_weight, stem)
            for conv in self.net[2::2]:
                x = _conv_relu(x, conv.weight, conv)
            return x
        x = F.conv2d(x, stem_weight, stem.bias, stem.stride, stem.padding)
        return self.net[2:](F.relu(x, inplace=True))


# oneDNN's convolution with a fused element-wise post-op (what inductor emits on the CPU); a
# private op, so the plain conv + ReLU is used wherever this torch build lacks it.
_CONV_RELU = (
    getattr(torch.ops.mkldnn, "_convolution_pointwise", None)
    if torch.backends.mkldnn.is_available()
    else None
)


def _conv_relu(x: torch.Tensor, weight: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """relu(conv(x)) with ``conv``'s bias, stride and padding and the given weight (no autograd:
    the fused op has no backward)."""
    return _CONV_RELU(
        x, weight, conv.bias, list(conv.padding), list(conv.stride), list(conv.dilation),
        conv.groups, "relu", [], "",
    )  # fmt: skip


# The published ImageNet ResNet-10 that HIL-SERL trains with (and LeRobot ships converted to
# safetensors) normalizes with 4 groups everywhere; matching it lets those weights load as they are.
RESNET10_NORM_GROUPS = 4


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of one spatial side for "SAME" output ceil(size / stride).

    The JAX/Flax convention the pretrained ResNet-10 was trained with: when the total is odd, the
    extra pixel goes after (bottom/right). PyTorch's symmetric ``padding=k // 2`` shifts a stride-2
    window by one pixel against it, so the loaded weights would see other pixels.
    """
    total = max(0, (math.ceil(size / stride) - 1) * stride + kernel - size)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A bias-free Conv2d with "SAME" padding (``same_padding``) computed from the input size."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        top, bottom = same_padding(x.shape[-2], k, s)
        left, right = same_padding(x.shape[-1], k, s)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


class SameMaxPool2d(nn.Module):
    """3x3 stride-2 max-pool with "SAME" padding (padded with -inf, so padding never wins)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(x.shape[-2], 3, 2)
        left, right = same_padding(x.shape[-1], 3, 2)
        x = F.pad(x, (left, right, top, bottom), value=-math.inf)
        return F.max_pool2d(x, 3, 2)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with GroupNorm and an identity (or 1x1) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = SameConv2d(in_channels, out_channels, 3, stride)
        self.norm1 = nn.GroupNorm(RESNET10_NORM_GROUPS, out_channels)
        self.conv2 = SameConv2d(out_channels, out_channels, 3, 1)
        self.norm2 = nn.GroupNorm(RESNET10_NORM_GROUPS, out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                SameConv2d(in_channels, out_channels, 1, stride),
                nn.GroupNorm(RESNET10_NORM_GROUPS, out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class ResNet10Backbone(nn.Module):
    """ResNet-10: 7x7/2 stem, 3x3/2 max-pool, four stages of one basic block (64..512 channels).

    The architecture of the ImageNet-pretrained ResNet-10 that HIL-SERL and LeRobot use (GroupNorm
    with 4 groups, "SAME" padding on the max-pool and the stride-2 convs), so their weights load
    with ``load_backbone_weights``. GroupNorm instead of BatchNorm: no running statistics, so train
    and eval behave alike and the demo/online batch mix does not shift the features. Input
    (B, 3, H, W) float in [0, 1], normalized with ImageNet statistics inside; output
    (B, 512, H/32, W/32).
    """

    def __init__(self, widths: Sequence[int] = (64, 128, 256, 512)) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 7, 2, 3, bias=False),
            nn.GroupNorm(RESNET10_NORM_GROUPS, widths[0]),
            nn.ReLU(),
            SameMaxPool2d(),
        )
        blocks = []
        in_channels = widths[0]
        for i, width in enumerate(widths):
            blocks.append(BasicBlock(in_channels, width, stride=1 if i == 0 else 2))
            in_channels = width
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem((x - self.mean) / self.std))


# Key names of the published ResNet-10 (the Hugging Face layout LeRobot loads; each conv wrapped
# as ``.conv``, each GroupNorm as ``.group_norm``) -> ours. Applied in order to every key.
_PUBLISHED_RESNET10_KEYS = (
    ("embedder.0.", "stem.0."),
    ("embedder.1.group_norm.", "stem.1."),
    ("encoder.stages.", "blocks."),
    (".conv.", "."),
    (".group_norm.", "."),
)


def from_published_resnet10(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a published ResNet-10 state dict (``embedder.*``, ``encoder.stages.*``) to ours.

    A state dict already in our names comes back unchanged; the pooler and classifier heads of the
    published checkpoint (which we do not use) are dropped.
    """
    if not any(k.startswith(("embedder.", "encoder.stages.")) for k in state):
        return state
    renamed = {}
    for key, value in state.items():
        if not key.startswith(("embedder.", "encoder.stages.")):
            continue
        for old, new in _PUBLISHED_RESNET10_KEYS:
            key = key.replace(old, new)
        renamed[key] = value
    return renamed


# ``SACConfig.conv_preset``: (channels, kernel sizes, strides) of the "conv" backbone.
# "standard": the default above, (32, 16, 16) maps at 128x128. "lean" (opt-in): the last conv
# strided too, (32, 8, 8) maps; its 3x3 conv then covers a quarter of the cells, ~20% less
# update time on CPU (``robot-rl bench learner``), unmeasured for learning quality.
CONV_PRESET_LAYERS: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {
    "standard": ((16, 32, 32), (4, 3, 3), (4, 2, 1)),
    "lean": ((16, 32, 32), (4, 3, 3), (4, 2, 2)),
}


def make_backbone(name: str, conv_preset: str = "standard") -> nn.Module:
    """The backbone called ``name`` ("conv" or "resnet10"), randomly initialized; "conv" with
    the layers of ``conv_preset`` (``CONV_PRESET_LAYERS``)."""
    if name == "conv":
        if conv_preset not in CONV_PRESET_LAYERS:
            raise ValueError(
                f"conv_preset={conv_preset!r}; allowed: {', '.join(CONV_PRESET_LAYERS)}"
            )
        return ConvBackbone(*CONV_PRESET_LAYERS[conv_preset])
    if name == "resnet10":
        return ResNet10Backbone()
    raise ValueError(f"encoder={name!r}; allowed: conv, resnet10")


def save_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Write a backbone's state dict to ``path`` (torch.save; safetensors for ``.safetensors``)."""
    state = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    path = Path(path)
    if path.suffix == ".safetensors":
        _safetensors().save_file(state, str(path))
    else:
        torch.save(state, path)


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load weights written by ``save_backbone_weights``, or a published ResNet-10.

    ``path``: a ``.safetensors`` or ``.pt`` state dict, or a local folder holding
    ``model.safetensors`` (the layout of the Hugging Face ResNet-10 that HIL-SERL's weights were
    converted to). Published key names are renamed to ours (``from_published_resnet10``).
    Raises FileNotFoundError if ``path`` is missing and ValueError if its keys or shapes differ.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained encoder weights {path} not found; copy the weights file to this machine "
            "(weights are never downloaded at run time), fix pretrained_encoder_path, or set it to "
            "null to train the encoder from random weights"
        )
    try:
        if path.suffix == ".safetensors":
            state = _safetensors().load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise ValueError(f"pretrained encoder weights {path} cannot be read: {exc}") from None
    if not isinstance(state, dict):
        raise ValueError(f"pretrained encoder weights {path} must hold a state dict")
    state = from_published_resnet10(state)
    expected = backbone.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"pretrained encoder weights {path} do not fit the {type(backbone).__name__} backbone: "
            f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}, wrong shapes "
            f"{wrong_shape[:5]} (first 5 of each); convert the file to this backbone's key names "
            "with save_backbone_weights, or check the config's encoder setting"
        )
    backbone.load_state_dict(state)


def _safetensors():  # noqa: ANN202 - optional module
    try:
        import safetensors.torch
    except ImportError:
        raise ImportError(
            "reading or writing .safetensors files needs the safetensors package "
            "(pip install safetensors), or use a .pt state dict"
        ) from None
    return safetensors.torch


class SpatialLearnedEmbedding(nn.Module):
    """Reduce a feature map (B, C, h, w) to (B, C * F): per channel, F learned (h, w) kernels."""

    # False: the gradient goes back in whatever layout the matmul left it (the previous path,
    # for the bench's peer); same values.
    keep_grad_layout: bool = True

    def __init__(self, channels: int, height: int, width: int, num_features: int) -> None:
        super().__init__()
        # Unit-variance sums over h*w locations: std 1/sqrt(h*w).
        self.kernel = nn.Parameter(
            torch.randn(channels, height, width, num_features) / math.sqrt(height * width)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        B, C, h, w = features.shape
        # One (B, h*w) @ (h*w, F) matmul per channel. The feature map is made (B, C, h*w)
        # contiguous (small per-sample transposes of a channels-last map) and read per channel
        # through a strided view: ~6x faster on CPU than copying it out as (C, B, h*w). Its
        # gradient goes back in the map's own layout (``_ContiguousKeepingGradLayout``).
        if self.keep_grad_layout:
            features = _ContiguousKeepingGradLayout.apply(features)
        per_sample = features.contiguous().view(B, C, h * w)
        out = torch.bmm(per_sample.transpose(0, 1), self.kernel.reshape(C, h * w, -1))  # (C, B, F)
        return out.permute(1, 0, 2).flatten(1)


class _ContiguousKeepingGradLayout(torch.autograd.Function):
    """``x.contiguous()`` whose backward hands the gradient back in ``x``'s memory format.

    Plain ``contiguous()`` passes back the gradient as the consumer made it: for the spatial
    embedding a (C, B, h*w)-ordered tensor, which the last ReLU's backward then had to read
    against its channels-last output, element by element (~14 ms against ~2 ms, plus the
    transposing copy, for (256, 32, 16, 16) on one CPU thread), and the conv backward after it
    reordered again. One transposing copy here keeps the whole backward channels-last."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
        keep = channels_last and not x.is_contiguous()
        ctx.memory_format = torch.channels_last if keep else torch.contiguous_format
        return x.contiguous()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous(memory_format=ctx.memory_format)


class ImageEncoder(nn.Module):
    """One camera: uint8 (B, H, W, 3) -> backbone -> spatial embedding -> (B, latent_dim), tanh."""

    def __init__(
        self,
        backbone: nn.Module,
        image_shape: tuple[int, int, int],
        latent_dim: int,
        num_spatial_features: int,
    ) -> None:
        super().__init__()
        H, W, _ = image_shape
        self.backbone = backbone.to(memory_format=torch.channels_last)
        with torch.no_grad():
            C, h, w = self.backbone(torch.zeros(1, 3, H, W)).shape[1:]
        self.spatial = SpatialLearnedEmbedding(C, h, w, num_spatial_features)
        self.head = nn.Sequential(
            nn.Linear(C * num_spatial_features, latent_dim), nn.LayerNorm(latent_dim), nn.Tanh()
        )

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> the backbone's feature map (B, C, h, w)."""
        return camera_feature_maps([self], images)[0]

    def embed(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Feature map (B, C, h, w) -> the camera latent (B, latent_dim)."""
        return self.head(self.spatial(feature_map))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(self.feature_map(images))


def camera_feature_maps(
    encoders: Sequence[ImageEncoder], images: torch.Tensor
) -> list[torch.Tensor]:
    """Each encoder's backbone feature map (B, C, h, w) of the same uint8 images (B, H, W, 3),
    e.g. the online and the target encoder of one camera on next_obs. On the CPU the images go
    through in chunks (``_CPU_CHUNK_BYTES``). On the folded conv path (``ConvBackbone``) each
    chunk is converted to float once and read by every backbone: the conversion is about a
    quarter of a no-grad conv pass on the CPU."""
    B, H, W, C = images.shape
    chunk = B
    if images.device.type == "cpu":
        chunk = max(1, _CPU_CHUNK_BYTES // (H * W * C * 4))
    folded = all(
        isinstance(e.backbone, ConvBackbone) and e.backbone.fold_input_scale for e in encoders
    )
    maps: list[list[torch.Tensor]] = [[] for _ in encoders]
    for part in images.split(chunk):
        shared = ConvBackbone.uint8_input(part) if folded else None
        for out, encoder in zip(maps, encoders, strict=True):
            if shared is not None:
                out.append(encoder.backbone.forward_unscaled(shared))
            else:
                out.append(encoder.backbone(_to_float(part)))
    return [torch.cat(parts) for parts in maps]


def _to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float32 (B, 3, H, W) in [0, 1], channels-last memory (the permute)."""
    # In-place scaling of a fresh float copy: one pass fewer over the largest tensor.
    return images.permute(0, 3, 1, 2).to(torch.float32, copy=True).mul_(1.0 / 255.0)


def symlog(x: torch.Tensor) -> torch.Tensor:
    """sign(x) * log(1 + |x|): about x near 0, logarithmic far out (DreamerV3's input squash)."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


class StateEncoder(nn.Module):
    """Proprioception: float32 (B, D) -> [symlog] -> Linear -> LayerNorm -> Tanh -> (B, latent_dim).

    state_input "symlog" (default) squashes each entry first. The LayerNorm normalizes the
    projection by its spread, which the largest inputs set: on the twin's reach, the TCP's offset
    from its reset pose reaches 10-20 action steps, and a goal offset of half a step then moved
    the latent by a twentieth of what it moves near the reset pose. Policies stopped 16-25 mm
    short of goals far from their start. Symlog keeps small entries about as they are (0.5 ->
    0.41) and brings large ones to a few units (11 -> 2.5). "raw": no squash (the old encoder).
    """

    def __init__(self, state_dim: int, latent_dim: int, state_input: str = "symlog") -> None:
        super().__init__()
        if state_input not in STATE_INPUTS:
            raise ValueError(f"state_input={state_input!r}; allowed: {', '.join(STATE_INPUTS)}")
        self.squash = state_input == "symlog"
        self.net = nn.Sequential(
            nn.Linear(state_dim, latent_dim), nn.LayerNorm(latent_dim), nn.Tanh()
        )

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.net(symlog(state) if self.squash else state)


class ObservationEncoder(nn.Module):
    """All cameras + state -> one latent (B, out_dim): camera latents (sorted names), then state.

    image_shapes: camera name -> (H, W, 3). out_dim = len(cameras) * latent_dim + state_latent_dim.
    """

    def __init__(
        self,
        image_shapes: dict[str, tuple[int, int, int]],
        state_dim: int,
        encoder: str = "conv",
        latent_dim: int = 256,
        state_latent_dim: int = 64,
        num_spatial_features: int = 8,
        conv_preset: str = "standard",
        state_input: str = "symlog",
    ) -> None:
        super().__init__()
        self.camera_names = sorted(image_shapes)
        self.cameras = nn.ModuleDict(
            {
                name: ImageEncoder(
                    make_backbone(encoder, conv_preset),
                    image_shapes[name],
                    latent_dim,
                    num_spatial_features,
                )
                for name in self.camera_names
            }
        )
        self.state = StateEncoder(state_dim, state_latent_dim, state_input)
        self.out_dim = len(self.camera_names) * latent_dim + state_latent_dim

    def backbones(self) -> list[nn.Module]:
        """Each camera's backbone (what pretrained weights load into and freezing fixes)."""
        return [self.cameras[name].backbone for name in self.camera_names]

    @property
    def folds_input_scale(self) -> bool:
        """Every camera's backbone takes float images in [0, 255] (``forward_unscaled``)."""
        return all(isinstance(b, ConvBackbone) and b.fold_input_scale for b in self.backbones())

    def unscaled_feature_maps(self, images: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each camera's backbone feature map (B, C, h, w) of float (B, 3, H, W) images in
        [0, 255] by camera name (``ShiftedFloatImages``); only where ``folds_input_scale``."""
        return {
            name: self.cameras[name].backbone.forward_unscaled(images[name])
            for name in self.camera_names
        }

    def feature_maps(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each camera's backbone feature map (B, C, h, w), by camera name."""
        return {name: self.cameras[name].feature_map(obs[name]) for name in self.camera_names}

    def feature_maps_with(
        self, other: ObservationEncoder, obs: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``feature_maps`` of this encoder and of ``other`` (same cameras, e.g. the target
        encoder) for the same obs, each camera's images converted once for both
        (``camera_feature_maps``)."""
        mine, theirs = {}, {}
        for name in self.camera_names:
            pair = [self.cameras[name], other.cameras[name]]
            mine[name], theirs[name] = camera_feature_maps(pair, obs[name])  # type: ignore[list-item]
        return mine, theirs

    def forward(
        self, obs: dict[str, torch.Tensor], feature_maps: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """obs -> (B, out_dim). feature_maps: the backbones' output for these obs if already
        computed (``feature_maps``; e.g. by frozen backbones shared with the target encoder),
        so the backbones do not run again."""
        if feature_maps is None:
            feature_maps = self.feature_maps(obs)
        latents = [self.cameras[name].embed(feature_maps[name]) for name in self.camera_names]
        latents.append(self.state(obs[STATE_KEY]))
        return torch.cat(latents, dim=-1)


def build_observation_encoder(spec: Any, config: Any) -> ObservationEncoder:
    """The observation encoder a ``SACConfig`` describes for checked spaces (``check_spaces``'s
    spec: camera shapes, state dim), with the pretrained backbone weights loaded and frozen as
    configured. The one builder of the SAC learner, the actor's policy and behaviour cloning;
    call it inside the caller's seeded RNG (loading and freezing draw no random numbers)."""
    encoder = ObservationEncoder(
        spec.image_shapes,
        spec.state_dim,
        config.encoder,
        config.latent_dim,
        config.state_latent_dim,
        config.num_spatial_features,
        config.conv_preset,
        config.state_input,
    )
    if config.pretrained_encoder_path is not None:
        for backbone in encoder.backbones():
            load_backbone_weights(backbone, config.pretrained_encoder_path)
    if config.freeze_encoder:
        for backbone in encoder.backbones():
            backbone.requires_grad_(False)
    return encoder
