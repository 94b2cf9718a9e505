"""The decoder against hostile headers: every input gives a message or a CodecError, nothing else,
and no error text quotes more than a short piece of what the sender wrote."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robot_rl.transport.codec import (
    MAX_HEADER_BYTES,
    MAX_META_DEPTH,
    PROTOCOL_VERSION,
    QUOTE_CHARS,
    CodecError,
    decode,
    encode,
    quote,
)

# An error text may quote a few sender values (type, seq, a spec) plus fixed words and the list of
# accepted types; it must never grow with what the sender wrote.
MAX_ERROR_CHARS = 1200


def header(**fields) -> bytes:
    base = {"v": PROTOCOL_VERSION, "type": "request", "seq": 1, "stamp": 0.0, "meta": {},
            "arrays": []}  # fmt: skip
    base.update(fields)
    return msgpack.packb(base, use_bin_type=True)


def nested(depth: int) -> object:
    value: object = "x"
    for _ in range(depth):
        value = [value]
    return value


HOSTILE = {
    "shape-0-by-2**63": ([header(arrays=[["a", "uint8", [0, 2**63 - 1]]]), b""]),
    "shape-0-by-huge-dims": ([header(arrays=[["a", "uint8", [0, 2**40, 2**40, 2**40]]]), b""]),
    "dtype-as-list": ([header(arrays=[["a", ["uint8"], [1]]]), b"\x00"]),
    "dtype-as-map": ([header(arrays=[["a", {"x": 1}, [1]]]), b"\x00"]),
    "type-as-list": ([header(type=["request"])]),
    "type-as-map": ([header(type={"request": 1})]),
    "version-true": ([header(v=True)]),
    "op-nested-1000-deep": ([header(meta={"op": nested(1000)})]),
    "meta-nested-just-too-deep": ([header(meta={"op": nested(MAX_META_DEPTH)})]),
    "meta-nan": ([header(meta={"deadline": float("nan")})]),
    "meta-int-key": (
        [
            msgpack.packb(
                {
                    "v": 1,
                    "type": "request",
                    "seq": 1,
                    "stamp": 0.0,
                    "meta": {"op": {1: 2}},
                    "arrays": [],
                }
            )
        ]
    ),
    "meta-ext-type": ([header(meta={"op": msgpack.ExtType(5, b"abc")})]),
    "meta-timestamp-ext": ([header(meta={"op": msgpack.Timestamp(1, 0)})]),
    "header-a-list": ([msgpack.packb([1, 2, 3])]),
    "header-an-int": ([msgpack.packb(5)]),
    "header-garbage": ([b"\xc1\xff\x00"]),
    "header-huge-string-type": ([header(type="\x00" * 17_000)]),
    "seq-negative": ([header(seq=-1)]),
    "seq-float": ([header(seq=1.5)]),
    "stamp-string": ([header(stamp="now")]),
    "arrays-not-list": ([header(arrays={"a": 1})]),
    "spec-short": ([header(arrays=[["a", "uint8"]]), b"\x00"]),
    "spec-name-int": ([header(arrays=[[5, "uint8", [1]]]), b"\x00"]),
    "shape-bool": ([header(arrays=[["a", "uint8", [True]]]), b"\x00"]),
    "shape-negative": ([header(arrays=[["a", "uint8", [-1]]]), b""]),
    "shape-9-dims": ([header(arrays=[["a", "uint8", [1] * 9]]), b"\x00"]),
    "shape-huge-dim": ([header(arrays=[["a", "uint8", [2**63]]]), b"\x00"]),
    "size-mismatch": ([header(arrays=[["a", "float64", [2]]]), b"\x00" * 8]),
    "frames-missing": ([header(arrays=[["a", "uint8", [1]]])]),
    "frame-not-bytes": ([header(arrays=[["a", "uint8", [1]]]), 12345]),
    "no-frames": ([]),
    "header-too-big": ([b"\x00" * (MAX_HEADER_BYTES + 1)]),
}


@pytest.mark.parametrize("frames", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_headers_raise_only_codec_error_with_a_short_text(frames) -> None:
    with pytest.raises(CodecError) as caught:
        decode(frames)
    assert len(str(caught.value)) <= MAX_ERROR_CHARS


def test_meta_nested_to_the_limit_still_decodes() -> None:
    message = decode([header(meta={"op": nested(MAX_META_DEPTH - 1)})])
    assert message.meta["op"] == nested(MAX_META_DEPTH - 1)


def test_encode_refuses_deep_meta_and_non_string_types() -> None:
    with pytest.raises(CodecError, match="nested deeper"):
        encode("request", 1, {"op": nested(1000)})
    with pytest.raises(CodecError, match="unknown"):
        encode(["request"], 1)  # type: ignore[arg-type]


def test_quote_is_bounded_for_any_value() -> None:
    assert len(quote("\x00" * 17_000)) <= QUOTE_CHARS
    assert len(quote(nested(5000))) <= QUOTE_CHARS
    assert len(quote({"k" * 1000: ["v" * 1000] * 1000})) <= QUOTE_CHARS
    assert quote("op") == "'op'"


json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=30) | st.binary(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.text(max_size=5) | st.integers(0, 3), inner, max_size=4),
    max_leaves=25,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    fields=st.dictionaries(
        st.sampled_from(["v", "type", "seq", "stamp", "meta", "arrays"]), json_like, max_size=6
    ),
    buffers=st.lists(st.binary(max_size=16), max_size=3),
)
def test_any_msgpack_header_decodes_or_raises_codec_error(fields, buffers) -> None:
    try:
        packed = msgpack.packb(fields, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        return  # not expressible in msgpack: nothing a sender could put on the wire
    try:
        message = decode([packed, *buffers])
    except CodecError as exc:
        assert len(str(exc)) <= MAX_ERROR_CHARS
        return
    assert isinstance(message.meta, dict)
    for array in message.arrays.values():
        assert isinstance(array, np.ndarray)
