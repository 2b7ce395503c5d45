"""The frame codec: envelopes to bytes and back, defensively.

A frame is ``b"HF"``, a big-endian ``uint32`` header length, a msgpack header, then the raw bytes of
every array in the message, each starting ``ALIGN``-aligned from the frame's start::

    +------+-----------+------------------------------------+-----+---------+-----+---------+
    | "HF" | len (u32) | msgpack {v, t, id, s, j, r, ts, b}  | pad | array 0 | pad | array 1 | ...
    +------+-----------+------------------------------------+-----+---------+-----+---------+

In the header an array is ``[dtype, shape, nbytes]``; padding is zero bytes. Decoding wraps the
arrays with :func:`numpy.frombuffer`, so they are zero-copy, read-only, aligned views of the frame.
Decoding checks everything a hostile or broken sender could get wrong and raises a
:class:`~protocol.ProtocolError` subclass; it never returns a half-checked message. Last, every
number is checked against its field's bounds (:mod:`protocol._bounds`): :class:`~protocol.OutOfRange`.
"""

from __future__ import annotations

import math
import struct
import time
import types
import typing
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, is_dataclass
from functools import cache
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt

from ._bounds import check_bounds
from ._errors import (
    InvalidArray,
    MalformedMessage,
    NonFiniteValues,
    PayloadTooLarge,
    ProtocolError,
    UnknownMessageType,
    UnsupportedVersion,
)
from ._messages import MESSAGE_TYPES, Envelope, Message

__all__ = ["DEFAULT_LIMITS", "PROTOCOL_VERSION", "Limits", "decode", "encode", "new_envelope"]

PROTOCOL_VERSION = 2
_MAGIC = b"HF"
_PREFIX = struct.Struct(">2sI")

ALIGN = 16
"""Arrays start at multiples of this from the frame's start (zero padding before each), so the
views decoding makes are aligned: unaligned float arrays are several times slower to check and use."""
_ZEROS = bytes(ALIGN)

ALLOWED_DTYPES: frozenset[str] = frozenset(
    {"<f2", "<f4", "<f8", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "|b1"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Size limits a receiver enforces. Above ``max_payload_bytes`` bulk travels by reference."""

    max_payload_bytes: int = 16 * 1024 * 1024
    max_header_bytes: int = 1024 * 1024
    max_arrays: int = 4096
    max_array_dims: int = 8
    max_items: int = 65536
    """Items in one list or map field (``label_counts``, ``participants``, ``profile``, ...):
    a 2 MB ``Hello`` with two million labels otherwise cost the hyperFL planner a second a round."""


DEFAULT_LIMITS = Limits()


def new_envelope(
    body: Message, *, sender: str, job_id: str = "", round: int = 0, reply_to: str = ""
) -> Envelope:
    """Wrap ``body`` with a fresh message id and the current time; ``reply_to`` names the
    ``msg_id`` of the instruction this message answers."""
    return Envelope(
        body=body,
        msg_id=uuid.uuid4().hex,
        sender=sender,
        job_id=job_id,
        round=round,
        ts=time.time(),
        reply_to=reply_to,
    )


# --------------------------------------------------------------------------------------- encode


class _Writer:
    __slots__ = ("buffers", "nbytes")

    def __init__(self) -> None:
        self.buffers: list[memoryview] = []
        self.nbytes = 0

    def array(self, value: object) -> list[Any]:
        if not isinstance(value, np.ndarray):
            raise InvalidArray(f"expected a numpy array, got {type(value).__name__}")
        arr = value
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        if arr.dtype.str not in ALLOWED_DTYPES:
            raise InvalidArray(
                f"dtype {arr.dtype.str} cannot travel; allowed: {sorted(ALLOWED_DTYPES)}"
            )
        if not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr)  # not for 0-d arrays: it would make them 1-d
        view = arr.data.cast("B") if arr.size else memoryview(b"")
        self.buffers.append(view)
        self.nbytes += view.nbytes
        return [arr.dtype.str, list(arr.shape), view.nbytes]


def encode(envelope: Envelope, *, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Serialise ``envelope``; :class:`PayloadTooLarge` if it exceeds ``limits``."""
    writer = _Writer()
    body_type: type = type(envelope.body)  # plain `type`: mypy deems type[Message] unhashable
    body = _encoder(body_type)(envelope.body, writer)
    header = msgpack.packb(
        {
            "v": PROTOCOL_VERSION,
            "t": envelope.body.TYPE,
            "id": envelope.msg_id,
            "s": envelope.sender,
            "j": envelope.job_id,
            "r": envelope.round,
            "ts": envelope.ts,
            **({"re": envelope.reply_to} if envelope.reply_to else {}),
            "b": body,
        },
        use_bin_type=True,
    )
    parts: list[bytes | memoryview] = [_PREFIX.pack(_MAGIC, len(header)), header]
    pos = _PREFIX.size + len(header)
    for view in writer.buffers:  # every array starts ALIGN-aligned from the frame's start
        pad = -pos % ALIGN
        if pad:
            parts.append(_ZEROS[:pad])
        parts.append(view)
        pos += pad + view.nbytes
    size = pos
    if len(header) > limits.max_header_bytes or size > limits.max_payload_bytes:
        raise PayloadTooLarge(
            f"{envelope.body.TYPE} is {size} bytes (header {len(header)}); limits are "
            f"{limits.max_payload_bytes} / {limits.max_header_bytes}: send it by reference"
        )
    return b"".join(parts)


# --------------------------------------------------------------------------------------- decode


class _Reader:
    __slots__ = ("base", "blob", "count", "limits", "offset")

    def __init__(self, blob: memoryview, limits: Limits, *, base: int = 0) -> None:
        self.blob = blob
        self.offset = 0
        self.base = base  # the blob's offset in the frame, for alignment
        self.count = 0
        self.limits = limits

    def array(self, spec: object) -> npt.NDArray[Any]:
        if not (isinstance(spec, list) and len(spec) == 3):
            raise InvalidArray(f"array descriptor must be [dtype, shape, nbytes], got {spec!r:.80}")
        dtype_str, shape, nbytes = spec
        self.count += 1
        if self.count > self.limits.max_arrays:
            raise PayloadTooLarge(f"more than {self.limits.max_arrays} arrays")
        if dtype_str not in ALLOWED_DTYPES:
            raise InvalidArray(f"dtype {dtype_str!r} is not allowed")
        if (
            not isinstance(shape, list)
            or len(shape) > self.limits.max_array_dims
            or not all(type(d) is int and d >= 0 for d in shape)
        ):
            raise InvalidArray(f"bad shape {shape!r:.80}")
        dtype = np.dtype(dtype_str)
        expected = math.prod(shape) * dtype.itemsize
        if type(nbytes) is not int or nbytes != expected:
            raise InvalidArray(
                f"shape {shape} of {dtype_str} needs {expected} bytes, frame says {nbytes}"
            )
        pad = -(self.base + self.offset) % ALIGN
        if pad:
            padding = self.blob[self.offset : self.offset + pad]
            if len(padding) < pad:
                raise InvalidArray("array runs past the end of the frame (in its padding)")
            if any(padding):
                raise MalformedMessage("non-zero padding before an array")
            self.offset += pad
        end = self.offset + nbytes
        if end > len(self.blob):
            raise InvalidArray(f"array runs past the end of the frame ({end} > {len(self.blob)})")
        arr = np.frombuffer(self.blob[self.offset : end], dtype=dtype).reshape(shape)
        self.offset = end
        if dtype.kind == "f" and arr.size and not _all_finite(arr):
            raise NonFiniteValues(f"array of shape {tuple(shape)} holds NaN or Inf")
        return arr


def _all_finite(arr: npt.NDArray[Any]) -> bool:
    flat = arr.reshape(-1)
    if arr.dtype.itemsize >= 4:
        # A sum of squares is one BLAS pass with no temporary: NaN and Inf propagate and squares
        # cannot cancel, so a finite result proves every element finite (bench/protocol.py: about
        # twice as fast as min/max, three times isfinite().all()). Not finite: a NaN or Inf, or
        # huge finite values overflowing; the exact check below tells which.
        with np.errstate(over="ignore", invalid="ignore"):
            square_sum = float(np.dot(flat, flat))
        if math.isfinite(square_sum):
            return True
    # NaN propagates through min and max, and an infinity is the min or the max.
    return math.isfinite(_MIN(flat, axis=None)) and math.isfinite(_MAX(flat, axis=None))


_MIN, _MAX = np.minimum.reduce, np.maximum.reduce


def decode(data: bytes | bytearray | memoryview, *, limits: Limits = DEFAULT_LIMITS) -> Envelope:
    """Parse and check a frame. Raises a :class:`ProtocolError` subclass for anything wrong."""
    view = memoryview(data).toreadonly().cast("B")  # arrays stay read-only, even from a bytearray
    if view.nbytes > limits.max_payload_bytes:
        raise PayloadTooLarge(f"frame of {view.nbytes} bytes exceeds {limits.max_payload_bytes}")
    if view.nbytes < _PREFIX.size:
        raise MalformedMessage(f"frame of {view.nbytes} bytes is too short")
    magic, header_len = _PREFIX.unpack_from(view)
    if magic != _MAGIC:
        raise MalformedMessage("not a hyperfleet frame (bad magic)")
    if header_len > limits.max_header_bytes:
        raise PayloadTooLarge(f"header of {header_len} bytes exceeds {limits.max_header_bytes}")
    start = _PREFIX.size
    if start + header_len > view.nbytes:
        raise MalformedMessage("frame is shorter than its header length")
    try:
        header = msgpack.unpackb(view[start : start + header_len], raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise MalformedMessage(f"header is not valid msgpack: {exc}") from exc
    if not isinstance(header, dict):
        raise MalformedMessage("header is not a map")
    version = header.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise UnsupportedVersion(
            f"protocol version {version!r}; this build speaks {PROTOCOL_VERSION}"
        )
    type_name = header.get("t")
    cls: type | None = MESSAGE_TYPES.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise UnknownMessageType(f"unknown message type {type_name!r:.40}")
    reader = _Reader(view[start + header_len :], limits, base=start + header_len)
    try:
        body = _decoder(cls)(header.get("b"), reader)
        env = Envelope(
            body=body,
            msg_id=_expect_str(header.get("id"), "id"),
            sender=_expect_str(header.get("s"), "sender"),
            job_id=_expect_str(header.get("j"), "job"),
            round=_expect_int(header.get("r"), "round"),
            ts=_expect_float(header.get("ts"), "ts"),
            reply_to=_expect_str(header.get("re", ""), "reply_to"),
        )
    except ProtocolError:
        raise
    except (TypeError, ValueError) as exc:
        raise MalformedMessage(f"{type_name}: {exc}") from exc
    if not env.msg_id:
        raise MalformedMessage("empty message id")
    if reader.offset != len(reader.blob):
        raise MalformedMessage(
            f"{len(reader.blob) - reader.offset} trailing bytes after the arrays"
        )
    check_bounds(env)
    return env


def _expect_str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise MalformedMessage(f"{what} must be a string, got {type(value).__name__}")
    return value


def _expect_int(value: object, what: str) -> int:
    if type(value) is not int:
        raise MalformedMessage(f"{what} must be an integer, got {type(value).__name__}")
    return value


def _expect_float(value: object, what: str) -> float:
    if type(value) not in (int, float):
        raise MalformedMessage(f"{what} must be a number, got {type(value).__name__}")
    result = float(typing.cast(float, value))
    if not math.isfinite(result):
        raise NonFiniteValues(f"{what} is {result}")
    return result


# --------------------------------------------------------------- type-directed field codecs

_Enc = Callable[[Any, _Writer], Any]
_Dec = Callable[[Any, _Reader], Any]


def _is_array_tuple(tp: Any) -> bool:
    args = typing.get_args(tp)
    return (
        typing.get_origin(tp) is tuple
        and len(args) == 2
        and args[1] is Ellipsis
        and typing.get_origin(args[0]) is np.ndarray
    )


def _field_codec(tp: Any, where: str) -> tuple[_Enc, _Dec]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is int:
        return (lambda v, w: v), (lambda v, r: _expect_int(v, where))
    if tp is float:
        return (lambda v, w: float(v)), (lambda v, r: _expect_float(v, where))
    if tp is str:
        return (lambda v, w: v), (lambda v, r: _expect_str(v, where))
    if tp is bool:

        def dec_bool(v: Any, r: _Reader) -> bool:
            if not isinstance(v, bool):
                raise MalformedMessage(f"{where} must be a boolean")
            return v

        return (lambda v, w: v), dec_bool
    if origin is typing.Literal:

        def dec_literal(v: Any, r: _Reader) -> Any:
            if v not in args:
                raise MalformedMessage(f"{where} must be one of {args}, got {v!r:.40}")
            return v

        return (lambda v, w: v), dec_literal
    if origin in (types.UnionType, typing.Union) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        enc, dec = _field_codec(inner, where)
        return (lambda v, w: None if v is None else enc(v, w)), (
            lambda v, r: None if v is None else dec(v, r)
        )
    if _is_array_tuple(tp):

        def dec_arrays(v: Any, r: _Reader) -> tuple[npt.NDArray[Any], ...]:
            if not isinstance(v, list):
                raise MalformedMessage(f"{where} must be a list of arrays")
            return tuple(r.array(spec) for spec in v)

        return (lambda v, w: [w.array(a) for a in v]), dec_arrays
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        enc, dec = _field_codec(args[0], where)

        def dec_tuple(v: Any, r: _Reader) -> tuple[Any, ...]:
            if not isinstance(v, list):
                raise MalformedMessage(f"{where} must be a list")
            if len(v) > r.limits.max_items:
                raise PayloadTooLarge(f"{where} has {len(v)} items, over {r.limits.max_items}")
            return tuple(dec(item, r) for item in v)

        return (lambda v, w: [enc(item, w) for item in v]), dec_tuple
    if origin is Mapping or origin is dict:
        value_type = args[1]
        value_dec: Callable[[Any], Any] = (
            (lambda x: _expect_float(x, where))
            if value_type is float
            else (lambda x: _expect_str(x, where))
            if value_type is str
            else _check_plain
        )

        def dec_map(v: Any, r: _Reader) -> dict[str, Any]:
            if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
                raise MalformedMessage(f"{where} must be a map with string keys")
            if len(v) > r.limits.max_items:
                raise PayloadTooLarge(f"{where} has {len(v)} items, over {r.limits.max_items}")
            return {k: value_dec(x) for k, x in v.items()}

        if value_type is float:  # NumPy scalars become plain floats on the wire
            return (lambda v, w: {k: float(x) for k, x in v.items()}), dec_map
        return (lambda v, w: dict(v)), dec_map
    if isinstance(tp, type) and is_dataclass(tp):
        return _encoder(tp), _decoder(tp)
    raise TypeError(f"no wire codec for {where}: {tp!r}")  # a programming error, found at import


_MAX_PLAIN_DEPTH = 32


def _check_plain(value: Any, depth: int = 0) -> Any:
    """Free-form values (plans, notes): msgpack scalars, lists and string-keyed maps, all finite.

    Nesting is bounded: msgpack accepts ~1000 levels, which would overflow Python's recursion here.
    """
    if isinstance(value, float) and not math.isfinite(value):
        raise NonFiniteValues("non-finite number in a free-form field")
    if isinstance(value, (list, dict)) and depth >= _MAX_PLAIN_DEPTH:
        raise MalformedMessage(f"free-form field nested deeper than {_MAX_PLAIN_DEPTH}")
    if isinstance(value, list):
        return [_check_plain(v, depth + 1) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise MalformedMessage("free-form map with non-string keys")
        return {k: _check_plain(v, depth + 1) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise MalformedMessage(f"free-form field holds a {type(value).__name__}")


@cache
def _codecs(cls: type) -> tuple[tuple[str, _Enc, _Dec, bool], ...]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        enc, dec = _field_codec(hints[f.name], f"{cls.__name__}.{f.name}")
        has_default = f.default is not f.default_factory  # both MISSING only for required fields
        out.append((f.name, enc, dec, has_default))
    return tuple(out)


@cache
def _omitted_when_none(cls: type) -> frozenset[str]:
    """Fields whose default is ``None``: left out of the frame while ``None``, so a field added
    later (``ModelRef.signature``) costs nothing and older receivers, which refuse unknown
    fields, still read the frames of newer senders that do not use it."""
    return frozenset(f.name for f in fields(cls) if f.default is None)


@cache
def _encoder(cls: type) -> _Enc:
    codecs = _codecs(cls)
    omitted = _omitted_when_none(cls)

    def enc(obj: Any, w: _Writer) -> dict[str, Any]:
        out = {}
        for name, e, _, _ in codecs:
            value = getattr(obj, name)
            if value is None and name in omitted:
                continue
            out[name] = e(value, w)
        return out

    return enc


@cache
def _decoder(cls: type) -> _Dec:
    codecs = _codecs(cls)
    known = frozenset(name for name, *_ in codecs)

    def dec(v: Any, r: _Reader) -> Any:
        if not isinstance(v, dict):
            raise MalformedMessage(f"{cls.__name__} body must be a map")
        unknown = v.keys() - known
        if unknown:
            raise MalformedMessage(f"{cls.__name__} has unknown fields {sorted(map(str, unknown))}")
        kwargs = {}
        for name, _, d, has_default in codecs:
            if name in v:
                kwargs[name] = d(v[name], r)
            elif not has_default:
                raise MalformedMessage(f"{cls.__name__} lacks field {name!r}")
        return cls(**kwargs)

    return dec


# Build every codec now, so a message type the codec cannot carry fails at import, not on the wire.
for _cls in MESSAGE_TYPES.values():
    _decoder(typing.cast(type, _cls))
