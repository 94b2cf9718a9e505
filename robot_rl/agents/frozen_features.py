"""The agent's frozen backbones as a ``FrameEncoder`` for replay feature caches.

``attach_feature_caches(agent, buffers)`` gives each buffer its own ``FeatureCache`` over the
agent's (online) encoder's frozen backbones, so every stored frame is encoded once and updates
train on its cached maps (see ``robot_rl.data.feature_cache`` and ``SACConfig.feature_cache``).
A backbone that trains would make every cached map stale after the next optimizer step, so a
cache of one is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from robot_rl.agents.encoders import ObservationEncoder
from robot_rl.data.feature_cache import FeatureCache
from robot_rl.data.replay import ReplayBuffer

# Frames per backbone call when filling a cache: bounds the float copies held at once.
ENCODE_CHUNK_FRAMES = 128


class FrozenBackbones:
    """An ``ObservationEncoder``'s camera backbones, all frozen, encoding stored frames.

    encoder: the agent's online encoder (its backbones are the target encoder's too: frozen
    backbones stay equal under Polyak averaging). image_shapes: camera -> (H, W, 3) of the
    stored frames. device: where the backbones run.
    Raises ValueError if a backbone has a parameter that trains, or there is no camera.
    """

    def __init__(
        self,
        encoder: ObservationEncoder,
        image_shapes: dict[str, tuple[int, int, int]],
        device: torch.device | str = "cpu",
    ) -> None:
        if sorted(image_shapes) != encoder.camera_names:
            raise ValueError(
                f"feature cache: image_shapes cameras {sorted(image_shapes)} differ from the "
                f"encoder's {encoder.camera_names}"
            )
        if not encoder.camera_names:
            raise ValueError("feature cache: the observation has no camera, nothing to cache")
        for name in encoder.camera_names:
            training = [
                n for n, p in encoder.cameras[name].backbone.named_parameters() if p.requires_grad
            ]
            if training:
                raise ValueError(
                    f"feature cache on camera {name!r}: its backbone trains ({len(training)} "
                    f"parameters require grad, e.g. {training[0]!r}), so cached maps would be "
                    "stale after one update; allowed only with freeze_encoder: true (and "
                    "pretrained_encoder_path), or set feature_cache: off"
                )
        self._encoder = encoder
        self._device = torch.device(device)
        self._image_shapes: dict[str, tuple[int, int, int]] = {}
        self._feature_shapes: dict[str, tuple[int, int, int]] = {}
        for name in encoder.camera_names:
            C, h, w, _ = encoder.cameras[name].spatial.kernel.shape
            self._feature_shapes[name] = (int(C), int(h), int(w))
            self._image_shapes[name] = tuple(image_shapes[name])  # type: ignore[assignment]

    @property
    def image_shapes(self) -> dict[str, tuple[int, int, int]]:
        """Camera -> (H, W, 3) uint8."""
        return dict(self._image_shapes)

    @property
    def feature_shapes(self) -> dict[str, tuple[int, int, int]]:
        """Camera -> (C, h, w) backbone feature map."""
        return dict(self._feature_shapes)

    @torch.no_grad()
    def encode(self, camera: str, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) -> float32 (N, C, h, w): the camera's backbone, no augmentation."""
        image_encoder = self._encoder.cameras[camera]
        out = np.empty((len(images), *self._feature_shapes[camera]), np.float32)
        for start in range(0, len(images), ENCODE_CHUNK_FRAMES):
            part = torch.from_numpy(images[start : start + ENCODE_CHUNK_FRAMES]).to(self._device)
            maps = image_encoder.feature_map(part).float().cpu().numpy()
            out[start : start + len(maps)] = maps
        return out

    def weights_version(self) -> int:
        """Sum of the backbones' tensors' in-place version counters: loading weights into them
        (``load_state_dict`` copies in place) changes it."""
        return sum(
            t._version
            for backbone in self._encoder.backbones()
            for t in (*backbone.parameters(), *backbone.buffers())
        )


def attach_feature_caches(agent: Any, buffers: Iterable[ReplayBuffer], dtype: str) -> None:
    """Give each of ``buffers`` its own ``FeatureCache`` (``dtype`` "float16" or "float32") over
    ``agent.encoder``'s frozen backbones. ValueError if a backbone trains (see
    ``FrozenBackbones``)."""
    frames = FrozenBackbones(agent.encoder, agent.spec.image_shapes, agent.device)
    for buffer in buffers:
        buffer.attach_feature_cache(FeatureCache(frames, dtype))


def attach_configured_feature_caches(agent: Any, buffers: Iterable[ReplayBuffer]) -> bool:
    """``attach_feature_caches`` where ``agent.config`` asks for it: ``freeze_encoder`` with
    ``feature_cache`` not "off", and at least one camera. True if caches were attached."""
    config = agent.config
    if not (config.freeze_encoder and config.feature_cache != "off" and agent.spec.image_shapes):
        return False
    attach_feature_caches(agent, buffers, config.feature_cache)
    return True
