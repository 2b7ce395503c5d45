"""The core controller: a PI controller per model on its SLA error, and the node-wide
normalisation when the models together ask for more cores than there are. Pure.

Sources: ROMA (Baresi, Quattrocchi et al., ICSOC 2021) controls each model's CPU cores with a PI
controller on ``1/SLA - 1/RT``; dynaSpark (TSE 2021) uses the same controller with quantised
output, anti-windup and contention normalisation. Here the error is made dimensionless by the
set point ``S = setpoint_ratio x SLA``::

    e = clamp(1 - S / RT, -1, 1)          RT: the window's SLA percentile (seconds)
    I <- clamp(I + ki·e·dt, min, max)     integral clamping and conditional integration
    f = demand / utilisation              feed-forward: the cores the arrivals need
    u = max(f, kp·e + I)                  cores, quantised up to ``quantum``, clamped

The feed-forward term (``demand``: arrival rate × CPU seconds per row, plus the backlog to clear
within a period; see :meth:`ServedModel.demand_cores`) is a floor: response time against cores is
flat and then a cliff for a queue, and a PI loop alone rides down the flat part onto the cliff at
every step in load (static feed-forward plus feedback, Åström & Murray, *Feedback Systems*,
2008, §7.5). While the floor binds, the integral tracks it (``I = f - kp·e``), so the PI part
takes over from the floor without a jump when the measured demand falls.

``e > 0`` (slower than the set point) adds cores, ``e < 0`` removes them; ``RT = None`` (no
request in the window) decays the allocation toward ``min_cores`` at ``idle_error``.
The integral is clamped to ``[min_cores, max_cores]`` and does not integrate further while the
output is saturated in the error's direction, so after a long saturation the controller leaves
it as soon as the error changes sign (anti-windup).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["ControlDecision", "ControllerSettings", "CoreController", "allocate", "quantise"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ControllerSettings:
    kp: float = 0.3
    """Cores per unit of error."""
    ki: float = 0.6
    """Cores per unit of error and second."""
    period_s: float = 1.0
    quantum: float = 0.1
    min_cores: float = 0.1
    max_cores: float = 2.0
    setpoint_ratio: float = 0.8
    idle_error: float = -0.25
    """The error assumed for a window with no requests."""
    utilisation: float = 0.7
    """Target utilisation of the cores the feed-forward term gives (``demand / utilisation``)."""

    def __post_init__(self) -> None:
        for name in ("kp", "ki"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {getattr(self, name)}")
        for name in ("period_s", "quantum", "min_cores", "max_cores"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.min_cores > self.max_cores:
            raise ValueError(f"min_cores {self.min_cores} is above max_cores {self.max_cores}")
        if not 0 < self.setpoint_ratio <= 1:
            raise ValueError(f"setpoint_ratio must be in (0, 1], got {self.setpoint_ratio}")
        if not 0 < self.utilisation <= 1:
            raise ValueError(f"utilisation must be in (0, 1], got {self.utilisation}")
        if not -1 <= self.idle_error <= 0:
            raise ValueError(f"idle_error must be in [-1, 0], got {self.idle_error}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlDecision:
    """One control step, for the log and ``/v2/models/{m}/stats``."""

    response_s: float | None
    error: float
    p_term: float
    i_term: float
    feedforward: float
    raw: float
    cores: float
    saturated: bool


def quantise(value: float, quantum: float, *, up: bool = True) -> float:
    """``value`` rounded to a multiple of ``quantum`` (up by default), free of float dust."""
    steps = value / quantum
    steps = math.ceil(steps - 1e-9) if up else math.floor(steps + 1e-9)
    return round(steps * quantum, 10)


class CoreController:
    """PI control of one model's cores; :meth:`step` once per control period."""

    def __init__(self, *, sla_s: float, settings: ControllerSettings, initial_cores: float):
        if not (math.isfinite(sla_s) and sla_s > 0):
            raise ValueError(f"sla_s must be positive, got {sla_s}")
        self.sla_s = sla_s
        self.settings = settings
        s = settings
        self.integral = min(max(initial_cores, s.min_cores), s.max_cores)
        self.cores = self._clamp(quantise(self.integral, s.quantum))
        self.last = ControlDecision(response_s=None, error=0.0, p_term=0.0, i_term=self.integral,
                                    feedforward=0.0, raw=self.integral, cores=self.cores,
                                    saturated=False)  # fmt: skip

    def _clamp(self, cores: float) -> float:
        s = self.settings
        lo = quantise(s.min_cores, s.quantum)
        hi = quantise(s.max_cores, s.quantum, up=False)
        return min(max(cores, lo), max(hi, lo))

    def step(
        self, response_s: float | None, dt_s: float | None = None, *, demand: float = 0.0
    ) -> float:
        """The next allocation from the window's response time (seconds; ``None``: idle) and the
        measured CPU demand (cores busy at 100%; 0 leaves the feed-forward out)."""
        s = self.settings
        feedforward = max(0.0, demand) / s.utilisation if math.isfinite(demand) else 0.0
        dt = s.period_s if dt_s is None else dt_s
        if response_s is None:
            error = s.idle_error
        elif response_s <= 0 or not math.isfinite(response_s):
            error = 1.0 if not math.isfinite(response_s) else -1.0
        else:
            error = max(-1.0, min(1.0, 1.0 - s.setpoint_ratio * self.sla_s / response_s))
        p_term = s.kp * error
        raw_before = p_term + self.integral
        pushing_up = error > 0 and raw_before >= s.max_cores
        pushing_down = error < 0 and raw_before <= s.min_cores
        if not (pushing_up or pushing_down):
            self.integral = min(max(self.integral + s.ki * error * dt, s.min_cores), s.max_cores)
        raw = p_term + self.integral
        if feedforward > raw:
            raw = feedforward
            self.integral = min(max(feedforward - p_term, s.min_cores), s.max_cores)
        cores = self._clamp(quantise(raw, s.quantum))
        self.cores = cores
        self.last = ControlDecision(
            response_s=response_s,
            error=error,
            p_term=p_term,
            i_term=self.integral,
            feedforward=feedforward,
            raw=raw,
            cores=cores,
            saturated=raw >= s.max_cores or raw <= s.min_cores,
        )
        return cores

    def limit(self, cores: float) -> None:
        """The node gave ``cores`` (less than asked, after :func:`allocate`): back-calculate the
        integral so it does not wind up on cores that were never granted."""
        if cores < self.cores:
            s = self.settings
            self.integral = min(self.integral, max(s.min_cores, cores - self.last.p_term))
            self.cores = cores


def allocate(
    demands: Mapping[str, float],
    *,
    capacity: float,
    quantum: float,
    minimum: Mapping[str, float] | float = 0.0,
) -> dict[str, float]:
    """Cores per model when they share ``capacity``: the demands unchanged when they fit, else
    each model keeps its minimum and the rest of the capacity is shared in proportion to what
    each asked for above its minimum, quantised down to ``quantum`` (never below the minimum).
    When the minima alone exceed the capacity every model gets its minimum (the node is
    overbooked; the caller should say so). ``ValueError`` for a non-positive capacity."""
    if not capacity > 0:
        raise ValueError(f"capacity must be positive, got {capacity}")
    mins = {k: (minimum if isinstance(minimum, (int, float)) else minimum.get(k, 0.0))
            for k in demands}  # fmt: skip
    total = sum(demands.values())
    if total <= capacity + 1e-9:
        return dict(demands)
    floor = sum(mins.values())
    if floor >= capacity:
        return {k: float(v) for k, v in mins.items()}
    extra = {k: max(0.0, demands[k] - mins[k]) for k in demands}
    share = (capacity - floor) / sum(extra.values())
    return {
        k: max(mins[k], quantise(mins[k] + extra[k] * share, quantum, up=False)) for k in demands
    }
