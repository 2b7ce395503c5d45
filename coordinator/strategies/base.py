"""The strategy port: how the coordinator turns one round's client updates into a new model.

Vocabulary follows Flower (``aggregate_train``, ``server_round``, ``results`` apart from
``failures``). A strategy is a small state machine: its only state is what an adaptive server
optimiser keeps between rounds (FedAdam's moments), exposed through :meth:`Strategy.state` and
:meth:`Strategy.restore` so a round can be checkpointed and resumed.

Weights are :data:`protocol.Weights` end to end (a tuple of arrays, as they arrive and leave on
the wire). The helpers at the bottom are shared by the implementations in this package; they compute in
float64 and hand back float32, the dtype of a Keras model's ``get_weights()``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from protocol import Weights

from ..errors import StrategyError

Layers = list[npt.NDArray[np.float64]]
"""Weights widened to float64 while a strategy computes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientUpdate:
    """One agent's reply to a training instruction, as a strategy sees it."""

    agent_id: str
    weights: Weights
    num_examples: int
    loss: float
    staleness: int = 0
    """Rounds between the model the agent started from and the current one (asynchronous mode)."""


class Strategy(ABC):
    """Aggregation rule of a federated job: one round's updates in, the next global model out."""

    name: ClassVar[str]

    def initialize(self, weights: Weights) -> None:  # noqa: B027 - optional hook, no-op by default
        """Reset server-side state for a job starting from ``weights``."""

    @abstractmethod
    def aggregate_train(
        self,
        server_round: int,
        current: Weights,
        results: Sequence[ClientUpdate],
        failures: Sequence[str],
    ) -> Weights:
        """Return the new global weights: float32, the shapes of ``current``.

        ``failures`` names the agents that were asked but did not reply usefully.
        Raises :class:`~coordinator.errors.StrategyError` when it cannot aggregate; the round
        then keeps ``current``.
        """

    def train_options(self) -> dict[str, float]:
        """Extra options sent to agents with every training instruction."""
        return {}

    def state(self) -> dict[str, Weights]:
        """Server-side state to checkpoint; empty for stateless rules."""
        return {}

    def restore(self, state: Mapping[str, Weights]) -> None:
        """Load what :meth:`state` returned. A stateless rule accepts only an empty state."""
        if state:
            raise StrategyError(f"{self.name} keeps no state, got keys {sorted(state)}")


def check_updates(current: Weights, results: Sequence[ClientUpdate]) -> None:
    """Refuse an empty round and any update that does not fit the model ``current``."""
    if not results:
        raise StrategyError("no updates to aggregate")
    for update in results:
        who = f"update from agent {update.agent_id!r}"
        if len(update.weights) != len(current):
            raise StrategyError(
                f"{who} has {len(update.weights)} arrays, the model has {len(current)}"
            )
        for index, (theirs, ours) in enumerate(zip(update.weights, current, strict=True)):
            if np.shape(theirs) != np.shape(ours):
                raise StrategyError(
                    f"{who}: array {index} has shape {np.shape(theirs)}, "
                    f"the model's is {np.shape(ours)}"
                )
        if update.num_examples < 0:
            raise StrategyError(f"{who} reports {update.num_examples} examples")
        if update.staleness < 0:
            raise StrategyError(f"{who} reports staleness {update.staleness}")


def widen(arrays: Sequence[npt.NDArray[np.floating[Any]]]) -> Layers:
    """Copy ``arrays`` as float64 for computing."""
    return [np.asarray(array, dtype=np.float64) for array in arrays]


def narrow(arrays: Sequence[npt.NDArray[np.floating[Any]]]) -> Weights:
    """Copy ``arrays`` as float32, the dtype of the model."""
    return tuple(np.array(array, dtype=np.float32) for array in arrays)


def stack_layer(results: Sequence[ClientUpdate], index: int) -> npt.NDArray[np.float64]:
    """Array ``index`` of every update, stacked on a new first axis (one row per update)."""
    return np.stack([np.asarray(u.weights[index], dtype=np.float64) for u in results])


def weighted_mean(results: Sequence[ClientUpdate], coefficients: Sequence[float]) -> Layers:
    """Per-array mean of the updates, update ``i`` counting ``coefficients[i]``."""
    coef = np.asarray(coefficients, dtype=np.float64)
    total = float(coef.sum())
    if not total > 0:
        raise StrategyError(f"the weights of the updates sum to {total}, cannot average")
    first = results[0].weights
    return [
        np.tensordot(coef / total, stack_layer(results, index), axes=1)
        for index in range(len(first))
    ]
