"""An online learning-curve model: accuracy against the compute spent so far.

Error falls as a power law towards a floor, the shape that fits SGD training curves well
(Hestness et al. 2017; Domhan et al. 2015 use it among others to extrapolate learning curves)::

    error(x) = E + B * x ** -c        accuracy(x) = 1 - error(x)

with ``x`` the examples trained into the global model so far. For each exponent ``c`` on a grid,
``E`` and ``B`` come from weighted linear least squares (recent rounds weigh more). Predictions are
deliberately optimistic where the data are thin: among the exponents that fit about as well as
the best, the lowest floor is kept, and :meth:`LearningCurve.fit` keeps the
larger asymptote of the fits on all points and on the recent half, so a job is declared infeasible
only when even the kinder reading says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["CurveFit", "LearningCurve"]

_EXPONENTS = np.linspace(0.1, 2.0, 39)


@dataclass(frozen=True, slots=True)
class CurveFit:
    floor: float
    """E: the error the curve levels off at."""
    scale: float
    exponent: float
    points: int
    rmse: float

    @property
    def asymptote(self) -> float:
        """The accuracy the curve approaches with unlimited compute."""
        return 1.0 - self.floor

    def accuracy_at(self, x: float) -> float:
        return float(1.0 - (self.floor + self.scale * max(x, 1.0) ** -self.exponent))

    def work_to(self, target: float) -> float | None:
        """Compute (examples) at which accuracy reaches ``target``; ``None`` if never."""
        gap = (1.0 - target) - self.floor
        if gap <= 0:
            return None
        if self.scale <= 0:
            return 0.0
        return float((self.scale / gap) ** (1.0 / self.exponent))


def _fit(x: np.ndarray, err: np.ndarray, w: np.ndarray) -> CurveFit | None:
    """Among the exponents whose fit is about as good as the best, the lowest floor."""
    fits: list[CurveFit] = []
    sw = np.sqrt(w)
    for c in _EXPONENTS:
        z = x**-c
        design = np.stack([np.ones_like(z), z], axis=1) * sw[:, None]
        (e, b), *_ = np.linalg.lstsq(design, err * sw, rcond=None)
        if e < 0:  # the floor cannot be negative: refit the scale alone
            e = 0.0
            b = float(np.sum(w * z * err) / max(np.sum(w * z * z), 1e-12))
        if b < 0:  # error must not rise with compute: a flat curve at the weighted mean
            e, b = float(np.sum(w * err) / np.sum(w)), 0.0
        resid = err - (e + b * z)
        rmse = float(math.sqrt(np.sum(w * resid**2) / np.sum(w)))
        fits.append(
            CurveFit(floor=float(e), scale=float(b), exponent=float(c), points=len(x), rmse=rmse)
        )
    if not fits:
        return None
    good = min(f.rmse for f in fits) * 1.5 + 0.005
    return min((f for f in fits if f.rmse <= good), key=lambda f: f.floor)


class LearningCurve:
    def __init__(self, *, min_points: int = 4, recency: float = 0.9) -> None:
        self.min_points = min_points
        self.recency = recency
        self._x: list[float] = []
        self._acc: list[float] = []

    def __len__(self) -> int:
        return len(self._x)

    def add(self, compute: float, accuracy: float) -> None:
        if compute > 0 and math.isfinite(accuracy):
            self._x.append(compute)
            self._acc.append(accuracy)

    def fit(self) -> CurveFit | None:
        """The optimistic fit (see the module doc), or ``None`` with fewer than ``min_points``."""
        n = len(self._x)
        if n < self.min_points:
            return None
        x = np.asarray(self._x, dtype=np.float64)
        err = 1.0 - np.asarray(self._acc, dtype=np.float64)
        w = self.recency ** np.arange(n - 1, -1, -1, dtype=np.float64)
        fits = [_fit(x, err, w)]
        half = n // 2
        if n - half >= self.min_points:
            fits.append(_fit(x[half:], err[half:], w[half:]))
        candidates = [f for f in fits if f is not None]
        return min(candidates, key=lambda f: f.floor) if candidates else None
