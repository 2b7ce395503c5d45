"""FedYogi: Yogi as the server optimiser (Reddi et al., ICLR 2021, arXiv:2003.00295, Alg. 2).

``v = v - (1 - beta_2) * delta ** 2 * sign(v - delta ** 2)``, Zaheer et al.'s Yogi (NeurIPS
2018): ``v`` grows or shrinks additively, never by more than ``(1 - beta_2) * delta ** 2``.
The rest is in :mod:`.fedopt`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import numpy.typing as npt

from coordinator.strategies.fedopt import FedOpt


class FedYogi(FedOpt):
    """Adaptive federated optimisation with Yogi's second moment.

    Defaults are Flower's ``FedYogi``: ``eta=0.01, beta_1=0.9, beta_2=0.99, tau=1e-3``. Like
    Flower, ``v`` starts at zero (the paper asks for ``v >= tau ** 2``), so the first round's
    ``v`` equals FedAdam's.
    """

    name: ClassVar[str] = "fedyogi"

    def __init__(
        self, *, eta: float = 0.01, beta_1: float = 0.9, beta_2: float = 0.99, tau: float = 1e-3
    ) -> None:
        super().__init__(eta=eta, beta_1=beta_1, beta_2=beta_2, tau=tau)

    def second_moment(
        self, v: npt.NDArray[np.float64], delta_sq: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        return v - (1 - self.beta_2) * delta_sq * np.sign(v - delta_sq)
