"""The round engine's state and its transitions, as pure functions.

A job's :class:`JobProgress` moves one round at a time (the TFF ``state, output = next(state,
inputs)`` shape)::

    progress, record = close_round(progress, round_no=..., replies=..., aggregate=..., ...)
    progress, message = verdict(progress, feasible=..., accuracy_at_budget=..., constraints=...)
    reason = stop_reason(progress, constraints)          # None: run another round

:func:`close_round` holds every decision of a round's end: the minimum-results gate, a strategy's
refusal or a non-finite aggregate (the model stays; the note says why), the evaluation, the
record and the best model so far. The model's numerics come in as functions (``aggregate``,
``evaluate``), so the step runs in a worker thread and unit tests pass plain ones. Nothing here
does I/O, so a restarted coordinator resumes from a checkpointed ``JobProgress`` exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from protocol import Weights

from .errors import StrategyError
from .fleet import RoundReplies
from .strategies import ClientUpdate

if TYPE_CHECKING:  # the job module imports the planners' settings
    from .job import Constraints


__all__ = [
    "JobProgress",
    "RoundRecord",
    "Scores",
    "StopReason",
    "advance",
    "close_round",
    "close_updates",
    "empty_rounds",
    "start",
    "stop_reason",
    "verdict",
]

StopReason = Literal[
    "reached", "time_budget", "max_rounds", "max_bytes", "infeasible", "no_results"
]


class Scores(Protocol):
    """What evaluating a model on the holdout gives (``GlobalModel.evaluate``)."""

    @property
    def accuracy(self) -> float: ...

    @property
    def loss(self) -> float: ...


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
    resumed_at: int = 0
    """The round this coordinator run resumed after (0 for a fresh start); not checkpointed.
    Empty rounds before it do not count towards ``no_results``: a restart tries again."""


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


def close_round(
    progress: JobProgress,
    *,
    round_no: int,
    participants: tuple[str, ...],
    min_results: int,
    replies: RoundReplies,
    aggregate: Callable[[Sequence[ClientUpdate], Sequence[str]], Weights],
    evaluate: Callable[[Weights], Scores],
    started_s: float,
    elapsed: Callable[[], float],
    plan_info: Mapping[str, Any] | None = None,
) -> tuple[JobProgress, RoundRecord]:
    """End round ``round_no``: gate, aggregate, evaluate, record; return the job after it.

    ``aggregate(updates, failed_agent_ids)`` is the strategy's rule (it may raise
    :class:`~coordinator.errors.StrategyError`); ``evaluate(weights)`` scores a model on the
    holdout; ``elapsed()`` reads the job clock in seconds (the round's duration runs from
    ``started_s`` to after the evaluation). With fewer than ``min_results`` results, a refusal
    or a non-finite aggregate, the model stays as it was and the record's ``note`` says why.
    """
    updates = [
        ClientUpdate(agent_id=a, weights=r.weights, num_examples=r.num_examples, loss=r.loss)
        for a, r in sorted(replies.results.items())
    ]
    return close_updates(
        progress,
        round_no=round_no,
        participants=participants,
        min_results=min_results,
        updates=updates,
        failures=replies.failures,
        bytes_moved=replies.bytes_sent + replies.bytes_received,
        reply_seconds=sum(replies.reply_s.values()),
        aggregate=aggregate,
        evaluate=evaluate,
        started_s=started_s,
        elapsed=elapsed,
        plan_info=plan_info,
    )


def close_updates(
    progress: JobProgress,
    *,
    round_no: int,
    participants: tuple[str, ...],
    min_results: int,
    updates: Sequence[ClientUpdate],
    failures: Mapping[str, str],
    bytes_moved: int,
    reply_seconds: float,
    aggregate: Callable[[Sequence[ClientUpdate], Sequence[str]], Weights],
    evaluate: Callable[[Weights], Scores],
    started_s: float,
    elapsed: Callable[[], float],
    plan_info: Mapping[str, Any] | None = None,
    failure_seconds: float | None = None,
) -> tuple[JobProgress, RoundRecord]:
    """:func:`close_round` on updates already gathered (the asynchronous mode's buffer, where
    one agent may bring two). ``reply_seconds``: agent time of the results; ``failure_seconds``
    that of the failures (``None``: each failure costs the round's whole duration)."""
    weights, note = progress.weights, ""
    if len(updates) < min_results:
        note = f"{len(updates)} results, fewer than {min_results}; kept the previous model"
    else:
        try:
            new = aggregate(updates, sorted(failures))
        except StrategyError as exc:
            note = f"strategy refused: {exc}; kept the previous model"
        else:
            if all(np.isfinite(w).all() for w in new):
                weights = new
            else:
                note = "aggregate is not finite; kept the previous model"
    scores = evaluate(weights)
    duration = elapsed() - started_s
    aggregated = weights is not progress.weights
    lost = duration * len(failures) if failure_seconds is None else failure_seconds
    record = RoundRecord(
        round=round_no,
        started_s=started_s,
        duration_s=duration,
        participants=participants,
        results=len(updates),
        failures=dict(failures),
        accuracy=scores.accuracy,
        loss=scores.loss,
        aggregated=aggregated,
        bytes_moved=bytes_moved,
        agent_seconds=reply_seconds + lost,
        examples=sum(u.num_examples for u in updates) if aggregated else 0,
        note=note,
        plan=dict(plan_info or {}),
    )
    return advance(progress, record, weights), record


def verdict(
    progress: JobProgress,
    *,
    feasible: bool | None,
    accuracy_at_budget: float | None,
    constraints: Constraints,
) -> tuple[JobProgress, str]:
    """Record the planner's first "out of reach" verdict; return the job and the message for
    monitors ("" when there is nothing new to say). With ``on_infeasible = "stop"``,
    :func:`stop_reason` then ends the job."""
    if feasible is not False or progress.infeasible_at_s is not None:
        return progress, ""
    at_budget = "unknown" if accuracy_at_budget is None else f"{accuracy_at_budget:.4f}"
    message = (
        f"target {constraints.target_accuracy} looks unreachable within the "
        f"{constraints.time_budget_s:.0f}s budget: predicted accuracy at the end of the budget "
        f"{at_budget}; " + ("stopping" if constraints.on_infeasible == "stop" else "continuing")
    )
    return dataclasses.replace(progress, infeasible_at_s=progress.elapsed_s), message


def empty_rounds(progress: JobProgress) -> int:
    """Rounds in a row, up to the latest and since this run resumed, that brought no result."""
    count = 0
    for record in reversed(progress.history):
        if record.results or record.round <= progress.resumed_at:
            break
        count += 1
    return count


def stop_reason(progress: JobProgress, constraints: Constraints) -> StopReason | None:
    """Why the job must stop now, or ``None`` to run another round."""
    if progress.best_accuracy >= constraints.target_accuracy:
        return "reached"
    if empty_rounds(progress) >= constraints.max_empty_rounds:
        return "no_results"
    if progress.infeasible_at_s is not None and constraints.on_infeasible == "stop":
        return "infeasible"
    if progress.elapsed_s >= constraints.time_budget_s:
        return "time_budget"
    if constraints.max_rounds is not None and progress.round >= constraints.max_rounds:
        return "max_rounds"
    if constraints.max_bytes is not None and progress.bytes_moved >= constraints.max_bytes:
        return "max_bytes"
    return None
