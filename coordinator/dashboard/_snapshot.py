"""What the dashboard shows, as one JSON-able snapshot built from the coordinator's state.

Pure: :func:`job_snapshot` reads a job's spec, the agent registry, the job's progress (its round
history), the last published :class:`~protocol.JobState` and the planner's prediction, and returns
plain values (finite floats, lists, dicts, strings; ``None`` where something is unknown). Times
are seconds: ``t`` on the curve is job time (``JobProgress.elapsed_s``, across restarts);
heartbeat ages are on the coordinator's monotonic clock, ``now`` included. Shape::

    {"job": {job_id, status, round, accuracy, best_accuracy, target_accuracy, elapsed_s,
             time_budget_s, planner, strategy, message, bytes_moved, dropped},
     "curve": [{t, round, accuracy, predicted_at_budget, planned_at, results,
                participants}, ...],
     "plan": {the newest round's plan info: deadline_s, participants, ...},
     "prediction": {feasible, predicted_time_to_target_s, predicted_accuracy_at_budget, ...},
     "agents": [{id, status, device_class, examples, heartbeat_age_s, load, busy,
                 chosen, replies, failed, last_failure}, ...],
     "fleet": {agents, online, training, silent, offline}}
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from protocol import JobState

from ..engine import JobProgress, RoundRecord
from ..job import JobSpec
from ..planners import Prediction
from ..registry import AgentRecord

__all__ = ["agent_rows", "curve_points", "job_snapshot", "plain"]


def plain(value: Any) -> Any:
    """``value`` as JSON-safe plain values: non-finite floats become ``None``, tuples lists,
    mapping keys strings; anything else that is not a str/int/float/bool/None becomes its str."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    try:
        number = float(value)  # NumPy scalars
    except (TypeError, ValueError):
        return str(value)
    return number if math.isfinite(number) else None


def _status(rec: AgentRecord, *, now: float, stale_after_s: float) -> str:
    if rec.clash:
        return "clash"
    if rec.online and now - rec.last_seen <= stale_after_s:
        return "training" if rec.heartbeat is not None and rec.heartbeat.busy else "online"
    return "silent" if rec.announced else "offline"


def agent_rows(
    agents: Iterable[AgentRecord],
    history: Sequence[RoundRecord],
    *,
    now: float,
    stale_after_s: float = 30.0,
) -> list[dict[str, Any]]:
    """One row per agent, by id: its status (``online``, ``training``, ``silent``: announced
    but not heard from for ``stale_after_s`` — also when the registry is no longer fed, after
    the job —, ``offline``, ``clash``: two daemons under one id), device class,
    examples, seconds since its last heartbeat, the host's 1-minute load, and from ``history``
    how often it was chosen, how many of its replies were aggregated, and how many rounds it
    failed (with the newest reason)."""
    chosen: dict[str, int] = {}
    failed: dict[str, int] = {}
    last_failure: dict[str, str] = {}
    for record in history:
        for agent_id in record.participants:
            chosen[agent_id] = chosen.get(agent_id, 0) + 1
        for agent_id, why in record.failures.items():
            failed[agent_id] = failed.get(agent_id, 0) + 1
            last_failure[agent_id] = f"round {record.round}: {why}"
    rows = []
    for rec in sorted(agents, key=lambda r: r.agent_id):
        beat = rec.heartbeat
        n = chosen.get(rec.agent_id, 0)
        f = failed.get(rec.agent_id, 0)
        rows.append(
            {
                "id": rec.agent_id,
                "status": _status(rec, now=now, stale_after_s=stale_after_s),
                "device_class": rec.hello.device_class if rec.hello else None,
                "examples": rec.num_examples,
                "heartbeat_age_s": None
                if rec.heartbeat_at is None
                else round(max(0.0, now - rec.heartbeat_at), 1),
                "load": None if beat is None else plain(round(beat.load, 2)),
                "busy": None if beat is None else beat.busy,
                "chosen": n,
                "replies": max(0, n - f),
                "failed": f,
                "last_failure": last_failure.get(rec.agent_id, ""),
            }
        )
    return rows


def curve_points(
    progress: JobProgress | None, *, initial_accuracy: float | None = None
) -> list[dict[str, Any]]:
    """Accuracy against job time: the initial model at ``t = 0`` (when known), then one point
    per round at its end (``t``), with the accuracy the planner predicted for the end of the
    budget when it planned that round (``predicted_at_budget``, ``None`` when it made no such
    prediction) and when that was (``planned_at``, the round's start)."""
    points: list[dict[str, Any]] = []
    if initial_accuracy is not None:
        points.append(
            {
                "t": 0.0,
                "round": 0,
                "accuracy": plain(initial_accuracy),
                "predicted_at_budget": None,
                "planned_at": None,
                "results": 0,
                "participants": 0,
            }
        )
    if progress is None:
        return points
    for r in progress.history:
        points.append(
            {
                "t": plain(round(r.started_s + r.duration_s, 3)),
                "round": r.round,
                "accuracy": plain(r.accuracy),
                "predicted_at_budget": plain(r.plan.get("predicted_accuracy_at_budget")),
                "planned_at": plain(round(r.started_s, 3)),
                "results": r.results,
                "participants": len(r.participants),
            }
        )
    return points


def job_snapshot(
    *,
    spec: JobSpec,
    agents: Iterable[AgentRecord],
    progress: JobProgress | None,
    state: JobState | None,
    prediction: Prediction | None,
    initial_accuracy: float | None,
    dropped: Mapping[str, int],
    now: float,
    stale_after_s: float = 30.0,
) -> dict[str, Any]:
    """The dashboard's view of one job (the shape is in the module's docstring)."""
    history = progress.history if progress is not None else ()
    rows = agent_rows(agents, history, now=now, stale_after_s=stale_after_s)
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in ("online", "training")}
    status = (
        state.status
        if state is not None
        else ("starting" if progress is None else str(progress.status))
    )
    c = spec.constraints
    job = {
        "job_id": spec.job_id,
        "status": status,
        "round": progress.round if progress else 0,
        "accuracy": plain(progress.accuracy) if progress else None,
        "best_accuracy": plain(progress.best_accuracy) if progress else None,
        "best_round": progress.best_round if progress else 0,
        "target_accuracy": c.target_accuracy,
        "elapsed_s": plain(round(progress.elapsed_s, 2)) if progress else 0.0,
        "time_budget_s": plain(c.time_budget_s),
        "max_rounds": c.max_rounds,
        "planner": spec.planner.name,
        "strategy": spec.strategy.name,
        "message": state.message if state is not None else "",
        "bytes_moved": progress.bytes_moved if progress else 0,
        "dropped": dict(sorted(dropped.items())),
    }
    return {
        "job": job,
        "curve": curve_points(progress, initial_accuracy=initial_accuracy),
        "plan": plain(dict(history[-1].plan)) if history else {},
        "prediction": plain(prediction.to_json()) if prediction is not None else {},
        "agents": rows,
        "fleet": {
            "agents": len(rows),
            "online": counts["online"] + counts["training"],
            "training": counts["training"],
            "silent": sum(1 for r in rows if r["status"] == "silent"),
            "offline": sum(1 for r in rows if r["status"] == "offline"),
        },
    }
