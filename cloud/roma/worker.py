"""Worker processes: one model loaded in a child process with a set number of compute threads,
fed batches over a pipe. Model compute never runs on the server's event loop, and a worker that
crashes costs its batch (an error for those requests), not the server.

::

    worker = await Worker.start(path, threads=1, device="cpu", warm_batches=(1, 32))
    outputs, compute_s, cpu_s = await worker.infer(batch)   # batch: [n, *input shape]
    await worker.stop()

``device="gpu"`` marks the worker that the dispatcher treats as the node's GPU. Where NVML
reports a GPU the child sees it (``CUDA_VISIBLE_DEVICES``); elsewhere the same code runs on the
CPU, which is how the GPU path is tested here (the *fake* GPU of the contract tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import os
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
import numpy.typing as npt

from .errors import ModelLoadError, ModelUnavailable
from .runtime import TensorSpec

__all__ = ["Device", "Worker", "WorkerInfo"]

Device = Literal["cpu", "gpu"]

_log = logging.getLogger(__name__)
_CONTEXT = mp.get_context("spawn")  # no forked event loops, threads or TensorFlow state


class WorkerInfo:
    """What a started worker loaded: runtime name and tensor specs."""

    __slots__ = ("input", "output", "runtime")

    def __init__(self, runtime: str, input: TensorSpec, output: TensorSpec) -> None:
        self.runtime = runtime
        self.input = input
        self.output = output


def _child(
    conn: Connection, path: str, threads: int, device: str, warm: tuple[int, ...]
) -> None:  # pragma: no cover - runs in the child process
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    from .runtime import load_runtime

    try:
        runtime = load_runtime(Path(path), threads=threads)
        shape = tuple(1 if d < 0 else d for d in runtime.input.shape[1:])
        for n in warm:
            runtime.predict(np.zeros((n, *shape), dtype=runtime.input.dtype))
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", runtime.name, runtime.input, runtime.output))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        try:
            t0, c0 = time.perf_counter(), time.process_time()
            out = runtime.predict(message)
            conn.send(("ok", out, time.perf_counter() - t0, time.process_time() - c0))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class Worker:
    """A started worker process; use :meth:`start`."""

    def __init__(
        self, process: Any, conn: Connection, info: WorkerInfo, device: Device, threads: int
    ) -> None:
        self._process = process
        self._conn = conn
        self.info = info
        self.device: Device = device
        self.threads = threads
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="roma-worker")
        self._lock = asyncio.Lock()

    @classmethod
    async def start(
        cls,
        path: Path,
        *,
        threads: int = 1,
        device: Device = "cpu",
        warm_batches: tuple[int, ...] = (1,),
        timeout_s: float = 120.0,
    ) -> Self:
        """Start a worker for the model file at ``path`` and wait until it has loaded and run
        one warm-up batch of each size in ``warm_batches``. Raises :class:`ModelLoadError` when
        the model does not load or warm up, or the child dies or stays silent ``timeout_s``."""
        parent, child = _CONTEXT.Pipe()
        process = _CONTEXT.Process(
            target=_child,
            args=(child, str(path), threads, device, warm_batches),
            daemon=True,
            name=f"roma-{Path(path).name}",
        )
        await asyncio.to_thread(process.start)
        child.close()
        try:
            ready = await asyncio.to_thread(_recv, parent, timeout_s)
        except BaseException:
            process.kill()
            parent.close()
            raise
        if ready[0] != "ready":
            await asyncio.to_thread(process.join, 5)
            parent.close()
            raise ModelLoadError(f"{Path(path).name}: {ready[1]}")
        _, runtime, spec_in, spec_out = ready
        _log.info(
            "worker %d started for %s (%s, %s, %d threads)",
            process.pid,
            path,
            runtime,
            device,
            threads,
        )
        return cls(process, parent, WorkerInfo(runtime, spec_in, spec_out), device, threads)

    @property
    def pid(self) -> int:
        return int(self._process.pid)

    @property
    def alive(self) -> bool:
        return bool(self._process.is_alive())

    async def infer(self, batch: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], float, float]:
        """Run one batch; return the outputs, the compute time (wall seconds, measured in the
        child) and the CPU seconds the child used for it (all its threads; what a cgroup's
        ``cpu.max`` would charge: a preempted worker's wall time is not CPU it used). Raises
        :class:`ModelUnavailable` when the worker has died or fails the batch."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            try:
                reply = await loop.run_in_executor(self._pool, self._roundtrip, batch)
            except (EOFError, OSError) as exc:
                raise ModelUnavailable(f"worker {self.pid} died: {exc}") from exc
        if reply[0] != "ok":
            raise ModelUnavailable(f"worker {self.pid} failed the batch: {reply[1]}")
        return reply[1], float(reply[2]), float(reply[3])

    def _roundtrip(self, batch: npt.NDArray[Any]) -> tuple[Any, ...]:
        self._conn.send(batch)
        return tuple(self._conn.recv())

    async def stop(self) -> None:
        """Ask the child to exit; kill it if it has not within 5 s."""
        async with self._lock:
            with contextlib.suppress(OSError, ValueError):
                self._conn.send(None)
            await asyncio.to_thread(self._process.join, 5)
            if self._process.is_alive():
                self._process.kill()
                await asyncio.to_thread(self._process.join, 5)
            self._conn.close()
        self._pool.shutdown(wait=False)


def _recv(conn: Connection, timeout_s: float) -> tuple[Any, ...]:
    if not conn.poll(timeout_s):
        raise ModelLoadError(f"the worker did not load its model within {timeout_s:.0f}s")
    try:
        return tuple(conn.recv())
    except EOFError as exc:
        raise ModelLoadError("the worker died while loading its model") from exc
