"""Agent profiles: seeded from ``hello``, then smoothed towards what rounds show."""

from __future__ import annotations

import math

import pytest

from coordinator.planners.profiles import ProfileBook
from protocol import Hello

MODEL_BYTES = 1_000_000


def hello(
    *,
    profile: dict[str, float] | None = None,
    num_examples: int = 120,
    labels: tuple[int, ...] = (),
) -> Hello:
    return Hello(
        device_class="raspberry-pi-5",
        arch="aarch64",
        cores=4,
        memory_bytes=1 << 30,
        num_examples=num_examples,
        profile=profile or {},
        label_counts=labels,
    )


ANNOUNCED = {
    "train_rate": 50.0,
    "uplink_mbps": 10.0,
    "downlink_mbps": 20.0,
    "rtt_ms": 40.0,
    "failure_rate": 0.1,
}


def test_a_profile_is_seeded_from_what_the_agent_announced() -> None:
    book = ProfileBook(model_bytes=MODEL_BYTES)
    p = book.ensure("pi-00", hello(profile=ANNOUNCED, labels=(3, 0, 7)))
    assert p.agent_id == "pi-00"
    assert p.device_class == "raspberry-pi-5"
    assert p.num_examples == 120
    assert p.label_counts == (3, 0, 7)
    assert p.train_rate == pytest.approx(50.0)
    # 8 Mbit down at 20 Mbit/s (0.4 s) + 8 Mbit up at 10 Mbit/s (0.8 s) + one 40 ms round trip.
    assert p.comm_s == pytest.approx(1.24)
    assert p.reliability == pytest.approx(0.9)
    assert p.loss is None
    assert not p.explored
    assert (p.observations, p.selected, p.last_selected, p.busy_until) == (0, 0, 0, 0.0)
    # The seed predicts a reply: communication plus compute.
    assert p.predict_s(100) == pytest.approx(1.24 + 2.0)
    assert "pi-00" in book
    assert book["pi-00"] is p


def test_an_agent_that_announces_nothing_gets_the_defaults() -> None:
    book = ProfileBook(model_bytes=MODEL_BYTES)
    p = book.ensure("quiet", hello())
    assert p.train_rate == pytest.approx(100.0)
    # 8 Mbit each way at 100 Mbit/s (0.08 s each) + a 20 ms round trip.
    assert p.comm_s == pytest.approx(0.18)
    assert p.reliability == pytest.approx(1.0)


def test_the_link_cost_scales_with_the_model() -> None:
    small = ProfileBook(model_bytes=0).ensure("a", hello(profile=ANNOUNCED))
    assert small.comm_s == pytest.approx(0.04)  # only latency is left


def test_a_second_hello_updates_the_data_but_keeps_what_was_learned() -> None:
    book = ProfileBook(model_bytes=MODEL_BYTES)
    book.ensure("a", hello(profile=ANNOUNCED))
    book.observe_result("a", examples=100, train_s=1.0, reply_s=1.5, loss=0.7)
    p = book.ensure("a", hello(profile={"train_rate": 9999.0}, num_examples=300, labels=(1, 2)))
    assert p.num_examples == 300
    assert p.label_counts == (1, 2)
    assert p.train_rate == pytest.approx(100.0)  # learned, not re-seeded
    assert p.observations == 1


def test_the_first_result_replaces_the_seed_then_later_ones_are_smoothed() -> None:
    book = ProfileBook(model_bytes=MODEL_BYTES, alpha=0.3)
    book.ensure("a", hello(profile=ANNOUNCED))
    book.observe_result("a", examples=100, train_s=2.0, reply_s=3.0, loss=0.8)
    p = book["a"]
    assert p.train_rate == pytest.approx(50.0)  # 100 / 2
    assert p.comm_s == pytest.approx(1.0)  # 3 - 2
    assert p.reliability == pytest.approx(0.7 * 0.9 + 0.3)  # reliability is always smoothed
    assert p.loss == pytest.approx(0.8)
    assert p.explored
    book.observe_result("a", examples=100, train_s=1.0, reply_s=1.5, loss=0.6)
    assert p.train_rate == pytest.approx(0.7 * 50.0 + 0.3 * 100.0)
    assert p.comm_s == pytest.approx(0.7 * 1.0 + 0.3 * 0.5)
    assert p.reliability == pytest.approx(0.7 * 0.93 + 0.3)
    assert p.loss == pytest.approx(0.6)
    assert p.observations == 2


def test_alpha_sets_how_fast_profiles_follow() -> None:
    book = ProfileBook(model_bytes=MODEL_BYTES, alpha=0.5)
    book.ensure("a", hello(profile=ANNOUNCED))
    book.observe_result("a", examples=10, train_s=1.0, reply_s=1.0, loss=1.0)
    book.observe_result("a", examples=30, train_s=1.0, reply_s=1.0, loss=1.0)
    assert book["a"].train_rate == pytest.approx(20.0)


def test_a_result_without_compute_leaves_the_speed_alone() -> None:
    book = ProfileBook(model_bytes=MODEL_BYTES)
    book.ensure("a", hello(profile=ANNOUNCED))
    book.observe_result("a", examples=0, train_s=0.0, reply_s=0.5, loss=math.nan)
    p = book["a"]
    assert p.train_rate == pytest.approx(50.0)
    assert p.comm_s == pytest.approx(0.5)
    assert p.loss is None  # a non-finite loss is not recorded
    # A reply faster than its own compute is not negative communication.
    book.observe_result("a", examples=10, train_s=2.0, reply_s=1.0, loss=0.5)
    assert p.comm_s == pytest.approx(0.7 * 0.5)


def test_a_failure_lowers_reliability_and_only_a_timeout_marks_the_agent_busy() -> None:
    book = ProfileBook(model_bytes=MODEL_BYTES, alpha=0.3)
    book.ensure("a", hello())
    book.observe_failure("a", timed_out=False, now=50.0, expected_s=4.0)
    p = book["a"]
    assert p.reliability == pytest.approx(0.7)
    assert p.busy_until == 0.0  # it answered (with a failure): not busy
    assert p.observations == 1
    book.observe_failure("a", timed_out=True, now=60.0, expected_s=4.0)
    assert p.reliability == pytest.approx(0.49)
    assert p.busy_until == pytest.approx(64.0)  # still working on the late instruction
    assert p.observations == 2
    # Speed and link are untouched by failures.
    assert p.train_rate == pytest.approx(100.0)
    assert p.comm_s == pytest.approx(0.18)


def test_mark_selected_counts_and_remembers_the_round() -> None:
    book = ProfileBook(model_bytes=MODEL_BYTES)
    book.ensure("a", hello())
    book.mark_selected("a", 3)
    book.mark_selected("a", 7)
    assert book["a"].selected == 2
    assert book["a"].last_selected == 7


def test_the_book_iterates_every_profile() -> None:
    book = ProfileBook(model_bytes=MODEL_BYTES)
    for agent_id in ("b", "a", "c"):
        book.ensure(agent_id, hello())
    assert sorted(p.agent_id for p in book) == ["a", "b", "c"]
    assert "d" not in book


@pytest.mark.parametrize("alpha", [0.0, -0.1, 1.5])
def test_alpha_must_be_a_share(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha"):
        ProfileBook(model_bytes=MODEL_BYTES, alpha=alpha)


@pytest.mark.parametrize(
    "bad",
    [
        {"train_rate": 0.0},
        {"train_rate": -3.0},
        {"uplink_mbps": 0.0},
        {"downlink_mbps": -1.0},
        {"rtt_ms": -5.0},
        {"failure_rate": 7.0},
    ],
)
def test_announced_figures_outside_the_wire_bounds_fall_back_to_defaults(
    bad: dict[str, float],
) -> None:
    """A hello made in-process skips the decoder's range check; the profile does not divide by
    a zero speed nor start from a negative reliability."""
    p = ProfileBook(model_bytes=MODEL_BYTES).ensure("a", hello(profile={**ANNOUNCED, **bad}))
    unsaid = {k: v for k, v in ANNOUNCED.items() if k not in bad}
    default = ProfileBook(model_bytes=MODEL_BYTES).ensure("a", hello(profile=unsaid))
    assert math.isfinite(p.predict_s(100))
    assert p.train_rate > 0
    assert p.comm_s > 0
    assert 0 <= p.reliability <= 1
    assert (p.train_rate, p.comm_s, p.reliability) == (
        default.train_rate,
        default.comm_s,
        default.reliability,
    )
