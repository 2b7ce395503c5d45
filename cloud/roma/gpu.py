"""The node's GPU, shared by the models: one batch on it at a time, given to the model whose
predicted response time is furthest past ``(1 - alpha) x SLA`` (:func:`~cloud.roma.dispatch.pick_gpu`).

Each model with a GPU worker registers with the :class:`GpuArbiter`; a model's dispatch loop
calls :meth:`GpuArbiter.offer` before it hands work to its CPU workers, so the GPU takes the
most pressing batch first and the CPU workers absorb the rest. Where NVML finds no GPU there is
no arbiter and the same dispatch loop serves everything on the CPU.
"""

from __future__ import annotations

import contextlib
import time
from typing import Protocol

from .dispatch import ModelLoad, pick_gpu

__all__ = ["GpuArbiter", "GpuClient", "gpu_present"]


class GpuClient(Protocol):
    name: str

    @property
    def queued(self) -> int: ...

    @property
    def gpu_free(self) -> bool: ...

    def load_estimate(self, now: float) -> ModelLoad: ...

    def dispatch_gpu(self) -> bool: ...


class GpuArbiter:
    """Hands the one GPU to one model's batch at a time."""

    def __init__(self, *, alpha: float = 0.1) -> None:
        self.alpha = alpha
        self._clients: dict[str, GpuClient] = {}
        self._busy = False
        self.grants: dict[str, int] = {}
        """GPU batches given, by model."""

    def register(self, client: GpuClient) -> None:
        self._clients[client.name] = client

    def unregister(self, client: GpuClient) -> None:
        if self._clients.get(client.name) is client:
            del self._clients[client.name]

    @property
    def busy(self) -> bool:
        return self._busy

    def offer(self) -> str | None:
        """If the GPU is free, give it the most pressing model's next batch; return its name."""
        if self._busy:
            return None
        now = time.monotonic()
        waiting = [c for c in self._clients.values() if c.queued and c.gpu_free]
        if not waiting:
            return None
        name = pick_gpu([c.load_estimate(now) for c in waiting], alpha=self.alpha)
        if name is None or not self._clients[name].dispatch_gpu():
            return None
        self._busy = True
        self.grants[name] = self.grants.get(name, 0) + 1
        return name

    def release(self) -> None:
        """The GPU batch finished: offer the GPU again."""
        self._busy = False
        self.offer()


def gpu_present() -> bool:
    """Whether NVML (``nvidia-ml-py``) reports at least one GPU on this node."""
    try:
        import pynvml
    except ImportError:
        return False
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    try:
        return int(pynvml.nvmlDeviceGetCount()) > 0
    except pynvml.NVMLError:
        return False
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()
