"""The frame codec: every message survives a round trip, and no byte string breaks the decoder.

Bad frames are built by hand (``msgpack.packb`` + ``struct.pack(">2sI", b"HF", len(header))``) so
each test names exactly one thing that is wrong and the error class it must produce.
"""

from __future__ import annotations

import dataclasses
import math
import struct
import time
import typing
from collections.abc import Callable, Mapping
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from protocol import (
    ALIGN,
    ENVELOPE_BOUNDS,
    FIELD_BOUNDS,
    MAP_BOUNDS,
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    Artifact,
    Bound,
    DuplicateMessage,
    Envelope,
    Failure,
    GpuInfo,
    Heartbeat,
    Hello,
    InvalidArray,
    InvalidTopic,
    JobState,
    Limits,
    MalformedMessage,
    Message,
    ModelRef,
    NonFiniteValues,
    Normalization,
    OutOfRange,
    PayloadTooLarge,
    ProtocolError,
    ServingStats,
    ShapeMismatch,
    StaleRound,
    Status,
    TrainConfig,
    TrainIns,
    TrainRes,
    UnknownMessageType,
    UnsupportedVersion,
    decode,
    encode,
    new_envelope,
)

PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------------------ strategies

WIRE_DTYPES: tuple[np.dtype[Any], ...] = tuple(
    np.dtype(name)
    for name in (
        "float16",
        "float32",
        "float64",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "bool",
    )
)

ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
finite = st.floats(allow_nan=False, allow_infinity=False)
text = st.text(max_size=16)
float_maps = st.dictionaries(text, finite, max_size=4)


def in_bounds(record: type, name: str) -> st.SearchStrategy[Any]:
    """Values of ``record.name`` inside its bounds (``protocol.FIELD_BOUNDS``), of its wire type:
    generated messages must be ones a receiver accepts."""
    bound = FIELD_BOUNDS[record][name]
    hint = typing.get_type_hints(record)[name]
    if int in (hint, *typing.get_args(hint)):  # int, int | None, tuple[int, ...]
        low = -(2**63) if bound.low == -math.inf else math.floor(bound.low) + int(bound.low_open)
        return st.integers(min_value=low, max_value=2**63 - 1)
    return floats_in(bound)


def floats_in(bound: Bound) -> st.SearchStrategy[float]:
    return st.floats(
        min_value=None if bound.low == -math.inf else bound.low,
        max_value=None if bound.high == math.inf else bound.high,
        exclude_min=bound.low_open and bound.low != -math.inf,
        exclude_max=bound.high_open and bound.high != math.inf,
        allow_nan=False,
        allow_infinity=False,
    )


def bounded_map(record: type, name: str) -> st.SearchStrategy[dict[str, float]]:
    """A ``str -> float`` map whose known keys (``protocol.MAP_BOUNDS``) are in bounds."""
    known = MAP_BOUNDS[(record, name)]
    return st.builds(
        lambda fixed, free: {**free, **fixed},
        st.fixed_dictionaries({}, optional={k: floats_in(b) for k, b in known.items()}),
        st.dictionaries(text.filter(lambda k: k not in known), finite, max_size=3),
    )


def b(record: type, name: str) -> st.SearchStrategy[Any]:
    return in_bounds(record, name)


def _arrays_of(dtype: np.dtype[Any]) -> st.SearchStrategy[npt.NDArray[Any]]:
    elements = (
        hnp.from_dtype(dtype, allow_nan=False, allow_infinity=False)
        if dtype.kind == "f"
        else hnp.from_dtype(dtype)
    )
    shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)
    return hnp.arrays(dtype, shapes, elements=elements)


arrays: st.SearchStrategy[npt.NDArray[Any]] = st.sampled_from(WIRE_DTYPES).flatmap(_arrays_of)
weights = st.lists(arrays, max_size=4).map(tuple)

plain_values = st.recursive(
    st.none() | st.booleans() | ints | finite | text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3),
    max_leaves=12,
)

gpu_infos = st.builds(
    GpuInfo, index=b(GpuInfo, "index"), name=text, memory_bytes=b(GpuInfo, "memory_bytes")
)
train_configs = st.builds(
    TrainConfig,
    epochs=b(TrainConfig, "epochs"),
    local_steps=st.none() | b(TrainConfig, "local_steps"),
    batch_size=b(TrainConfig, "batch_size"),
    learning_rate=b(TrainConfig, "learning_rate"),
    proximal_mu=b(TrainConfig, "proximal_mu"),
    seed=b(TrainConfig, "seed"),
)

BODIES: Mapping[type[Message], st.SearchStrategy[Message]] = {
    Status: st.builds(Status, state=st.sampled_from(["online", "offline"]), session=text),
    Hello: st.builds(
        Hello,
        device_class=text,
        arch=text,
        cores=b(Hello, "cores"),
        memory_bytes=b(Hello, "memory_bytes"),
        gpus=st.lists(gpu_infos, max_size=3).map(tuple),
        runtimes=st.lists(text, max_size=3).map(tuple),
        num_examples=b(Hello, "num_examples"),
        software=text,
        profile=bounded_map(Hello, "profile"),
        label_counts=st.lists(b(Hello, "label_counts"), max_size=4).map(tuple),
        session=text,
    ),
    Heartbeat: st.builds(
        Heartbeat,
        seq=b(Heartbeat, "seq"),
        busy=st.booleans(),
        load=b(Heartbeat, "load"),
        memory_used_bytes=b(Heartbeat, "memory_used_bytes"),
        session=text,
    ),
    TrainIns: st.builds(
        TrainIns,
        model=text,
        weights=weights,
        config=train_configs,
        budget_s=b(TrainIns, "budget_s"),
        epoch=b(TrainIns, "epoch"),
    ),
    TrainRes: st.builds(
        TrainRes,
        weights=weights,
        num_examples=b(TrainRes, "num_examples"),
        steps=b(TrainRes, "steps"),
        loss=finite,
        train_s=b(TrainRes, "train_s"),
        metrics=float_maps,
    ),
    Failure: st.builds(Failure, code=text, reason=text),
    ModelRef: st.builds(
        ModelRef,
        name=text,
        version=b(ModelRef, "version"),
        job_id=text,
        format=text,
        url=text,
        sha256=text,
        size_bytes=b(ModelRef, "size_bytes"),
        metrics=bounded_map(ModelRef, "metrics"),
        variants=st.lists(
            st.builds(
                Artifact, format=text, url=text, sha256=text, size_bytes=b(Artifact, "size_bytes")
            ),
            max_size=3,
        ).map(tuple),
        normalization=st.none()
        | st.integers(1, 8).flatmap(
            lambda n: st.builds(
                Normalization,
                offset=st.lists(finite, min_size=n, max_size=n).map(tuple),
                scale=st.lists(finite, min_size=n, max_size=n).map(tuple),
            )
        ),
    ),
    JobState: st.builds(
        JobState,
        status=text,
        round=b(JobState, "round"),
        accuracy=b(JobState, "accuracy"),
        best_accuracy=b(JobState, "best_accuracy"),
        target_accuracy=b(JobState, "target_accuracy"),
        elapsed_s=b(JobState, "elapsed_s"),
        time_budget_s=b(JobState, "time_budget_s"),
        participants=st.lists(text, max_size=3).map(tuple),
        failures=st.lists(text, max_size=3).map(tuple),
        plan=st.dictionaries(text, plain_values, max_size=4),
        message=text,
        owner=text,
        epoch=b(JobState, "epoch"),
    ),
    ServingStats: st.builds(
        ServingStats,
        model=text,
        version=b(ServingStats, "version"),
        state=text,
        sla_ms=b(ServingStats, "sla_ms"),
        percentile=b(ServingStats, "percentile"),
        window_s=b(ServingStats, "window_s"),
        period_s=b(ServingStats, "period_s"),
        response_ms=st.none() | b(ServingStats, "response_ms"),
        p95_ms=st.none() | b(ServingStats, "p95_ms"),
        violation_share=st.none() | b(ServingStats, "violation_share"),
        requests_per_s=b(ServingStats, "requests_per_s"),
        requests=b(ServingStats, "requests"),
        shed=b(ServingStats, "shed"),
        cores=b(ServingStats, "cores"),
        queued=b(ServingStats, "queued"),
        reason=text,
    ),
}


def envelopes(body: st.SearchStrategy[Message]) -> st.SearchStrategy[Envelope]:
    return st.builds(
        Envelope,
        body=body,
        msg_id=st.text(min_size=1, max_size=32),
        sender=text,
        job_id=text,
        round=st.integers(min_value=0, max_value=2**63 - 1),
        ts=floats_in(ENVELOPE_BOUNDS["ts"]),
        reply_to=text,
    )


any_envelope = envelopes(st.one_of(*BODIES.values()))


# ------------------------------------------------------------------------------ helpers


def assert_wire_equal(got: object, want: object, where: str = "envelope") -> None:
    """Field-by-field equality that understands arrays (same dtype, shape and values)."""
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray), where
        assert got.dtype == want.dtype, where
        assert got.shape == want.shape, where
        assert np.array_equal(got, want), where
        return
    assert type(got) is type(want), f"{where}: {type(got).__name__} != {type(want).__name__}"
    if dataclasses.is_dataclass(want):
        for f in dataclasses.fields(want):
            assert_wire_equal(getattr(got, f.name), getattr(want, f.name), f"{where}.{f.name}")
    elif isinstance(want, (tuple, list)):
        assert isinstance(got, (tuple, list))
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_wire_equal(g, w, f"{where}[{i}]")
    elif isinstance(want, dict):
        assert isinstance(got, dict)
        assert got.keys() == want.keys(), where
        for k in want:
            assert_wire_equal(got[k], want[k], f"{where}[{k!r}]")
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def decoded_arrays(env: Envelope) -> list[npt.NDArray[Any]]:
    body = env.body
    if isinstance(body, (TrainIns, TrainRes)):
        return list(body.weights)
    return []


def pack_frame(header: object, payload: bytes = b"") -> bytes:
    """A frame around ``header``; ``payload`` (one array's bytes) starts ALIGN-aligned, as the
    encoder lays it out."""
    packed: bytes = msgpack.packb(header, use_bin_type=True)
    pad = -(6 + len(packed)) % ALIGN if payload else 0
    return struct.pack(">2sI", b"HF", len(packed)) + packed + bytes(pad) + payload


def unpack_header(frame: bytes) -> dict[str, Any]:
    (length,) = struct.unpack_from(">I", frame, 2)
    header = msgpack.unpackb(frame[6 : 6 + length], raw=False)
    assert isinstance(header, dict)
    return header


def train_res_header(**body: Any) -> dict[str, Any]:
    """A valid TrainRes header with one float32 array of 3 values; ``body`` overrides its fields."""
    b: dict[str, Any] = {
        "weights": [["<f4", [3], 12]],
        "num_examples": 10,
        "steps": 2,
        "loss": 0.5,
        "train_s": 1.5,
        "metrics": {"accuracy": 0.75},
    }
    b.update(body)
    return {
        "v": PROTOCOL_VERSION,
        "t": "TrainRes",
        "id": "m1",
        "s": "agent-1",
        "j": "job",
        "r": 3,
        "ts": 1.0,
        "b": b,
    }


F32X3 = np.array([1.0, 2.0, 3.0], dtype="<f4").tobytes()


def job_state_header(plan: object) -> dict[str, Any]:
    body = {
        "status": "running",
        "round": 1,
        "accuracy": 0.5,
        "best_accuracy": 0.5,
        "target_accuracy": 0.9,
        "elapsed_s": 1.0,
        "time_budget_s": 60.0,
        "plan": plan,
    }
    return {
        "v": PROTOCOL_VERSION,
        "t": "JobState",
        "id": "m1",
        "s": "coord",
        "j": "job",
        "r": 1,
        "ts": 1.0,
        "b": body,
    }


def decode_outcome(data: bytes, limits: Limits | None = None) -> Envelope | ProtocolError:
    """Decode; a ProtocolError is an answer, any other exception escapes and fails the test."""
    try:
        return decode(data) if limits is None else decode(data, limits=limits)
    except ProtocolError as exc:
        return exc


def train_res_envelope(*arrays: npt.NDArray[Any], loss: float = 0.5) -> Envelope:
    return Envelope(
        body=TrainRes(weights=arrays, num_examples=4, steps=1, loss=loss, train_s=0.1),
        msg_id="m1",
        sender="agent-1",
        job_id="job",
        round=1,
        ts=123.0,
    )


SAMPLE = train_res_envelope(
    np.arange(6, dtype=np.float32).reshape(2, 3),
    np.array([1, -2, 3], dtype=np.int64),
    np.array([True, False]),
)
SAMPLE_FRAME = encode(SAMPLE)


# ------------------------------------------------------------------------------ round trips


def test_every_message_type_has_a_strategy() -> None:
    assert set(BODIES) == set(MESSAGE_TYPES.values())


@pytest.mark.parametrize("message_type", sorted(MESSAGE_TYPES))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip(message_type: str, data: st.DataObject) -> None:
    env = data.draw(envelopes(BODIES[MESSAGE_TYPES[message_type]]))
    decoded = decode(encode(env))
    assert decoded.type == message_type
    assert_wire_equal(decoded, env)
    for arr in decoded_arrays(decoded):
        assert not arr.flags.writeable


@PROPERTY
@given(env=any_envelope)
def test_encoding_is_deterministic(env: Envelope) -> None:
    assert encode(env) == encode(env)
    assert encode(decode(encode(env))) == encode(env)


def test_round_trip_keeps_zero_dim_and_empty_arrays() -> None:
    scalar = np.array(2.5, dtype=np.float32)
    empty = np.zeros((0, 3), dtype=np.int16)
    out = decode(encode(train_res_envelope(scalar, empty))).body
    assert isinstance(out, TrainRes)
    assert out.weights[0].shape == ()
    assert float(out.weights[0]) == 2.5
    assert out.weights[1].shape == (0, 3)
    assert out.weights[1].dtype == np.int16


def test_big_endian_arrays_travel_little_endian_with_values_kept() -> None:
    inputs = [
        np.array([1.5, -2.25, 3e38], dtype=">f4"),
        np.array([[1, -(2**62)], [3, 4]], dtype=">i8"),
        np.array([65535, 1], dtype=">u2"),
        np.array([0.5, -1.0], dtype=">f2"),
        np.array([1e300, -0.0], dtype=">f8"),
    ]
    frame = encode(train_res_envelope(*inputs))
    specs = unpack_header(frame)["b"]["weights"]
    assert [spec[0] for spec in specs] == ["<f4", "<i8", "<u2", "<f2", "<f8"]
    out = decode(frame).body
    assert isinstance(out, TrainRes)
    for got, want in zip(out.weights, inputs, strict=True):
        assert got.dtype == want.dtype.newbyteorder("<")
        assert got.dtype.byteorder in ("<", "=")
        assert np.array_equal(got, want)


def test_non_contiguous_arrays_are_sent_in_logical_order() -> None:
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    strided = base[::2, 1::2]
    fortran = np.asfortranarray(base)
    out = decode(encode(train_res_envelope(strided, fortran))).body
    assert isinstance(out, TrainRes)
    assert np.array_equal(out.weights[0], strided)
    assert np.array_equal(out.weights[1], base)


def test_decoded_arrays_are_read_only_views_of_the_frame() -> None:
    out = decode(SAMPLE_FRAME).body
    assert isinstance(out, TrainRes)
    frame_bytes = np.frombuffer(SAMPLE_FRAME, dtype=np.uint8)
    for arr in out.weights:
        assert not arr.flags.writeable
        if arr.size:
            assert np.shares_memory(arr, frame_bytes)


@pytest.mark.parametrize("wrap", [bytearray, memoryview])
def test_decoded_arrays_are_read_only_even_from_a_mutable_buffer(
    wrap: Callable[[bytearray], bytearray | memoryview],
) -> None:
    buf = wrap(bytearray(SAMPLE_FRAME))
    out = decode(buf).body
    assert isinstance(out, TrainRes)
    for arr in out.weights:
        assert not arr.flags.writeable
    assert np.array_equal(out.weights[0], np.arange(6, dtype=np.float32).reshape(2, 3))


def test_float_arrays_whose_sum_overflows_are_still_finite() -> None:
    big = np.array([1.7e308, 1.7e308, -1.7e308], dtype=np.float64)
    half = np.array([65504.0] * 4, dtype=np.float16)
    out = decode(encode(train_res_envelope(big, half))).body
    assert isinstance(out, TrainRes)
    assert np.array_equal(out.weights[0], big)
    assert np.array_equal(out.weights[1], half)


def test_new_envelope_gives_fresh_ids_and_the_current_time() -> None:
    before = time.time()
    a = new_envelope(Failure(code="x", reason="y"), sender="a1", job_id="j", round=2, reply_to="i1")
    b = new_envelope(Failure(code="x", reason="y"), sender="a1")
    assert a.msg_id
    assert a.msg_id != b.msg_id
    assert before <= a.ts <= time.time()
    assert (a.sender, a.job_id, a.round, a.type, a.reply_to) == ("a1", "j", 2, "Failure", "i1")
    assert (b.job_id, b.round, b.reply_to) == ("", 0, "")


def test_reply_to_travels_and_only_when_set() -> None:
    reply = new_envelope(Failure(code="x", reason="y"), sender="a1", reply_to="abc123")
    assert decode(encode(reply)).reply_to == "abc123"
    plain = new_envelope(Failure(code="x", reason="y"), sender="a1")
    assert decode(encode(plain)).reply_to == ""
    assert b"\xa2re" not in encode(plain)  # the header key is left out, not sent empty


# ------------------------------------------------------------------------------ hostile bytes


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=256))
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes) -> None:
    outcome = decode_outcome(data)
    assert isinstance(outcome, (Envelope, ProtocolError))
    # ... and with the magic and a plausible header length in front, to get past the prefix.
    framed = decode_outcome(struct.pack(">2sI", b"HF", len(data)) + data)
    assert isinstance(framed, (Envelope, ProtocolError))


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(
    key=st.sampled_from(["v", "t", "id", "s", "j", "r", "ts", "b"]),
    body_key=st.sampled_from(
        ["weights", "num_examples", "steps", "loss", "train_s", "metrics", "x"]
    ),
    value=msgpack_values,
    in_body=st.booleans(),
    payload=st.binary(max_size=24),
)
def test_headers_with_a_field_replaced_raise_only_protocol_errors(
    key: str, body_key: str, value: object, in_body: bool, payload: bytes
) -> None:
    header = (
        train_res_header(**{body_key: value}) if in_body else {**train_res_header(), key: value}
    )
    outcome = decode_outcome(pack_frame(header, payload))
    assert isinstance(outcome, (Envelope, ProtocolError))
    if isinstance(outcome, Envelope):
        assert outcome.msg_id
        assert outcome.type == "TrainRes"


@settings(max_examples=100, deadline=None)
@given(header=msgpack_values, payload=st.binary(max_size=32))
def test_any_msgpack_header_raises_only_protocol_errors(header: object, payload: bytes) -> None:
    outcome = decode_outcome(pack_frame(header, payload))
    assert isinstance(outcome, ProtocolError)  # never a complete TrainRes by chance


def test_every_truncation_of_a_valid_frame_is_refused() -> None:
    for n in range(len(SAMPLE_FRAME)):
        with pytest.raises(ProtocolError):
            decode(SAMPLE_FRAME[:n])


def test_every_single_byte_flip_gives_an_envelope_or_a_protocol_error() -> None:
    seen: set[type] = set()
    for i in range(len(SAMPLE_FRAME)):
        for mask in (0x01, 0x80, 0xFF):
            mutated = bytearray(SAMPLE_FRAME)
            mutated[i] ^= mask
            outcome = decode_outcome(bytes(mutated))
            assert isinstance(outcome, (Envelope, ProtocolError))
            seen.add(type(outcome))
    assert MalformedMessage in seen
    assert Envelope in seen  # flips inside int array data still decode


@PROPERTY
@given(env=any_envelope, index=st.integers(min_value=0), byte=st.integers(1, 255))
def test_byte_flips_in_generated_frames(env: Envelope, index: int, byte: int) -> None:
    frame = bytearray(encode(env))
    frame[index % len(frame)] ^= byte
    assert isinstance(decode_outcome(bytes(frame)), (Envelope, ProtocolError))


@PROPERTY
@given(env=any_envelope, extra=st.binary(min_size=1, max_size=64))
def test_appended_bytes_are_refused(env: Envelope, extra: bytes) -> None:
    with pytest.raises(MalformedMessage, match="trailing"):
        decode(encode(env) + extra)


@PROPERTY
@given(env=any_envelope, data=st.data())
def test_truncated_generated_frames_are_refused(env: Envelope, data: st.DataObject) -> None:
    frame = encode(env)
    n = data.draw(st.integers(min_value=0, max_value=len(frame) - 1))
    with pytest.raises(ProtocolError):
        decode(frame[:n])


# ------------------------------------------------------------------------------ explicit cases


def test_hand_built_frame_is_valid() -> None:
    """The baseline every case below changes in exactly one place."""
    env = decode(pack_frame(train_res_header(), F32X3))
    assert isinstance(env.body, TrainRes)
    assert np.array_equal(env.body.weights[0], [1.0, 2.0, 3.0])
    assert (env.msg_id, env.sender, env.job_id, env.round, env.ts) == (
        "m1",
        "agent-1",
        "job",
        3,
        1.0,
    )
    assert env.body.metrics == {"accuracy": 0.75}


@pytest.mark.parametrize("version", [1, 3, 0, "2", None])
def test_unknown_version(version: object) -> None:
    header = {**train_res_header(), "v": version}
    with pytest.raises(UnsupportedVersion):
        decode(pack_frame(header, F32X3))


def test_missing_version() -> None:
    header = train_res_header()
    del header["v"]
    with pytest.raises(UnsupportedVersion):
        decode(pack_frame(header, F32X3))


@pytest.mark.parametrize("type_name", ["Nope", "trainres", "", 7, None, ["TrainRes"]])
def test_unknown_type(type_name: object) -> None:
    header = {**train_res_header(), "t": type_name}
    with pytest.raises(UnknownMessageType):
        decode(pack_frame(header, F32X3))


def test_oversize_frame_on_decode() -> None:
    frame = pack_frame(train_res_header(), F32X3)
    assert isinstance(decode(frame, limits=Limits(max_payload_bytes=len(frame))), Envelope)
    with pytest.raises(PayloadTooLarge):
        decode(frame, limits=Limits(max_payload_bytes=len(frame) - 1))


def test_oversize_header_on_decode() -> None:
    frame = pack_frame(train_res_header(), F32X3)
    (header_len,) = struct.unpack_from(">I", frame, 2)
    assert isinstance(decode(frame, limits=Limits(max_header_bytes=header_len)), Envelope)
    with pytest.raises(PayloadTooLarge):
        decode(frame, limits=Limits(max_header_bytes=header_len - 1))


def test_header_length_field_above_the_limit() -> None:
    frame = struct.pack(">2sI", b"HF", 2**32 - 1) + b"\x80"
    with pytest.raises(PayloadTooLarge):
        decode(frame)


def test_header_length_past_the_end_of_the_frame() -> None:
    frame = pack_frame(train_res_header())
    (length,) = struct.unpack_from(">I", frame, 2)
    lying = struct.pack(">2sI", b"HF", length + 10) + frame[6:]
    with pytest.raises(MalformedMessage):
        decode(lying)


def test_too_many_arrays() -> None:
    frame = encode(train_res_envelope(*[np.zeros(1, np.float32)] * 3))
    assert isinstance(decode(frame, limits=Limits(max_arrays=3)), Envelope)
    with pytest.raises(PayloadTooLarge):
        decode(frame, limits=Limits(max_arrays=2))


def test_encode_refuses_a_frame_above_the_limits() -> None:
    env = train_res_envelope(np.zeros(1000, dtype=np.float64))
    size = len(encode(env))
    assert len(encode(env, limits=Limits(max_payload_bytes=size))) == size
    with pytest.raises(PayloadTooLarge):
        encode(env, limits=Limits(max_payload_bytes=size - 1))
    with pytest.raises(PayloadTooLarge):
        encode(env, limits=Limits(max_header_bytes=10))


@pytest.mark.parametrize(
    "array",
    [np.zeros(2, np.complex64), np.array(["a"], dtype="<U1"), np.array([None], dtype=object)],
)
def test_encode_refuses_dtypes_that_cannot_travel(array: npt.NDArray[Any]) -> None:
    with pytest.raises(InvalidArray):
        encode(train_res_envelope(array))


def test_encode_refuses_a_non_array_weight() -> None:
    not_an_array: Any = [1.0, 2.0]
    body = TrainRes(weights=(not_an_array,), num_examples=1, steps=1, loss=0.1, train_s=0.1)
    with pytest.raises(InvalidArray):
        encode(Envelope(body=body, msg_id="m", sender="s"))


@pytest.mark.parametrize("dtype", ["<c8", ">f4", "O", "<U4", "float32", "<f16", "|V4", 5])
def test_wrong_dtype_string(dtype: object) -> None:
    header = train_res_header(weights=[[dtype, [3], 12]])
    with pytest.raises(InvalidArray):
        decode(pack_frame(header, F32X3))


@pytest.mark.parametrize(
    ("shape", "nbytes"),
    [([3], 8), ([2, 2], 12), ([3], 16), ([], 12), ([3], "12"), ([3], 12.0)],
)
def test_shape_disagreeing_with_nbytes(shape: list[int], nbytes: object) -> None:
    header = train_res_header(weights=[["<f4", shape, nbytes]])
    with pytest.raises(InvalidArray):
        decode(pack_frame(header, F32X3))


@pytest.mark.parametrize("shape", [[-3], [3, -1], [True, 3], [3.0], "3", [1] * 9, None, [[3]]])
def test_bad_shape(shape: object) -> None:
    header = train_res_header(weights=[["<f4", shape, 12]])
    with pytest.raises(InvalidArray):
        decode(pack_frame(header, F32X3))


@pytest.mark.parametrize("spec", [["<f4", [3]], "<f4", None, ["<f4", [3], 12, 0]])
def test_bad_array_descriptor(spec: object) -> None:
    header = train_res_header(weights=[spec])
    with pytest.raises(InvalidArray):
        decode(pack_frame(header, F32X3))


def test_array_past_the_end_of_the_frame() -> None:
    header = train_res_header(weights=[["<f4", [4], 16]])
    with pytest.raises(InvalidArray, match="past the end"):
        decode(pack_frame(header, F32X3))


def test_second_array_past_the_end_of_the_frame() -> None:
    header = train_res_header(weights=[["<f4", [3], 12], ["<f4", [1], 4]])
    with pytest.raises(InvalidArray):
        decode(pack_frame(header, F32X3))


def test_arrays_are_aligned_and_padding_must_be_zero() -> None:
    frame = encode(
        new_envelope(
            TrainRes(
                weights=(np.ones(3, np.float32), np.ones(5, np.float64)),
                num_examples=1,
                steps=1,
                loss=0.1,
                train_s=0.1,
            ),
            sender="a",
        )
    )
    arrays = decode(frame).body.weights  # type: ignore[attr-defined]
    assert all(a.flags.aligned for a in arrays)
    (header_len,) = struct.unpack_from(">I", frame, 2)
    pad = -(6 + header_len) % ALIGN
    if pad:  # a non-zero byte in the padding is refused
        bad = bytearray(frame)
        bad[6 + header_len] = 1
        with pytest.raises(MalformedMessage, match="padding"):
            decode(bytes(bad))


def test_trailing_bytes() -> None:
    with pytest.raises(MalformedMessage, match="trailing"):
        decode(pack_frame(train_res_header(), F32X3 + b"\x00"))
    with pytest.raises(MalformedMessage):
        decode(pack_frame(train_res_header(weights=[]), F32X3))


@pytest.mark.parametrize("dtype", ["<f2", "<f4", "<f8"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_float_arrays(dtype: str, bad: float) -> None:
    values = np.array([1.0, bad, 2.0], dtype=dtype)
    with pytest.raises(NonFiniteValues):
        decode(encode(train_res_envelope(values)))
    header = train_res_header(weights=[[dtype, [3], values.nbytes]])
    with pytest.raises(NonFiniteValues):
        decode(pack_frame(header, values.tobytes()))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_scalars(bad: float) -> None:
    with pytest.raises(NonFiniteValues):
        decode(encode(train_res_envelope(np.zeros(1, np.float32), loss=bad)))
    with pytest.raises(NonFiniteValues):
        decode(pack_frame({**train_res_header(), "ts": bad}, F32X3))
    with pytest.raises(NonFiniteValues):
        decode(pack_frame(train_res_header(metrics={"accuracy": bad}), F32X3))
    with pytest.raises(NonFiniteValues):
        decode(pack_frame(job_state_header({"lr": [1.0, {"x": bad}]})))


def outside(bound: Bound, *, integer: bool) -> int | float:
    """A number just outside ``bound``, below it where it has a lower end."""
    if bound.low != -math.inf:
        if integer:
            return math.ceil(bound.low) - 1 if not bound.low_open else math.floor(bound.low)
        return bound.low if bound.low_open else bound.low - 1.0
    return bound.high if bound.high_open else bound.high + 1.0


NESTED: Mapping[type, tuple[type[Message], str]] = {
    GpuInfo: (Hello, "gpus"),
    TrainConfig: (TrainIns, "config"),
    Artifact: (ModelRef, "variants"),
}
"""Where a record that is not a message travels."""

FIELD_CASES = sorted(
    ((record, name) for record, fields_ in FIELD_BOUNDS.items() for name in fields_),
    key=lambda case: (case[0].__name__, case[1]),
)


def _with_field(body: Message, record: type, name: str, value: object) -> Message:
    if isinstance(getattr(body, name, None), tuple) and not isinstance(value, tuple):
        value = (value,)  # label_counts: one bad element
    if type(body) is record:
        return dataclasses.replace(body, **{name: value})  # type: ignore[type-var]
    _, where = NESTED[record]
    inner = getattr(body, where)
    if where == "gpus":
        gpu = GpuInfo(index=0, name="g", memory_bytes=1)
        return dataclasses.replace(body, gpus=(dataclasses.replace(gpu, **{name: value}),))  # type: ignore[type-var, arg-type]
    if where == "variants":
        artifact = Artifact(format="tflite", url="u", sha256="s", size_bytes=1)
        variant = dataclasses.replace(artifact, **{name: value})  # type: ignore[arg-type]
        return dataclasses.replace(body, variants=(variant,))  # type: ignore[type-var]
    return dataclasses.replace(body, **{where: dataclasses.replace(inner, **{name: value})})  # type: ignore[type-var]


@pytest.mark.parametrize(
    ("record", "name"), FIELD_CASES, ids=[f"{r.__name__}.{n}" for r, n in FIELD_CASES]
)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_number_outside_its_bounds_is_out_of_range(
    record: type, name: str, data: st.DataObject
) -> None:
    message_type = NESTED.get(record, (record, ""))[0]
    env = data.draw(envelopes(BODIES[message_type]))
    assert isinstance(decode(encode(env)), Envelope)  # in bounds: accepted
    hint = typing.get_type_hints(record)[name]
    bad = outside(FIELD_BOUNDS[record][name], integer=int in (hint, *typing.get_args(hint)))
    frame = encode(dataclasses.replace(env, body=_with_field(env.body, record, name, bad)))
    with pytest.raises(OutOfRange, match=rf"{record.__name__}\.{name}") as info:
        decode(frame)
    assert info.value.code == "out_of_range"


MAP_CASES = sorted(
    ((record, field_, key) for (record, field_), keys in MAP_BOUNDS.items() for key in keys),
    key=lambda case: (case[0].__name__, case[1], case[2]),
)


@pytest.mark.parametrize(
    ("record", "field_", "key"), MAP_CASES, ids=[f"{r.__name__}.{f}.{k}" for r, f, k in MAP_CASES]
)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_known_map_key_outside_its_bounds_is_out_of_range(
    record: type[Message], field_: str, key: str, data: st.DataObject
) -> None:
    env = data.draw(envelopes(BODIES[record]))
    bad = outside(MAP_BOUNDS[(record, field_)][key], integer=False)
    body = dataclasses.replace(env.body, **{field_: {**getattr(env.body, field_), key: bad}})  # type: ignore[type-var]
    with pytest.raises(OutOfRange, match=key):
        decode(encode(dataclasses.replace(env, body=body)))


@pytest.mark.parametrize("value", [0.0, -1.0, 5e-324])
def test_train_rate_must_be_positive(value: float) -> None:
    hello = Hello(
        device_class="pi", arch="aarch64", cores=4, memory_bytes=1, profile={"train_rate": value}
    )
    frame = encode(new_envelope(hello, sender="pi-0"))
    if value > 0:
        assert isinstance(decode(frame).body, Hello)
    else:
        with pytest.raises(OutOfRange, match="train_rate"):
            decode(frame)


def test_unknown_map_keys_need_only_be_finite() -> None:
    hello = Hello(device_class="pi", arch="a", cores=1, memory_bytes=1, profile={"custom": -5.0})
    assert decode(encode(new_envelope(hello, sender="pi-0"))).body == hello


@pytest.mark.parametrize(("field_", "value"), [("r", -1), ("ts", -1.0)])
def test_envelope_numbers_outside_their_bounds(field_: str, value: object) -> None:
    with pytest.raises(OutOfRange):
        decode(pack_frame({**train_res_header(), field_: value}, F32X3))


def test_every_bounded_field_exists() -> None:
    """A renamed field would silently lose its bound."""
    for record, bounds in FIELD_BOUNDS.items():
        names = {f.name for f in dataclasses.fields(record)}
        assert set(bounds) <= names, record
    for (record, field_), _ in MAP_BOUNDS.items():
        assert field_ in {f.name for f in dataclasses.fields(record)}
    assert set(ENVELOPE_BOUNDS) <= {f.name for f in dataclasses.fields(Envelope)}


def test_integer_arrays_may_hold_any_bit_pattern() -> None:
    raw = np.array([0x7FF8000000000000, -1], dtype=np.int64)  # a NaN pattern, as integers
    out = decode(encode(train_res_envelope(raw))).body
    assert isinstance(out, TrainRes)
    assert np.array_equal(out.weights[0], raw)


@pytest.mark.parametrize("field", ["loss", "num_examples", "weights", "steps", "train_s"])
def test_missing_required_body_field(field: str) -> None:
    header = train_res_header()
    del header["b"][field]
    with pytest.raises(MalformedMessage, match=field):
        decode(pack_frame(header, F32X3 if field != "weights" else b""))


def test_missing_optional_body_field_takes_its_default() -> None:
    header = train_res_header()
    del header["b"]["metrics"]
    env = decode(pack_frame(header, F32X3))
    assert isinstance(env.body, TrainRes)
    assert env.body.metrics == {}


@pytest.mark.parametrize("field", ["id", "s", "j", "r", "ts", "b"])
def test_missing_envelope_field(field: str) -> None:
    header = train_res_header()
    del header[field]
    with pytest.raises(MalformedMessage):
        decode(pack_frame(header, F32X3))


def test_empty_message_id() -> None:
    with pytest.raises(MalformedMessage):
        decode(pack_frame({**train_res_header(), "id": ""}, F32X3))


def test_unknown_body_field() -> None:
    with pytest.raises(MalformedMessage, match="unknown"):
        decode(pack_frame(train_res_header(extra=1), F32X3))


def test_unknown_field_in_a_nested_record() -> None:
    body = {
        "device_class": "pi",
        "arch": "arm64",
        "cores": 4,
        "memory_bytes": 1,
        "gpus": [{"index": 0, "name": "g", "memory_bytes": 1, "clock": 5}],
    }
    header = {
        "v": PROTOCOL_VERSION,
        "t": "Hello",
        "id": "m",
        "s": "a",
        "j": "",
        "r": 0,
        "ts": 0.0,
        "b": body,
    }
    with pytest.raises(MalformedMessage):
        decode(pack_frame(header))


@pytest.mark.parametrize(
    ("where", "field", "value"),
    [
        ("b", "num_examples", "10"),
        ("b", "num_examples", True),
        ("b", "num_examples", 10.0),
        ("b", "loss", "0.5"),
        ("b", "loss", True),
        ("b", "loss", None),
        ("b", "metrics", {"accuracy": "high"}),
        ("b", "metrics", [["accuracy", 0.5]]),
        ("b", "weights", {"0": ["<f4", [3], 12]}),
        ("h", "r", "3"),
        ("h", "r", True),
        ("h", "id", 1),
        ("h", "s", b"agent-1"),
        ("h", "ts", "now"),
        ("h", "b", [1, 2]),
    ],
)
def test_wrong_field_type(where: str, field: str, value: object) -> None:
    header = (
        train_res_header(**{field: value}) if where == "b" else {**train_res_header(), field: value}
    )
    with pytest.raises(MalformedMessage):
        decode(pack_frame(header, F32X3))


@pytest.mark.parametrize(
    ("type_name", "body"),
    [
        ("Status", {"state": "asleep"}),
        ("Status", {"state": 1}),
        ("Heartbeat", {"seq": 1, "busy": 1, "load": 0.1, "memory_used_bytes": 1}),
        ("TrainIns", {"model": "{}", "weights": [], "config": {"epochs": "1"}, "budget_s": 1.0}),
        (
            "TrainIns",
            {"model": "{}", "weights": [], "config": {"local_steps": 1.5}, "budget_s": 1.0},
        ),
        (
            "Hello",
            {"device_class": "pi", "arch": "a", "cores": 1, "memory_bytes": 1, "runtimes": "x"},
        ),
        (
            "ModelRef",
            {
                "name": "m",
                "version": 1,
                "job_id": "j",
                "format": "keras",
                "url": "u",
                "sha256": "s",
                "size_bytes": 1,
                "variants": {"tflite": 1},
            },
        ),
    ],
)
def test_wrong_field_type_in_other_messages(type_name: str, body: dict[str, Any]) -> None:
    header = {
        "v": PROTOCOL_VERSION,
        "t": type_name,
        "id": "m",
        "s": "a",
        "j": "",
        "r": 0,
        "ts": 0.0,
        "b": body,
    }
    with pytest.raises(MalformedMessage):
        decode(pack_frame(header))


@pytest.mark.parametrize("plan", [{"k": b"bytes"}, {"k": {1: 2}}, [1, 2], "plan"])
def test_free_form_plan_refuses_what_is_not_plain(plan: object) -> None:
    with pytest.raises(MalformedMessage):
        decode(pack_frame(job_state_header(plan)))


def test_free_form_plan_keeps_plain_nested_values() -> None:
    plan = {"rounds": [1, 2.5, None, True, "x", {"deep": [[{"k": [0]}]]}]}
    env = decode(pack_frame(job_state_header(plan)))
    assert isinstance(env.body, JobState)
    assert env.body.plan == plan


def test_deeply_nested_plan_is_malformed_not_a_recursion_error() -> None:
    deep: list[Any] = []
    node = deep
    for _ in range(900):  # msgpack accepts this; recursing over it would overflow Python's stack
        child: list[Any] = []
        node.append(child)
        node = child
    with pytest.raises(MalformedMessage):
        decode(pack_frame(job_state_header({"deep": deep})))


@pytest.mark.parametrize("header", [[1, 2, 3], "header", 7, None, b"bin"])
def test_non_map_header(header: object) -> None:
    with pytest.raises(MalformedMessage, match="not a map"):
        decode(pack_frame(header))


@pytest.mark.parametrize(
    "raw_header",
    [b"\xc1", b"\x81", b"\x82\xa1v\x01", b"\x81\xa1v\x01\x00", b"\x81\xa1k\xa2\xff\xfe"],
    ids=["never-used", "truncated-map", "short-map", "extra-data", "bad-utf8"],
)
def test_header_that_is_not_msgpack(raw_header: bytes) -> None:
    frame = struct.pack(">2sI", b"HF", len(raw_header)) + raw_header
    with pytest.raises(MalformedMessage):
        decode(frame)


def test_header_with_non_string_map_keys() -> None:
    raw_header = b"\x81\x01\x02"  # {1: 2}; strict_map_key refuses it
    with pytest.raises(MalformedMessage):
        decode(struct.pack(">2sI", b"HF", len(raw_header)) + raw_header)


@pytest.mark.parametrize("magic", [b"XX", b"hf", b"FH", b"\x00\x00"])
def test_bad_magic(magic: bytes) -> None:
    frame = magic + pack_frame(train_res_header(), F32X3)[2:]
    with pytest.raises(MalformedMessage, match="magic"):
        decode(frame)


@pytest.mark.parametrize("data", [b"", b"H", b"HF", b"HF\x00\x00\x00"])
def test_frame_shorter_than_its_prefix(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode(data)


# ------------------------------------------------------------------------------ the error tree


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (MalformedMessage, "malformed"),
        (UnsupportedVersion, "version"),
        (UnknownMessageType, "unknown_type"),
        (PayloadTooLarge, "oversize"),
        (InvalidArray, "bad_array"),
        (NonFiniteValues, "non_finite"),
        (OutOfRange, "out_of_range"),
        (ShapeMismatch, "shape"),
        (StaleRound, "stale_round"),
        (DuplicateMessage, "duplicate"),
        (InvalidTopic, "bad_topic"),
    ],
)
def test_errors_are_protocol_errors_and_value_errors_with_their_code(
    error: type[ProtocolError], code: str
) -> None:
    assert issubclass(error, ProtocolError)
    assert issubclass(error, ValueError)
    assert error.code == code
    assert error("x").code == code


def _model_ref_body(**extra: Any) -> dict[str, Any]:
    return {"name": "m", "version": 1, "job_id": "j", "format": "keras", "url": "u",
            "sha256": "s", "size_bytes": 1, **extra}  # fmt: skip


@pytest.mark.parametrize(
    ("normalization", "error"),
    [
        ({"offset": [0.0, 1.0], "scale": [1.0]}, MalformedMessage),
        ({"offset": [], "scale": []}, MalformedMessage),
        ({"offset": [0.0], "scale": [math.nan]}, NonFiniteValues),
        ({"offset": [0.0], "scale": ["1"]}, MalformedMessage),
        ({"offset": [0.0]}, MalformedMessage),
    ],
)
def test_a_bad_normalization_in_a_model_ref_is_refused(
    normalization: dict[str, Any], error: type[Exception]
) -> None:
    header = {"v": PROTOCOL_VERSION, "t": "ModelRef", "id": "x", "s": "c", "j": "", "r": 0,
              "ts": 1.0, "b": _model_ref_body(normalization=normalization)}  # fmt: skip
    with pytest.raises(error):
        decode(pack_frame(header))


def test_a_model_ref_without_normalization_still_decodes() -> None:
    header = {"v": PROTOCOL_VERSION, "t": "ModelRef", "id": "x", "s": "c", "j": "", "r": 0,
              "ts": 1.0, "b": _model_ref_body()}  # fmt: skip
    body = decode(pack_frame(header)).body
    assert isinstance(body, ModelRef)
    assert body.normalization is None


@pytest.mark.parametrize("field", ["label_counts", "runtimes", "profile"])
def test_a_list_or_map_field_over_max_items_is_oversize(field: str) -> None:
    """Issue 17: a 2 MB Hello with two million label counts decoded, and the hyperFL planner
    then walked every label for every candidate, every round."""
    values: dict[str, Any] = {
        "label_counts": tuple([1] * 65_537),
        "runtimes": ("numpy",) * 65_537,
        "profile": {f"k{i}": 1.0 for i in range(65_537)},
    }
    hello = Hello(
        device_class="x", arch="x86_64", cores=1, memory_bytes=1, **{field: values[field]}
    )
    frame = encode(new_envelope(hello, sender="a1"))
    with pytest.raises(PayloadTooLarge, match="items"):
        decode(frame)
    assert isinstance(decode(frame, limits=Limits(max_items=70_000)).body, Hello)
