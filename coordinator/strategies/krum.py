"""Krum and Multi-Krum: keep the updates that sit closest to their neighbours.

Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning with Adversaries: Byzantine Tolerant
Gradient Descent", NeurIPS 2017. With ``n`` updates of which up to ``f`` may be Byzantine, the
score of update ``i`` is the sum of its squared Euclidean distances (over all model arrays
flattened into one vector) to its ``n - f - 2`` nearest other updates. Krum returns the update
with the lowest score; Multi-Krum averages the ``m`` lowest-scoring updates, unweighted as in the
paper (``num_examples`` is ignored: a Byzantine agent could claim any number). Ties go to the
update that came first in ``results``.

The guarantee needs ``n >= 2f + 3`` (the paper's condition ``2f + 2 < n``); with fewer updates
this strategy refuses with :class:`~coordinator.errors.InsufficientUpdates`. Flower's ``Krum``
does not check this and silently aggregates whatever it gets.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from coordinator.errors import InsufficientUpdates, StrategyError
from coordinator.strategies.base import (
    ClientUpdate,
    Strategy,
    check_updates,
    narrow,
    weighted_mean,
)
from protocol import Weights

logger = logging.getLogger(__name__)


class Krum(Strategy):
    """Krum (``num_to_keep=1``) or Multi-Krum (``num_to_keep > 1``), Blanchard et al. 2017."""

    name: ClassVar[str] = "krum"

    def __init__(self, *, num_malicious: int = 1, num_to_keep: int = 1) -> None:
        if num_malicious < 0:
            raise StrategyError(f"krum num_malicious must be >= 0, got {num_malicious}")
        if num_to_keep < 1:
            raise StrategyError(f"krum num_to_keep must be >= 1, got {num_to_keep}")
        self.num_malicious = num_malicious
        self.num_to_keep = num_to_keep

    def min_updates(self) -> int:
        """The fewest updates this rule aggregates: ``2f + 3``, and ``f + m`` for Multi-Krum."""
        f, m = self.num_malicious, self.num_to_keep
        return max(2 * f + 3, f + m)

    def scores(self, results: Sequence[ClientUpdate]) -> list[float]:
        """Krum score of every update: squared distances to its ``n - f - 2`` nearest others.

        Raises :class:`~coordinator.errors.InsufficientUpdates` when ``n < 2f + 3``.
        """
        n, f = len(results), self.num_malicious
        if n < 2 * f + 3:
            raise InsufficientUpdates(
                f"Krum needs at least 2f+3 = {2 * f + 3} updates to tolerate f={f} faulty "
                f"agents, got {n}"
            )
        flat = np.stack(
            [np.concatenate([np.ravel(w).astype(np.float64) for w in u.weights]) for u in results]
        )
        # One row at a time: exact (no |a|^2 + |b|^2 - 2ab cancellation), memory of one model copy.
        distances = np.stack([np.sum((flat - row) ** 2, axis=1) for row in flat])
        np.fill_diagonal(distances, np.inf)
        closest = n - f - 2
        return [float(row.sum()) for row in np.sort(distances, axis=1)[:, :closest]]

    def aggregate_train(
        self,
        server_round: int,
        current: Weights,
        results: Sequence[ClientUpdate],
        failures: Sequence[str],
    ) -> Weights:
        check_updates(current, results)
        scores = self.scores(results)
        n, f, m = len(results), self.num_malicious, self.num_to_keep
        if n < f + m:
            raise InsufficientUpdates(
                f"Multi-Krum keeping m={m} updates with f={f} needs at least f+m = {f + m} "
                f"updates, got {n}"
            )
        order = np.argsort(np.asarray(scores), kind="stable")[:m]
        chosen = [results[int(i)] for i in order]
        logger.debug("round %d: %s kept %s", server_round, self.name, [u.agent_id for u in chosen])
        if m == 1:
            return narrow(chosen[0].weights)
        return narrow(weighted_mean(chosen, [1.0] * m))
