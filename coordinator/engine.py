"""The round engine's state and its transitions, as pure functions.

A job's :class:`JobProgress` moves one round at a time: ``progress = advance(progress, record,
weights, evaluation)`` (the TFF ``state, output = next(state, inputs)`` shape). Nothing here does
I/O, so a restarted coordinator resumes from a checkpointed ``JobProgress`` exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from protocol import Weights

if TYPE_CHECKING:  # the job module imports the planners' settings
    from .job import Constraints


__all__ = ["JobProgress", "RoundRecord", "StopReason", "advance", "start", "stop_reason"]

StopReason = Literal["reached", "time_budget", "max_rounds", "max_bytes", "infeasible"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundRecord:
    """What happened in one round, for history, monitors and the summary."""

    round: int
    started_s: float
    duration_s: float
    participants: tuple[str, ...]
    results: int
    failures: Mapping[str, str]
    accuracy: float
    loss: float
    aggregated: bool
    bytes_moved: int
    agent_seconds: float
    examples: int = 0
    """Examples trained into this round's aggregate."""
    note: str = ""
    plan: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "participants": list(self.participants),
            "failures": dict(self.failures),
            "plan": dict(self.plan),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RoundRecord:
        return cls(**{**data, "participants": tuple(data["participants"])})


@dataclass(frozen=True, slots=True, kw_only=True)
class JobProgress:
    job_id: str
    weights: Weights
    best_weights: Weights
    round: int = 0
    """Rounds completed."""
    accuracy: float = 0.0
    best_accuracy: float = 0.0
    best_round: int = 0
    elapsed_s: float = 0.0
    """Job time spent, across coordinator restarts."""
    bytes_moved: int = 0
    agent_seconds: float = 0.0
    status: str = "running"
    infeasible_at_s: float | None = None
    """Job time at which the planner declared the target out of reach (``None``: never)."""
    history: tuple[RoundRecord, ...] = ()


def start(job_id: str, weights: Weights, *, accuracy: float = 0.0) -> JobProgress:
    return JobProgress(
        job_id=job_id,
        weights=weights,
        best_weights=weights,
        accuracy=accuracy,
        best_accuracy=accuracy,
    )


def advance(progress: JobProgress, record: RoundRecord, weights: Weights) -> JobProgress:
    """The job after ``record``'s round, whose aggregated model is ``weights``.

    The best model so far is kept apart from the latest: a round that makes things worse never
    loses the best one.
    """
    better = record.accuracy > progress.best_accuracy
    return dataclasses.replace(
        progress,
        round=record.round,
        weights=weights,
        accuracy=record.accuracy,
        best_weights=weights if better else progress.best_weights,
        best_accuracy=record.accuracy if better else progress.best_accuracy,
        best_round=record.round if better else progress.best_round,
        elapsed_s=record.started_s + record.duration_s,
        bytes_moved=progress.bytes_moved + record.bytes_moved,
        agent_seconds=progress.agent_seconds + record.agent_seconds,
        history=(*progress.history, record),
    )


def stop_reason(progress: JobProgress, constraints: Constraints) -> StopReason | None:
    """Why the job must stop now, or ``None`` to run another round."""
    if progress.best_accuracy >= constraints.target_accuracy:
        return "reached"
    if progress.infeasible_at_s is not None and constraints.on_infeasible == "stop":
        return "infeasible"
    if progress.elapsed_s >= constraints.time_budget_s:
        return "time_budget"
    if constraints.max_rounds is not None and progress.round >= constraints.max_rounds:
        return "max_rounds"
    if constraints.max_bytes is not None and progress.bytes_moved >= constraints.max_bytes:
        return "max_bytes"
    return None
