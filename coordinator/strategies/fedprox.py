"""FedProx: FedAvg on the server, a proximal term on the clients.

Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith, "Federated Optimization in Heterogeneous Networks",
MLSys 2020 (arXiv:1812.06127). Each client minimises ``F_k(w) + (mu / 2) * ||w - w_t||^2``
(Algorithm 2); the server averages the results exactly as FedAvg does. The only server-side
difference is the ``proximal_mu`` option sent with every training instruction.
"""

from __future__ import annotations

import math
from typing import ClassVar

from coordinator.errors import StrategyError
from coordinator.strategies.fedavg import FedAvg


class FedProx(FedAvg):
    """FedAvg whose training instructions carry ``{"proximal_mu": mu}`` (Li et al. 2020)."""

    name: ClassVar[str] = "fedprox"

    def __init__(self, *, proximal_mu: float = 0.01) -> None:
        if not math.isfinite(proximal_mu) or proximal_mu < 0:
            raise StrategyError(f"FedProx proximal_mu must be a number >= 0, got {proximal_mu}")
        self.proximal_mu = float(proximal_mu)

    def train_options(self) -> dict[str, float]:
        return {"proximal_mu": self.proximal_mu}
