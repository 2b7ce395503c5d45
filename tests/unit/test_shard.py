"""The shard format: an ``.npz`` of float32 ``x`` and int64 ``y``, checked on the way in."""

from __future__ import annotations

import contextlib
import io
import random
import zipfile
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from protocol import (
    InvalidArray,
    MalformedMessage,
    NonFiniteValues,
    ProtocolError,
    Shard,
    decode_shard,
    encode_shard,
)


def npz(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def good_x(n: int = 4) -> npt.NDArray[np.float32]:
    return (np.arange(n * 3).reshape(n, 3) / 7).astype(np.float32)


def good_y(n: int = 4) -> npt.NDArray[np.int64]:
    return np.arange(n, dtype=np.int64) % 3


SAMPLE = encode_shard(Shard(x=good_x(), y=good_y()))


def decode_outcome(data: bytes) -> Shard | ProtocolError:
    """Decode; a ProtocolError is an answer, any other exception escapes and fails the test."""
    try:
        return decode_shard(data)
    except ProtocolError as exc:
        return exc


@st.composite
def shards(draw: st.DrawFn) -> Shard:
    n = draw(st.integers(min_value=0, max_value=8))
    features = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    x = draw(
        hnp.arrays(
            np.float32,
            (n, *features),
            elements=st.floats(width=32, allow_nan=False, allow_infinity=False),
        )
    )
    y = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, 2**63 - 1)))
    return Shard(x=x, y=y)


@settings(max_examples=100, deadline=None)
@given(shard=shards())
def test_round_trip(shard: Shard) -> None:
    out = decode_shard(encode_shard(shard))
    assert out.x.dtype == np.float32
    assert out.y.dtype == np.int64
    assert out.x.shape == shard.x.shape
    assert np.array_equal(out.x, shard.x)
    assert np.array_equal(out.y, shard.y)
    assert len(out) == len(shard)
    assert out.num_classes == shard.num_classes


def test_len_and_num_classes() -> None:
    shard = decode_shard(SAMPLE)
    assert len(shard) == 4
    assert shard.num_classes == 3  # labels 0, 1, 2, 0
    empty = Shard(x=np.zeros((0, 2), np.float32), y=np.zeros(0, np.int64))
    assert len(empty) == 0
    assert empty.num_classes == 0


@pytest.mark.parametrize(
    ("x", "y"),
    [
        (good_x().astype(np.float64), good_y()),
        (good_x().astype(np.float16), good_y()),
        (good_x().astype(">f4"), good_y()),
        (good_x(), good_y().astype(np.int32)),
        (good_x(), good_y().astype(np.uint64)),
        (good_x(), good_y().astype(np.float32)),
    ],
    ids=["x-f64", "x-f16", "x-big-endian", "y-i32", "y-u64", "y-f32"],
)
def test_wrong_dtypes(x: npt.NDArray[Any], y: npt.NDArray[Any]) -> None:
    with pytest.raises(InvalidArray, match="must be"):
        decode_shard(npz(x=x, y=y))
    with pytest.raises(InvalidArray):
        Shard(x=x, y=y)


@pytest.mark.parametrize(
    ("x", "y"),
    [
        (good_x(4), good_y(3)),
        (good_x(3), good_y(4)),
        (np.zeros(4, np.float32), good_y(4)),
        (good_x(4), good_y(4).reshape(4, 1)),
        (np.zeros((), np.float32), np.zeros((), np.int64)),
    ],
    ids=["more-x", "more-y", "x-1d", "y-2d", "scalars"],
)
def test_mismatched_lengths_and_ranks(x: npt.NDArray[Any], y: npt.NDArray[Any]) -> None:
    with pytest.raises(InvalidArray):
        decode_shard(npz(x=x, y=y))


def test_negative_labels() -> None:
    with pytest.raises(InvalidArray, match="non-negative"):
        decode_shard(npz(x=good_x(), y=np.array([0, 1, -1, 2], np.int64)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features(bad: float) -> None:
    x = good_x()
    x[2, 1] = bad
    with pytest.raises(NonFiniteValues):
        decode_shard(npz(x=x, y=good_y()))


@pytest.mark.parametrize(
    "arrays",
    [
        {"x": good_x(), "y": good_y(), "w": np.ones(4, np.float32)},
        {"x": good_x()},
        {"y": good_y()},
        {"X": good_x(), "y": good_y()},
        {},
    ],
    ids=["extra", "no-y", "no-x", "renamed", "empty"],
)
def test_exactly_x_and_y(arrays: dict[str, npt.NDArray[Any]]) -> None:
    with pytest.raises(MalformedMessage, match="exactly"):
        decode_shard(npz(**arrays))


def test_object_arrays_are_not_unpickled() -> None:
    data = npz(x=np.array([object()], dtype=object), y=good_y(1))
    with pytest.raises(MalformedMessage):
        decode_shard(data)


def test_a_bare_npy_array_is_not_a_shard() -> None:
    buf = io.BytesIO()
    np.save(buf, good_x())
    with pytest.raises(MalformedMessage):
        decode_shard(buf.getvalue())


def test_zip_member_with_unsupported_compression() -> None:
    data = bytearray(SAMPLE)
    # the compression method of the first local file header (offset 8) set to an unknown value
    assert data[:4] == b"PK\x03\x04"
    data[8] = 99
    cd = data.rfind(b"PK\x01\x02")
    data[cd + 10] = 99  # and in the central directory, which zipfile reads first
    with pytest.raises(MalformedMessage):
        decode_shard(bytes(data))


def test_corrupt_compressed_member() -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, x=np.zeros((200, 4), np.float32), y=np.zeros(200, np.int64))
    ok = buf.getvalue()
    assert len(decode_shard(ok)) == 200
    corrupt = bytearray(ok)
    with zipfile.ZipFile(io.BytesIO(ok)) as zf:
        info = zf.getinfo("x.npy")
        start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for i in range(start + 5, start + 25):
        corrupt[i] ^= 0x55
    with pytest.raises(MalformedMessage):
        decode_shard(bytes(corrupt))


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage", b"PK\x03\x04", b"PK\x05\x06" + b"\x00" * 18, b"\x93NUMPY", b"\x80\x04K\x01."],
    ids=["empty", "text", "zip-magic-only", "empty-zip", "npy-magic-only", "pickle"],
)
def test_garbage_bytes(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode_shard(data)


def test_every_truncation_is_refused() -> None:
    for n in range(0, len(SAMPLE), 7):
        with pytest.raises(ProtocolError):
            decode_shard(SAMPLE[:n])


def test_every_byte_flip_gives_a_shard_or_a_protocol_error() -> None:
    refused = 0
    for i in range(len(SAMPLE)):
        for mask in (0x01, 0x80, 0xFF):
            data = bytearray(SAMPLE)
            data[i] ^= mask
            outcome = decode_outcome(bytes(data))
            if isinstance(outcome, ProtocolError):
                refused += 1
            else:
                assert outcome.x.dtype == np.float32
                assert outcome.y.dtype == np.int64
                assert len(outcome.x) == len(outcome.y)
    assert refused > 0


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=512))
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes) -> None:
    for candidate in (data, b"PK\x03\x04" + data, SAMPLE[: len(SAMPLE) // 2] + data):
        outcome = decode_outcome(candidate)
        assert isinstance(outcome, (Shard, MalformedMessage, InvalidArray, NonFiniteValues))


def _forged(shape: str, payload: bytes = b"\0" * 60) -> bytes:
    """A shard whose ``x.npy`` header claims ``shape`` over ``payload``."""
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"
    header = header.ljust(117) + "\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr(
            "x.npy",
            b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + payload,
        )
        archive.writestr("y.npy", b"")
    return buf.getvalue()


@pytest.mark.parametrize(
    "shape", ["(100000000000, 3)", "(0, 100000000000000000000)", "(2**40, 2**40)"]
)
def test_a_header_claiming_more_than_the_member_holds_is_refused_before_allocating(
    shape: str,
) -> None:
    """Issue 17: NumPy allocated what the header claimed (1.1 TiB here): a MemoryError."""
    with pytest.raises(MalformedMessage):
        decode_shard(_forged(shape))


def test_a_member_claiming_more_than_deflate_can_expand_is_refused() -> None:
    data = bytearray(
        encode_shard(Shard(x=np.ones((4, 3), np.float32), y=np.arange(4, dtype=np.int64)))
    )
    # the central directory's uncompressed size of the first member: 2**31 (stored, so the
    # compressed size stays ~200 bytes)
    directory = data.rindex(b"PK\x01\x02")
    data[directory + 24 : directory + 28] = (2**31).to_bytes(4, "little")
    with pytest.raises(MalformedMessage, match="more than deflate"):
        decode_shard(bytes(data))


def test_mutated_shards_give_a_shard_or_a_protocol_error() -> None:
    good = encode_shard(Shard(x=np.ones((5, 3), np.float32), y=np.arange(5, dtype=np.int64)))
    rng = random.Random(17)
    for _ in range(3000):
        data = bytearray(good)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        for _ in range(rng.randint(0, 6)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        with contextlib.suppress(ProtocolError):  # anything else escapes and fails the test
            decode_shard(bytes(data))
