"""open_clip image and text towers, loaded from local files only.

Sources (``load_backbone``):
- ``local-dir:PATH``: a folder with ``open_clip_config.json`` ({"model_cfg": ..., "preprocess_cfg":
  ...}) and the weights (``open_clip_model.safetensors`` or another checkpoint open_clip finds).
  The preprocessing travels with the weights, so it is always the right one.
- a checkpoint file (``.safetensors``, ``.bin``, ``.pt``) with ``model_name``, one of open_clip's
  built-in configs (``ViT-B-32``, ...), and optionally a ``preprocess`` JSON file
  ({"mean": [...], "std": [...], "size": N}); without it the config's defaults apply.
- ``hf-hub:ORG/REPO``: only if it is already in the Hugging Face cache.

Nothing is downloaded: ``HF_HUB_OFFLINE=1`` is set before open_clip runs, and a source that is not
on disk raises ``MissingWeightsError`` saying exactly what to put where. There are no silent
random weights: a backbone always comes from a file.

``ClipBackbone.embed_images`` takes uint8 (B, H, W, 3) RGB frames (a live frame or a whole
buffer, batch-first) and returns L2-normalized float32 (B, D) embeddings; ``embed_texts`` caches
its answers per prompt.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the torch idiom

log = logging.getLogger(__name__)

CONFIG_FILE = "open_clip_config.json"
CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


class MissingWeightsError(FileNotFoundError):
    """The backbone's files are not where the config says; the message says what to put where."""


@dataclass(frozen=True)
class Preprocess:
    """Resize (shorter side) -> centre crop to ``size`` -> normalize, on batches of frames."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @staticmethod
    def from_config(cfg: dict[str, Any], default_size: int) -> Preprocess:
        size = cfg.get("size", default_size)
        size = int(size[0] if isinstance(size, list | tuple) else size)
        mean = tuple(float(v) for v in cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)))
        std = tuple(float(v) for v in cfg.get("std", (0.26862954, 0.26130258, 0.27577711)))
        return Preprocess(size, mean, std)  # type: ignore[arg-type]

    def __call__(self, frames: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(frames) if not isinstance(frames, torch.Tensor) else frames)
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"frames {tuple(x.shape)} {x.dtype}; expected uint8 (B, H, W, 3)")
        x = x.to(device).permute(0, 3, 1, 2).float() / 255.0
        h, w = x.shape[-2:]
        scale = self.size / min(h, w)
        new_h, new_w = max(self.size, round(h * scale)), max(self.size, round(w * scale))
        if (new_h, new_w) != (h, w):
            x = F.interpolate(x, (new_h, new_w), mode="bicubic", align_corners=False,
                              antialias=True).clamp_(0.0, 1.0)  # fmt: skip
        top, left = (new_h - self.size) // 2, (new_w - self.size) // 2
        x = x[..., top : top + self.size, left : left + self.size]
        mean = torch.tensor(self.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=device).view(1, 3, 1, 1)
        return (x - mean) / std


class ClipBackbone:
    """A loaded open_clip model (eval mode, frozen unless a caller fine-tunes it)."""

    def __init__(self, model: Any, tokenizer: Any, preprocess: Preprocess, name: str,
                 device: str | torch.device = "cpu") -> None:  # fmt: skip
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.name = name
        self.device = torch.device(device)
        self._text_cache: dict[str, torch.Tensor] = {}

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[-1])

    @torch.no_grad()
    def embed_images(self, frames: np.ndarray | torch.Tensor, batch: int = 64) -> torch.Tensor:
        """(B, D) L2-normalized float32 image embeddings of uint8 (B, H, W, 3) frames."""
        out = []
        for start in range(0, len(frames), batch):
            x = self.preprocess(frames[start : start + batch], self.device)
            out.append(F.normalize(self.model.encode_image(x).float(), dim=-1))
        return torch.cat(out) if out else torch.empty(0, self.embed_dim)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """(T, D) L2-normalized text embeddings, each prompt computed once and cached."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing:
            tokens = self.tokenizer(missing).to(self.device)
            embedded = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
            self._text_cache.update(zip(missing, embedded, strict=True))
        return torch.stack([self._text_cache[t] for t in texts])


def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"  # never download at run time, whatever the caller set


def load_backbone(
    source: str | Path,
    model_name: str | None = None,
    preprocess: str | Path | None = None,
    device: str = "cpu",
) -> ClipBackbone:
    """A backbone from local files (see the module docstring); MissingWeightsError if absent."""
    _offline()
    from robot_rl.extras import require

    open_clip = require("open_clip", "clip", "CLIP success detectors")

    source = str(source)
    if source.startswith("local-dir:"):
        folder = Path(source[len("local-dir:") :])
        config = folder / CONFIG_FILE
        weights = [p for p in folder.glob("*") if p.suffix in CHECKPOINT_SUFFIXES]
        if not config.is_file() or not weights:
            raise MissingWeightsError(
                f"{folder} must hold {CONFIG_FILE} and the weights (open_clip_model.safetensors); "
                "export them with open_clip on a machine with the model, and copy the folder here"
            )
        model, _, _ = open_clip.create_model_and_transforms(
            source, device=device, weights_only=True
        )
        cfg = json.loads(config.read_text()).get("preprocess_cfg", {})
        tokenizer = open_clip.get_tokenizer(source)
        name = f"local-dir:{folder.name}"
    elif source.startswith("hf-hub:"):
        try:
            model, _, _ = open_clip.create_model_and_transforms(
                source, device=device, weights_only=True
            )
            tokenizer = open_clip.get_tokenizer(source)
        except Exception as exc:  # huggingface_hub raises its own offline errors
            raise MissingWeightsError(
                f"{source} is not in the local Hugging Face cache ({exc.__class__.__name__}); "
                "download it on a machine with network access (huggingface-cli download) and copy "
                "the cache, or export it as a local-dir: folder"
            ) from None
        cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
        name = source
    else:
        path = Path(source)
        if not path.is_file():
            raise MissingWeightsError(
                f"checkpoint {path} does not exist; put the open_clip weights there or point "
                "reward.backbone at a local-dir: folder"
            )
        if not model_name:
            raise ValueError(
                f"checkpoint {path} needs model_name (an open_clip config, e.g. ViT-B-32)"
            )
        # weights_only: a .pt/.bin checkpoint is read without unpickling code (torch >= 2.6).
        model, _, _ = open_clip.create_model_and_transforms(
            model_name, pretrained=str(path), device=device, weights_only=True
        )
        tokenizer = open_clip.get_tokenizer(model_name)
        cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
        if preprocess is not None:
            preprocess_path = Path(preprocess)
            if not preprocess_path.is_file():
                raise MissingWeightsError(f"preprocess config {preprocess_path} does not exist")
            cfg = {**cfg, **json.loads(preprocess_path.read_text())}
        name = f"{model_name}:{path.name}"
    image_size = getattr(model.visual, "image_size", 224)
    size = image_size[0] if isinstance(image_size, list | tuple) else int(image_size)
    log.info("reward backbone %s loaded (%s)", name, device)
    return ClipBackbone(model, tokenizer, Preprocess.from_config(cfg, size), name, device)
