"""The fine-tuned success classifier: the HIL-SERL recipe, trained end to end on labelled frames.

Each camera has its own CNN encoder (the learner's ``ImageEncoder``: a small strided CNN or a
ResNet-10, a spatial learned embedding that keeps *where* features fire, Linear -> LayerNorm ->
Tanh); the camera latents are concatenated and an MLP head gives one success logit. Frames are
resized (area) to ``input_size`` inside the model, so it takes the env's frames as they come.

Training (``train_classifier``): split by episode into fit and calibration episodes, at most
``max_positives`` positive fit frames, binary cross-entropy on *balanced* batches (half positives,
half negatives: successes are rare; a quarter of the negatives are hard negatives, the frames
just before a success, near-identical to it, where false positives live), DrQ random-shift
augmentation (the random crop), AdamW. Then a temperature is fit on the calibration episodes, and
the threshold for a target precision is chosen there. Optionally the encoders start from
pretrained backbone weights (HIL-SERL uses a frozen ImageNet ResNet-10); ``freeze_encoder`` keeps
them fixed.

Saved as a folder: ``classifier.json`` (config, temperature, threshold) and
``classifier.safetensors`` (weights). No pickle.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the torch idiom
from robot_rl.rewards.calibration import fit_temperature, split_by_episode, threshold_for_precision
from robot_rl.rewards.dataset import FrameDataset
from torch import nn

from robot_rl.agents.encoders import (
    ImageEncoder,
    load_backbone_weights,
    make_backbone,
    random_shift,
)

log = logging.getLogger(__name__)

CONFIG_FILE = "classifier.json"
WEIGHTS_FILE = "classifier.safetensors"


@dataclass(frozen=True)
class ClassifierConfig:
    cameras: tuple[str, ...]
    input_size: int = 64  # frames are resized to input_size x input_size
    encoder: str = "conv"  # "conv" or "resnet10" (robot_rl.agents.encoders)
    latent_dim: int = 64
    num_spatial_features: int = 8
    hidden_dim: int = 128
    dropout: float = 0.1
    pretrained_encoder: str | None = None  # backbone weights file, loaded into every camera
    freeze_encoder: bool = False

    def __post_init__(self) -> None:
        if not self.cameras:
            raise ValueError("name the cameras the classifier looks at")
        if self.input_size < 16:
            raise ValueError(f"input_size={self.input_size}; need at least 16 pixels")
        object.__setattr__(self, "cameras", tuple(self.cameras))


@dataclass
class TrainConfig:
    steps: int = 1500
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 1e-4
    shift_pad: int = 4  # random-shift augmentation, in input_size pixels
    max_positives: int = 200
    calibration_fraction: float = 0.3
    target_precision: float = 0.99
    seed: int = 0
    # Hard negatives: this share of each batch's negatives comes from the last ``hard_window``
    # failure frames before a success (near-identical to it: where false positives live).
    hard_fraction: float = 0.25
    hard_window: int = 5
    k: int = 1  # the report's decision layer: frames in a row at the threshold


class FrameClassifier(nn.Module):
    """p(success | frames) for uint8 (B, H, W, 3) frames per camera."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        s = config.input_size
        self.encoders = nn.ModuleDict()
        for camera in config.cameras:
            backbone = make_backbone(config.encoder)
            if config.pretrained_encoder:
                load_backbone_weights(backbone, config.pretrained_encoder)
            if config.freeze_encoder:
                backbone.requires_grad_(False)
            self.encoders[camera] = ImageEncoder(
                backbone, (s, s, 3), config.latent_dim, config.num_spatial_features
            )
        self.head = nn.Sequential(
            nn.Linear(len(config.cameras) * config.latent_dim, config.hidden_dim),
            nn.LayerNorm(config.hidden_dim),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden_dim, 1),
        )
        self.temperature = 1.0
        self.threshold = 0.5  # the decision layer's theta_on, chosen for a target precision

    @property
    def cameras(self) -> tuple[str, ...]:
        return self.config.cameras

    def resize(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) at any size -> uint8 (B, s, s, 3) (area resampling)."""
        x = torch.as_tensor(frames)
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"frames {tuple(x.shape)} {x.dtype}; expected uint8 (B, H, W, 3)")
        s = self.config.input_size
        if x.shape[1:3] == (s, s):
            return x
        y = F.interpolate(x.permute(0, 3, 1, 2).float(), (s, s), mode="area")
        return y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()

    def logits(self, frames: dict[str, torch.Tensor], resized: bool = False) -> torch.Tensor:
        """(B,) logits before the temperature."""
        missing = [c for c in self.cameras if c not in frames]
        if missing:
            raise KeyError(f"frames lack camera(s) {missing}; the classifier needs {self.cameras}")
        latents = [
            self.encoders[c](frames[c] if resized else self.resize(frames[c])) for c in self.cameras
        ]
        return self.head(torch.cat(latents, dim=-1)).squeeze(-1)

    @torch.no_grad()
    def score(self, frames: dict[str, np.ndarray], batch: int = 256) -> np.ndarray:
        """(B,) calibrated success probabilities (eval mode, batch-first)."""
        was_training = self.training
        self.eval()
        try:
            n = len(next(iter(frames.values()))) if frames else 0
            out = []
            for i in range(0, max(n, 1), batch):
                part = {c: torch.as_tensor(np.asarray(f[i : i + batch])) for c, f in frames.items()}
                out.append(torch.sigmoid(self.logits(part) / self.temperature))
        finally:
            self.train(was_training)
        return torch.cat(out).numpy()

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"kind": "classifier", "config": asdict(self.config),
                "temperature": self.temperature, "threshold": self.threshold}  # fmt: skip
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_FILE))
        (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=1))
        return folder

    @staticmethod
    def load(folder: str | Path) -> FrameClassifier:
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(
                f"{folder} must hold {CONFIG_FILE} and {WEIGHTS_FILE}; train a classifier with "
                "robot-rl reward train --kind classifier"
            )
        meta = json.loads((folder / CONFIG_FILE).read_text())
        cfg = dict(meta["config"])
        cfg["pretrained_encoder"] = None  # the trained weights below replace them
        model = FrameClassifier(ClassifierConfig(**cfg))
        model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
        model.temperature = float(meta.get("temperature", 1.0))
        model.threshold = float(meta.get("threshold", 0.5))
        return model.eval()


def train_classifier(
    data: FrameDataset, config: ClassifierConfig, train: TrainConfig | None = None
) -> tuple[FrameClassifier, dict[str, float]]:
    """Fit, calibrate and threshold a classifier (see the module docstring); with its report."""
    train = train or TrainConfig()
    torch.manual_seed(train.seed)
    fit_mask, calib_mask = split_by_episode(
        data.episode, train.calibration_fraction, train.seed, data.label
    )
    rng = np.random.default_rng(train.seed)
    positives = np.flatnonzero(fit_mask & data.label)
    if len(positives) > train.max_positives:  # the labelled-success budget
        drop = rng.choice(positives, len(positives) - train.max_positives, replace=False)
        fit_mask = fit_mask.copy()
        fit_mask[drop] = False
    pos, neg = np.flatnonzero(fit_mask & data.label), np.flatnonzero(fit_mask & ~data.label)
    if not len(pos) or not len(neg):
        raise ValueError(
            f"the fit episodes hold {len(pos)} positive and {len(neg)} negative frames; the "
            "classifier needs both (collect failures as well as successes)"
        )
    hard = np.intersect1d(neg, _before_success(data, train.hard_window))
    n_hard = round(train.hard_fraction * (train.batch_size // 2)) if len(hard) else 0
    model = FrameClassifier(config)
    frames = {c: model.resize(data.frames[c]) for c in config.cameras}  # resized once
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    half = max(1, train.batch_size // 2)
    y = torch.cat([torch.ones(half), torch.zeros(half)])
    model.train()
    start, losses = time.perf_counter(), []
    for _ in range(train.steps):
        index = torch.as_tensor(np.concatenate([rng.choice(pos, half), rng.choice(hard, n_hard),
                                                rng.choice(neg, half - n_hard)]))  # fmt: skip
        batch = {c: random_shift(frames[c][index], train.shift_pad) for c in config.cameras}
        loss = F.binary_cross_entropy_with_logits(model.logits(batch, resized=True), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    fit_s = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        calib_logits = torch.cat([
            model.logits({c: frames[c][torch.as_tensor(part)] for c in config.cameras},
                         resized=True)
            for part in np.array_split(np.flatnonzero(calib_mask), max(1, calib_mask.sum() // 256))
        ])  # fmt: skip
    calib_y = data.label[calib_mask]
    if calib_y.any() and not calib_y.all():
        model.temperature = fit_temperature(calib_logits, torch.as_tensor(calib_y))
    else:
        log.warning("calibration episodes hold one class only: temperature left at 1")
    probs = torch.sigmoid(calib_logits / model.temperature).numpy()
    model.threshold = threshold_for_precision(probs, calib_y, train.target_precision)
    from robot_rl.rewards.decision import DecisionConfig
    from robot_rl.rewards.training import evaluate

    decision = DecisionConfig.from_threshold(model.threshold, train.k)
    report = evaluate(probs, calib_y, data.episode[calib_mask], model.threshold,
                      data.step[calib_mask], decision)  # fmt: skip
    report.update(
        fit_frames=float(fit_mask.sum()), fit_positives=float(len(pos)),
        hard_negatives=float(len(hard)),
        calibration_frames=float(calib_mask.sum()), temperature=model.temperature,
        final_loss=float(np.mean(losses[-50:])), first_loss=float(np.mean(losses[:50])),
        fit_s=fit_s,
    )  # fmt: skip
    log.info("classifier fit in %.1f s: loss %.3f -> %.3f, threshold %.3f, temperature %.2f",
             fit_s, report["first_loss"], report["final_loss"], model.threshold,
             model.temperature)  # fmt: skip
    return model, report


def _before_success(data: FrameDataset, window: int) -> np.ndarray:
    """Indices of the ``window`` frames before each episode's first success frame."""
    out = []
    for episode in np.unique(data.episode[data.label]):
        index = np.flatnonzero(data.episode == episode)
        index = index[np.argsort(data.step[index], kind="stable")]
        first = int(np.argmax(data.label[index]))
        out.extend(index[max(0, first - window) : first])
    return np.asarray(out, np.int64)
