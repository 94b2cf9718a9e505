"""The wire codec: round trips of any allowed array and meta, and rejection of malformed input."""

from __future__ import annotations

import pickle

import msgpack
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from robot_rl.transport.codec import (
    ALLOWED_DTYPES,
    MAX_HEADER_BYTES,
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    CodecError,
    decode,
    encode,
    weights_from_bytes,
    weights_to_bytes,
)

dtypes = st.sampled_from(sorted(ALLOWED_DTYPES)).map(np.dtype)
arrays = dtypes.flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
)
plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)  # fmt: skip


def roundtrip(frames):
    """As ZMQ delivers them: separate bytes objects."""
    return decode([bytes(f) for f in frames])


@given(
    named=st.dictionaries(st.text(min_size=1, max_size=10), arrays, max_size=4),
    meta=st.dictionaries(st.text(max_size=8), plain, max_size=4),
    seq=st.integers(0, 2**63 - 1),
)
def test_any_allowed_arrays_and_meta_round_trip_exactly(named, meta, seq) -> None:
    message = roundtrip(encode("transitions", seq, meta, named, stamp=12.5))
    assert (message.type, message.seq, message.stamp) == ("transitions", seq, 12.5)
    assert message.meta == meta
    assert list(message.arrays) == list(named)
    for name, array in named.items():
        got = message.arrays[name]
        assert got.dtype == array.dtype.newbyteorder("<") and got.shape == array.shape
        np.testing.assert_array_equal(got, array)


def test_big_endian_and_non_contiguous_arrays_arrive_as_the_same_values() -> None:
    big = np.arange(6, dtype=">f4").reshape(2, 3)
    strided = np.arange(20, dtype=np.int32)[::3]
    message = roundtrip(encode("frame", 0, arrays={"big": big, "strided": strided}))
    np.testing.assert_array_equal(message.arrays["big"], big)
    np.testing.assert_array_equal(message.arrays["strided"], strided)


def test_arrays_decode_without_copying_and_read_only() -> None:
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    frames = encode("frame", 1, {"camera_id": "front"}, {"image": image})
    buffer = bytes(frames[1])
    message = decode([frames[0], buffer])
    got = message.arrays["image"]
    assert np.shares_memory(got, np.frombuffer(buffer, np.uint8))
    assert not got.flags.writeable


@given(frames=st.lists(st.binary(max_size=64), min_size=0, max_size=4))
def test_any_bytes_either_decode_to_a_valid_message_or_raise_codec_error(frames) -> None:
    """Fuzz: nothing but CodecError may escape, and whatever decodes is well-formed."""
    try:
        message = decode(frames)
    except CodecError:
        return
    assert message.type in MESSAGE_TYPES and message.seq >= 0
    assert len(message.arrays) == len(frames) - 1


def header(**changes) -> bytes:
    fields = {"v": PROTOCOL_VERSION, "type": "frame", "seq": 0, "stamp": 1.0, "meta": {},
              "arrays": []}  # fmt: skip
    fields.update(changes)
    return msgpack.packb(fields, use_bin_type=True)


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        ([], "empty"),
        ([header(v=99)], "protocol version 99"),
        ([header(type="exec")], "not accepted"),
        ([header(seq=-1)], "seq"),
        ([header(stamp=float("nan"))], "stamp"),
        ([header(meta=[1])], "meta"),
        ([header(arrays=[["x", "object", [1]]]), b"\0" * 8], "dtype"),
        ([header(arrays=[["x", "float32", [3]]]), b"\0" * 8], "needs 12 bytes"),
        ([header(arrays=[["x", "uint8", [-1]]]), b""], "shape"),
        ([header(arrays=[["x", "uint8", [1]]])], "buffers"),
        ([header(arrays=[["x", "uint8", [1]], ["x", "uint8", [1]]]), b"a", b"b"], "twice"),
        ([msgpack.packb([1, 2])], "not a map"),
        ([pickle.dumps({"v": 1})], "msgpack|not a map|version"),
    ],
)
def test_malformed_messages_are_rejected_with_the_reason(frames, match) -> None:
    with pytest.raises(CodecError, match=match):
        decode(frames)


def test_oversized_messages_and_headers_are_rejected() -> None:
    frames = encode("frame", 0, arrays={"image": np.zeros(1000, np.uint8)})
    with pytest.raises(CodecError, match="at most 500"):
        decode(frames, max_bytes=500)
    with pytest.raises(CodecError, match="header is"):
        decode([b"\x80" + b"\0" * MAX_HEADER_BYTES])
    with pytest.raises(CodecError, match="header is"):
        encode("frame", 0, meta={"blob": b"x" * MAX_HEADER_BYTES})


def test_a_receiver_can_narrow_the_types_it_accepts() -> None:
    frames = encode("weights", 3)
    with pytest.raises(CodecError, match="not accepted"):
        decode(frames, accept=frozenset({"transitions"}))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"msg_type": "exec", "seq": 0}, "unknown"),
        ({"msg_type": "frame", "seq": -1}, "seq"),
        ({"msg_type": "frame", "seq": 0, "meta": {"x": object()}}, "plain values"),
        ({"msg_type": "frame", "seq": 0, "meta": {"x": float("inf")}}, "finite"),
        ({"msg_type": "frame", "seq": 0, "arrays": {"x": np.array([object()])}}, "dtype"),
        ({"msg_type": "frame", "seq": 0, "arrays": {"x": np.array(["a"])}}, "dtype"),
    ],
)
def test_encode_refuses_what_a_receiver_would_reject(kwargs, match) -> None:
    with pytest.raises(CodecError, match=match):
        encode(**kwargs)


def test_weights_round_trip_through_safetensors_and_optionally_half() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    state = net.state_dict()
    data = weights_to_bytes(state)
    message = roundtrip(
        encode("weights", 7, {"version": 7}, {"safetensors": np.frombuffer(data, np.uint8)})
    )
    loaded = weights_from_bytes(message.arrays["safetensors"])
    for key, value in state.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)
    half = weights_from_bytes(weights_to_bytes(state, half=True))
    assert all(t.dtype == torch.float16 for t in half.values())
    assert len(weights_to_bytes(state, half=True)) < len(data)
    with pytest.raises(CodecError, match="safetensors"):
        weights_from_bytes(b"\x00" * 16)


def test_nested_policy_weights_round_trip_into_an_acting_agent() -> None:
    from tests.agents.fakes import make_agent

    learner, actor = make_agent(seed=1), make_agent(seed=2)
    data = weights_to_bytes(learner.policy_state_dict())
    actor.load_policy_state_dict(weights_from_bytes(data))
    for group, state in learner.policy_state_dict().items():
        for key, value in state.items():
            torch.testing.assert_close(actor.policy_state_dict()[group][key], value, rtol=0, atol=0)
    with pytest.raises(CodecError, match="contains '/'"):
        weights_to_bytes({"a/b": torch.zeros(1)})
