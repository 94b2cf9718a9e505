"""The replay buffer's frozen-backbone feature cache: right map per frame, each frame encoded once,
never a stale map after a frame's slot is reused or the weights change.

A fake backbone maps each image to its pixel value (every pixel of a ``fakes.frame`` is the same,
and unique per frame here), so a test reads off which frame a cached map came from.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from robot_rl.data.feature_cache import FeatureCache
from robot_rl.data.replay import ReplayBuffer, sample_many
from tests.data.fakes import episode, pixel

CAMS = ("front", "wrist")
HW = (4, 4)


class PixelBackbone:
    """FrameEncoder fake: camera image -> (2, 1, 1) map [pixel, pixel + 1000]; logs every image."""

    def __init__(self) -> None:
        self.image_shapes = {cam: (*HW, 3) for cam in CAMS}
        self.feature_shapes = {cam: (2, 1, 1) for cam in CAMS}
        self.version = 0
        self.encoded: list[tuple[str, int]] = []  # (camera, pixel) of every image encoded

    def encode(self, camera: str, images: np.ndarray) -> np.ndarray:
        values = images[:, 0, 0, 0].astype(np.float32)
        self.encoded += [(camera, int(v)) for v in values]
        return np.stack([values, values + 1000], axis=1)[:, :, None, None]

    def weights_version(self) -> int:
        return self.version


def filled(episodes: int = 3, length: int = 10, capacity: int = 1000) -> ReplayBuffer:
    buffer = ReplayBuffer(capacity, gamma=0.9, n_step=1, seed=0)
    for e in range(episodes):
        for t in episode(e, length, cams=CAMS, hw=HW):
            buffer.add(t)
    return buffer


def check_maps(batch) -> set[tuple[int, int]]:
    """Assert every row's maps are its own frames' (per camera); the (episode, step) frames seen."""
    seen = set()
    for obs, maps in ((batch.obs, batch.obs_features), (batch.next_obs, batch.next_obs_features)):
        assert set(obs) == {"state"}  # no images gathered
        for row, (e, s, _) in enumerate(obs["state"].numpy()):
            seen.add((int(e), int(s)))
            for c, cam in enumerate(CAMS):
                expected = pixel(int(e), int(s), c)
                assert maps[cam][row, :, 0, 0].tolist() == [expected, expected + 1000]
    return seen


def test_batches_carry_each_frames_map_and_each_frame_is_encoded_once():
    backbone = PixelBackbone()
    buffer = filled()
    cache = FeatureCache(backbone, "float32")
    buffer.attach_feature_cache(cache)
    seen: set[tuple[int, int]] = set()
    for _ in range(30):
        batch = buffer.sample(16, minibatches=2)
        assert batch.obs_features["front"].shape == (16, 2, 1, 1)
        seen |= check_maps(batch)
    # Every image was encoded once, and exactly the frames some batch sampled were.
    assert max(Counter(backbone.encoded).values()) == 1
    for c, cam in enumerate(CAMS):
        assert {p for k, p in backbone.encoded if k == cam} == {pixel(e, s, c) for e, s in seen}
    assert cache.frames_encoded == len(seen) <= 3 * 11
    assert cache.frames_reused > 0 and cache.invalidations == 0


def test_a_reused_or_dropped_slot_is_encoded_again_not_served_stale():
    backbone = PixelBackbone()
    buffer = filled(episodes=1, capacity=10)
    cache = FeatureCache(backbone, "float16")
    buffer.attach_feature_cache(cache)
    check_maps(buffer.sample(64))
    first = cache.frames_encoded
    assert first > 0
    # FIFO: episode 1 pushes episode 0 out; its new frames are encoded when sampled.
    for t in episode(1, 10, cams=CAMS, hw=HW):
        buffer.add(t)
    seen = check_maps(buffer.sample(64))
    assert {e for e, _ in seen} == {1}
    assert cache.frames_encoded == first + len(seen)
    # clear() restarts the frame indices at 0: episode 2's frames take episode 0's slots.
    buffer.clear()
    for t in episode(2, 10, cams=CAMS, hw=HW):
        buffer.add(t)
    before = cache.frames_encoded
    seen = check_maps(buffer.sample(64))
    assert {e for e, _ in seen} == {2}
    assert cache.frames_encoded == before + len(seen)


def test_changed_backbone_weights_make_every_cached_map_stale():
    backbone = PixelBackbone()
    buffer = filled(episodes=1)
    cache = FeatureCache(backbone, "float32")
    buffer.attach_feature_cache(cache)
    buffer.sample(64)
    before = len(backbone.encoded)
    backbone.version = 1  # e.g. a checkpoint loaded into the agent
    seen = check_maps(buffer.sample(64))
    assert cache.invalidations == 1
    assert len(backbone.encoded) == before + len(CAMS) * len(seen)


def test_a_cache_attached_to_a_buffer_that_dropped_steps_serves_the_live_frames():
    buffer = filled(episodes=3, capacity=15)  # episode 0 and part of 1 are gone
    buffer.attach_feature_cache(FeatureCache(PixelBackbone(), "float32"))
    seen = check_maps(buffer.sample(64))
    assert {e for e, _ in seen} <= {1, 2} and 2 in {e for e, _ in seen}


def test_memory_per_cached_frame():
    cache = FeatureCache(PixelBackbone(), "float16")
    # Two cameras x (2, 1, 1) float16 maps + an int64 version stamp.
    assert cache.bytes_per_frame == 2 * 2 * 2 + 8
    assert FeatureCache(PixelBackbone(), "float32").bytes_per_frame == 2 * 2 * 4 + 8
    buffer = filled(episodes=1)
    empty_bytes = buffer.nbytes
    buffer.attach_feature_cache(cache)
    assert buffer.nbytes > empty_bytes  # the cache's rows are counted with the buffer


def test_bad_caches_are_refused():
    with pytest.raises(ValueError, match="dtype='bfloat16'; allowed: float16, float32"):
        FeatureCache(PixelBackbone(), "bfloat16")
    buffer, cache = filled(episodes=1), FeatureCache(PixelBackbone())
    buffer.attach_feature_cache(cache)
    with pytest.raises(ValueError, match="one cache"):
        buffer.attach_feature_cache(FeatureCache(PixelBackbone()))
    with pytest.raises(ValueError, match="one cache"):
        filled(episodes=1).attach_feature_cache(cache)
    # Cached and uncached buffers cannot make one batch (maps and images would mix).
    with pytest.raises(ValueError, match="all have a feature cache"):
        sample_many([(buffer, 4), (filled(episodes=1), 4)])
    # A cache for other images: refused when attached, or at the first step stored.
    other = PixelBackbone()
    other.image_shapes = {cam: (8, 8, 3) for cam in CAMS}
    with pytest.raises(ValueError, match="encodes images"):
        filled(episodes=1).attach_feature_cache(FeatureCache(other))
    empty = ReplayBuffer(100)
    empty.attach_feature_cache(FeatureCache(other))
    with pytest.raises(ValueError, match="encodes images"):
        empty.add(episode(0, 1, cams=CAMS, hw=HW)[0])
    assert len(empty) == 0


def test_filling_the_cache_up_front_encodes_every_held_frame_once():
    backbone = PixelBackbone()
    buffer = filled(episodes=3, length=10, capacity=15)  # episode 1's steps 5..9, episode 2
    with pytest.raises(ValueError, match="no feature cache is attached"):
        buffer.fill_feature_cache()
    cache = FeatureCache(backbone, "float32")
    buffer.attach_feature_cache(cache)
    encoded = buffer.fill_feature_cache(chunk_frames=4)
    assert encoded == cache.frames_encoded == len(backbone.encoded) // len(CAMS)
    assert encoded == 6 + 11  # episode 1's frames 5..10, episode 2's 0..10
    assert buffer.fill_feature_cache() == 0
    check_maps(buffer.sample(64))
    assert cache.frames_encoded == encoded  # sampling found them all cached
