"""Structured fuzzing of the frame decoder: valid frames of every message type, then mutated.

A case is built in three steps, each drawn by Hypothesis:

1. a valid envelope of one of the eight message types (hand-built, with arrays where the type
   carries them), encoded and split into its msgpack header (a tree) and its array bytes;
2. the header mutated at a random path: a value replaced by another msgpack value of the wrong
   type, a key dropped or added, or a value replaced by *raw msgpack bytes* no packer writes
   (deep nesting, unhashable and non-string map keys, lengths claiming gigabytes, ext types,
   invalid UTF-8, reserved bytes) spliced into the packed header;
3. the frame reassembled and maybe damaged again: header length off, magic wrong, truncated,
   bytes flipped, bytes appended; or, for some cases, plain random bytes.

The property: :func:`protocol.decode` returns an :class:`~protocol.Envelope` or raises a
:class:`~protocol.ProtocolError`; any other exception (``TypeError`` from an unhashable key,
``msgpack`` ``StackError`` from deep nesting, ``OverflowError`` from a huge shape, ...) is a bug.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
from hypothesis import strategies as st

from protocol import (
    Artifact,
    Envelope,
    Failure,
    GpuInfo,
    Heartbeat,
    Hello,
    JobState,
    ModelRef,
    Normalization,
    ProtocolError,
    ServingStats,
    Status,
    TrainConfig,
    TrainIns,
    TrainRes,
    decode,
    encode,
)

__all__ = ["HOSTILE_FRAGMENTS", "SAMPLES", "FuzzCase", "cases", "decode_case", "outcome_name"]

_PREFIX = struct.Struct(">2sI")

_W = (
    np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
    np.array([0.5, -1.5, 2.0], dtype=np.float32),
    np.array([[1, 2], [3, 4]], dtype=np.int64),
    np.zeros((0, 5), dtype=np.float64),
)

SAMPLES: tuple[Envelope, ...] = tuple(
    Envelope(body=body, msg_id=f"m{i}", sender="agent-1", job_id="job", round=2, ts=1.7e9)
    for i, body in enumerate(
        (
            Status(state="online", session="s1"),
            Hello(
                device_class="raspberry-pi-5",
                arch="aarch64",
                cores=4,
                memory_bytes=1 << 30,
                gpus=(GpuInfo(index=0, name="Orin", memory_bytes=1 << 32),),
                runtimes=("numpy", "litert"),
                num_examples=50,
                profile={"train_rate": 10.0, "availability": 0.9},
                label_counts=(5, 5, 40),
                session="s1",
            ),
            Heartbeat(seq=3, busy=False, load=0.4, memory_used_bytes=1 << 20, session="s1"),
            TrainIns(
                model='{"class_name": "Sequential"}',
                weights=_W,
                config=TrainConfig(epochs=2, local_steps=10, batch_size=16, learning_rate=0.05),
                budget_s=12.5,
                epoch=1,
            ),
            TrainRes(
                weights=_W,
                num_examples=40,
                steps=10,
                loss=0.7,
                train_s=1.5,
                metrics={"real_compute_s": 1.0},
            ),
            Failure(code="no_data", reason="empty shard"),
            ModelRef(
                name="digits",
                version=3,
                job_id="job",
                format="keras",
                url="http://127.0.0.1:1/m.keras",
                sha256="0" * 64,
                size_bytes=1234,
                metrics={"accuracy": 0.9},
                variants=(
                    Artifact(
                        format="tflite", url="http://127.0.0.1:1/m", sha256="1" * 64, size_bytes=9
                    ),
                ),
                normalization=Normalization(offset=(0.0,), scale=(0.0625,)),
            ),
            JobState(
                status="running",
                round=2,
                accuracy=0.5,
                best_accuracy=0.6,
                target_accuracy=0.9,
                elapsed_s=10.0,
                time_budget_s=60.0,
                participants=("a", "b"),
                failures=("c",),
                plan={"participants": 2, "steps": {"a": 10}, "note": [1, 2.5, None, True]},
            ),
            ServingStats(
                model="digits",
                version=3,
                state="READY",
                sla_ms=20.0,
                percentile=95.0,
                window_s=1.0,
                period_s=5.0,
                response_ms=8.5,
                p95_ms=8.5,
                violation_share=0.01,
                requests_per_s=40.0,
                requests=400,
                cores=1.5,
            ),
        )
    )
)
"""One valid envelope of every message type: the seeds every case mutates."""


def _split(frame: bytes) -> tuple[Any, bytes]:
    _, header_len = _PREFIX.unpack_from(frame)
    start = _PREFIX.size
    header = msgpack.unpackb(frame[start : start + header_len], raw=False)
    return header, frame[start + header_len :]


SEEDS: tuple[tuple[Any, bytes], ...] = tuple(_split(encode(env)) for env in SAMPLES)

# ------------------------------------------------------------------------------ raw fragments


def _nested_lists(depth: int) -> bytes:
    return b"\x91" * depth + b"\xc0"


def _nested_maps(depth: int) -> bytes:
    return b"\x81\xa1k" * depth + b"\xc0"


HOSTILE_FRAGMENTS: tuple[bytes, ...] = (
    b"\x81\x91\x01\x01",  # {[1]: 1}: a list as a map key (unhashable)
    b"\x81\x80\x01",  # {{}: 1}: a map as a map key (unhashable)
    b"\x81\x01\x01",  # {1: 1}: a non-string key
    b"\x81\xc0\x01",  # {None: 1}
    b"\x81\xc4\x01k\x01",  # {b"k": 1}: a binary key
    b"\x82\xa1k\x01\xa1k\x02",  # {"k": 1, "k": 2}: a repeated key
    b"\xdd\xff\xff\xff\xff",  # array32 claiming 4 Gi elements
    b"\xdf\xff\xff\xff\xff",  # map32 claiming 4 Gi pairs
    b"\xdb\xff\xff\xff\xff",  # str32 claiming 4 GiB
    b"\xc6\xff\xff\xff\xff",  # bin32 claiming 4 GiB
    b"\xc9\xff\xff\xff\xff\x05",  # ext32 claiming 4 GiB
    b"\xd4\x01\x00",  # fixext1: an ExtType
    b"\xd6\xff\x00\x00\x00\x00",  # the timestamp ext type (-1)
    b"\xd7\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # a timestamp out of range
    b"\xc7\x00\x05",  # ext8 of length 0
    b"\xc1",  # the one byte msgpack never uses
    b"\xa2\xff\xfe",  # a str of invalid UTF-8
    b"\xa3\xed\xa0\x80",  # a str holding a UTF-16 surrogate
    b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff",  # uint64 max
    b"\xd3\x80\x00\x00\x00\x00\x00\x00\x00",  # int64 min
    b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00",  # float64 NaN
    b"\xcb\x7f\xf0\x00\x00\x00\x00\x00\x00",  # float64 +Inf
    b"\xca\xff\x80\x00\x00",  # float32 -Inf
    b"\xcb\x7f\xef\xff\xff\xff\xff\xff\xff",  # float64 max (finite; overflows sums)
    b"\x93\xa3<f4\x92\xcf\xff\xff\xff\xff\xff\xff\xff\xff\x00\x00",  # shape [2**64-1, 0]
    b"\x93\xa3<f4\x92\x00\xcf\xff\xff\xff\xff\xff\xff\xff\xff\x00",  # shape [0, 2**64-1]
    b"\x93\xa3<f4\x93\x00\xcf\x7f\xff\xff\xff\xff\xff\xff\xff\xcf\x7f\xff\xff\xff\xff\xff\xff\xff\x00",
    b"\x93\xa3<f4\x91\xce\x40\x00\x00\x00\xcf\x00\x00\x00\x01\x00\x00\x00\x00",  # 4 GiB array
    b"\x93\xa3>f4\x91\x01\x04",  # big-endian dtype
    b"\x93\xa3|O8\x91\x01\x08",  # object dtype
    b"\x93\xa4<U10\x91\x01\x28",  # unicode dtype
    b"\x93\x91\xa3<f4\x91\x01\x04",  # an unhashable dtype
    b"\x93\xa3<f4\x91\xff\xfc",  # a negative dimension
    b"\x93\xa3<f4\x91\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00\x04",  # a float dimension
    b"\x93\xa3<f4\x99\x01\x01\x01\x01\x01\x01\x01\x01\x01\x04",  # 9 dimensions
    b"\x92\xa3<f4\x91\x01",  # a descriptor of two items
    _nested_lists(40),
    _nested_lists(600),
    _nested_lists(3000),
    _nested_maps(40),
    _nested_maps(600),
    _nested_maps(3000),
)
"""Msgpack values no packer writes, or values at the edge of what the decoder must refuse."""

EDGE_VALUES: tuple[Any, ...] = (
    float("nan"),
    float("inf"),
    -float("inf"),
    -1,
    -1.0,
    0,
    2**64 - 1,
    -(2**63),
    1e308,
    -1e308,
    True,
    None,
    "",
    "x" * 70_000,
    b"\x00",
    [],
    {},
)
"""Packable values that sit at or past the edge of a field's type or bounds."""

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
msgpack_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=8,
)
"""Any value :func:`msgpack.packb` writes: the wrong type for almost every field."""

raw_fragments = st.one_of(
    st.sampled_from(HOSTILE_FRAGMENTS),
    st.integers(1, 5000).map(_nested_lists),
    st.integers(1, 5000).map(_nested_maps),
    msgpack_values.map(lambda v: msgpack.packb(v, use_bin_type=True)),
    st.binary(min_size=1, max_size=12),
)

# ------------------------------------------------------------------------------ mutations

_PLACEHOLDER = "\x00hf-fuzz-placeholder\x00"
_PLACEHOLDER_PACKED = msgpack.packb(_PLACEHOLDER)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, (*prefix, index))
    return out


def _replace(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(node, dict):
        return {**node, head: _replace(node[head], rest, value)}
    copy = list(node)
    copy[head] = _replace(node[head], rest, value)
    return copy


def _drop(node: Any, path: tuple[Any, ...]) -> Any:
    if not path:
        return node
    head, rest = path[0], path[1:]
    if rest:
        copy: Any = dict(node) if isinstance(node, dict) else list(node)
        copy[head] = _drop(node[head], rest)
        return copy
    if isinstance(node, dict):
        return {k: v for k, v in node.items() if k != head}
    return [v for i, v in enumerate(node) if i != head]


def _add(node: Any, path: tuple[Any, ...], key: str, value: Any) -> Any:
    target = node
    for step in path:
        target = target[step]
    if isinstance(target, dict):
        return _replace(node, path, {**target, key: value})
    if isinstance(target, list):
        return _replace(node, path, [*target, value])
    return node


@dataclass(frozen=True, slots=True)
class FuzzCase:
    """One generated frame and how it was made (shown when a case fails)."""

    frame: bytes
    how: str


@st.composite
def _header_mutation(draw: st.DrawFn) -> FuzzCase:
    seed_index = draw(st.integers(0, len(SEEDS) - 1))
    header, tail = SEEDS[seed_index]
    path = draw(st.sampled_from(_paths(header)))
    kind = draw(st.sampled_from(["value", "edge", "raw", "raw", "raw", "drop", "add", "none"]))
    if kind in ("value", "edge"):
        value = draw(msgpack_values if kind == "value" else st.sampled_from(EDGE_VALUES))
        packed = msgpack.packb(_replace(header, path, value), use_bin_type=True)
    elif kind == "raw":
        fragment = draw(raw_fragments)
        packed = msgpack.packb(_replace(header, path, _PLACEHOLDER), use_bin_type=True)
        packed = packed.replace(_PLACEHOLDER_PACKED, fragment, 1)
    elif kind == "drop":
        packed = msgpack.packb(_drop(header, path), use_bin_type=True)
    elif kind == "add":
        key = draw(st.sampled_from(["x", "v", "b", "re", "weights", "", "\x00"]))
        packed = msgpack.packb(_add(header, path, key, draw(msgpack_values)), use_bin_type=True)
    else:
        packed = msgpack.packb(header, use_bin_type=True)
    frame = _PREFIX.pack(b"HF", len(packed)) + packed + tail
    how = f"{SAMPLES[seed_index].type}: {kind} at {list(path)!r:.120}"
    return FuzzCase(frame=frame, how=how)


@st.composite
def _frame_damage(draw: st.DrawFn, case: FuzzCase) -> FuzzCase:
    frame = bytearray(case.frame)
    kind = draw(st.sampled_from(["none", "none", "length", "magic", "cut", "flip", "append"]))
    if kind == "length":
        claimed = draw(
            st.integers(0, 2**32 - 1)
            | st.integers(-64, 64).map(lambda d: max(0, struct.unpack_from(">I", frame, 2)[0] + d))
        )
        frame[2:6] = struct.pack(">I", claimed % 2**32)
    elif kind == "magic":
        frame[0:2] = draw(st.binary(min_size=2, max_size=2))
    elif kind == "cut":
        frame = frame[: draw(st.integers(0, max(0, len(frame) - 1)))]
    elif kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(frame) - 1))
            frame[i] ^= draw(st.integers(1, 255))
    elif kind == "append":
        frame += draw(st.binary(min_size=1, max_size=64))
    return FuzzCase(frame=bytes(frame), how=f"{case.how}; frame damage: {kind}")


cases: st.SearchStrategy[FuzzCase] = st.one_of(
    _header_mutation().flatmap(lambda c: _frame_damage(c)),
    _header_mutation().flatmap(lambda c: _frame_damage(c)),
    _header_mutation().flatmap(lambda c: _frame_damage(c)),
    st.binary(max_size=512).map(lambda b: FuzzCase(frame=b, how="random bytes")),
    st.binary(max_size=512).map(
        lambda b: FuzzCase(frame=_PREFIX.pack(b"HF", len(b)) + b, how="random header")
    ),
)
"""Every kind of case, most of them structured (three parts in five)."""


def decode_case(case: FuzzCase) -> Envelope | ProtocolError:
    """Decode ``case``; a ProtocolError is an answer, anything else raised is a bug: it is
    re-raised as an ``AssertionError`` naming the case."""
    try:
        return decode(case.frame)
    except ProtocolError as exc:
        return exc
    except Exception as exc:  # the point: nothing else may come out
        raise AssertionError(
            f"decode raised {type(exc).__name__}: {exc} for {case.how}; "
            f"frame[:200] = {case.frame[:200]!r}"
        ) from exc


def outcome_name(outcome: Envelope | ProtocolError) -> str:
    return outcome.type if isinstance(outcome, Envelope) else outcome.code


def grid() -> list[FuzzCase]:
    """Every seed x every path of its header x (every hostile fragment, every edge value, drop,
    add an unknown key), plus every truncation and header-length error of every seed: about
    12,000 cases, deterministic, decoded in about a second."""
    out: list[FuzzCase] = []
    for env, (header, tail) in zip(SAMPLES, SEEDS, strict=True):
        for path in _paths(header):
            where = f"{env.type} at {list(path)!r}"
            packed = msgpack.packb(_replace(header, path, _PLACEHOLDER), use_bin_type=True)
            variants = [
                (packed.replace(_PLACEHOLDER_PACKED, frag, 1), f"raw {frag[:24]!r}")
                for frag in HOSTILE_FRAGMENTS
            ]
            variants += [
                (msgpack.packb(_replace(header, path, v), use_bin_type=True), f"value {v!r:.24}")
                for v in EDGE_VALUES
            ]
            variants.append((msgpack.packb(_drop(header, path), use_bin_type=True), "drop"))
            added = _add(header, path, "x", 1)
            if added is not header:
                variants.append((msgpack.packb(added, use_bin_type=True), "add key x"))
            out += [
                FuzzCase(frame=_PREFIX.pack(b"HF", len(h)) + h + tail, how=f"{where}: {how}")
                for h, how in variants
            ]
        frame = encode(env)
        out += [FuzzCase(frame=frame[:n], how=f"{env.type} cut at {n}") for n in range(len(frame))]
        header_len = len(frame) - len(tail) - _PREFIX.size
        for delta in (*range(-16, 0), *range(1, 17), 2**31, 2**32 - 1 - header_len):
            claimed = max(0, header_len + delta)
            damaged = _PREFIX.pack(b"HF", claimed) + frame[_PREFIX.size :]
            out.append(FuzzCase(frame=damaged, how=f"{env.type} header length {claimed}"))
    return out
