"""One loaded model version: its queue, its workers, its batching, its core allowance.

::

    served = await ServedModel.load(name, version, path, config)    # workers started, warmed
    result = await served.infer(x)          # queued, batched, computed, or Overloaded (shed)
    served.set_cores(1.4)                   # the controller's decision: active workers + quota
    await served.close()                    # drains what is queued, stops the workers

Requests queue per model. Whenever one of the model's *active* CPU workers is free and its CPU
quota allows (:class:`~cloud.roma.quota.CpuQuota`, the user-space ``cpu.max``), the dispatch loop
takes the largest batch whose predicted completion meets ``(1 - alpha) x SLA`` for the oldest
request (:func:`~cloud.roma.batching.choose_batch`, from latency measured per batch size). A
request that cannot meet its SLA when the queue is full is shed (:class:`Overloaded`). A GPU
worker, where there is one, takes batches only when the server's GPU arbiter hands it this model
(:meth:`dispatch_gpu`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .batching import BatchProfile, choose_batch
from .cgroup import CgroupUnavailable, CpuGroup, CpuGroups
from .config import ModelConfig
from .dispatch import ModelLoad, predicted_response_s, retry_after_s, should_shed
from .errors import ModelUnavailable, Overloaded, RomaError
from .gpu import GpuArbiter
from .quota import CpuQuota
from .window import LatencyWindow
from .worker import Worker, WorkerInfo

__all__ = ["InferResult", "ServedModel"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class InferResult:
    """Outputs of one request and where its time went (seconds)."""

    outputs: npt.NDArray[Any]
    queue_s: float
    compute_s: float
    response_s: float
    batch_size: int
    device: str


@dataclass(slots=True, kw_only=True)
class _Pending:
    x: npt.NDArray[Any]
    arrived: float
    future: asyncio.Future[InferResult]
    rows: int = field(init=False)

    def __post_init__(self) -> None:
        self.rows = int(self.x.shape[0])


@dataclass(slots=True)
class Counters:
    requests: int = 0
    ok: int = 0
    shed: int = 0
    failed: int = 0
    violations: int = 0
    batches: int = 0
    gpu_batches: int = 0
    core_seconds: float = 0.0


class ServedModel:
    """A model version being served; build it with :meth:`load`."""

    def __init__(
        self,
        *,
        name: str,
        version: str,
        path: Path,
        config: ModelConfig,
        workers: list[Worker],
        gpu: Worker | None,
    ) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.config = config
        self.info: WorkerInfo = workers[0].info
        self._workers = workers
        self._free: set[Worker] = set(workers)
        self._gpu = gpu
        self._gpu_busy = False
        self.profile = BatchProfile(max_batch=config.max_batch)
        self.gpu_profile = BatchProfile(max_batch=config.max_batch)
        self.quota = CpuQuota(config.initial_cores)
        self.cores = config.initial_cores
        self.window = LatencyWindow(config.window_s)
        self.counters = Counters()
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._loop_task: asyncio.Task[None] | None = None
        self._cores_since = time.monotonic()
        self._done_rate = _Rate()
        self._arrival_rows = _Rate()
        self.cpu_s_per_row: float | None = None
        """CPU seconds one row costs on a CPU worker (EWMA over batches; ``None`` until one ran)."""
        self.enforce_quota = True
        """Hold CPU use to :attr:`cores` in user space (off: unthrottled, or the kernel's
        quota holds it)."""
        self.cgroup: CpuGroup | None = None
        """The cgroup whose CPU quota the kernel enforces, where one could be made."""
        self.compute_window = LatencyWindow(config.window_s)
        """Model compute time per request over the SLA window (for the serving overhead)."""
        self.on_result: list[Any] = []
        """Callbacks ``(served, result)`` run for every completed request (metrics)."""
        self.on_batch: list[Any] = []
        """Callbacks ``(served, device, size, compute_s)`` run for every batch (metrics)."""
        self.arbiter: GpuArbiter | None = None
        """The node's GPU arbiter, set by the server when this version has a GPU worker."""

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    async def load(
        cls,
        *,
        name: str,
        version: str,
        path: Path,
        config: ModelConfig,
        gpu: bool = False,
        quota: bool = True,
        cgroups: CpuGroups | None = None,
    ) -> ServedModel:
        """Start the model's CPU workers (enough for ``max_cores``) and, with ``gpu``, a GPU
        worker; each loads ``path`` and warms up at batch sizes 1 and ``max_batch``. Raises
        :class:`~cloud.roma.errors.ModelLoadError` when any of them fails (none is left running).

        With ``quota`` the model is held to its cores: by the kernel when ``cgroups`` is given
        (its CPU workers move into a group of their own), else in user space."""
        count = max(1, math.ceil(config.max_cores / config.threads))
        warm = tuple(sorted({1, config.max_batch}))
        starts = [
            Worker.start(path, threads=config.threads, device="cpu", warm_batches=warm)
            for _ in range(count)
        ]
        if gpu:
            starts.append(
                Worker.start(path, threads=config.threads, device="gpu", warm_batches=warm)
            )
        results = await asyncio.gather(*starts, return_exceptions=True)
        started = [r for r in results if isinstance(r, Worker)]
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await asyncio.gather(*(w.stop() for w in started))
            raise errors[0]
        workers = [w for w in started if w.device == "cpu"]
        gpu_worker = next((w for w in started if w.device == "gpu"), None)
        served = cls(
            name=name, version=version, path=path, config=config, workers=workers, gpu=gpu_worker
        )
        served.enforce_quota = quota
        if quota and cgroups is not None:
            served._join_cgroup(cgroups)
        served._loop_task = asyncio.get_running_loop().create_task(
            served._dispatch_loop(), name=f"roma-dispatch-{name}-{version}"
        )
        return served

    async def close(self) -> None:
        """Stop taking requests, finish those queued and in flight, stop the workers."""
        self._closing = True
        while self._queue or self._tasks:
            self._wake.set()
            await asyncio.sleep(0.01)
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        workers = [*self._workers, *([self._gpu] if self._gpu else [])]
        await asyncio.gather(*(w.stop() for w in workers))
        if self.cgroup is not None:
            self.cgroup.close()

    def _join_cgroup(self, cgroups: CpuGroups) -> None:
        """Move the CPU workers into a cgroup of their own and let the kernel hold them to
        :attr:`cores`; on failure, the user-space quota stays (logged)."""
        try:
            group = cgroups.group(f"{self.name}-{self.version}")
            self.cgroup = group
            for worker in self._workers:
                group.add(worker.pid)
            group.set_cores(self.cores)
        except CgroupUnavailable as exc:
            _log.warning("model %s: the kernel's CPU quota failed, user space instead: %s",
                         self.name, exc)  # fmt: skip
            return
        self.enforce_quota = False  # the kernel's quota instead of the emulation

    @property
    def quota_mode(self) -> str:
        """``kernel`` (a cgroup), ``user`` (the emulation) or ``off``."""
        if self.cgroup is not None and self.cgroup.cores is not None:
            return "kernel"
        return "user" if self.enforce_quota else "off"

    # ------------------------------------------------------------------ serving

    @property
    def has_gpu(self) -> bool:
        return self._gpu is not None

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def active_workers(self) -> int:
        return max(1, min(len(self._workers), math.ceil(self.cores / self.config.threads - 1e-9)))

    def load_estimate(self, now: float) -> ModelLoad:
        """This model's load as the dispatcher sees it."""
        oldest = now - self._queue[0].arrived if self._queue else 0.0
        rows = max(1, min(self._queued_rows, self.config.max_batch))
        return ModelLoad(
            name=self.name,
            sla_s=self.config.sla_s,
            queued=len(self._queue),
            oldest_wait_s=oldest,
            cpu_throughput=self._done_rate.rate(now),
            predicted_compute_s=self.profile.predict(rows),
        )

    async def infer(self, x: npt.NDArray[Any]) -> InferResult:
        """Queue ``x`` (``[rows, *input shape]``, already normalised and typed) and wait for its
        outputs. Raises :class:`Overloaded` when shed, :class:`ModelUnavailable` when closing or
        when the worker failed the batch."""
        if self._closing:
            raise ModelUnavailable(f"model {self.name} version {self.version} is unloading")
        now = time.monotonic()
        self.counters.requests += 1
        if len(self._queue) >= self.config.max_queue:
            predicted = predicted_response_s(self.load_estimate(now))
            if should_shed(
                predicted_response_s=predicted,
                sla_s=self.config.sla_s,
                queued=len(self._queue),
                max_queue=self.config.max_queue,
            ):
                self.counters.shed += 1
                raise Overloaded(
                    f"model {self.name}: {len(self._queue)} requests queued and a new one would "
                    f"take {predicted * 1000:.0f} ms against an SLA of {self.config.sla_ms:g} ms",
                    retry_after_s=retry_after_s(
                        predicted_response_s=predicted, sla_s=self.config.sla_s
                    ),
                )
        future: asyncio.Future[InferResult] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(x=x, arrived=now, future=future))
        self._queued_rows += int(x.shape[0])
        self._arrival_rows.add(now, int(x.shape[0]))
        self._wake.set()
        return await future

    def set_cores(self, cores: float) -> None:
        """Allow ``cores`` CPU cores from now on: active workers and the CPU quota follow."""
        now = time.monotonic()
        self.counters.core_seconds += self.cores * (now - self._cores_since)
        self._cores_since = now
        self.cores = cores
        self.quota.set_cores(cores)
        if self.cgroup is not None and self.cgroup.cores is not None:
            try:
                self.cgroup.set_cores(cores)
            except CgroupUnavailable as exc:
                _log.warning("model %s: the kernel's CPU quota failed, user space instead: %s",
                             self.name, exc)  # fmt: skip
                self.cgroup.cores = None
                self.enforce_quota = True
        self._wake.set()

    def demand_cores(self, now: float, horizon_s: float) -> float:
        """CPU cores the arrivals need at 100% busy: rows arriving per second (over the last
        2 s) times the CPU seconds a row costs, plus the queued rows' CPU time spread over
        ``horizon_s`` (seconds; the control period). 0 before any batch has run."""
        if self.cpu_s_per_row is None:
            return 0.0
        backlog = self._queued_rows * self.cpu_s_per_row / max(horizon_s, 1e-3)
        return self._arrival_rows.rate(now) * self.cpu_s_per_row + backlog

    def core_seconds(self) -> float:
        """Core-seconds allocated to this version so far."""
        return self.counters.core_seconds + self.cores * (time.monotonic() - self._cores_since)

    # ------------------------------------------------------------------ dispatch

    def _take(self, now: float, profile: BatchProfile) -> list[_Pending]:
        budget = (1 - self.config.alpha) * self.config.sla_s
        size = choose_batch(
            queued=self._queued_rows,
            oldest_wait_s=now - self._queue[0].arrived,
            budget_s=budget,
            max_batch=self.config.max_batch,
            profile=profile,
        )
        batch = [self._queue.popleft()]
        rows = batch[0].rows
        while self._queue and rows + self._queue[0].rows <= size:
            item = self._queue.popleft()
            rows += item.rows
            batch.append(item)
        self._queued_rows -= rows
        return batch

    def _free_active(self) -> Worker | None:
        for worker in self._workers[: self.active_workers]:
            if worker in self._free:
                return worker
        return None

    async def _dispatch_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.arbiter is not None:
                self.arbiter.offer()
            while self._queue:
                worker = self._free_active()
                if worker is None:
                    break
                now = time.monotonic()
                wait = self.quota.wait_s(now) if self.enforce_quota else 0.0
                if wait > 0:
                    asyncio.get_running_loop().call_later(wait, self._wake.set)
                    break
                batch = self._take(now, self.profile)
                self._free.discard(worker)
                self._spawn(self._run(worker, batch, self.profile))

    def dispatch_gpu(self) -> bool:
        """Send the next batch to this model's GPU worker if it is free and work is queued;
        return whether a batch went. The server's arbiter calls it for the model it picked."""
        if self._gpu is None or self._gpu_busy or not self._queue:
            return False
        self._gpu_busy = True
        batch = self._take(time.monotonic(), self.gpu_profile)
        self._spawn(self._run(self._gpu, batch, self.gpu_profile))
        return True

    @property
    def gpu_free(self) -> bool:
        return self._gpu is not None and not self._gpu_busy

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, worker: Worker, batch: list[_Pending], profile: BatchProfile) -> None:
        started = time.monotonic()
        x = batch[0].x if len(batch) == 1 else np.concatenate([p.x for p in batch])
        try:
            outputs, compute_s, cpu_s = await worker.infer(x)
        except RomaError as exc:
            self.counters.failed += len(batch)
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        finally:
            if worker.device == "gpu":
                self._gpu_busy = False
                if self.arbiter is not None:
                    self.arbiter.release()
            else:
                self._free.add(worker)
            self._wake.set()
        done = time.monotonic()
        if worker.device == "cpu":
            self.quota.charge(cpu_s, done)
            self.counters.batches += 1
            per_row = cpu_s / max(1, int(x.shape[0]))
            old = self.cpu_s_per_row
            self.cpu_s_per_row = per_row if old is None else old + 0.2 * (per_row - old)
        else:
            self.counters.gpu_batches += 1
        profile.observe(int(x.shape[0]), compute_s)
        for callback in self.on_batch:
            callback(self, worker.device, int(x.shape[0]), compute_s)
        row = 0
        for p in batch:
            response = done - p.arrived
            result = InferResult(
                outputs=outputs[row : row + p.rows],
                queue_s=started - p.arrived,
                compute_s=compute_s,
                response_s=response,
                batch_size=int(x.shape[0]),
                device=worker.device,
            )
            row += p.rows
            self.window.add(done, response)
            self.compute_window.add(done, compute_s)
            self._done_rate.add(done)
            self.counters.ok += 1
            if response > self.config.sla_s:
                self.counters.violations += 1
            for callback in self.on_result:
                callback(self, result)
            if not p.future.done():
                p.future.set_result(result)


class _Rate:
    """Events (or rows) per second over the last few seconds."""

    def __init__(self, horizon_s: float = 2.0) -> None:
        self._horizon = horizon_s
        self._events: deque[tuple[float, int]] = deque()
        self._total = 0

    def add(self, now: float, n: int = 1) -> None:
        self._events.append((now, n))
        self._total += n

    def rate(self, now: float) -> float:
        while self._events and self._events[0][0] < now - self._horizon:
            self._total -= self._events.popleft()[1]
        return self._total / self._horizon
