"""10,000 generated frames through the decoder (``tests/framefuzz.py``): valid envelopes of
every message type mutated (wrong types, raw msgpack no packer writes: deep nesting, unhashable
and non-string keys, lengths claiming gigabytes, ext types, bad dtypes and shapes), then damaged
(truncated, flipped, header length off, bytes appended), and plain random bytes. Every one must
come out an envelope or a :class:`~protocol.ProtocolError`. About a minute: kept out of
``make test``; ``tests/unit/test_decoder_fuzz.py`` holds the fast grid."""

from __future__ import annotations

from collections import Counter

from framefuzz import FuzzCase, cases, decode_case, outcome_name
from hypothesis import HealthCheck, Phase, given, settings

CASES = 10_000


def test_ten_thousand_generated_frames_give_envelopes_or_protocol_errors() -> None:
    outcomes: Counter[str] = Counter()

    @settings(
        max_examples=CASES,
        deadline=2000,  # ms per case; a decode that hangs on one frame fails here
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(case=cases)
    def run(case: FuzzCase) -> None:
        outcomes[outcome_name(decode_case(case))] += 1

    run()
    assert sum(outcomes.values()) >= CASES, outcomes
    assert outcomes["malformed"] > 0, outcomes
    assert len(outcomes) >= 8, outcomes
