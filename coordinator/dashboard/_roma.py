"""The ROMA SLA panel's source: polls a ROMA server's HTTP endpoints from the dashboard's side.

ROMA is another process (``hyperfleet serve``); the coordinator never imports it, it reads what
any KServe v2 client may read:

    POST {url}/v2/repository/index          the models and their state (no token needed)
    GET  {url}/v2/models/{name}/stats       per model: SLA, windowed response time and
                                            violation share, requests, shed, cores, queue

at most every ``interval_s`` seconds and only while a page watches (:meth:`RomaWatch.refresh`
is called as snapshots are built), each poll bounded by ``timeout_s``. Answers are untrusted: only
the fields named in :data:`FIELDS` are kept, and only when they are numbers or short strings. A
failure (ROMA down, a bad answer) is shown on the panel, never raised.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import deque
from typing import Any, Final
from urllib.parse import quote

import aiohttp

__all__ = ["FIELDS", "RomaWatch"]

_log = logging.getLogger(__name__)

FIELDS: Final = (
    "version",
    "state",
    "reason",
    "sla_ms",
    "percentile",
    "window_s",
    "window_response_ms",
    "window_p50_ms",
    "window_violation_share",
    "window_requests",
    "requests",
    "ok",
    "shed",
    "failed",
    "sla_violations",
    "gpu_batches",
    "queued",
    "cores",
    "active_workers",
)
"""What the panel keeps of each model's ``/stats`` answer."""
MAX_MODELS: Final = 16
MAX_TEXT: Final = 200
_MAX_ANSWER_BYTES: Final = 1 << 20


class _BadAnswer(Exception):
    """ROMA answered something that is not what its endpoint returns."""


def _scalar(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value[:MAX_TEXT]
    return None


class RomaWatch:
    """The newest view of one ROMA server, refreshed by :meth:`run` until cancelled."""

    def __init__(
        self, url: str, *, interval_s: float = 2.0, timeout_s: float = 2.0, history: int = 150
    ) -> None:
        self.url = url.rstrip("/")
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._history: dict[str, deque[tuple[float, float | None]]] = {}
        self._history_len = history
        self._models: list[dict[str, Any]] = []
        self._error = "not polled yet"
        self._checked: float | None = None
        self._t0 = time.monotonic()
        self._polled: float | None = None
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    def snapshot(self) -> dict[str, Any]:
        """``{url, ok, error, checked_s_ago, models: [{name, <FIELDS>, history: [[t, ms]]}]}``;
        ``history`` holds the windowed response time (ms, ``None`` with no requests) at the
        newest polls, ``t`` in seconds since the dashboard started."""
        now = time.monotonic()
        return {
            "url": self.url,
            "ok": not self._error,
            "error": self._error,
            "checked_s_ago": None if self._checked is None else round(now - self._checked, 1),
            "models": [
                {**m, "history": [list(p) for p in self._history.get(m["name"], ())]}
                for m in self._models
            ],
        }

    async def refresh(self) -> None:
        """Poll ROMA unless the newest poll is under ``interval_s`` old; concurrent callers
        share one poll. The whole poll is bounded by ``timeout_s``."""
        if self._polled is not None and time.monotonic() - self._polled < self.interval_s:
            return
        async with self._lock:
            if self._polled is not None and time.monotonic() - self._polled < self.interval_s:
                return
            if self._session is None:
                timeout = aiohttp.ClientTimeout(total=self.timeout_s)
                self._session = aiohttp.ClientSession(timeout=timeout)
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self.poll(self._session)
            except TimeoutError:
                self._fail(f"no answer within {self.timeout_s:g}s")
            self._polled = time.monotonic()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def poll(self, session: aiohttp.ClientSession) -> None:
        """One refresh; errors end up in the snapshot's ``error``."""
        try:
            index = await self._json(session, "POST", "/v2/repository/index")
            if not isinstance(index, list):
                raise _BadAnswer("the repository index is not a list")
            names = [
                row["name"]
                for row in index
                if isinstance(row, dict) and isinstance(row.get("name"), str)
            ][:MAX_MODELS]
            models = []
            for name in names:
                stats = await self._json(session, "GET", f"/v2/models/{quote(name, safe='')}/stats")
                if not isinstance(stats, dict):
                    raise _BadAnswer(f"the stats of {name} are not an object")
                models.append(
                    {"name": name[:MAX_TEXT], **{k: _scalar(stats.get(k)) for k in FIELDS}}
                )
        except (aiohttp.ClientError, _BadAnswer, ValueError, RecursionError) as exc:
            self._fail(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            return
        now = time.monotonic()
        for m in models:
            ms = m.get("window_response_ms")
            series = self._history.setdefault(m["name"], deque(maxlen=self._history_len))
            series.append(
                (round(now - self._t0, 1), float(ms) if isinstance(ms, (int, float)) else None)
            )
        self._models, self._error, self._checked = models, "", now

    def _fail(self, error: str) -> None:
        if error != self._error:
            _log.info("dashboard: ROMA at %s: %s", self.url, error)
        self._error = error
        self._checked = time.monotonic()

    async def _json(self, session: aiohttp.ClientSession, method: str, path: str) -> Any:
        async with session.request(method, self.url + path) as response:
            if response.status != 200:
                raise _BadAnswer(f"{method} {path}: HTTP {response.status}")
            body = await response.content.read(_MAX_ANSWER_BYTES + 1)
            if len(body) > _MAX_ANSWER_BYTES:
                raise _BadAnswer(f"{method} {path}: answer over {_MAX_ANSWER_BYTES} bytes")
            return json.loads(body)
