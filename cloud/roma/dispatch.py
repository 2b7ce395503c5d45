"""Which model the GPU serves next, and whether a new request must be shed. Pure.

ROMA's dispatcher (Baresi et al., ICSOC 2021): the GPU goes to the model whose predicted response
time is furthest past ``(1 - alpha) x SLA``, measured relative to its own SLA so a 20 ms model
and a 200 ms model compare fairly; CPU workers absorb the rest. A request is shed only when it
cannot meet its SLA *and* the queue is full: a late request with room in the queue is still
served (late beats never), and a full queue of requests that will make it is not pruned.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ModelLoad", "pick_gpu", "predicted_response_s", "retry_after_s", "should_shed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelLoad:
    """A model's load at one instant, as the dispatcher sees it."""

    name: str
    sla_s: float
    queued: int
    """Requests waiting."""
    oldest_wait_s: float
    cpu_throughput: float
    """Requests per second the model's CPU workers delivered recently (0: none yet)."""
    predicted_compute_s: float | None
    """Compute time of the next batch; ``None`` before any was measured."""


def predicted_response_s(load: ModelLoad) -> float:
    """Predicted response time of a request arriving now (seconds): the oldest request's wait,
    plus the queue drained at the recent throughput, plus one batch's compute. With no
    throughput measured yet the queue counts one compute time per request; ``inf`` when nothing
    is known at all and requests wait."""
    compute = load.predicted_compute_s
    if load.cpu_throughput > 0:
        drain = load.queued / load.cpu_throughput
    elif compute is not None:
        drain = load.queued * compute
    else:
        return math.inf if load.queued else 0.0
    return load.oldest_wait_s + drain + (compute or 0.0)


def pick_gpu(loads: Sequence[ModelLoad], *, alpha: float) -> str | None:
    """The model the GPU serves next: among models with queued work, the one with the highest
    pressure ``predicted / ((1 - alpha) x SLA)`` — furthest past its threshold when any is past,
    else the closest to it (an idle GPU helps nobody); ties go to the longest queue. ``None``
    when no model has work."""
    if not 0 <= alpha < 1:
        raise ValueError(f"alpha must be in [0, 1), got {alpha}")
    best: tuple[float, int, str] | None = None
    for load in loads:
        if load.queued <= 0:
            continue
        pressure = predicted_response_s(load) / ((1 - alpha) * load.sla_s)
        key = (pressure, load.queued, load.name)
        if best is None or key[:2] > best[:2]:
            best = key
    return None if best is None else best[2]


def should_shed(*, predicted_response_s: float, sla_s: float, queued: int, max_queue: int) -> bool:
    """Shed a new request when it cannot meet ``sla_s`` and the queue already holds
    ``max_queue`` requests (both)."""
    return predicted_response_s > sla_s and queued >= max_queue


def retry_after_s(*, predicted_response_s: float, sla_s: float) -> int:
    """Whole seconds for ``Retry-After``: about when the backlog will have cleared, at least 1
    and at most 60."""
    if not math.isfinite(predicted_response_s):
        return 1
    return max(1, min(60, math.ceil(predicted_response_s - sla_s)))
