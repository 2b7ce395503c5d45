"""Trimmed mean: per coordinate, drop the largest and smallest values, average the rest.

Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates", ICML 2018 (arXiv:1803.01498), the coordinate-wise beta-trimmed mean: with
``n`` updates, ``floor(beta * n)`` values are removed from each end of every coordinate and the
remaining ones averaged, unweighted. Flower calls this rule ``FedTrimmedAvg``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from coordinator.errors import StrategyError
from coordinator.strategies.base import ClientUpdate, Strategy, check_updates, stack_layer
from protocol import Weights

# beta * n computed in binary floating point can land just under a whole number
# (0.29 * 100 == 28.999999999999996); this slack makes floor() see the 29 that was meant.
_SLACK = 1e-9


class TrimmedMean(Strategy):
    """Coordinate-wise trimmed mean (Yin et al. 2018); ``0 <= beta < 0.5``."""

    name: ClassVar[str] = "trimmed_mean"

    def __init__(self, *, beta: float = 0.1) -> None:
        if not 0 <= beta < 0.5:
            raise StrategyError(f"trimmed_mean beta must be in [0, 0.5), got {beta}")
        self.beta = float(beta)

    def trimmed_per_end(self, n: int) -> int:
        """How many values each end of a coordinate loses when there are ``n`` updates."""
        return min(math.floor(self.beta * n + _SLACK), (n - 1) // 2)

    def aggregate_train(
        self,
        server_round: int,
        current: Weights,
        results: Sequence[ClientUpdate],
        failures: Sequence[str],
    ) -> Weights:
        check_updates(current, results)
        n = len(results)
        cut = self.trimmed_per_end(n)
        return tuple(
            np.sort(stack_layer(results, index), axis=0)[cut : n - cut]
            .mean(axis=0, dtype=np.float64)
            .astype(np.float32)
            for index in range(len(current))
        )
