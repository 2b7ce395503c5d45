"""The report of a run under a deadline: its timeline, the arithmetic on it, JSON and a PNG.

Times are seconds from the script's start. Core-seconds are the integral of the cores Spark
reported running (the REST API's executors), each sample held until the next (a zero-order
hold), to the script's end. The deadline error is ``100 · (finish − deadline) / deadline``:
positive when late.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .live import site

__all__ = [
    "RunReport",
    "Sample",
    "StageOutcome",
    "deadline_error_pct",
    "held_integral",
    "held_mean",
    "write_png",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """One control period: what the controller asked for and what Spark reported."""

    t_s: float
    cores_observed: int
    cores_asked: int | None = None
    """``None`` when nothing was asked (no control, or the actuator had not answered)."""
    job_progress: float | None = None
    """Completed fraction of the profile's tasks; ``None`` without a profile."""
    stages: Mapping[str, float] = field(default_factory=dict)
    """Key → completed fraction, for the stages running."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StageOutcome:
    """One stage of the run: the plan in force when it started against what it did."""

    key: str
    stage_id: int
    tasks: int
    started_s: float
    completed_s: float
    planned_deadline_s: float | None = None
    planned_cores: int | None = None
    cores_asked: float | None = None
    """Time-weighted mean of the cores asked while the stage ran."""
    cores_observed: float
    """Time-weighted mean of the cores running while the stage ran."""
    in_profile: bool = True

    @property
    def deadline_error_s(self) -> float | None:
        if self.planned_deadline_s is None:
            return None
        return self.completed_s - self.planned_deadline_s


@dataclass(frozen=True, slots=True, kw_only=True)
class RunReport:
    script: str
    master: str
    control: bool
    """Whether the deadline controller ran (``False`` on ``local[N]``: ``note`` says why)."""
    deadline_s: float
    finish_s: float
    core_seconds: float
    max_cores: int
    period_s: float
    note: str = ""
    feasible: bool | None = None
    plan_reason: str = ""
    actuations: int = 0
    """Times the executor total was changed."""
    replans: int = 0
    unknown_stages: tuple[str, ...] = ()
    rekeyed: tuple[tuple[str, str], ...] = ()
    """(live key, profiler's key) of stages whose keys differed; see :mod:`.live`."""
    stages: tuple[StageOutcome, ...] = ()
    timeline: tuple[Sample, ...] = ()

    @property
    def met(self) -> bool:
        return self.finish_s <= self.deadline_s

    @property
    def deadline_error_pct(self) -> float:
        return deadline_error_pct(self.finish_s, self.deadline_s)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "script": self.script, "master": self.master, "control": self.control,
            "note": self.note, "deadline_s": self.deadline_s, "finish_s": self.finish_s,
            "met": self.met, "deadline_error_pct": self.deadline_error_pct,
            "core_seconds": self.core_seconds, "max_cores": self.max_cores,
            "period_s": self.period_s, "feasible": self.feasible,
            "plan_reason": self.plan_reason, "actuations": self.actuations,
            "replans": self.replans, "unknown_stages": list(self.unknown_stages),
            "rekeyed": [list(pair) for pair in self.rekeyed],
        }  # fmt: skip
        doc["stages"] = [{**asdict(s), "deadline_error_s": s.deadline_error_s}
                         for s in self.stages]  # fmt: skip
        doc["timeline"] = [{**asdict(s), "stages": dict(s.stages)} for s in self.timeline]
        return doc


def deadline_error_pct(finish_s: float, deadline_s: float) -> float:
    """``100 · (finish − deadline) / deadline``; ``ValueError`` for a deadline that is not
    positive."""
    if not deadline_s > 0:
        raise ValueError(f"deadline must be positive, got {deadline_s}")
    return 100.0 * (finish_s - deadline_s) / deadline_s


def held_integral(
    samples: Sequence[Sample], value: Callable[[Sample], float | None], start_s: float, end_s: float
) -> tuple[float, float]:
    """The integral over ``[start_s, end_s]`` of ``value`` held from each sample to the next
    (the first sample's value before it), and the seconds it covered (samples whose value is
    ``None`` cover nothing). ``(0, 0)`` without samples or for an empty interval."""
    if not samples or not end_s > start_s:
        return 0.0, 0.0
    total = covered = 0.0
    for i, sample in enumerate(samples):
        lo = -math.inf if i == 0 else sample.t_s
        hi = samples[i + 1].t_s if i + 1 < len(samples) else math.inf
        span = min(hi, end_s) - max(lo, start_s)
        v = value(sample)
        if span > 0 and v is not None:
            total += v * span
            covered += span
    return total, covered


def held_mean(
    samples: Sequence[Sample], value: Callable[[Sample], float | None], start_s: float, end_s: float
) -> float | None:
    """Time-weighted mean of ``value`` over ``[start_s, end_s]`` (:func:`held_integral`);
    for an instant (or no coverage) the value of the last sample at or before it, ``None``
    without one."""
    total, covered = held_integral(samples, value, start_s, end_s)
    if covered > 0:
        return total / covered
    before = [s for s in samples if s.t_s <= start_s and value(s) is not None]
    last = before[-1] if before else next((s for s in samples if value(s) is not None), None)
    v = None if last is None else value(last)
    return None if v is None else float(v)


def write_png(report: RunReport, path: Path) -> None:
    """Cores (asked and running) and progress (the job's and each stage's) over time, with the
    deadline, as a PNG (matplotlib's Agg canvas; no display needed)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    t = [s.t_s for s in report.timeline]
    top.step(t, [s.cores_observed for s in report.timeline], where="post", label="running")
    if report.control:
        asked = [math.nan if s.cores_asked is None else s.cores_asked for s in report.timeline]
        top.step(t, asked, where="post", linestyle="--", label="asked")
    top.set_ylabel("cores")
    top.set_ylim(0, report.max_cores + 1)
    top.legend(loc="upper right")
    mode = "deadline control" if report.control else "no control (local master)"
    top.set_title(f"{Path(report.script).name}: finished {report.finish_s:.1f}s, deadline "
                  f"{report.deadline_s:.1f}s ({report.deadline_error_pct:+.1f}%), "
                  f"{report.core_seconds:.0f} core-s, {mode}")  # fmt: skip
    keys = list(dict.fromkeys(k for s in report.timeline for k in s.stages))
    for key in keys:
        pts = [(s.t_s, s.stages[key]) for s in report.timeline if key in s.stages]
        bottom.plot([p[0] for p in pts], [p[1] for p in pts], linewidth=1, label=site(key)[:50])
    if any(s.job_progress is not None for s in report.timeline):
        job = [math.nan if s.job_progress is None else s.job_progress for s in report.timeline]
        bottom.plot(t, job, color="black", linewidth=2, label="job")
    bottom.set_ylabel("progress")
    bottom.set_xlabel("seconds from the script's start")
    bottom.set_ylim(0, 1.05)
    if len(keys) <= 8:
        bottom.legend(loc="lower right", fontsize="x-small")
    for ax in (top, bottom):
        ax.axvline(report.deadline_s, color="red", linestyle=":")
        ax.axvline(report.finish_s, color="grey", linestyle="-.")
    fig.savefig(path, dpi=100)
