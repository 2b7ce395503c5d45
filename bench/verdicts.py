"""The time-to-accuracy benchmark's verdicts, computed from its runs: pure, no I/O, unit-tested
(``tests/unit/test_bench_verdicts.py``).

Rules (issue 16):

- a run's **time to target** is the first point of its accuracy-against-time curve at or above
  the target (device seconds, i.e. wall seconds / time scale); bytes and agent-seconds count up
  to that point;
- **tuning**: each configuration of a contender scores the *upper median* of its time to target
  over the tuning seeds, a seed that never reached the target counting as infinite (so with two
  tuning seeds both must reach it); the best configuration is the lowest score, ties broken by
  bytes moved. A contender none of whose configurations has a finite score is a **failed
  tuning**: said in the output, never turned into a lower bound. One that could not run at all
  (every run an error, e.g. a missing engine mode) is **not run**, with the reason;
- **ratios** only between contenders whose evaluation median is finite (the target reached on
  more than half the evaluation seeds) and who did not fail tuning; never hand-computed;
- **checks** of the issue's targets: hyperFL's median time to target >= 2x shorter than the best
  compared contender's, its median bytes moved to target no more than that contender's, budget
  met in >= 95 % of its feasible runs, infeasibility declared before 30 % of the budget in every
  infeasible run, no verdict of infeasibility in any feasible run.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "REFERENCE",
    "Check",
    "ContenderSummary",
    "RunResult",
    "TuningOutcome",
    "accuracy_band",
    "check_targets",
    "infeasibility_report",
    "pick_config",
    "ratios",
    "summarise",
    "time_to_target",
    "upper_median",
]

REFERENCE = "hyperfl"
SPEEDUP_TARGET = 2.0
BUDGET_MET_TARGET = 0.95
DECLARED_BEFORE_SHARE = 0.30


@dataclass(frozen=True, slots=True, kw_only=True)
class RunResult:
    """One run of one contender, one configuration, one seed. Times in device seconds."""

    contender: str
    config: str
    seed: int
    budget_s: float
    curve: tuple[tuple[float, float], ...]
    """``(seconds since round 1 started, holdout accuracy)`` after each round/aggregation."""
    time_to_target_s: float | None
    rounds: int
    """Rounds (aggregations) up to the target, or all of them when it was not reached."""
    bytes_moved: int
    agent_seconds: float
    infeasible_at_s: float | None = None
    stop_reason: str = ""
    error: str = ""
    """Why the run could not run at all ("" when it ran)."""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def reached(self) -> bool:
        return self.time_to_target_s is not None

    @property
    def budget_met(self) -> bool:
        return self.time_to_target_s is not None and self.time_to_target_s <= self.budget_s

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["curve"] = [list(p) for p in self.curve]
        out["extra"] = dict(self.extra)
        out.update(reached=self.reached, budget_met=self.budget_met)
        return out


def time_to_target(curve: Sequence[tuple[float, float]], target: float) -> float | None:
    """The first time in ``curve`` (``(t, accuracy)`` pairs in time order) with accuracy >=
    ``target``; ``None`` when it never gets there."""
    return next((t for t, acc in curve if acc >= target), None)


def upper_median(values: Sequence[float]) -> float:
    """The median, the upper of the two middle values for an even count; ``inf`` for none.
    ``inf`` entries (runs that missed the target) sort last."""
    return statistics.median_high(values) if values else math.inf


@dataclass(frozen=True, slots=True, kw_only=True)
class TuningOutcome:
    contender: str
    best: str | None
    """The chosen configuration's key; ``None``: a failed tuning."""
    scores: Mapping[str, float]
    """Configuration -> upper-median time to target over the tuning seeds (``inf``: missed)."""
    not_run: str = ""
    """Why no tuning run ran at all ("" when some did): a contender that could not run is not
    a failed tuning."""

    @property
    def failed(self) -> bool:
        return self.best is None and not self.not_run

    def to_json(self) -> dict[str, Any]:
        return {
            "contender": self.contender,
            "best": self.best,
            "failed_tuning": self.failed,
            "not_run": self.not_run,
            "scores": {k: (None if math.isinf(v) else v) for k, v in self.scores.items()},
        }


def pick_config(contender: str, runs: Sequence[RunResult]) -> TuningOutcome:
    """The best configuration of ``contender`` from its tuning ``runs`` (see the module rules).
    Runs of other contenders are ignored."""
    mine = [r for r in runs if r.contender == contender]
    if mine and all(r.error for r in mine):
        errors = sorted({r.error for r in mine})
        return TuningOutcome(contender=contender, best=None, scores={}, not_run="; ".join(errors))
    by: dict[str, list[RunResult]] = {}
    for r in mine:
        if not r.error:
            by.setdefault(r.config, []).append(r)
    scores: dict[str, float] = {}
    bytes_: dict[str, float] = {}
    for key, rs in by.items():
        times = [math.inf if r.time_to_target_s is None else r.time_to_target_s for r in rs]
        scores[key] = upper_median(times)
        bytes_[key] = statistics.median(r.bytes_moved for r in rs)
    finite = [k for k, v in scores.items() if math.isfinite(v)]
    best = min(finite, key=lambda k: (scores[k], bytes_[k], k)) if finite else None
    return TuningOutcome(contender=contender, best=best, scores=scores)


@dataclass(frozen=True, slots=True, kw_only=True)
class ContenderSummary:
    """A contender's evaluation runs (one configuration, several seeds), summarised."""

    contender: str
    runs: int
    errors: int
    reached: int
    budget_met: int
    median_time_to_target_s: float
    """Upper median over seeds, misses as ``inf``: finite only when most seeds reached it."""
    min_time_to_target_s: float | None
    max_time_to_target_s: float | None
    median_rounds: float | None
    median_bytes_moved: float | None
    median_agent_seconds: float | None
    infeasible_verdicts: int

    @property
    def budget_met_share(self) -> float | None:
        ran = self.runs - self.errors
        return self.budget_met / ran if ran else None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        m = self.median_time_to_target_s
        out["median_time_to_target_s"] = None if math.isinf(m) else m
        out["budget_met_share"] = self.budget_met_share
        return out


def summarise(contender: str, runs: Sequence[RunResult]) -> ContenderSummary:
    """Evaluation summary of ``contender`` over its ``runs`` (others ignored). Rounds, bytes and
    agent-seconds are medians over the runs that reached the target (to the target), or over
    all runs when none did (for the whole run)."""
    mine = [r for r in runs if r.contender == contender]
    ran = [r for r in mine if not r.error]
    hit = [r for r in ran if r.reached]
    basis = hit or ran
    times = [r.time_to_target_s for r in hit if r.time_to_target_s is not None]

    def med(values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    return ContenderSummary(
        contender=contender,
        runs=len(mine),
        errors=len(mine) - len(ran),
        reached=len(hit),
        budget_met=sum(r.budget_met for r in ran),
        median_time_to_target_s=upper_median(
            [math.inf if r.time_to_target_s is None else r.time_to_target_s for r in ran]
        ),
        min_time_to_target_s=min(times) if times else None,
        max_time_to_target_s=max(times) if times else None,
        median_rounds=med([float(r.rounds) for r in basis]),
        median_bytes_moved=med([float(r.bytes_moved) for r in basis]),
        median_agent_seconds=med([r.agent_seconds for r in basis]),
        infeasible_verdicts=sum(r.infeasible_at_s is not None for r in ran),
    )


def ratios(
    summaries: Mapping[str, ContenderSummary],
    tuning: Mapping[str, TuningOutcome],
    *,
    reference: str = REFERENCE,
) -> dict[str, Any]:
    """``{"compared": {name: median_other / median_reference}, "not_compared": {name: why}}``.

    A contender is compared only when it and the reference both tuned and both reached the
    target on most evaluation seeds."""
    compared: dict[str, float] = {}
    not_compared: dict[str, str] = {}
    ref = summaries.get(reference)
    ref_why = _why_not(reference, ref, tuning)
    for name, s in sorted(summaries.items()):
        if name == reference:
            continue
        why = _why_not(name, s, tuning)
        if why:
            not_compared[name] = why
        elif ref_why:
            not_compared[name] = f"{reference}: {ref_why}"
        else:
            assert ref is not None
            compared[name] = s.median_time_to_target_s / ref.median_time_to_target_s
    return {"reference": reference, "compared": compared, "not_compared": not_compared}


def _why_not(name: str, s: ContenderSummary | None, tuning: Mapping[str, TuningOutcome]) -> str:
    t = tuning.get(name)
    if t is not None and t.not_run:
        return f"not run: {t.not_run}"
    if t is not None and t.failed:
        return "failed tuning: no configuration reached the target on the tuning seeds"
    if s is None or s.runs == 0:
        return "not run"
    if s.errors == s.runs:
        return "every run failed to start"
    if math.isinf(s.median_time_to_target_s):
        return f"reached the target in {s.reached} of {s.runs - s.errors} evaluation runs"
    return ""


def accuracy_band(
    curves: Sequence[Sequence[tuple[float, float]]], grid: Sequence[float]
) -> tuple[list[float], list[float], list[float]]:
    """Median, min and max accuracy over ``curves`` at each time of ``grid``.

    Each curve is read as a step function (the accuracy of its latest point at or before
    ``t``); a curve with no point yet at ``t``, or that has ended before ``t``, holds its first
    or last value (a run that stopped at its target keeps it). ``nan`` where no curve exists."""
    med: list[float] = []
    lo: list[float] = []
    hi: list[float] = []
    usable = [list(c) for c in curves if c]
    for t in grid:
        values = []
        for c in usable:
            value = c[0][1]
            for ct, acc in c:
                if ct > t:
                    break
                value = acc
            values.append(value)
        if values:
            med.append(statistics.median(values))
            lo.append(min(values))
            hi.append(max(values))
        else:
            med.append(math.nan)
            lo.append(math.nan)
            hi.append(math.nan)
    return med, lo, hi


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """One of the issue's targets: ``passed`` is ``None`` when it cannot be decided."""

    name: str
    value: float | None
    threshold: float
    passed: bool | None
    note: str = ""

    def line(self) -> str:
        verdict = {True: "PASS", False: "FAIL", None: "UNDECIDED"}[self.passed]
        value = "n/a" if self.value is None else f"{self.value:.3g}"
        extra = f" ({self.note})" if self.note else ""
        return f"{verdict:9} {self.name}: {value} vs {self.threshold:g}{extra}"


def infeasibility_report(
    infeasible_runs: Sequence[RunResult], feasible_runs: Sequence[RunResult]
) -> dict[str, Any]:
    """How early infeasible budgets were declared (share of their budget), and how many
    feasible runs (the reference's evaluation runs) carried a false verdict."""
    shares = [
        None if r.infeasible_at_s is None else r.infeasible_at_s / r.budget_s
        for r in infeasible_runs
        if not r.error
    ]
    false = [r for r in feasible_runs if not r.error and r.infeasible_at_s is not None]
    return {
        "runs": len(shares),
        "declared": sum(s is not None for s in shares),
        "declared_shares": shares,
        "latest_declared_share": max((s for s in shares if s is not None), default=None),
        "feasible_runs": sum(not r.error for r in feasible_runs),
        "false_verdicts": len(false),
        "false_verdicts_that_reached": sum(r.budget_met for r in false),
    }


def check_targets(
    summaries: Mapping[str, ContenderSummary],
    ratio_report: Mapping[str, Any],
    infeasibility: Mapping[str, Any],
    *,
    reference: str = REFERENCE,
) -> list[Check]:
    """The issue's targets, each a :class:`Check`, from the report's own numbers."""
    checks: list[Check] = []
    compared: Mapping[str, float] = ratio_report.get("compared", {})
    ref = summaries.get(reference)
    if compared:
        best = min(compared, key=lambda n: summaries[n].median_time_to_target_s)
        speedup = compared[best]
        checks.append(
            Check(
                name=f"time to target, best contender ({best}) / {reference}",
                value=speedup,
                threshold=SPEEDUP_TARGET,
                passed=speedup >= SPEEDUP_TARGET,
            )
        )
        other_bytes = summaries[best].median_bytes_moved
        ref_bytes = ref.median_bytes_moved if ref is not None else None
        checks.append(
            Check(
                name=f"bytes to target, {reference} / {best}",
                value=None if not other_bytes or ref_bytes is None else ref_bytes / other_bytes,
                threshold=1.0,
                passed=None if not other_bytes or ref_bytes is None else ref_bytes <= other_bytes,
            )
        )
    else:
        why = "; ".join(f"{k}: {v}" for k, v in ratio_report.get("not_compared", {}).items())
        for name in ("time to target vs best contender", "bytes to target vs best contender"):
            checks.append(
                Check(
                    name=name,
                    value=None,
                    threshold=SPEEDUP_TARGET if name.startswith("time") else 1.0,
                    passed=None,
                    note=f"no contender to compare: {why or 'none run'}",
                )
            )
    share = ref.budget_met_share if ref is not None else None
    checks.append(
        Check(
            name=f"{reference} budget met, share of feasible runs",
            value=share,
            threshold=BUDGET_MET_TARGET,
            passed=None if share is None else share >= BUDGET_MET_TARGET,
        )
    )
    runs = int(infeasibility.get("runs", 0))
    latest = infeasibility.get("latest_declared_share")
    declared = int(infeasibility.get("declared", 0))
    checks.append(
        Check(
            name="infeasible budgets declared, latest share of budget",
            value=latest,
            threshold=DECLARED_BEFORE_SHARE,
            passed=None
            if runs == 0
            else declared == runs and latest is not None and latest < DECLARED_BEFORE_SHARE,
            note="" if runs else "no infeasible run",
            # every infeasible run must be declared, each before 30 % of its budget
        )
    )
    false = int(infeasibility.get("false_verdicts", 0))
    feasible = int(infeasibility.get("feasible_runs", 0))
    checks.append(
        Check(
            name="false infeasibility verdicts in feasible runs",
            value=float(false),
            threshold=0.0,
            passed=None if feasible == 0 else false == 0,
            note="" if feasible else "no feasible run",
        )
    )
    return checks
