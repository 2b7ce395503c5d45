"""Progress lines the demo prints from ``jobs/{id}/state``."""

from __future__ import annotations

from hyperfleet.progress import plan_line


def test_an_async_version_shows_its_buffer_and_the_prediction() -> None:
    plan = {
        "mode": "async",
        "version": 7,
        "staleness": [0, 2, 1],
        "stale_dropped": 3,
        "in_flight": 14,
        "predicted_time_to_target_s": 30.4,
        "feasible": True,
    }
    assert plan_line(plan) == (
        "  [async] staleness 0 2 1, 3 stale dropped, 14 in flight, predicted: target in 30s, "
        "feasible yes"
    )


def test_a_round_plan_without_a_planner_prints_nothing() -> None:
    assert plan_line({}) == ""
