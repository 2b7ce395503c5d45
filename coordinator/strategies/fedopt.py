"""FedOpt: a server optimiser fed with the pseudo-gradient of a FedAvg round.

Reddi, Charles, Zaheer, Garrett, Rush, Konečný, Kumar, McMahan, "Adaptive Federated
Optimization", ICLR 2021 (arXiv:2003.00295), Algorithm 2. Each round::

    delta = fedavg(results) - current                 # pseudo-gradient, Delta_t
    m     = beta_1 * m + (1 - beta_1) * delta
    v     = second_moment(v, delta ** 2)               # Adam or Yogi, see the subclasses
    new   = current + eta * m / (sqrt(v) + tau)

``m`` and ``v`` start at zero, as in Flower's ``FedOpt``. (The paper's Algorithm 2 asks for
``v_{-1} >= tau ** 2``; Flower, and we, start from zero.) There is no Adam bias correction:
Algorithm 2 has none, while Flower's older ``FedAdam`` scales ``eta`` by
``sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)``. ``eta_l``, the client learning rate, is the
agents' business and not a parameter here. A round whose new moments or model would not be finite
(one exploded update overflowing ``v``) raises :class:`~coordinator.errors.StrategyError` and
commits nothing: the previous state and model stay.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from coordinator.errors import StrategyError
from coordinator.strategies.base import ClientUpdate, Strategy, narrow, widen
from coordinator.strategies.fedavg import fedavg
from protocol import Weights


class FedOpt(Strategy):
    """Shared machinery of FedAdam and FedYogi; a subclass supplies :meth:`second_moment`."""

    def __init__(
        self, *, eta: float = 0.1, beta_1: float = 0.9, beta_2: float = 0.99, tau: float = 1e-3
    ) -> None:
        for label, value in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0 <= value < 1:
                raise StrategyError(f"{self.name} {label} must be in [0, 1), got {value}")
        for label, value in (("eta", eta), ("tau", tau)):
            if not math.isfinite(value) or value <= 0:
                raise StrategyError(f"{self.name} {label} must be a number > 0, got {value}")
        self.eta, self.beta_1, self.beta_2, self.tau = eta, beta_1, beta_2, tau
        self._m: Weights | None = None
        self._v: Weights | None = None

    @abstractmethod
    def second_moment(
        self, v: npt.NDArray[np.float64], delta_sq: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """The next ``v`` from the previous one and the squared pseudo-gradient."""

    def initialize(self, weights: Weights) -> None:
        self._m = tuple(np.zeros_like(w, dtype=np.float32) for w in weights)
        self._v = tuple(np.zeros_like(w, dtype=np.float32) for w in weights)

    def aggregate_train(
        self,
        server_round: int,
        current: Weights,
        results: Sequence[ClientUpdate],
        failures: Sequence[str],
    ) -> Weights:
        average = fedavg(current, results)
        m_prev, v_prev = self._moments(current)
        new: list[npt.NDArray[np.float32]] = []
        moments_m: list[npt.NDArray[np.float32]] = []
        moments_v: list[npt.NDArray[np.float32]] = []
        for now, avg, m_old, v_old in zip(widen(current), average, m_prev, v_prev, strict=True):
            delta = avg - now
            m = self.beta_1 * m_old.astype(np.float64) + (1 - self.beta_1) * delta
            v = self.second_moment(v_old.astype(np.float64), delta * delta)
            with np.errstate(over="ignore", invalid="ignore"):  # found by the check below
                new.append((now + self.eta * m / (np.sqrt(v) + self.tau)).astype(np.float32))
                moments_m.append(m.astype(np.float32))
                moments_v.append(v.astype(np.float32))
        # With v overflowed to inf the step m / sqrt(v) is 0: the model looks fine and never
        # moves again. Nothing is committed unless all of it is finite.
        if not all(np.isfinite(a).all() for a in (*new, *moments_m, *moments_v)):
            raise StrategyError(
                f"{self.name} server optimiser state would not be finite in round "
                f"{server_round}; kept the previous state and model"
            )
        self._m, self._v = tuple(moments_m), tuple(moments_v)
        return tuple(new)

    def _moments(self, current: Weights) -> tuple[Weights, Weights]:
        """``(m, v)``, zeros on first use; refuses moments that do not fit ``current``."""
        if self._m is None or self._v is None:
            self.initialize(current)
            return self._moments(current)
        shapes = [np.shape(w) for w in current]
        if [m.shape for m in self._m] != shapes or [v.shape for v in self._v] != shapes:
            raise StrategyError(f"{self.name} moments do not fit the model; initialize() again")
        return self._m, self._v

    def state(self) -> dict[str, Weights]:
        if self._m is None or self._v is None:
            return {}
        return {"m": narrow(self._m), "v": narrow(self._v)}

    def restore(self, state: Mapping[str, Sequence[npt.NDArray[np.floating[Any]]]]) -> None:
        if not state:
            self._m = self._v = None
            return
        if set(state) != {"m", "v"} or len(state["m"]) != len(state["v"]):
            raise StrategyError(
                f"{self.name} state needs 'm' and 'v' of equal length, got "
                + ", ".join(f"{key!r}: {len(arrays)} arrays" for key, arrays in state.items())
            )
        self._m, self._v = narrow(state["m"]), narrow(state["v"])
