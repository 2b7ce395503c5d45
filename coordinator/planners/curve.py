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
    """The fits, one per (exponent, offset), that are about as good as the best one.

    Every candidate is a weighted two-parameter least-squares problem, solved in closed form for
    all candidates at once (one array operation, not hundreds of ``lstsq`` calls)."""
    median = float(np.median(x))
    offsets = np.asarray(_OFFSETS) * median
    grid_c = np.repeat(_EXPONENTS, len(offsets))
    grid_x0 = np.tile(offsets, len(_EXPONENTS))
    z = (x[None, :] + grid_x0[:, None]) ** -grid_c[:, None]  # [candidates, points]
    sw, swz, swzz = w.sum(), z @ w, (z * z) @ w
    swe, swze = float(w @ err), (z * err) @ w
    det = sw * swzz - swz * swz
    safe = np.where(np.abs(det) > 1e-18, det, 1.0)
    b = np.where(np.abs(det) > 1e-18, (sw * swze - swz * swe) / safe, 0.0)
    e = (swe - b * swz) / sw
    # The floor cannot be negative: refit the scale alone.
    neg_e = e < 0
    b = np.where(neg_e, swze / np.maximum(swzz, 1e-12), b)
    e = np.where(neg_e, 0.0, e)
    # Error must not rise with compute: a flat curve at the weighted mean.
    neg_b = b < 0
    e = np.where(neg_b, swe / sw, e)
    b = np.where(neg_b, 0.0, b)
    resid = err[None, :] - (e[:, None] + b[:, None] * z)
    rmse = np.sqrt((resid * resid) @ w / sw)
    good = float(rmse.min()) * 1.5 + 0.005
    return [
        CurveFit(
            floor=float(e[i]),
            scale=float(b[i]),
            exponent=float(grid_c[i]),
            points=len(x),
            rmse=float(rmse[i]),
            offset=float(grid_x0[i]),
        )
        for i in np.flatnonzero(rmse <= good)
    ]


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
