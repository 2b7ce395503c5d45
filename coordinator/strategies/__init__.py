"""Aggregation strategies of the coordinator: pure numpy, one module per rule.

=================  ==========================================  ===============================
name               rule                                        parameters (defaults)
=================  ==========================================  ===============================
``fedavg``         example-weighted mean                       —
``fedprox``        FedAvg + client proximal term               proximal_mu=0.01
``fedadam``        FedAvg pseudo-gradient into Adam            eta=0.1 beta_1=0.9 beta_2=0.99
                                                               tau=1e-3
``fedyogi``        FedAvg pseudo-gradient into Yogi            eta=0.01 beta_1=0.9 beta_2=0.99
                                                               tau=1e-3
``fedmedian``      coordinate-wise median                      —
``trimmed_mean``   coordinate-wise trimmed mean                beta=0.1
``krum``           Krum / Multi-Krum                           num_malicious=1 num_to_keep=1
``fedbuff``        staleness-discounted mean (rounds only;     buffer_size=10 eta=1.0
                   mode = "async" is FedBuff itself)
=================  ==========================================  ===============================

:func:`make_strategy` builds one from a job file's name and numeric parameters.
"""

from __future__ import annotations

import inspect
import math

from coordinator.errors import StrategyError
from coordinator.strategies.base import ClientUpdate, Strategy
from coordinator.strategies.fedadam import FedAdam
from coordinator.strategies.fedavg import FedAvg
from coordinator.strategies.fedbuff import FedBuff
from coordinator.strategies.fedmedian import FedMedian
from coordinator.strategies.fedopt import FedOpt
from coordinator.strategies.fedprox import FedProx
from coordinator.strategies.fedyogi import FedYogi
from coordinator.strategies.krum import Krum
from coordinator.strategies.trimmed_mean import TrimmedMean

__all__ = [
    "STRATEGY_NAMES",
    "ClientUpdate",
    "FedAdam",
    "FedAvg",
    "FedBuff",
    "FedMedian",
    "FedOpt",
    "FedProx",
    "FedYogi",
    "Krum",
    "Strategy",
    "TrimmedMean",
    "make_strategy",
]

_REGISTRY: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (FedAdam, FedAvg, FedBuff, FedMedian, FedProx, FedYogi, Krum, TrimmedMean)
}

STRATEGY_NAMES: tuple[str, ...] = tuple(sorted(_REGISTRY))
"""Names :func:`make_strategy` accepts."""


def _parameter_types(cls: type[Strategy]) -> dict[str, type]:
    """Keyword parameters of ``cls``'s constructor and their annotated types (int or float)."""
    signature = inspect.signature(cls, eval_str=True)
    return {name: p.annotation for name, p in signature.parameters.items()}


def make_strategy(name: str, **params: float) -> Strategy:
    """Build the strategy called ``name`` with ``params``.

    Raises :class:`~coordinator.errors.StrategyError` for an unknown name, an unknown parameter,
    a parameter that is not a number (or not a whole number where one is needed), or a value the
    strategy refuses.
    """
    cls = _REGISTRY.get(name)
    if cls is None:
        raise StrategyError(f"unknown strategy {name!r}; valid names: {', '.join(STRATEGY_NAMES)}")
    types = _parameter_types(cls)
    valid = ", ".join(sorted(types)) or "none"
    kwargs: dict[str, float] = {}
    for key, value in params.items():
        if key not in types:
            raise StrategyError(
                f"strategy {name!r} has no parameter {key!r}; valid parameters: {valid}"
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise StrategyError(f"{name} parameter {key!r} must be a number, got {value!r}")
        if types[key] is int:
            if not (math.isfinite(value) and float(value).is_integer()):
                raise StrategyError(f"{name} parameter {key!r} must be a whole number, got {value}")
            kwargs[key] = int(value)
        else:
            kwargs[key] = float(value)
    return cls(**kwargs)
