"""Spark's monitoring REST API (``/api/v1``, served by the driver's UI), read-only: the
application, its stages and their task-time quantiles, its executors. Blocking (``urllib``);
callers run it in a thread. Spark docs, "Monitoring and Instrumentation", REST API.

Every failure is a :class:`SparkRestError` naming the URL.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from .errors import DynaSparkError

__all__ = ["SparkRest", "SparkRestError", "StageRecord"]


class SparkRestError(DynaSparkError):
    """The driver's REST API did not answer, or answered something else than JSON."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StageRecord:
    """One completed stage attempt, as the REST API reports it (times in seconds)."""

    stage_id: int
    attempt: int
    name: str
    tasks: int
    submitted_s: float
    completed_s: float
    task_s: float
    records_in: int
    records_out: int
    bytes_in: int
    bytes_out: int


def _epoch_s(text: str | None) -> float:
    """``2026-12-06T04:20:03.123GMT`` → UNIX seconds; 0.0 when missing."""
    if not text:
        return 0.0
    from datetime import datetime

    stamp = datetime.strptime(text.replace("GMT", ""), "%Y-%m-%dT%H:%M:%S.%f")
    return stamp.replace(tzinfo=UTC).timestamp()


class SparkRest:
    """The REST API of one running application at ``ui_url`` (``http://host:4040``)."""

    def __init__(self, ui_url: str, *, timeout_s: float = 20.0, attempts: int = 3) -> None:
        self.base = ui_url.rstrip("/") + "/api/v1"
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)
        """Tries per request: the driver's UI can take seconds to answer its first request or
        on a loaded machine (measured here: over 5 s at a load average of 14)."""
        self._app: str | None = None

    def get(self, path: str) -> Any:
        """The JSON at ``path``; a timeout is tried again up to :attr:`attempts` times.
        Raises :class:`SparkRestError` naming the URL."""
        url = self.base + path
        for attempt in range(1, self.attempts + 1):
            try:
                with urllib.request.urlopen(url, timeout=self.timeout_s) as response:
                    return json.loads(response.read())
            except (TimeoutError, urllib.error.URLError, OSError, ValueError) as exc:
                timed_out = isinstance(exc, TimeoutError) or isinstance(
                    getattr(exc, "reason", None), TimeoutError
                )
                if timed_out and attempt < self.attempts:
                    continue
                raise SparkRestError(f"{url}: {exc}") from exc
        raise AssertionError("unreachable")

    @property
    def app_id(self) -> str:
        if self._app is None:
            apps = self.get("/applications")
            if not apps:
                raise SparkRestError(f"{self.base}/applications: no application")
            self._app = str(apps[0]["id"])
        return self._app

    def completed_stages(self) -> list[StageRecord]:
        """Every completed stage attempt so far, in the order they completed."""
        rows = self.get(f"/applications/{self.app_id}/stages?status=complete")
        out = []
        for r in rows:
            out.append(StageRecord(
                stage_id=int(r["stageId"]), attempt=int(r.get("attemptId", 0)),
                name=str(r.get("name", "")), tasks=int(r.get("numTasks", 0)),
                submitted_s=_epoch_s(r.get("submissionTime")),
                completed_s=_epoch_s(r.get("completionTime")),
                task_s=float(r.get("executorRunTime", 0)) / 1000.0,
                records_in=int(r.get("inputRecords", 0)) + int(r.get("shuffleReadRecords", 0)),
                records_out=int(r.get("outputRecords", 0)) + int(r.get("shuffleWriteRecords", 0)),
                bytes_in=int(r.get("inputBytes", 0)) + int(r.get("shuffleReadBytes", 0)),
                bytes_out=int(r.get("outputBytes", 0)) + int(r.get("shuffleWriteBytes", 0)),
            ))  # fmt: skip
        out.sort(key=lambda s: (s.completed_s, s.stage_id))
        return out

    def task_cv(self, stage_id: int, attempt: int) -> float | None:
        """The coefficient of variation of a stage's task run times, estimated from their
        quartiles (``IQR / (1.349 · median)``, exact for a normal distribution); ``None``
        when Spark has no summary."""
        try:
            summary = self.get(f"/applications/{self.app_id}/stages/{stage_id}/{attempt}"
                               "/taskSummary?quantiles=0.25,0.5,0.75")  # fmt: skip
        except SparkRestError:
            return None
        q = summary.get("executorRunTime") or []
        if len(q) != 3 or q[1] <= 0:
            return None
        return float((q[2] - q[0]) / (1.349 * q[1]))

    def executors(self, *, driver: bool = False) -> list[dict[str, Any]]:
        """Active executors; the driver too when ``driver`` (in ``local[N]`` it runs the tasks)."""
        rows = self.get(f"/applications/{self.app_id}/executors")
        return [r for r in rows
                if r.get("isActive", True) and (driver or r.get("id") != "driver")]  # fmt: skip

    def task_slots(self) -> int:
        """Cores the executors offer tasks; in local mode, the driver's."""
        cores = sum(int(e.get("totalCores", 0)) for e in self.executors())
        if cores == 0:
            cores = sum(int(e.get("totalCores", 0)) for e in self.executors(driver=True))
        return cores
