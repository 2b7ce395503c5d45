"""FedMedian: the coordinate-wise median of the clients' models.

Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates", ICML 2018 (arXiv:1803.01498), the coordinate-wise median estimator. Every
update counts once whatever its ``num_examples``; with an even number of updates a coordinate
takes the mean of its two middle values (``numpy.median``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from coordinator.strategies.base import ClientUpdate, Strategy, check_updates, stack_layer
from protocol import Weights


class FedMedian(Strategy):
    """Coordinate-wise median, unweighted (Yin et al. 2018)."""

    name: ClassVar[str] = "fedmedian"

    def aggregate_train(
        self,
        server_round: int,
        current: Weights,
        results: Sequence[ClientUpdate],
        failures: Sequence[str],
    ) -> Weights:
        check_updates(current, results)
        return tuple(
            np.median(stack_layer(results, index), axis=0).astype(np.float32)
            for index in range(len(current))
        )
