"""An open-loop load generator for any KServe v2 / Open Inference Protocol server.

Arrivals are Poisson (exponential gaps from a seeded generator) at the rate of each step of a
pattern (``20:10,80:10,20:10``: rate in requests/s and duration in seconds). Open loop: a slow
server does not slow the arrivals — each request is its own task, up to ``max_in_flight``; a
request past that cap is counted as ``client_dropped``, never silently lost. Latency is measured
from the scheduled send to the last byte of the answer.

::

    report = await run_load(url, model="digits", steps=parse_steps("50:10,200:10,50:10"),
                            samples=x, binary=True, sla_ms=20)
    report.to_json()    # p50/p95/p99, sheds, errors, SLA violation share, per step and window

Errors: :class:`LoadgenError` when the server cannot be reached or has no such model (before
any load is sent); per-request failures are counted, not raised.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt

from .errors import RomaError
from .v2 import DATATYPES, Tensor, encode_infer_request

__all__ = ["LoadReport", "LoadgenError", "Step", "load_samples", "parse_steps", "run_load",
           "schedule", "summarise"]  # fmt: skip


class LoadgenError(RomaError):
    """The load cannot start: the server is unreachable or does not serve the model."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    rate: float
    """Requests per second."""
    duration_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    sent_s: float
    """Scheduled send time, seconds since the start."""
    latency_s: float
    status: int
    """HTTP status; 0 for a request that got no answer (see ``error``)."""
    error: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadReport:
    steps: tuple[Step, ...]
    records: tuple[Record, ...]
    client_dropped: int
    sla_ms: float | None
    window_s: float
    duration_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The report as plain JSON: totals, then per step, then per window."""
        doc = summarise(self.records, sla_ms=self.sla_ms, window_s=self.window_s,
                        duration_s=self.duration_s)  # fmt: skip
        doc["client_dropped"] = self.client_dropped
        start = 0.0
        per_step = []
        for step in self.steps:
            inside = [r for r in self.records if start <= r.sent_s < start + step.duration_s]
            part = summarise(inside, sla_ms=self.sla_ms, window_s=self.window_s,
                             duration_s=step.duration_s, windows=False)  # fmt: skip
            per_step.append({"rate": step.rate, "duration_s": step.duration_s, **part})
            start += step.duration_s
        doc["steps"] = per_step
        doc.update(self.extra)
        return doc


def parse_steps(text: str) -> tuple[Step, ...]:
    """``"20:10,80:10"`` → two steps. ``ValueError`` naming the bad part."""
    steps = []
    for part in text.split(","):
        rate_text, sep, duration_text = part.strip().partition(":")
        try:
            rate, duration = float(rate_text), float(duration_text)
        except ValueError:
            raise ValueError(f"step {part!r} is not RATE:SECONDS") from None
        if not sep or not (rate > 0 and duration > 0):
            raise ValueError(f"step {part!r}: rate and duration must be positive numbers")
        steps.append(Step(rate=rate, duration_s=duration))
    if not steps:
        raise ValueError("no steps")
    return tuple(steps)


def schedule(steps: Sequence[Step], *, seed: int = 0) -> npt.NDArray[np.float64]:
    """Send times (seconds from the start) of Poisson arrivals following ``steps``."""
    rng = np.random.default_rng(seed)
    times: list[float] = []
    start = 0.0
    for step in steps:
        t = start
        while True:
            t += float(rng.exponential(1.0 / step.rate))
            if t >= start + step.duration_s:
                break
            times.append(t)
        start += step.duration_s
    return np.asarray(times)


def summarise(
    records: Sequence[Record],
    *,
    sla_ms: float | None,
    window_s: float,
    duration_s: float,
    windows: bool = True,
) -> dict[str, Any]:
    """Counts and latency percentiles (ms, over OK answers) of ``records``; with ``sla_ms`` the
    share of OK answers slower than it and of ``window_s`` windows whose p95 is; with ``windows``
    a time series (rate, p95, sheds per window)."""
    ok = [r for r in records if r.status == 200]
    ms = np.asarray([r.latency_s * 1000 for r in ok])
    errors = Counter(r.error or f"http_{r.status}" for r in records if r.status not in (200, 429))
    doc: dict[str, Any] = {
        "sent": len(records),
        "ok": len(ok),
        "shed": sum(1 for r in records if r.status == 429),
        "errors": dict(errors),
        "achieved_rate": len(records) / duration_s if duration_s > 0 else 0.0,
    }
    for q in (50, 95, 99):
        doc[f"p{q}_ms"] = float(np.percentile(ms, q)) if len(ms) else None
    doc["mean_ms"] = float(ms.mean()) if len(ms) else None
    doc["max_ms"] = float(ms.max()) if len(ms) else None
    series: list[dict[str, Any]] = []
    count = max(1, int(np.ceil(duration_s / window_s)))
    for i in range(count):
        inside = [r for r in records if i * window_s <= r.sent_s < (i + 1) * window_s]
        w_ms = [r.latency_s * 1000 for r in inside if r.status == 200]
        series.append(
            {
                "t_s": i * window_s,
                "rate": len(inside) / window_s,
                "p95_ms": float(np.percentile(w_ms, 95)) if w_ms else None,
                "shed": sum(1 for r in inside if r.status == 429),
            }
        )
    if sla_ms is not None:
        doc["sla_ms"] = sla_ms
        doc["sla_violation_share"] = float(np.mean(ms > sla_ms)) if len(ms) else None
        judged = [float(w["p95_ms"]) for w in series if w["p95_ms"] is not None]
        doc["windows_violating_share"] = (
            sum(1 for p95 in judged if p95 > sla_ms) / len(judged) if judged else None
        )
    if windows:
        doc["windows"] = series
    return doc


def load_samples(path: Path) -> npt.NDArray[np.float32]:
    """Rows to send from an ``.npy`` file, or the ``x`` (else the first) array of an ``.npz``."""
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise LoadgenError(f"cannot read samples from {path}: {exc}") from exc
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            key = "x" if "x" in data.files else data.files[0]
            array = data[key]
    else:
        array = data
    return np.asarray(array, dtype=np.float32)


async def _metadata(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    try:
        async with session.get(base) as response:
            doc = await response.json(content_type=None)
            if response.status != 200:
                raise LoadgenError(f"{base}: HTTP {response.status}: {doc.get('error', doc)}")
            return dict(doc)
    except aiohttp.ClientError as exc:
        raise LoadgenError(f"cannot reach {base}: {exc}") from exc


def _encode_bodies(
    samples: npt.NDArray[Any],
    *,
    rows: int,
    dtype: Any,
    spec: dict[str, Any],
    binary: bool,
) -> list[tuple[bytes, dict[str, str]]]:
    bodies = []
    for i in range(min(len(samples), 512)):
        rows_x = np.take(samples, range(i, i + rows), axis=0, mode="wrap").astype(dtype)
        bodies.append(encode_infer_request(
            [Tensor(name=spec["name"], datatype=spec["datatype"], shape=rows_x.shape,
                    data=rows_x)], binary=binary))  # fmt: skip
    return bodies


async def run_load(
    url: str,
    *,
    model: str,
    steps: Sequence[Step],
    version: str | None = None,
    samples: npt.NDArray[np.float32] | None = None,
    rows: int = 1,
    binary: bool = False,
    sla_ms: float | None = None,
    seed: int = 0,
    timeout_s: float = 10.0,
    max_in_flight: int = 1000,
    window_s: float = 1.0,
    progress: bool = True,
) -> LoadReport:
    """Send the pattern ``steps`` to ``model`` at ``url`` (``http://host:port``); ``rows`` rows
    per request, cycling through ``samples`` (default: random rows shaped from the model's
    metadata). Raises :class:`LoadgenError` before the load when the model is not served."""
    base = url.rstrip("/") + f"/v2/models/{model}" + (f"/versions/{version}" if version else "")
    times = schedule(steps, seed=seed)
    duration = sum(s.duration_s for s in steps)
    connector = aiohttp.TCPConnector(limit=max_in_flight)
    client_timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        meta = await _metadata(session, base)
        if not meta.get("inputs"):
            raise LoadgenError(
                f"{base}: the model's metadata declares no inputs to shape requests by"
            )
        spec = meta["inputs"][0]
        dtype = DATATYPES[spec["datatype"]]
        if samples is None:
            shape = [1 if d < 0 else d for d in spec["shape"][1:]]
            samples = np.random.default_rng(seed).random((256, *shape)).astype(dtype)
        # Off the event loop: another load sharing it may already be sending.
        bodies = await asyncio.to_thread(
            _encode_bodies, samples, rows=rows, dtype=dtype, spec=spec, binary=binary
        )
        records: list[Record] = []
        in_flight = 0
        dropped = 0
        t0 = time.perf_counter()

        async def one(i: int, sent: float) -> None:
            nonlocal in_flight
            body, headers = bodies[i % len(bodies)]
            try:
                async with session.post(base + "/infer", data=body, headers=headers) as response:
                    await response.read()
                    status = response.status
                error = ""
            except TimeoutError:
                status, error = 0, "timeout"
            except aiohttp.ClientError as exc:
                status, error = 0, type(exc).__name__
            finally:
                in_flight -= 1
            records.append(Record(sent_s=sent, latency_s=time.perf_counter() - t0 - sent,
                                  status=status, error=error))  # fmt: skip

        bar = _progress(duration, progress)
        async with asyncio.TaskGroup() as tg:
            for i, sent in enumerate(times):
                delay = sent - (time.perf_counter() - t0)
                if delay > 0:
                    await asyncio.sleep(delay)
                    bar(time.perf_counter() - t0)
                if in_flight >= max_in_flight:
                    dropped += 1
                    continue
                in_flight += 1
                tg.create_task(one(i, float(sent)))
        bar(duration, done=True)
    return LoadReport(steps=tuple(steps), records=tuple(sorted(records, key=lambda r: r.sent_s)),
                      client_dropped=dropped, sla_ms=sla_ms, window_s=window_s,
                      duration_s=duration)  # fmt: skip


def _progress(total_s: float, enabled: bool) -> Any:
    """A tqdm bar over the pattern's seconds (stderr; off when not a terminal)."""
    from tqdm import tqdm

    bar = tqdm(total=round(total_s, 1), unit="s", disable=None if enabled else True,
               desc="load", leave=False)  # fmt: skip
    shown = 0.0

    def update(now_s: float, *, done: bool = False) -> None:
        nonlocal shown
        target = min(total_s, now_s)
        if target - shown >= 0.25 or done:
            bar.update(round(target - shown, 2))
            shown = target
        if done:
            bar.close()

    return update
