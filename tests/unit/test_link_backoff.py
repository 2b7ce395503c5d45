"""Backoff: exponential growth, jitter that only shortens, and a cap no delay exceeds."""

from __future__ import annotations

import random

import pytest

from link import Backoff


def test_delays_double_up_to_the_cap_and_never_pass_it() -> None:
    backoff = Backoff(min_s=0.5, max_s=30.0, jitter=0.5, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(40)]
    caps = [min(30.0, 0.5 * 2**k) for k in range(40)]
    for delay, cap in zip(delays, caps, strict=True):
        assert 0.5 * cap <= delay <= cap
    assert max(delays) <= 30.0  # the old loop reached 30 s + 50 % jitter = 45 s
    assert max(delays[10:]) > 15.0  # and it does reach the cap's range


def test_jitter_spreads_delays_at_the_cap() -> None:
    backoff = Backoff(min_s=1.0, max_s=4.0, jitter=0.5, rng=random.Random(7))
    for _ in range(5):
        backoff.next_delay()
    at_cap = {round(backoff.next_delay(), 6) for _ in range(20)}
    assert len(at_cap) > 10, "a fleet must not reconnect in lockstep"
    assert all(2.0 <= d <= 4.0 for d in at_cap)


def test_no_jitter_gives_the_exact_sequence_and_reset_starts_over() -> None:
    backoff = Backoff(min_s=0.1, max_s=0.5, jitter=0.0)
    assert [backoff.next_delay() for _ in range(5)] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    backoff.reset()
    assert backoff.next_delay() == pytest.approx(0.1)


def test_a_long_outage_never_overflows() -> None:
    backoff = Backoff(min_s=0.5, max_s=30.0, factor=10.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(10_000)][-1] == 30.0


@pytest.mark.parametrize(
    "kwargs",
    [{"min_s": 0.0}, {"min_s": 5.0, "max_s": 1.0}, {"factor": 0.5}, {"jitter": 1.0}],
)
def test_bad_parameters_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"must|need"):
        Backoff(**kwargs)  # type: ignore[arg-type]
