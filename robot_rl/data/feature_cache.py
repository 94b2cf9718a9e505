"""Feature maps of frozen backbones, cached per stored camera frame beside a replay buffer.

With a frozen (pretrained) backbone, a stored frame's feature map never changes, so running the
backbone on every sampled frame in every update (2 x batch x cameras images per critic step) is
work done again and again. A ``FeatureCache`` attached to a ``ReplayBuffer``
(``ReplayBuffer.attach_feature_cache``) passes each stored frame through the backbones once, the
first time a batch samples it, keeps the maps, and from then on the buffer's batches carry those
maps (``Batch.obs_features`` / ``next_obs_features``, camera -> (B, C, h, w)) instead of images.
The learner then trains only what sits on top of the backbones: the spatial-embedding heads, the
critic and actor MLPs and the temperature (``SACAgent.update``).

Keys. A cached map is addressed by its frame's global index in the buffer's frame columns (the
index obs and next_obs share), so it lives exactly as long as its frame: rows are added with the
frames, freed with them when the FIFO drops old steps, and dropped by ``ReplayBuffer.clear``.
Each row carries the backbones' weights version it was computed with (``FrameEncoder``); when the
weights change (a checkpoint loaded into the agent) every row is stale and is recomputed on its
next sample, and ``invalidations`` counts it.

Memory per frame: the sum over cameras of C * h * w * itemsize, plus 8 bytes of version. For the
ResNet-10 at 128x128 (512 x 4 x 4 per camera) that is 16 KiB per camera in float16 (32 KiB in
float32), against 48 KiB of uint8 image that the buffer keeps as well.

The cache is derived data: never saved in a checkpoint or an episode file. Threads: every method
runs under the owning buffer's lock (the buffer calls them); encoding misses runs there too.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from robot_rl.data._chunked import ChunkedColumn

FEATURE_DTYPES = {"float16": np.float16, "float32": np.float32}
_NOT_ENCODED = -1


class FrameEncoder(Protocol):
    """What the cache needs of the frozen backbones (``robot_rl.agents.frozen_features``)."""

    @property
    def image_shapes(self) -> dict[str, tuple[int, int, int]]:
        """Camera -> the (H, W, 3) uint8 images it encodes."""
        ...

    @property
    def feature_shapes(self) -> dict[str, tuple[int, int, int]]:
        """Camera -> the (C, h, w) feature map of one image."""
        ...

    def encode(self, camera: str, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) -> float32 (N, C, h, w), the camera's backbone feature maps."""
        ...

    def weights_version(self) -> int:
        """A number that changes whenever any backbone's weights change (>= 0)."""
        ...


class FeatureCache:
    """Per-frame feature maps for one replay buffer.

    encoder: the frozen backbones (``FrameEncoder``); dtype: "float16" (half the memory; each
    value rounded to 11 significant bits) or "float32" (the backbone's output as computed).
    Counters: ``frames_encoded`` (frames passed through the backbones, all cameras at once),
    ``frames_reused`` (distinct sampled frames served from the cache, per batch part),
    ``invalidations`` (times the backbone weights were found changed, so every row went stale).
    """

    def __init__(self, encoder: FrameEncoder, dtype: str = "float16") -> None:
        if dtype not in FEATURE_DTYPES:
            raise ValueError(f"feature cache dtype={dtype!r}; allowed: {', '.join(FEATURE_DTYPES)}")
        self.encoder = encoder
        self.dtype = np.dtype(FEATURE_DTYPES[dtype])
        self.image_shapes = dict(encoder.image_shapes)
        self.feature_shapes = dict(encoder.feature_shapes)
        if sorted(self.image_shapes) != sorted(self.feature_shapes):
            raise ValueError(
                f"frame encoder cameras {sorted(self.image_shapes)} and feature maps "
                f"{sorted(self.feature_shapes)} differ"
            )
        self.frames_encoded = 0
        self.frames_reused = 0
        self.invalidations = 0
        self._version = int(encoder.weights_version())
        self.attached = False  # set by the buffer that owns it (one buffer per cache)
        self.reset(0)

    @property
    def bytes_per_frame(self) -> int:
        """Bytes one cached frame takes: every camera's map plus its version stamp."""
        maps = sum(int(np.prod(s)) for s in self.feature_shapes.values()) * self.dtype.itemsize
        return maps + np.dtype(np.int64).itemsize

    @property
    def nbytes(self) -> int:
        """Bytes held, chunks counted as allocated."""
        return self._stamps.nbytes + sum(c.nbytes for c in self._maps.values())

    # -- called by the owning ReplayBuffer, under its lock ---------------------------------------
    def reset(self, start: int) -> None:
        """Drop every row; the next frame appended gets global index ``start``."""
        shapes = self.feature_shapes
        self._maps = {cam: ChunkedColumn(shape, self.dtype, start) for cam, shape in shapes.items()}
        self._stamps = ChunkedColumn((), np.int64, start)

    def append_frame(self) -> None:
        """A row for the frame just stored (not encoded until first sampled)."""
        for column in self._maps.values():
            column.append(0)
        self._stamps.append(_NOT_ENCODED)

    def release_before(self, frame: int) -> None:
        """Free the rows of frames the buffer has dropped (index < ``frame``)."""
        for column in self._maps.values():
            column.release_before(frame)
        self._stamps.release_before(frame)

    def encode_missing(self, images: dict[str, ChunkedColumn], frames: np.ndarray) -> int:
        """Encode those of ``frames`` (int64 (N,), sorted, unique, live) not cached with the
        current backbone weights, from the image columns ``images``; returns how many."""
        version = int(self.encoder.weights_version())
        if version != self._version:
            self._version = version
            self.invalidations += 1
        stamps = np.empty(len(frames), np.int64)
        self._stamps.gather(frames, stamps)
        missing = frames[stamps != version]
        if len(missing):
            for cam, column in self._maps.items():
                batch = np.empty((len(missing), *self.image_shapes[cam]), np.uint8)
                images[cam].gather(missing, batch)
                column.scatter(missing, self.encoder.encode(cam, batch).astype(self.dtype))
            self._stamps.scatter(missing, np.full(len(missing), version, np.int64))
            self.frames_encoded += len(missing)
        return len(missing)

    def gather(
        self,
        images: dict[str, ChunkedColumn],
        obs_frames: np.ndarray,
        next_frames: np.ndarray,
        out: dict[str, np.ndarray],
        rows: slice,
    ) -> None:
        """Write the maps of frames ``obs_frames`` and ``next_frames`` (int64 (N,), live) into
        ``out["obs_features.<camera>"][rows]`` and ``out["next_obs_features.<camera>"][rows]``,
        first encoding (from the buffer's image columns ``images``) the frames not yet cached or
        cached with other weights."""
        frames = np.unique(np.concatenate([obs_frames, next_frames]))
        self.frames_reused += len(frames) - self.encode_missing(images, frames)
        for cam, column in self._maps.items():
            column.gather(obs_frames, out["obs_features." + cam][rows])
            column.gather(next_frames, out["next_obs_features." + cam][rows])
