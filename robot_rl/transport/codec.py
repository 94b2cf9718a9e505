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
``max_bytes``, meta nested deeper than ``MAX_META_DEPTH`` or holding values msgpack extensions
make) with a ``CodecError`` saying what was wrong; callers log it and drop the message. It raises
nothing else for any input, and its error texts quote what the sender wrote only in short,
truncated form (``quote``), so a hostile header cannot grow a log line or a reply.
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
MAX_DIM = 2**40  # elements along one axis; far above anything a 256 MiB message can carry
MAX_META_DEPTH = 16  # nesting of lists and maps inside meta
QUOTE_CHARS = 80  # how much of a sender's value an error text quotes

# Message types every role knows. Roles may accept a subset; anything else is rejected.
MESSAGE_TYPES = frozenset(
    {
        "frame",  # one camera frame: arrays {"image"}, meta {camera_id, capture stamp, ...}
        "transitions",  # a batch of env steps from an actor
        "transitions_ack",  # receipt: meta {actor_id, received, durable, weights_version, error?}
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


def quote(value: Any, limit: int = QUOTE_CHARS) -> str:
    """``repr(value)`` cut to about ``limit`` characters: safe to put any sender's value into an
    error text or a log line (it never recurses deeper than ``MAX_META_DEPTH`` containers)."""
    try:
        text = _short_repr(value, limit, MAX_META_DEPTH)
    except Exception as exc:  # a repr that fails must not turn one error into another
        text = f"<{type(value).__name__}: repr failed: {type(exc).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short_repr(value: Any, limit: int, depth: int) -> str:
    if isinstance(value, list | tuple | dict):
        if depth <= 0:
            return "[...]" if not isinstance(value, dict) else "{...}"
        parts: list[str] = []
        size = 0
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            text = _short_repr(item, limit, depth - 1)
            if isinstance(value, dict):
                text = f"{_short_repr(key, limit, 0)}: {text}"
            parts.append(text)
            size += len(text) + 2
            if size > limit:
                parts.append("...")
                break
        inner = ", ".join(parts)
        return "{" + inner + "}" if isinstance(value, dict) else "[" + inner + "]"
    if isinstance(value, str | bytes) and len(value) > limit:
        value = value[:limit]
    return repr(value)[: limit + 3]


def _plain(value: Any, where: str) -> None:
    """Only plain values go into ``meta`` (what msgpack writes without extensions): finite
    numbers, str keys, nested at most ``MAX_META_DEPTH`` deep. Iterative (no recursion limit to
    hit); the path in an error is built only when there is one."""
    stack: list[tuple[Any, int, tuple[Any, ...]]] = [(value, 0, ())]
    while stack:
        item, depth, path = stack.pop()
        if item is None or isinstance(item, bool | int | str | bytes):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise CodecError(f"{_path(where, path)} is {item}; meta values must be finite")
            continue
        if isinstance(item, msgpack.ExtType) or not isinstance(item, list | tuple | Mapping):
            raise CodecError(
                f"{_path(where, path)} is a {type(item).__name__}; meta takes plain values only"
            )
        if depth >= MAX_META_DEPTH:
            raise CodecError(f"{where} is nested deeper than {MAX_META_DEPTH} levels")
        if isinstance(item, Mapping):
            for key, sub in item.items():
                if not isinstance(key, str):
                    raise CodecError(f"{_path(where, path)} has a non-string key {quote(key)}")
                stack.append((sub, depth + 1, (*path, key)))
        else:
            stack.extend((sub, depth + 1, (*path, i)) for i, sub in enumerate(item))


def _path(where: str, path: tuple[Any, ...]) -> str:
    text = where + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
    return quote(text, QUOTE_CHARS) if len(text) > QUOTE_CHARS else text


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
    if not isinstance(msg_type, str) or msg_type not in MESSAGE_TYPES:
        raise CodecError(f"message type {quote(msg_type)} unknown; known: {sorted(MESSAGE_TYPES)}")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**64:
        raise CodecError(f"seq={quote(seq)}; expected an int in [0, 2**64)")
    meta = dict(meta or {})
    _plain(meta, "meta")
    specs, buffers = [], []
    for name, array in (arrays or {}).items():
        array = np.asarray(array)
        if not array.flags.c_contiguous:  # (ascontiguousarray would turn 0-d into 1-d)
            array = array.copy(order="C")
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        if dtype.name not in ALLOWED_DTYPES:
            raise CodecError(f"array {quote(name)} has dtype {array.dtype}; allowed: {_dtypes()}")
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
    try:
        return _decode(frames, max_bytes, accept)
    except CodecError:
        raise
    except Exception as exc:  # the promise: nothing but CodecError, whatever arrives
        raise CodecError(f"malformed message ({type(exc).__name__})") from None


def _decode(frames: Sequence[Any], max_bytes: int, accept: frozenset[str] | None) -> Message:
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
    if isinstance(version, bool) or version != PROTOCOL_VERSION:
        raise CodecError(
            f"protocol version {quote(version)}; this build speaks {PROTOCOL_VERSION} "
            "(upgrade the older side)"
        )
    msg_type = header.get("type")
    allowed = MESSAGE_TYPES if accept is None else accept
    if not isinstance(msg_type, str) or msg_type not in allowed:
        raise CodecError(
            f"message type {quote(msg_type)} not accepted here; accepted: {sorted(allowed)}"
        )
    seq, stamp, meta = header.get("seq"), header.get("stamp"), header.get("meta", {})
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise CodecError(f"seq={quote(seq)}; expected an int >= 0")
    if isinstance(stamp, bool) or not isinstance(stamp, int | float) or not math.isfinite(stamp):
        raise CodecError(f"stamp={quote(stamp)}; expected a finite number of seconds")
    if not isinstance(meta, dict):
        raise CodecError("meta is not a map")
    _plain(meta, "meta")  # str keys, finite numbers, no msgpack extensions, bounded nesting
    specs = header.get("arrays", [])
    if not isinstance(specs, list) or len(specs) > MAX_ARRAYS:
        raise CodecError(f"arrays must be a list of at most {MAX_ARRAYS} [name, dtype, shape]")
    if len(specs) != len(views) - 1:
        raise CodecError(f"header lists {len(specs)} arrays but {len(views) - 1} buffers came")
    arrays: dict[str, np.ndarray] = {}
    for spec, view in zip(specs, views[1:], strict=True):
        name, array = _array(spec, view)
        if name in arrays:
            raise CodecError(f"array {quote(name)} appears twice")
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
        raise CodecError(f"array spec {quote(spec)} is not [name, dtype, shape]")
    name, dtype, shape = spec
    if not isinstance(name, str) or not name:
        raise CodecError(f"array name {quote(name)} is not a non-empty string")
    if not isinstance(dtype, str) or dtype not in ALLOWED_DTYPES:
        raise CodecError(f"array {quote(name)} has dtype {quote(dtype)}; allowed: {_dtypes()}")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_NDIM
        or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_DIM for d in shape
        )
    ):
        raise CodecError(
            f"array {quote(name)} has shape {quote(shape)}; expected <= {MAX_NDIM} ints in "
            f"[0, {MAX_DIM}]"
        )
    np_dtype = np.dtype(dtype).newbyteorder("<")
    expected = math.prod(shape) * np_dtype.itemsize
    if expected != view.nbytes:
        raise CodecError(
            f"array {quote(name)}: {dtype} {shape} needs {expected} bytes, the frame has "
            f"{view.nbytes}"
        )
    try:
        return name, np.frombuffer(view, dtype=np_dtype).reshape(shape)
    except (ValueError, TypeError, OverflowError, MemoryError) as exc:  # e.g. [0, 2**40, 2**40]
        raise CodecError(f"array {quote(name)} has shape {shape}: {exc}") from None


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
