"""Live stages of a running job, keyed as the profile keys them. Pure, but for :func:`read_stages`.

The profiler keys a stage by its name (Spark's call site, ``collect at job.py:12``) and the
number of stages of the same name that *completed* before it (:func:`.profile.stage_keys` over
the completed stages in completion order). A live run sees stages as they start, so
:class:`StageKeyer` numbers each stage when it is first seen, in the order the profiler would
have: stages first seen already complete (shorter than a control period) by completion time
and stage id, before stages first seen running, those by stage id. Stages Spark skipped (their
shuffle output was reused) or has not submitted yet are never numbered: the profiler never saw
them either. The two orders differ only when two stages of the same name run at once and the
later one finishes first; :meth:`StageKeyer.rekeyed` tells that after the run.

A Python call site names the script by the path it was run by (``count at jobs/prep.py:9``
when profiled as ``jobs/prep.py``, ``count at /home/u/jobs/prep.py:9`` when run by its absolute
path). Given the profile's keys, the keyer answers a live stage with the profile's key whenever
the two differ only in the directories of such paths (:func:`site`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .profile import stage_keys
from .rest import SparkRest, _epoch_s

__all__ = ["LiveStage", "StageEvent", "StageKeyer", "live_stage", "read_stages", "site"]

_SEEN = ("ACTIVE", "COMPLETE")
_PY_PATH = re.compile(r"(?<![^\s])\S*[/\\]([^/\\\s]+\.py:\d+)")


def site(key: str) -> str:
    """``count at /a/b/prep.py:9#1`` → ``count at prep.py:9#1``: a stage key without the
    directories of its script's path."""
    return _PY_PATH.sub(r"\1", key)


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveStage:
    """One stage as the REST API shows it now (times are UNIX seconds, 0.0 while unknown)."""

    stage_id: int
    name: str
    status: str
    """``ACTIVE``, ``COMPLETE``, ``PENDING``, ``SKIPPED`` or ``FAILED``."""
    tasks: int
    completed_tasks: int
    submitted_s: float = 0.0
    completed_s: float = 0.0

    @property
    def progress(self) -> float:
        """Completed fraction of the stage's tasks (1.0 once the stage is complete)."""
        if self.status == "COMPLETE":
            return 1.0
        return min(1.0, self.completed_tasks / self.tasks) if self.tasks > 0 else 0.0

    @property
    def tasks_left(self) -> int:
        return 0 if self.status == "COMPLETE" else max(0, self.tasks - self.completed_tasks)


def live_stage(row: Mapping[str, Any]) -> LiveStage:
    """A :class:`LiveStage` from one row of ``/applications/{id}/stages``."""
    return LiveStage(
        stage_id=int(row["stageId"]), name=str(row.get("name", "")),
        status=str(row.get("status", "")), tasks=int(row.get("numTasks", 0)),
        completed_tasks=int(row.get("numCompleteTasks", 0)),
        submitted_s=_epoch_s(row.get("submissionTime")),
        completed_s=_epoch_s(row.get("completionTime")),
    )  # fmt: skip


def read_stages(rest: SparkRest) -> list[LiveStage]:
    """Every stage attempt the application has, from the REST API (blocking; raises
    :class:`~.rest.SparkRestError`). A retried stage keeps its id: its latest attempt wins."""
    rows = rest.get(f"/applications/{rest.app_id}/stages")
    latest: dict[int, tuple[int, LiveStage]] = {}
    for row in rows:
        stage = live_stage(row)
        attempt = int(row.get("attemptId", 0))
        if stage.stage_id not in latest or attempt >= latest[stage.stage_id][0]:
            latest[stage.stage_id] = (attempt, stage)
    return [stage for _, stage in latest.values()]


@dataclass(frozen=True, slots=True, kw_only=True)
class StageEvent:
    """A stage started or completed, under its profile key."""

    kind: str
    """``started`` or ``completed``."""
    key: str
    stage: LiveStage


class StageKeyer:
    """Numbers live stages by name and position as the profiler does; :meth:`observe` turns
    each poll of :func:`read_stages` into start and completion events, in the order they
    happened."""

    def __init__(self, profile_keys: Iterable[str] = ()) -> None:
        self._aliases = {site(k): k for k in profile_keys}
        self.keys: dict[int, str] = {}
        """Stage id → key, for every stage numbered so far."""
        self._counts: dict[str, int] = {}
        self._running: dict[int, LiveStage] = {}
        self._completed: dict[int, LiveStage] = {}

    def _number(self, stage: LiveStage) -> str:
        k = self._counts.get(stage.name, 0)
        self._counts[stage.name] = k + 1
        key = f"{stage.name}#{k}"
        key = self._aliases.get(site(key), key)
        self.keys[stage.stage_id] = key
        return key

    def observe(self, stages: Iterable[LiveStage]) -> list[StageEvent]:
        """Events since the last poll: completions of stages seen running, then stages first
        seen complete (started and completed, by completion time), then new running stages
        (by id)."""
        events: list[StageEvent] = []
        fresh_done: list[LiveStage] = []
        fresh_running: list[LiveStage] = []
        for stage in stages:
            if stage.status not in _SEEN or stage.stage_id in self._completed:
                continue
            if stage.stage_id in self._running:
                if stage.status == "COMPLETE":
                    del self._running[stage.stage_id]
                    self._completed[stage.stage_id] = stage
                    events.append(StageEvent(kind="completed", key=self.keys[stage.stage_id],
                                             stage=stage))  # fmt: skip
                else:
                    self._running[stage.stage_id] = stage
            elif stage.status == "COMPLETE":
                fresh_done.append(stage)
            else:
                fresh_running.append(stage)
        for stage in sorted(fresh_done, key=lambda s: (s.completed_s, s.stage_id)):
            key = self._number(stage)
            self._completed[stage.stage_id] = stage
            events.append(StageEvent(kind="started", key=key, stage=stage))
            events.append(StageEvent(kind="completed", key=key, stage=stage))
        for stage in sorted(fresh_running, key=lambda s: s.stage_id):
            key = self._number(stage)
            self._running[stage.stage_id] = stage
            events.append(StageEvent(kind="started", key=key, stage=stage))
        return events

    @property
    def running(self) -> dict[str, LiveStage]:
        """Key → latest view of every stage seen running and not yet complete."""
        return {self.keys[i]: s for i, s in self._running.items()}

    def rekeyed(self, completed: Sequence[LiveStage]) -> dict[int, tuple[str, str]]:
        """Stage id → (live key, profiler's key) for the stages of ``completed`` whose live key
        is not the one the profiler would give them (:func:`.profile.stage_keys` in completion
        order); empty when every key matched."""
        ordered = sorted(completed, key=lambda s: (s.completed_s, s.stage_id))
        out = {}
        for stage, key in zip(ordered, stage_keys(s.name for s in ordered), strict=True):
            key = self._aliases.get(site(key), key)
            live = self.keys.get(stage.stage_id)
            if live is not None and live != key:
                out[stage.stage_id] = (live, key)
        return out
