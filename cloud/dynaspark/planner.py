"""Per-stage deadlines and cores from a job profile, and the feasibility check. Pure.

The dynaSpark heuristic (Baresi, Quattrocchi et al., TSE 2021, §4.2; xSpark's
``HeuristicControl.computeDeadlineStage``): the time left to the (alpha-shrunk) deadline is
shared among the stages still to run in proportion to their weight, the next stage getting::

    deadline_i = now + (alpha·D - now) · w_i / Σ_{j not done} w_j

and each stage then starts where the previous one's deadline is. Here a stage's weight is its
shortest wall time on all the cores (whole waves of mean-length tasks; the profiling run's
duration in xSpark, the same when it ran on all the cores), so every stage gets the same slack
factor and the plan is feasible exactly when the job is. A stage's cores are the fewest whose
waves fit its share (``StageProfile.shortest_s``), which is xSpark's
``ceil(records / (deadline · nominal rate))`` with the waves made explicit. The plan is redone
whenever a stage completes (:func:`plan` with ``now_s`` and ``done``).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from .errors import InfeasibleDeadline
from .profile import JobProfile, StageProfile

__all__ = ["Plan", "StagePlan", "cores_for", "plan"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StagePlan:
    key: str
    start_s: float
    """Planned start, seconds from the job's start."""
    deadline_s: float
    """The stage's deadline, seconds from the job's start."""
    cores: int
    """Task slots planned for the stage."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    deadline_s: float
    """The job's deadline (seconds from its start)."""
    target_s: float
    """``alpha · deadline_s``: what the stage deadlines add up to (the margin is the rest)."""
    shortest_s: float
    """Shortest time the stages still to run need on ``max_cores`` (after ``now_s``)."""
    feasible: bool
    reason: str
    stages: tuple[StagePlan, ...]

    def stage(self, key: str) -> StagePlan | None:
        return next((s for s in self.stages if s.key == key), None)


def cores_for(stage: StageProfile, span_s: float, *, max_cores: int, min_cores: int = 1) -> int:
    """The fewest cores in ``[min_cores, max_cores]`` whose waves finish ``stage`` within
    ``span_s`` seconds; ``max_cores`` when none does."""
    hi = max(min_cores, min(max_cores, stage.tasks))
    for cores in range(min_cores, hi + 1):
        if stage.shortest_s(cores) <= span_s:
            return cores
    return max(min_cores, max_cores) if hi < max_cores else hi


def plan(
    profile: JobProfile,
    *,
    deadline_s: float,
    max_cores: int,
    min_cores: int = 1,
    alpha: float = 0.95,
    now_s: float = 0.0,
    done: Collection[str] = (),
    strict: bool = False,
    lead_s: float = 0.0,
) -> Plan:
    """Deadlines and cores for the stages of ``profile`` not in ``done``, from ``now_s``
    (seconds since the job started, plus ``lead_s`` for executors to start) to
    ``alpha · deadline_s``. ``ValueError`` for a
    non-positive deadline or cores; with ``strict``, :class:`InfeasibleDeadline` when the
    stages left cannot finish in time on ``max_cores`` (otherwise the plan says so in
    ``feasible`` and ``reason`` and gives every stage its cores for the shortest time)."""
    if not deadline_s > 0:
        raise ValueError(f"deadline must be positive, got {deadline_s}")
    if not 1 <= min_cores <= max_cores:
        raise ValueError(f"need 1 <= min_cores <= max_cores, got {min_cores}, {max_cores}")
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    todo = [s for s in profile.stages if s.key not in done]
    target = alpha * deadline_s
    left = target - now_s - lead_s
    weights = [s.shortest_s(max_cores) for s in todo]
    shortest = sum(weights)
    feasible = shortest <= max(left, 0.0)
    if feasible:
        reason = (f"the stages left need at least {shortest:.1f}s on {max_cores} cores; "
                  f"{left:.1f}s are left to {alpha:g} x the {deadline_s:.1f}s deadline once "
                  f"{lead_s:g}s of executor start are set aside")  # fmt: skip
    else:
        reason = (f"infeasible: the stages left need at least {shortest:.1f}s on {max_cores} "
                  f"cores but only {max(left, 0.0):.1f}s are left to {alpha:g} x the "
                  f"{deadline_s:.1f}s deadline")  # fmt: skip
        if strict:
            raise InfeasibleDeadline(reason, deadline_s=deadline_s, shortest_s=now_s + shortest)
    stages = []
    start = now_s + lead_s
    remaining_weight = shortest
    for stage, weight in zip(todo, weights, strict=True):
        if feasible and remaining_weight > 0:
            span = (target - start) * weight / remaining_weight
        else:
            span = weight
        remaining_weight -= weight
        cores = cores_for(stage, span, max_cores=max_cores, min_cores=min_cores)
        stages.append(StagePlan(key=stage.key, start_s=start, deadline_s=start + span, cores=cores))
        start += span
    return Plan(deadline_s=deadline_s, target_s=target, shortest_s=shortest, feasible=feasible,
                reason=reason, stages=tuple(stages))  # fmt: skip
