"""FedAdam: Adam as the server optimiser (Reddi et al., ICLR 2021, arXiv:2003.00295, Alg. 2).

``v = beta_2 * v + (1 - beta_2) * delta ** 2``; the rest is in :mod:`.fedopt`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import numpy.typing as npt

from coordinator.strategies.fedopt import FedOpt


class FedAdam(FedOpt):
    """Adaptive federated optimisation with Adam's second moment.

    Defaults: ``eta=0.1, beta_1=0.9, beta_2=0.99`` as Flower's ``FedAdam``, but ``tau=1e-3``
    (Flower: ``1e-9``). With ``v`` starting at zero the first step is ``eta * sign(delta)`` on
    every coordinate whose ``|delta|`` is well above ``tau``; a larger ``tau`` damps it for small
    pseudo-gradients, and 1e-3 is among the best values in the paper's sweeps.
    """

    name: ClassVar[str] = "fedadam"

    def second_moment(
        self, v: npt.NDArray[np.float64], delta_sq: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        return self.beta_2 * v + (1 - self.beta_2) * delta_sq
