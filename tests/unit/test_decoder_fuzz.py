"""The decoder under structured fuzzing (``tests/framefuzz.py``): whatever the bytes, an envelope
or a :class:`~protocol.ProtocolError`, never another exception.

Here: the deterministic grid (every hostile fragment and edge value at every path of every
message type, every truncation, every header-length error: about 15,000 cases in a second) and a
short Hypothesis run. ``tests/faults/test_decoder_fuzz.py`` runs 10,000 generated cases.
"""

from __future__ import annotations

import struct
from collections import Counter

import msgpack
import pytest
from framefuzz import HOSTILE_FRAGMENTS, cases, decode_case, grid, outcome_name
from hypothesis import HealthCheck, given, settings

from protocol import MESSAGE_TYPES, MalformedMessage, decode


def _frame(header: bytes) -> bytes:
    return struct.pack(">2sI", b"HF", len(header)) + header


def test_msgpack_raises_more_than_value_error_and_decode_turns_each_into_malformed() -> None:
    """The premise: msgpack's own errors for these are TypeError (an unhashable map key) and
    StackError (nesting past its limit), not only ValueError."""
    with pytest.raises(TypeError):
        msgpack.unpackb(b"\x81\x91\x01\x01", strict_map_key=False)
    with pytest.raises(msgpack.exceptions.StackError):
        msgpack.unpackb(b"\x91" * 3000 + b"\xc0")
    for header in (b"\x81\x91\x01\x01", b"\x81\x80\x01", b"\x91" * 3000 + b"\xc0"):
        with pytest.raises(MalformedMessage, match="not valid msgpack"):
            decode(_frame(header))
    nested_map = b"\x81\xa1k" * 3000 + b"\xc0"
    with pytest.raises(MalformedMessage):
        decode(_frame(nested_map))


def test_every_case_of_the_grid_is_an_envelope_or_a_protocol_error() -> None:
    cases_ = grid()
    assert len(cases_) >= 10_000
    outcomes = Counter(outcome_name(decode_case(case)) for case in cases_)
    # The grid reaches every layer of the decoder, not only the msgpack parse:
    for code in ("malformed", "bad_array", "non_finite", "out_of_range", "version", "oversize"):
        assert outcomes[code] > 0, (code, outcomes)
    assert set(MESSAGE_TYPES) <= set(outcomes), "mutations that keep a frame valid decode"
    assert len(HOSTILE_FRAGMENTS) >= 40


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=cases)
def test_generated_cases_are_envelopes_or_protocol_errors(case: object) -> None:
    decode_case(case)  # type: ignore[arg-type]
