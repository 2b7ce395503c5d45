"""FedBuff: buffered asynchronous aggregation with staleness-discounted updates.

Nguyen, Malik, Zhan, Yousefpour, Rabbat, Malek, Huba, "Federated Learning with Buffered
Asynchronous Aggregation", AISTATS 2022 (arXiv:2106.06639). Agents train from whatever model
they last received; the server buffers ``K`` replies (``buffer_size``) and then steps::

    w_i = num_examples_i / sqrt(1 + staleness_i)
    new = current + eta * sum_i w_i * (update_i - current) / sum_i w_i

The paper discounts each client delta by ``1 / sqrt(1 + staleness)`` and averages over ``K``;
here the discount is also multiplied by ``num_examples`` and the sum normalised by the total
weight, so that fresh updates with ``eta = 1`` reduce to FedAvg.

The asynchronous mode (``mode = "async"``, :mod:`coordinator.async_rounds`) is FedBuff itself:
it buffers, discounts and applies the server learning rate, with any other rule over each
buffer, and refuses this strategy name (its ``[async]`` table holds ``buffer_size`` and
``server_lr``). In rounds every update has staleness 0, so this rule is FedAvg stepped by
``eta``; ``buffer_size`` is not read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

from coordinator.errors import StrategyError
from coordinator.strategies.base import (
    ClientUpdate,
    Strategy,
    check_updates,
    narrow,
    weighted_mean,
    widen,
)
from protocol import Weights


def staleness_weight(update: ClientUpdate) -> float:
    """``num_examples / sqrt(1 + staleness)``, the weight of ``update`` in its buffer."""
    return update.num_examples / math.sqrt(1 + update.staleness)


class FedBuff(Strategy):
    """Buffered asynchronous FedAvg with ``1/sqrt(1+s)`` staleness discount (Nguyen et al. 2022)."""

    name: ClassVar[str] = "fedbuff"

    def __init__(self, *, buffer_size: int = 10, eta: float = 1.0) -> None:
        if buffer_size < 1:
            raise StrategyError(f"fedbuff buffer_size must be >= 1, got {buffer_size}")
        if not math.isfinite(eta) or eta <= 0:
            raise StrategyError(f"fedbuff eta must be a number > 0, got {eta}")
        self.buffer_size = buffer_size
        self.eta = float(eta)

    def aggregate_train(
        self,
        server_round: int,
        current: Weights,
        results: Sequence[ClientUpdate],
        failures: Sequence[str],
    ) -> Weights:
        check_updates(current, results)
        mean = weighted_mean(results, [staleness_weight(u) for u in results])
        return narrow(
            [now + self.eta * (avg - now) for now, avg in zip(widen(current), mean, strict=True)]
        )
