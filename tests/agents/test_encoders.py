"""DrQ random shift, image encoders, pretrained backbone weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robot_rl.agents import encoders
from robot_rl.agents.encoders import (
    ConvBackbone,
    ObservationEncoder,
    ResNet10Backbone,
    ShiftedFloatImages,
    _shift_by_gather,
    _shift_by_slices,
    load_backbone_weights,
    make_backbone,
    random_shift,
    save_backbone_weights,
)


def coordinate_images(batch_size: int, side: int = 16) -> torch.Tensor:
    """(B, side, side, 3) uint8 where pixel (h, w) holds h * 16 + w in every channel."""
    h, w = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    pattern = (h * 16 + w).astype(np.uint8)
    return torch.from_numpy(np.repeat(pattern[None, :, :, None], 3, axis=-1)).repeat(
        batch_size, 1, 1, 1
    )


def test_random_shift_is_an_edge_replicated_shifted_copy():
    pad = 4
    images = coordinate_images(64)
    out = random_shift(images, pad, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    shifts = set()
    for b in range(64):
        # An interior pixel (8, 8) moved by (dy, dx) holds (8 + dy) * 16 + (8 + dx).
        centre = int(out[b, 8, 8, 0])
        dy, dx = centre // 16 - 8, centre % 16 - 8
        assert abs(dy) <= pad and abs(dx) <= pad
        shifts.add((dy, dx))
        # Reference: replicate padding == clipping the source coordinates to the image.
        rows = np.clip(np.arange(16) + dy, 0, 15)
        cols = np.clip(np.arange(16) + dx, 0, 15)
        expected = (rows[:, None] * 16 + cols[None, :]).astype(np.uint8)
        for c in range(3):
            assert np.array_equal(out[b, :, :, c].numpy(), expected)
    assert len(shifts) > 10, "each sample gets its own shift"


def test_random_shift_pad_zero_is_identity():
    images = coordinate_images(4)
    assert torch.equal(random_shift(images, 0), images)


def test_random_shift_same_generator_state_same_shifts():
    images = coordinate_images(8)
    a = random_shift(images, 2, torch.Generator().manual_seed(3))
    b = random_shift(images, 2, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_random_shift_rejects_unbatched_images():
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
        random_shift(torch.zeros(16, 16, 3, dtype=torch.uint8), 4)


@pytest.mark.parametrize("encoder", ["conv", "resnet10"])
def test_observation_encoder_shape_and_range(encoder):
    torch.manual_seed(0)
    shapes = {"wrist": (32, 32, 3), "front": (40, 32, 3)}
    net = ObservationEncoder(
        shapes, state_dim=5, encoder=encoder, latent_dim=16, state_latent_dim=8
    )
    assert net.camera_names == ["front", "wrist"]
    assert net.out_dim == 2 * 16 + 8
    obs = {name: torch.randint(0, 256, (3, *s), dtype=torch.uint8) for name, s in shapes.items()}
    obs["state"] = torch.randn(3, 5)
    z = net(obs)
    assert z.shape == (3, 40)
    assert torch.isfinite(z).all() and z.abs().max() <= 1.0  # every part ends in tanh


def test_conv_backbone_at_128_gives_a_16x16_map():
    out = ConvBackbone()(torch.zeros(1, 3, 128, 128))
    assert out.shape == (1, 32, 16, 16)


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_backbone_weights_round_trip(tmp_path, suffix):
    torch.manual_seed(0)
    source = ResNet10Backbone()
    path = tmp_path / f"resnet10{suffix}"
    save_backbone_weights(source, path)
    torch.manual_seed(1)
    target = ResNet10Backbone()
    load_backbone_weights(target, path)
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_missing_weights_file_says_what_to_do(tmp_path):
    path = tmp_path / "nowhere.pt"
    with pytest.raises(FileNotFoundError, match="pretrained_encoder_path") as info:
        load_backbone_weights(ResNet10Backbone(), path)
    assert str(path) in str(info.value)
    assert "never downloaded" in str(info.value)


def test_weights_of_another_backbone_are_rejected(tmp_path):
    path = tmp_path / "conv.pt"
    save_backbone_weights(ConvBackbone(), path)
    with pytest.raises(ValueError, match="do not fit the ResNet10Backbone") as info:
        load_backbone_weights(ResNet10Backbone(), path)
    assert "missing keys" in str(info.value) and "save_backbone_weights" in str(info.value)


def test_wrong_shapes_are_rejected(tmp_path):
    path = tmp_path / "wide.pt"
    save_backbone_weights(ConvBackbone(channels=(8, 32, 32)), path)
    with pytest.raises(ValueError, match=r"wrong shapes \['net.0"):
        load_backbone_weights(ConvBackbone(), path)


def test_unreadable_weights_file_is_rejected(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot be read"):
        load_backbone_weights(ConvBackbone(), path)


def test_chunked_cpu_encoding_equals_one_pass(monkeypatch):
    torch.manual_seed(0)
    net = ObservationEncoder({"front": (16, 16, 3)}, state_dim=2, latent_dim=8, state_latent_dim=4)
    obs = {"front": torch.randint(0, 256, (10, 16, 16, 3), dtype=torch.uint8)}
    obs["state"] = torch.randn(10, 2)
    whole = net(obs)
    # 3 images (3 * 16 * 16 * 3 * 4 bytes) per chunk: chunks of 3, 3, 3, 1.
    monkeypatch.setattr(encoders, "_CPU_CHUNK_BYTES", 3 * 16 * 16 * 3 * 4)
    chunked = net(obs)
    assert torch.allclose(whole, chunked, atol=1e-6)


def test_uint8_input_with_the_scale_folded_into_the_first_conv_equals_scaling_first():
    torch.manual_seed(0)
    backbone = ConvBackbone()
    images = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8)
    scaled_first = backbone(images.permute(0, 3, 1, 2).float() / 255.0)
    folded = backbone.forward_uint8(images)
    assert folded.shape == scaled_first.shape == (3, 32, 4, 4)
    assert torch.allclose(folded, scaled_first, atol=1e-5)
    # The weight gradient is the same too (chain rule through W / 255).
    grads = []
    for fn in (lambda: backbone(images.permute(0, 3, 1, 2).float() / 255.0),
               lambda: backbone.forward_uint8(images)):  # fmt: skip
        backbone.zero_grad()
        fn().square().sum().backward()
        grads.append(backbone.net[0].weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_precomputed_feature_maps_give_the_same_latent_as_a_full_pass():
    torch.manual_seed(0)
    net = ObservationEncoder({"front": (16, 16, 3)}, state_dim=2, latent_dim=8, state_latent_dim=4)
    obs = {"front": torch.randint(0, 256, (4, 16, 16, 3), dtype=torch.uint8)}
    obs["state"] = torch.randn(4, 2)
    maps = net.feature_maps(obs)
    assert set(maps) == {"front"} and maps["front"].shape[0] == 4
    assert torch.equal(net(obs, maps), net(obs))


@pytest.mark.parametrize("pad", [1, 4, 15])
def test_random_shift_cpu_block_copies_match_the_gather(pad):
    # The CPU path (block copy + replicated edges) and the gather (any device) agree for every
    # shift in range, including the largest a 16x16 image allows (|shift| = 15).
    images = torch.randint(0, 256, (40, 16, 16, 3), dtype=torch.uint8)
    shifts = torch.randint(-pad, pad + 1, (40, 2), generator=torch.Generator().manual_seed(pad))
    shifts[:4] = torch.tensor([[-pad, -pad], [pad, pad], [-pad, pad], [0, 0]])
    assert torch.equal(_shift_by_slices(images, shifts), _shift_by_gather(images, shifts))


@pytest.mark.parametrize("pad", [0, 4, 16])
def test_staged_float_images_are_the_shifted_images_converted(pad):
    # One pass (shift into a float buffer) gives exactly uint8_input(random_shift(...)) and
    # draws the same shifts: pad 4 by block copies, pad 16 (>= the 16-pixel side) by the gather.
    images = torch.randint(0, 256, (12, 16, 16, 3), dtype=torch.uint8)
    staged_gen, reference_gen = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    staged = ShiftedFloatImages().stage("obs/front", images, pad, staged_gen)
    reference = ConvBackbone.uint8_input(random_shift(images, pad, reference_gen))
    assert staged.dtype == torch.float32 and staged.shape == (12, 3, 16, 16)
    assert staged.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(staged, reference)
    assert torch.equal(staged_gen.get_state(), reference_gen.get_state())


def test_staging_reuses_the_buffer_and_fails_a_graph_that_still_reads_it():
    staging, g = ShiftedFloatImages(), torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 16, 16, 3), dtype=torch.uint8)
    backbone = ConvBackbone()
    first = staging.stage("obs/front", images, 4, g)
    loss = backbone.forward_unscaled(first).sum()
    second = staging.stage("obs/front", images, 4, g)
    assert second.data_ptr() == first.data_ptr()  # no new 50 MB tensor per call
    assert staging.stage("next/front", images, 4, g).data_ptr() != first.data_ptr()
    # The graph saved the first images for the stem's weight gradient; they were overwritten.
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_staging_rejects_what_is_not_uint8_batched_cpu_images():
    staging = ShiftedFloatImages()
    with pytest.raises(ValueError, match="must be uint8"):
        staging.stage("obs/front", torch.zeros(2, 16, 16, 3), 4, None)
    with pytest.raises(ValueError, match="must be uint8"):
        staging.stage("obs/front", torch.zeros(16, 16, 3, dtype=torch.uint8), 4, None)


@pytest.mark.skipif(encoders._CONV_RELU is None, reason="this torch build has no fused conv op")
def test_no_grad_pass_fuses_conv_and_relu_with_the_same_result(monkeypatch):
    torch.manual_seed(0)
    backbone = ConvBackbone()
    x = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8).permute(0, 3, 1, 2).float()
    trained = backbone.forward_unscaled(x)  # autograd on: the plain convs and ReLUs
    fused_op, post_ops = encoders._CONV_RELU, []

    def counting(*args: object) -> torch.Tensor:
        post_ops.append(args[7])
        return fused_op(*args)

    monkeypatch.setattr(encoders, "_CONV_RELU", counting)
    with torch.no_grad():
        fused = backbone.forward_unscaled(x)
    assert post_ops == ["relu"] * 3, "each of the 3 convs ran with its ReLU fused"
    assert torch.allclose(fused, trained, atol=1e-5)
    assert fused.min() >= 0 and (fused > 0).any()


def test_lean_conv_preset_strides_the_last_conv():
    images = torch.randint(0, 256, (2, 128, 128, 3), dtype=torch.uint8)
    assert make_backbone("conv").forward_uint8(images).shape == (2, 32, 16, 16)
    assert make_backbone("conv", "lean").forward_uint8(images).shape == (2, 32, 8, 8)
    with pytest.raises(ValueError, match="conv_preset='tiny'; allowed: standard, lean"):
        make_backbone("conv", "tiny")


def test_spatial_embedding_hands_a_channels_last_map_its_gradient_in_that_layout():
    # The gradient keeps the map's layout (so the ReLU and conv backwards stay channels-last)
    # and its values are those of a plain contiguous() copy.
    torch.manual_seed(0)
    spatial = encoders.SpatialLearnedEmbedding(channels=4, height=3, width=5, num_features=2)
    maps = torch.randn(6, 4, 3, 5).contiguous(memory_format=torch.channels_last)
    weights = torch.randn(6, 8)
    grads = []
    for forward in (spatial, lambda m: _plain_spatial(spatial, m)):
        leaf = maps.clone().requires_grad_(True)
        # A hook sees the gradient as the backward hands it on (``.grad`` of a leaf would be
        # copied into the leaf's layout whatever came in).
        leaf.register_hook(grads.append)
        (forward(leaf) * weights).sum().backward()
    assert grads[0].is_contiguous(memory_format=torch.channels_last)
    assert not grads[0].is_contiguous()
    torch.testing.assert_close(grads[0], grads[1])
    # A contiguous (NCHW) map gets an NCHW gradient.
    leaf = maps.contiguous().requires_grad_(True)
    leaf.register_hook(grads.append)
    spatial(leaf).sum().backward()
    assert grads[2].is_contiguous()


def _plain_spatial(spatial: encoders.SpatialLearnedEmbedding, maps: torch.Tensor) -> torch.Tensor:
    """By hand: out[b, c * F + f] = sum over (h, w) of maps[b, c] * kernel[c, :, :, f]."""
    return torch.einsum("bchw,chwf->bcf", maps, spatial.kernel).reshape(maps.shape[0], -1)


def test_symlog_is_odd_about_the_identity_near_zero_and_logarithmic_far_out():
    x = torch.linspace(-50.0, 50.0, 1001, dtype=torch.float64)
    y = encoders.symlog(x)
    torch.testing.assert_close(encoders.symlog(-x), -y)  # odd
    assert (torch.diff(y) > 0).all()  # strictly increasing: no two states collapse
    small = torch.tensor([1e-4, -1e-3], dtype=torch.float64)
    torch.testing.assert_close(encoders.symlog(small), small, rtol=1e-3, atol=0)
    # a decade out costs about ln 10 more, not 10x
    assert encoders.symlog(torch.tensor(100.0)) - encoders.symlog(torch.tensor(10.0)) < 2.4


def _latent_shift_from_a_small_entry(state_input: str, big: float) -> float:
    """How far a half-step change of one entry moves the state latent when another entry is
    ``big``, averaged over random encoders (their LayerNorm's scale is set by the big entry)."""
    shifts = []
    for seed in range(20):
        torch.manual_seed(seed)
        net = encoders.StateEncoder(16, 64, state_input)
        x = torch.zeros(1, 16)
        x[0, 1] = big  # the TCP's offset from its reset pose, in action steps
        x[0, 14] = 0.5  # the last half step to the goal
        moved = x.clone()
        moved[0, 14] = 0.0
        with torch.no_grad():
            shifts.append((net(x) - net(moved)).norm().item())
    return float(np.mean(shifts))


def test_symlog_state_keeps_a_small_entry_visible_beside_a_large_one():
    """The reach failure: a TCP 11 steps from its reset pose, a goal half a step away. Raw, the
    LayerNorm divides the goal offset's effect by the large entry's spread; squashed first, the
    small entry moves the latent several times more."""
    raw_far = _latent_shift_from_a_small_entry("raw", 11.0)
    raw_near = _latent_shift_from_a_small_entry("raw", 1.0)
    sym_far = _latent_shift_from_a_small_entry("symlog", 11.0)
    assert raw_far < 0.3 * raw_near  # the drowning, raw
    assert sym_far > 2.5 * raw_far  # squashed, the last half step still shows


def test_raw_state_input_feeds_the_state_unchanged_and_bad_names_are_rejected():
    torch.manual_seed(0)
    net = encoders.StateEncoder(3, 8, "raw")
    x = torch.tensor([[11.0, -0.5, 0.2]])
    torch.testing.assert_close(net(x), net.net(x))
    squashed = encoders.StateEncoder(3, 8, "symlog")
    squashed.load_state_dict(net.state_dict())  # no parameters of its own: same checkpoints
    torch.testing.assert_close(squashed(x), net.net(encoders.symlog(x)))
    with pytest.raises(ValueError, match="state_input='tanh'; allowed: symlog, raw"):
        encoders.StateEncoder(3, 8, "tanh")
