"""The wire format: a typed, versioned message as a small msgpack header plus raw array buffers.

A message is a ZMQ multipart message (a list of frames):

  frame 0   msgpack map {"v": PROTOCOL_VERSION, "type": str, "seq": int >= 0, "stamp": float s,
            "meta": map of plain values, "arrays": [[name, dtype, shape], ...]}
  frame 1+  one frame per array, its C-order bytes, in the order the header lists them

dtypes are named explicitly ("uint8", "float32", ...; little-endian, from ``ALLOWED_DTYPES``), so
a receiver never guesses a layout and never runs code: there is no pickle anywhere. Arrays decode
zero-copy (``np.frombuffer`` over the received frame; read-only). Model weights travel as
safetensors bytes in a uint8 array (``weights_to_bytes`` / ``weights_from_bytes``).

``decode`` rejects anything that does not fit (another protocol version, an unknown type, a
malformed header, a dtype not allowed, a buffer whose size disagrees with its shape, a message over
``max_bytes``) with a ``CodecError`` saying what was wrong; callers log it and drop the message.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

PROTOCOL_VERSION = 1
MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
MAX_ARRAYS = 256
MAX_NDIM = 8

# Message types every role knows. Roles may accept a subset; anything else is rejected.
MESSAGE_TYPES = frozenset(
    {
        "frame",  # one camera frame: arrays {"image"}, meta {camera_id, capture stamp, ...}
        "transitions",  # a batch of env steps from an actor
        "transitions_ack",  # the learner's receipt: meta {actor_id, up_to}
        "weights",  # policy weights: arrays {"safetensors"}, meta {version}
        "robot_state",  # the robot server's state at >= 100 Hz
        "robot_target",  # pose / gains / gripper targets to the robot server
        "request",  # request/reply calls (reset, mode changes, hello)
        "reply",
        "heartbeat",
    }
)

ALLOWED_DTYPES = frozenset(
    {"bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "int64", "uint64",
     "float16", "float32", "float64"}
)  # fmt: skip


class CodecError(ValueError):
    """A message that cannot be decoded (or encoded); the text says what was wrong."""


@dataclass(frozen=True)
class Message:
    """A decoded (or to-be-encoded) message. ``arrays`` keep their insertion order."""

    type: str
    seq: int
    stamp: float
    meta: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def _plain(value: Any, where: str) -> None:
    """Only plain values go into ``meta`` (what msgpack writes without extensions)."""
    if value is None or isinstance(value, bool | int | str | bytes):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CodecError(f"{where} is {value}; meta values must be finite")
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _plain(item, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CodecError(f"{where} has a non-string key {key!r}")
            _plain(item, f"{where}.{key}")
        return
    raise CodecError(f"{where} is a {type(value).__name__}; meta takes plain values only")


def encode(
    msg_type: str,
    seq: int,
    meta: Mapping[str, Any] | None = None,
    arrays: Mapping[str, np.ndarray] | None = None,
    stamp: float | None = None,
) -> list[bytes | memoryview]:
    """Frames for ``zmq.Socket.send_multipart(frames, copy=False)``; buffers are not copied.

    Raises CodecError for an unknown type, a negative seq, non-plain meta or an array dtype that
    is not allowed.
    """
    if msg_type not in MESSAGE_TYPES:
        raise CodecError(f"message type {msg_type!r} unknown; known: {sorted(MESSAGE_TYPES)}")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise CodecError(f"seq={seq!r}; expected an int >= 0")
    meta = dict(meta or {})
    _plain(meta, "meta")
    specs, buffers = [], []
    for name, array in (arrays or {}).items():
        array = np.asarray(array)
        if not array.flags.c_contiguous:  # (ascontiguousarray would turn 0-d into 1-d)
            array = array.copy(order="C")
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        if dtype.name not in ALLOWED_DTYPES:
            raise CodecError(f"array {name!r} has dtype {array.dtype}; allowed: {_dtypes()}")
        array = array.astype(dtype.newbyteorder("<"), copy=False)
        specs.append([str(name), dtype.name, list(array.shape)])
        buffers.append(memoryview(array).cast("B") if array.size else b"")
    header = {
        "v": PROTOCOL_VERSION,
        "type": msg_type,
        "seq": seq,
        "stamp": float(time.time() if stamp is None else stamp),
        "meta": meta,
        "arrays": specs,
    }
    packed = msgpack.packb(header, use_bin_type=True)
    if len(packed) > MAX_HEADER_BYTES:
        raise CodecError(f"header is {len(packed)} bytes; the limit is {MAX_HEADER_BYTES}")
    return [packed, *buffers]


def decode(
    frames: Sequence[bytes | memoryview | Any],
    max_bytes: int = DEFAULT_MAX_BYTES,
    accept: frozenset[str] | None = None,
) -> Message:
    """The message in ``frames`` (bytes, memoryviews or ``zmq.Frame``); CodecError if malformed.

    accept: the message types this receiver handles (default: all known types).
    """
    if not frames:
        raise CodecError("empty message: no header frame")
    views = [_view(f) for f in frames]
    total = sum(v.nbytes for v in views)
    if total > max_bytes:
        raise CodecError(f"message is {total} bytes; this receiver takes at most {max_bytes}")
    if views[0].nbytes > MAX_HEADER_BYTES:
        raise CodecError(f"header is {views[0].nbytes} bytes; the limit is {MAX_HEADER_BYTES}")
    try:
        header = msgpack.unpackb(views[0], raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise CodecError(f"header is not valid msgpack: {exc}") from None
    if not isinstance(header, dict):
        raise CodecError("header is not a map")
    version = header.get("v")
    if version != PROTOCOL_VERSION:
        raise CodecError(
            f"protocol version {version!r}; this build speaks {PROTOCOL_VERSION} "
            "(upgrade the older side)"
        )
    msg_type = header.get("type")
    allowed = MESSAGE_TYPES if accept is None else accept
    if msg_type not in allowed:
        raise CodecError(
            f"message type {msg_type!r} not accepted here; accepted: {sorted(allowed)}"
        )
    seq, stamp, meta = header.get("seq"), header.get("stamp"), header.get("meta", {})
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise CodecError(f"seq={seq!r}; expected an int >= 0")
    if isinstance(stamp, bool) or not isinstance(stamp, int | float) or not math.isfinite(stamp):
        raise CodecError(f"stamp={stamp!r}; expected a finite number of seconds")
    if not isinstance(meta, dict):
        raise CodecError("meta is not a map")
    specs = header.get("arrays", [])
    if not isinstance(specs, list) or len(specs) > MAX_ARRAYS:
        raise CodecError(f"arrays must be a list of at most {MAX_ARRAYS} [name, dtype, shape]")
    if len(specs) != len(views) - 1:
        raise CodecError(f"header lists {len(specs)} arrays but {len(views) - 1} buffers came")
    arrays: dict[str, np.ndarray] = {}
    for spec, view in zip(specs, views[1:], strict=True):
        name, array = _array(spec, view)
        if name in arrays:
            raise CodecError(f"array {name!r} appears twice")
        arrays[name] = array
    return Message(msg_type, seq, float(stamp), meta, arrays)


def _view(frame: Any) -> memoryview:
    buffer = getattr(frame, "buffer", frame)  # zmq.Frame exposes .buffer
    try:
        return memoryview(buffer).cast("B")
    except TypeError as exc:
        raise CodecError(f"a frame is not a byte buffer: {exc}") from None


def _array(spec: Any, view: memoryview) -> tuple[str, np.ndarray]:
    if not (isinstance(spec, list) and len(spec) == 3):
        raise CodecError(f"array spec {spec!r} is not [name, dtype, shape]")
    name, dtype, shape = spec
    if not isinstance(name, str) or not name:
        raise CodecError(f"array name {name!r} is not a non-empty string")
    if dtype not in ALLOWED_DTYPES:
        raise CodecError(f"array {name!r} has dtype {dtype!r}; allowed: {_dtypes()}")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_NDIM
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise CodecError(f"array {name!r} has shape {shape!r}; expected <= {MAX_NDIM} ints >= 0")
    np_dtype = np.dtype(dtype).newbyteorder("<")
    expected = math.prod(shape) * np_dtype.itemsize
    if expected != view.nbytes:
        raise CodecError(
            f"array {name!r}: {dtype} {shape} needs {expected} bytes, the frame has {view.nbytes}"
        )
    return name, np.frombuffer(view, dtype=np_dtype).reshape(shape)


def _dtypes() -> str:
    return ", ".join(sorted(ALLOWED_DTYPES))


def weights_to_bytes(state_dict: Mapping[str, Any], half: bool = False) -> bytes:
    """A (possibly nested) torch state dict as safetensors bytes; nested keys are joined with
    "/" ("actor/net.0.weight"). Floats become float16 when ``half``."""
    import torch
    from safetensors.torch import save

    tensors: dict[str, Any] = {}

    def add(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                if "/" in str(key):
                    raise CodecError(f"state dict key {key!r} contains '/'")
                add(f"{prefix}/{key}" if prefix else str(key), item)
            return
        if not isinstance(value, torch.Tensor):
            raise CodecError(f"state dict entry {prefix!r} is a {type(value).__name__}")
        tensor = value.detach().to("cpu").contiguous()
        if half and tensor.is_floating_point():
            tensor = tensor.to(torch.float16)
        tensors[prefix] = tensor

    add("", state_dict)
    return save(tensors)


def weights_from_bytes(data: bytes | memoryview | np.ndarray) -> dict[str, Any]:
    """The state dict in safetensors ``data``, nested again at "/"; CodecError if invalid."""
    from safetensors.torch import load

    raw = data.tobytes() if isinstance(data, np.ndarray | memoryview) else bytes(data)
    try:
        flat = load(raw)
    except Exception as exc:  # safetensors raises its own error types
        raise CodecError(f"weights are not valid safetensors: {exc}") from None
    nested: dict[str, Any] = {}
    for key, tensor in flat.items():
        *groups, leaf = key.split("/")
        node = nested
        for group in groups:
            node = node.setdefault(group, {})
            if not isinstance(node, dict):
                raise CodecError(f"weights key {key!r} clashes with a tensor of the same name")
        node[leaf] = tensor
    return nested
