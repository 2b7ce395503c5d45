"""The time-to-accuracy benchmark's verdict logic (bench/verdicts.py): time to target, tuning
choice and failed tunings, ratios only between contenders that reached the target, the spread
over seeds, infeasibility and the issue's checks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from bench.verdicts import (
    RunResult,
    accuracy_band,
    check_targets,
    infeasibility_report,
    pick_config,
    ratios,
    summarise,
    time_to_target,
    upper_median,
)


def run(
    contender: str,
    seed: int,
    t: float | None,
    *,
    config: str = "c",
    budget: float = 100.0,
    nbytes: int = 1000,
    infeasible_at: float | None = None,
    error: str = "",
) -> RunResult:
    curve: Sequence[tuple[float, float]] = (
        ((t / 2, 0.5), (t, 0.95)) if t is not None else ((10.0, 0.5), (200.0, 0.8))
    )
    return RunResult(
        contender=contender,
        config=config,
        seed=seed,
        budget_s=budget,
        curve=tuple(curve),
        time_to_target_s=t,
        rounds=3,
        bytes_moved=nbytes,
        agent_seconds=10.0,
        infeasible_at_s=infeasible_at,
        error=error,
    )


def test_time_to_target_is_the_first_point_at_or_above_it() -> None:
    curve = [(1.0, 0.5), (2.0, 0.9), (3.0, 0.85), (4.0, 0.95)]
    assert time_to_target(curve, 0.9) == 2.0
    assert time_to_target(curve, 0.96) is None
    assert time_to_target([], 0.5) is None


def test_upper_median_counts_misses_as_infinite() -> None:
    assert upper_median([3.0, 1.0, 2.0]) == 2.0
    assert upper_median([1.0, math.inf]) == math.inf  # two tuning seeds: both must reach
    assert upper_median([1.0, 2.0, math.inf]) == 2.0
    assert upper_median([]) == math.inf


def test_pick_config_takes_the_fastest_config_that_reaches_the_target() -> None:
    runs = [
        run("fedavg", 1, 50.0, config="slow"),
        run("fedavg", 2, 60.0, config="slow"),
        run("fedavg", 1, 20.0, config="fast"),
        run("fedavg", 2, 30.0, config="fast"),
        run("fedavg", 1, 5.0, config="lucky"),
        run("fedavg", 2, None, config="lucky"),  # fast once, missed once: not chosen
        run("hyperfl", 1, 1.0, config="other contender"),
    ]
    outcome = pick_config("fedavg", runs)
    assert outcome.best == "fast"
    assert not outcome.failed
    assert outcome.scores["lucky"] == math.inf
    assert set(outcome.scores) == {"slow", "fast", "lucky"}


def test_pick_config_breaks_ties_by_bytes() -> None:
    runs = [
        run("oort", 1, 20.0, config="heavy", nbytes=900),
        run("oort", 1, 20.0, config="light", nbytes=100),
    ]
    assert pick_config("oort", runs).best == "light"


def test_a_contender_that_never_reaches_the_target_is_a_failed_tuning() -> None:
    runs = [run("fedavg", 1, None, config="a"), run("fedavg", 1, None, config="b")]
    outcome = pick_config("fedavg", runs)
    assert outcome.failed
    assert outcome.best is None
    assert outcome.to_json()["failed_tuning"] is True
    assert outcome.to_json()["scores"] == {"a": None, "b": None}


def test_summary_reports_medians_spread_and_budget_met() -> None:
    runs = [
        run("hyperfl", 0, 10.0),
        run("hyperfl", 1, 30.0),
        run("hyperfl", 2, 150.0),  # reached, but past the 100 s budget
        run("hyperfl", 3, None),
        run("hyperfl", 4, None, error="could not start"),
    ]
    s = summarise("hyperfl", runs)
    assert s.runs == 5
    assert s.errors == 1
    assert s.reached == 3
    assert s.budget_met == 2
    assert s.budget_met_share == pytest.approx(0.5)
    assert s.median_time_to_target_s == 150.0  # upper median of 10, 30, 150, inf
    assert (s.min_time_to_target_s, s.max_time_to_target_s) == (10.0, 150.0)


def test_ratios_only_between_contenders_that_reached_the_target() -> None:
    runs = [
        *(run("hyperfl", s, 10.0) for s in range(3)),
        *(run("fedavg_deadline", s, 25.0) for s in range(3)),
        *(run("fedavg_timeout", s, None) for s in range(3)),  # never reached
        run("oort", 0, 5.0),
        run("oort", 1, None),
        run("oort", 2, None),  # reached once in three: no median
    ]
    names = ["hyperfl", "fedavg_deadline", "fedavg_timeout", "oort"]
    summaries = {n: summarise(n, runs) for n in names}
    # oort tuned (on other seeds, not shown) but reached the target on one evaluation seed of 3
    tuning = {n: pick_config(n, runs) for n in names if n != "oort"}
    report = ratios(summaries, tuning)
    assert report["compared"] == {"fedavg_deadline": pytest.approx(2.5)}
    assert "failed tuning" in report["not_compared"]["fedavg_timeout"]
    assert "1 of 3" in report["not_compared"]["oort"]


def test_no_ratio_at_all_when_the_reference_missed_the_target() -> None:
    runs = [*(run("hyperfl", s, None) for s in range(3)), *(run("oort", s, 9.0) for s in range(3))]
    summaries = {n: summarise(n, runs) for n in ("hyperfl", "oort")}
    report = ratios(summaries, {})
    assert report["compared"] == {}
    assert report["not_compared"]["oort"].startswith("hyperfl:")


def test_accuracy_band_is_median_min_and_max_of_step_curves() -> None:
    curves = [
        [(1.0, 0.2), (2.0, 0.6)],
        [(1.0, 0.4), (3.0, 0.8)],
        [(1.0, 0.0), (2.0, 0.3)],
    ]
    med, lo, hi = accuracy_band(curves, [0.5, 1.0, 2.5, 5.0])
    assert med == pytest.approx([0.2, 0.2, 0.4, 0.6])
    assert lo == pytest.approx([0.0, 0.0, 0.3, 0.3])
    assert hi == pytest.approx([0.4, 0.4, 0.6, 0.8])
    med, _, _ = accuracy_band([], [1.0])
    assert math.isnan(med[0])


def test_infeasibility_report_counts_shares_and_false_verdicts() -> None:
    infeasible = [
        run("hyperfl", 0, None, budget=100.0, infeasible_at=12.0),
        run("hyperfl", 1, None, budget=100.0, infeasible_at=None),
    ]
    feasible = [
        run("hyperfl", 0, 40.0, infeasible_at=30.0),  # a false verdict in a run that made it
        run("hyperfl", 1, 40.0),
    ]
    report = infeasibility_report(infeasible, feasible)
    assert report["runs"] == 2
    assert report["declared"] == 1
    assert report["declared_shares"] == [pytest.approx(0.12), None]
    assert report["false_verdicts"] == 1
    assert report["false_verdicts_that_reached"] == 1


def test_checks_pass_and_fail_from_the_numbers() -> None:
    runs = [
        *(run("hyperfl", s, 10.0, nbytes=500) for s in range(5)),
        *(run("fedavg_deadline", s, 30.0, nbytes=400) for s in range(5)),
        *(run("oort", s, 25.0, nbytes=900) for s in range(5)),
    ]
    names = ["hyperfl", "fedavg_deadline", "oort"]
    summaries = {n: summarise(n, runs) for n in names}
    report = ratios(summaries, {n: pick_config(n, runs) for n in names})
    infeasible = infeasibility_report(
        [run("hyperfl", 0, None, infeasible_at=20.0)],
        [r for r in runs if r.contender == "hyperfl"],
    )
    checks = {c.name: c for c in check_targets(summaries, report, infeasible)}
    speed = checks["time to target, best contender (oort) / hyperfl"]
    assert speed.value == pytest.approx(2.5)
    assert speed.passed is True
    nbytes = checks["bytes to target, hyperfl / oort"]
    assert nbytes.passed is True  # 500 <= 900: compared with the fastest contender
    assert checks["hyperfl budget met, share of feasible runs"].passed is True
    assert checks["infeasible budgets declared, latest share of budget"].passed is True
    assert checks["false infeasibility verdicts in feasible runs"].passed is True
    assert all(c.line().startswith("PASS") for c in checks.values())


def test_checks_fail_on_a_late_or_missing_declaration_and_a_small_speedup() -> None:
    runs = [
        *(run("hyperfl", s, 20.0) for s in range(5)),
        *(run("oort", s, 30.0) for s in range(5)),
    ]
    summaries = {n: summarise(n, runs) for n in ("hyperfl", "oort")}
    report = ratios(summaries, {})
    late = infeasibility_report(
        [run("hyperfl", 0, None, infeasible_at=50.0), run("hyperfl", 1, None)],
        [r for r in runs if r.contender == "hyperfl"],
    )
    checks = {c.name: c for c in check_targets(summaries, report, late)}
    assert checks["time to target, best contender (oort) / hyperfl"].passed is False
    assert checks["infeasible budgets declared, latest share of budget"].passed is False


def test_checks_are_undecided_when_nothing_can_be_compared() -> None:
    summaries = {"hyperfl": summarise("hyperfl", [run("hyperfl", 0, None)])}
    report = ratios(summaries, {})
    checks = check_targets(summaries, report, infeasibility_report([], []))
    assert [c.passed for c in checks[:2]] == [None, None]
    assert checks[2].passed is False  # budget met in 0 of 1 run
    assert checks[3].passed is None
    assert checks[3].note == "no infeasible run"
    assert "UNDECIDED" in checks[0].line()


def test_a_contender_that_could_not_run_is_not_run_rather_than_a_failed_tuning() -> None:
    runs = [run("fedbuff", 1, None, error="engine has no async mode")]
    outcome = pick_config("fedbuff", runs)
    assert not outcome.failed
    assert outcome.not_run == "engine has no async mode"
    summaries = {
        "hyperfl": summarise("hyperfl", [run("hyperfl", 0, 10.0)]),
        "fedbuff": summarise("fedbuff", []),
    }
    report = ratios(summaries, {"fedbuff": outcome})
    assert report["not_compared"] == {"fedbuff": "not run: engine has no async mode"}
