"""Range checks: every number a message carries, against the bounds of what it means.

The codec proves a number is a number (an ``int`` where an ``int`` belongs, every float finite);
this table says which numbers make sense. A ``Hello`` whose profile says ``train_rate = 0`` is a
well-formed frame that would divide by zero in a planner; a ``TrainRes`` with ``steps = -1`` is
nonsense to aggregate. :func:`check_bounds` runs at the end of :func:`~protocol.decode`, so an
out-of-range message is an :class:`~protocol.OutOfRange` and is dropped and counted like any other
bad input, before anything reads it.

``FIELD_BOUNDS`` maps each record type to its fields' bounds; a tuple field is checked element by
element, a ``None`` (an optional field left out) is not checked. ``MAP_BOUNDS`` does the same for
the known keys of free-form maps (``Hello.profile``, ``ModelRef.metrics``); other keys of those
maps pass with only the codec's finiteness check. Nested records (``GpuInfo``, ``TrainConfig``)
are checked where they occur.

:func:`check_update_norm` bounds an update relative to the model it updates: an agent that sends
weights a thousand times the model's norm (all finite: ``1e30`` passes the codec) is refused,
and only its contribution is lost.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ._errors import OutOfRange
from ._messages import (
    Artifact,
    Envelope,
    GpuInfo,
    Heartbeat,
    Hello,
    JobState,
    ModelRef,
    ServingStats,
    TrainConfig,
    TrainIns,
    TrainRes,
)

__all__ = [
    "DEFAULT_MAX_UPDATE_NORM_RATIO",
    "ENVELOPE_BOUNDS",
    "FIELD_BOUNDS",
    "MAP_BOUNDS",
    "Bound",
    "check_bounds",
    "check_update_norm",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Bound:
    """A closed or half-open interval; ``low_open``/``high_open`` exclude the end points."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return False
        v = float(value)
        if math.isnan(v):
            return False
        above = v > self.low if self.low_open else v >= self.low
        below = v < self.high if self.high_open else v <= self.high
        return above and below

    def __str__(self) -> str:
        if self.high == math.inf:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low == -math.inf:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return (
            f"in {'(' if self.low_open else '['}{self.low:g}, "
            f"{self.high:g}{')' if self.high_open else ']'}"
        )

    def check(self, value: object, where: str) -> None:
        """Raise :class:`~protocol.OutOfRange` unless ``value`` lies in this interval."""
        if value not in self:
            raise OutOfRange(f"{where} is {value!r:.40}; it must be {self}")


def at_least(low: float) -> Bound:
    return Bound(low=low)


def above(low: float) -> Bound:
    return Bound(low=low, low_open=True)


def between(low: float, high: float) -> Bound:
    return Bound(low=low, high=high)


COUNT = at_least(0)
"""Examples, bytes, steps, sequence numbers, versions: never negative."""
POSITIVE = above(0)
"""Rates and speeds that planners divide by."""
SHARE = between(0, 1)
"""Probabilities, accuracies, agreements."""
SECONDS = at_least(0)
"""Durations, budgets and UNIX times (every time on the wire is after 1970)."""

FIELD_BOUNDS: Mapping[type, Mapping[str, Bound]] = {
    GpuInfo: {"index": COUNT, "memory_bytes": COUNT},
    Hello: {
        "cores": at_least(1),
        "memory_bytes": COUNT,
        "num_examples": COUNT,
        "label_counts": COUNT,
    },
    Heartbeat: {"seq": COUNT, "load": at_least(0), "memory_used_bytes": COUNT},
    TrainConfig: {
        "epochs": at_least(1),
        "local_steps": at_least(1),
        "batch_size": at_least(1),
        "learning_rate": at_least(0),
        "proximal_mu": at_least(0),
        "seed": COUNT,
    },
    TrainIns: {"budget_s": SECONDS, "epoch": COUNT},
    TrainRes: {"num_examples": COUNT, "steps": COUNT, "train_s": SECONDS},
    ModelRef: {"version": COUNT, "size_bytes": COUNT},
    Artifact: {"size_bytes": COUNT},
    JobState: {
        "round": COUNT,
        "accuracy": SHARE,
        "best_accuracy": SHARE,
        "target_accuracy": SHARE,
        "elapsed_s": SECONDS,
        "time_budget_s": SECONDS,
        "epoch": COUNT,
    },
    ServingStats: {
        "version": COUNT,
        "sla_ms": POSITIVE,
        "percentile": Bound(low=0, high=100, low_open=True),
        "window_s": POSITIVE,
        "period_s": POSITIVE,
        "response_ms": at_least(0),
        "p95_ms": at_least(0),
        "violation_share": SHARE,
        "requests_per_s": at_least(0),
        "requests": COUNT,
        "shed": COUNT,
        "cores": at_least(0),
        "queued": COUNT,
    },
}
"""Bounds of each record's numeric fields. Floats not named here (``TrainRes.loss``) are only
required finite, which the codec already proves."""

MAP_BOUNDS: Mapping[tuple[type, str], Mapping[str, Bound]] = {
    (Hello, "profile"): {
        "train_rate": POSITIVE,
        "uplink_mbps": POSITIVE,
        "downlink_mbps": POSITIVE,
        "rtt_ms": at_least(0),
        "availability": SHARE,
        "failure_rate": SHARE,
        "mean_session_s": POSITIVE,
        "time_scale": POSITIVE,
        "model_wire_bytes": POSITIVE,
    },
    (ModelRef, "metrics"): {
        "accuracy": SHARE,
        "tflite_agreement": SHARE,
        "tflite_dynamic_agreement": SHARE,
    },
}
"""Bounds of the known keys of free-form ``str -> float`` maps."""

ENVELOPE_BOUNDS: Mapping[str, Bound] = {"round": COUNT, "ts": SECONDS}


def check_bounds(envelope: Envelope) -> None:
    """Raise :class:`~protocol.OutOfRange` for the first number outside its bounds."""
    for name, bound in ENVELOPE_BOUNDS.items():
        bound.check(getattr(envelope, name), f"envelope {name}")
    _check_record(envelope.body)


def _check_record(record: Any) -> None:
    cls = type(record)
    bounds = FIELD_BOUNDS.get(cls, {})
    for f in fields(record):
        value = getattr(record, f.name)
        where = f"{cls.__name__}.{f.name}"
        bound = bounds.get(f.name)
        if bound is not None:
            if isinstance(value, tuple):
                for i, item in enumerate(value):
                    bound.check(item, f"{where}[{i}]")
            elif value is not None:
                bound.check(value, where)
            continue
        keyed = MAP_BOUNDS.get((cls, f.name))
        if keyed is not None:
            for key, key_bound in keyed.items():
                if key in value:
                    key_bound.check(value[key], f"{where}[{key!r}]")
        elif is_dataclass(value):
            _check_record(value)
        elif isinstance(value, tuple) and value and is_dataclass(value[0]):
            for item in value:
                _check_record(item)


DEFAULT_MAX_UPDATE_NORM_RATIO = 100.0
"""Default bound on ``||update - model|| / max(||model||, min_norm)``. Honest local training moves
a model by a fraction of its norm; a scaled or exploded update moves it by orders of magnitude."""


def check_update_norm(
    weights: Sequence[npt.NDArray[Any]],
    reference: Sequence[npt.NDArray[Any]],
    *,
    max_ratio: float = DEFAULT_MAX_UPDATE_NORM_RATIO,
    min_norm: float = 1.0,
) -> float:
    """Return ``||weights - reference||``; :class:`~protocol.OutOfRange` above the bound.

    The bound is ``max_ratio * max(||reference||, min_norm)`` (the floor keeps a model that starts
    at zeros trainable). Norms are over all arrays flattened into one vector, in float64; ``weights``
    must already have ``reference``'s layout (:func:`~protocol.check_weights_like`).
    """
    if not (max_ratio > 0 and min_norm > 0):
        raise ValueError("max_ratio and min_norm must be positive")
    sq_model = 0.0
    sq_delta = 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        for got, ref in zip(weights, reference, strict=True):
            # float32 models are checked in float32 (no widened copy); an overflow there means a
            # norm above 1e19, refused whatever the model's norm.
            wide: np.dtype[Any] = np.dtype(np.float32)
            if np.asarray(got).dtype.itemsize > 4 or np.asarray(ref).dtype.itemsize > 4:
                wide = np.dtype(np.float64)
            r = np.asarray(ref).astype(wide, copy=False).reshape(-1)
            d = np.asarray(got).astype(wide, copy=False).reshape(-1) - r
            sq_model += float(np.dot(r, r))
            sq_delta += float(np.dot(d, d))
    norm = math.sqrt(sq_delta) if math.isfinite(sq_delta) else math.inf
    limit = max_ratio * max(math.sqrt(sq_model), min_norm)
    if not norm <= limit:
        raise OutOfRange(
            f"update norm {norm:.3g} is more than {max_ratio:g} times the model's "
            f"({limit / max_ratio:.3g})"
        )
    return norm
