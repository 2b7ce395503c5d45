"""FedAvg: the example-weighted mean of the clients' models.

McMahan, Moore, Ramage, Hampson, Agüera y Arcas, "Communication-Efficient Learning of Deep
Networks from Decentralized Data", AISTATS 2017 (arXiv:1602.05629), Algorithm 1:
``w_{t+1} = sum_k (n_k / n) w^k_{t+1}`` where ``n_k`` is client ``k``'s number of examples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from coordinator.strategies.base import (
    ClientUpdate,
    Layers,
    Strategy,
    check_updates,
    narrow,
    weighted_mean,
)
from protocol import Weights


def fedavg(current: Weights, results: Sequence[ClientUpdate]) -> Layers:
    """Example-weighted mean of ``results`` (float64), after checking them against ``current``.

    Raises :class:`~coordinator.errors.StrategyError` for an empty round, a misshapen update, or
    updates that all report zero examples.
    """
    check_updates(current, results)
    return weighted_mean(results, [float(u.num_examples) for u in results])


class FedAvg(Strategy):
    """Federated Averaging (McMahan et al. 2017): each update weighs its ``num_examples``."""

    name: ClassVar[str] = "fedavg"

    def aggregate_train(
        self,
        server_round: int,
        current: Weights,
        results: Sequence[ClientUpdate],
        failures: Sequence[str],
    ) -> Weights:
        return narrow(fedavg(current, results))
