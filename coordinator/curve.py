"""An online learning-curve model: accuracy against the compute spent so far.

Error falls as a power law towards a floor, the shape that fits SGD training curves well
(Hestness et al. 2017; Domhan et al. 2015 use it among others to extrapolate learning curves)::

    error(x) = E + B * (x + x0) ** -c        accuracy(x) = 1 - error(x)

with ``x`` the examples trained into the global model so far; the offset ``x0`` absorbs the slow
first rounds of a federated job (a pure power law read from them predicts absurd compute). For
each exponent ``c`` and offset ``x0`` on a grid,
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

_EXPONENTS = np.linspace(0.1, 3.0, 59)
_OFFSETS = (0.0, 0.25, 0.5, 1.0, 2.0)
"""Offsets ``x0`` on the grid, as multiples of the median compute seen so far."""


@dataclass(frozen=True, slots=True)
class CurveFit:
    floor: float
    """E: the error the curve levels off at."""
    scale: float
    exponent: float
    points: int
    rmse: float
    offset: float = 0.0

    @property
    def asymptote(self) -> float:
        """The accuracy the curve approaches with unlimited compute."""
        return 1.0 - self.floor

    def accuracy_at(self, x: float) -> float:
        return float(1.0 - (self.floor + self.scale * max(x + self.offset, 1.0) ** -self.exponent))

    def work_to(self, target: float) -> float | None:
        """Compute (examples) at which accuracy reaches ``target``; ``None`` if never."""
        gap = (1.0 - target) - self.floor
        if gap <= 0:
            return None
        if self.scale <= 0:
            return 0.0
        return max(0.0, float((self.scale / gap) ** (1.0 / self.exponent)) - self.offset)


def _fits(x: np.ndarray, err: np.ndarray, w: np.ndarray) -> list[CurveFit]:
    """The fits, one per exponent, that are about as good as the best one."""
    fits: list[CurveFit] = []
    sw = np.sqrt(w)
    median = float(np.median(x))
    for x0 in (f * median for f in _OFFSETS):
        for c in _EXPONENTS:
            z = (x + x0) ** -c
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
                CurveFit(
                    floor=float(e),
                    scale=float(b),
                    exponent=float(c),
                    points=len(x),
                    rmse=rmse,
                    offset=x0,
                )
            )
    good = min(f.rmse for f in fits) * 1.5 + 0.005
    return [f for f in fits if f.rmse <= good]


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

    def fits(self) -> list[CurveFit]:
        """Every plausible fit: those about as good as the best, on all points and on the recent
        half. Empty with fewer than ``min_points``."""
        n = len(self._x)
        if n < self.min_points:
            return []
        x = np.asarray(self._x, dtype=np.float64)
        err = 1.0 - np.asarray(self._acc, dtype=np.float64)
        w = self.recency ** np.arange(n - 1, -1, -1, dtype=np.float64)
        out = _fits(x, err, w)
        half = n // 2
        if n - half >= self.min_points:
            out += _fits(x[half:], err[half:], w[half:])
        return out

    def fit(self) -> CurveFit | None:
        """The plausible fit with the highest asymptote, or ``None`` without enough points."""
        return min(self.fits(), key=lambda f: f.floor, default=None)

    def optimistic(self, target: float) -> tuple[CurveFit, float | None] | None:
        """The plausible fit that reaches ``target`` soonest, with the compute it needs there
        (``None``: no plausible fit ever reaches it). ``None`` without enough points."""
        fits = self.fits()
        if not fits:
            return None
        ranked = [(f.work_to(target), f) for f in fits]
        reachable = [(w, f) for w, f in ranked if w is not None]
        if reachable:
            work, best = min(reachable, key=lambda wf: wf[0])
            return best, work
        return min(fits, key=lambda f: f.floor), None
