"""Normalisation statistics: computed on the training rows, shipped with the model.

The convention is the serving tier's (ROMA's ``[normalization] offset, scale``): an input ``x``
becomes ``(x - offset) * scale`` per feature, in float32. The shards the pipeline writes hold
features normalised this way, so agents train on what serving will feed the model after it has
normalised a client's raw input with the same two vectors.

Per-feature moments are gathered in pieces (one per Spark partition) and merged with the pairwise
update of Chan, Golub and LeVeque ("Updating formulae and a pairwise algorithm for computing
sample variances", 1979), which keeps the variance accurate where sums of squares would not.
Pure: no I/O; :meth:`Normalization.to_json` / :func:`normalization_from_json` give the document
the job writes as ``normalization.json``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from .errors import DataError

__all__ = [
    "NORMALIZATION_VERSION",
    "Moments",
    "Normalization",
    "NormalizationMethod",
    "merge_moments",
    "moments_of",
    "normalization_from_json",
]

NormalizationMethod = Literal["standard", "minmax", "none"]

NORMALIZATION_VERSION: Final = 1
#: A feature whose spread (standard deviation, or max - min) is at most this keeps scale 1.
MIN_SPREAD: Final = 1e-8
_METHODS: Final = ("standard", "minmax", "none")
_CONVENTION: Final = "(x - offset) * scale"

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True, kw_only=True)
class Moments:
    """Per-feature count, mean, sum of squared deviations (``m2``), minimum and maximum."""

    count: int
    mean: F64
    m2: F64
    minimum: F64
    maximum: F64

    @property
    def features(self) -> int:
        return int(self.mean.shape[0])

    @property
    def std(self) -> F64:
        """Population standard deviation per feature (0 for fewer than one example)."""
        if self.count < 1:
            return np.zeros_like(self.mean)
        return np.sqrt(np.maximum(self.m2 / self.count, 0.0))


def moments_of(x: npt.NDArray[np.floating[Any]]) -> Moments:
    """The moments of the rows of ``x`` (``[n, features]``), in float64."""
    if x.ndim != 2:
        raise DataError(f"moments need [n, features] data, got shape {x.shape}")
    data = np.asarray(x, dtype=np.float64)
    n, d = data.shape
    if n == 0:
        empty = np.zeros(d, dtype=np.float64)
        return Moments(
            count=0,
            mean=empty,
            m2=empty.copy(),
            minimum=np.full(d, np.inf),
            maximum=np.full(d, -np.inf),
        )
    mean = data.mean(axis=0)
    m2 = ((data - mean) ** 2).sum(axis=0)
    return Moments(count=n, mean=mean, m2=m2, minimum=data.min(axis=0), maximum=data.max(axis=0))


def merge_moments(parts: Sequence[Moments]) -> Moments:
    """Merge moments of disjoint row sets (Chan, Golub and LeVeque 1979, pairwise update).
    :class:`DataError` when there is nothing to merge or the parts disagree on features."""
    if not parts:
        raise DataError("no moments to merge")
    total = parts[0]
    for part in parts[1:]:
        if part.features != total.features:
            raise DataError(f"moments of {part.features} and {total.features} features differ")
        if part.count == 0:
            continue
        if total.count == 0:
            total = part
            continue
        n = total.count + part.count
        delta = part.mean - total.mean
        total = Moments(
            count=n,
            mean=total.mean + delta * (part.count / n),
            m2=total.m2 + part.m2 + delta**2 * (total.count * part.count / n),
            minimum=np.minimum(total.minimum, part.minimum),
            maximum=np.maximum(total.maximum, part.maximum),
        )
    return total


@dataclass(frozen=True, slots=True, kw_only=True)
class Normalization:
    """Per-feature ``offset`` and ``scale``: served and trained inputs are ``(x - offset) * scale``.

    ``examples`` is how many training rows the statistics came from.
    """

    method: NormalizationMethod
    offset: tuple[float, ...]
    scale: tuple[float, ...]
    examples: int

    @classmethod
    def from_moments(cls, moments: Moments, method: NormalizationMethod) -> Normalization:
        """``standard``: offset = mean, scale = 1 / population std; ``minmax``: offset = min,
        scale = 1 / (max - min), so training rows land in [0, 1]; ``none``: 0 and 1. A feature
        whose spread is at most :data:`MIN_SPREAD` keeps scale 1. :class:`DataError` for an
        unknown method or no rows."""
        if method not in _METHODS:
            raise DataError(f"normalisation must be one of {list(_METHODS)}, got {method!r}")
        if moments.count < 1:
            raise DataError("normalisation statistics need at least one training row")
        d = moments.features
        if method == "standard":
            offset, spread = moments.mean, moments.std
        elif method == "minmax":
            offset, spread = moments.minimum, moments.maximum - moments.minimum
        else:
            offset, spread = np.zeros(d), np.ones(d)
        scale = np.where(spread > MIN_SPREAD, 1.0 / np.where(spread > 0, spread, 1.0), 1.0)
        return cls(
            method=method,
            offset=tuple(float(v) for v in offset),
            scale=tuple(float(v) for v in scale),
            examples=moments.count,
        )

    @property
    def features(self) -> int:
        return len(self.offset)

    def apply(self, x: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """``(x - offset) * scale`` over the last axis, in float32 exactly as ROMA computes it."""
        if x.shape[-1] != self.features:
            raise DataError(f"normalisation has {self.features} features, the data {x.shape[-1]}")
        offset = np.asarray(self.offset, dtype=np.float32)
        scale = np.asarray(self.scale, dtype=np.float32)
        return ((x.astype(np.float32) - offset) * scale).astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        """The ``normalization.json`` document; ``offset`` and ``scale`` go into a model's
        ``config.toml`` under ``[normalization]`` unchanged."""
        return {
            "version": NORMALIZATION_VERSION,
            "convention": _CONVENTION,
            "method": self.method,
            "features": self.features,
            "examples": self.examples,
            "computed_on": "training rows (the holdout excluded)",
            "offset": list(self.offset),
            "scale": list(self.scale),
        }


def normalization_from_json(doc: Mapping[str, Any]) -> Normalization:
    """Read a ``normalization.json`` document; :class:`DataError` naming the field that is wrong."""
    if doc.get("version") != NORMALIZATION_VERSION:
        raise DataError(f"normalization: unsupported version {doc.get('version')!r}")
    if doc.get("convention") != _CONVENTION:
        raise DataError(f"normalization: convention must be {_CONVENTION!r}")
    method = doc.get("method")
    if method not in _METHODS:
        raise DataError(f"normalization: method must be one of {list(_METHODS)}, got {method!r}")
    vectors: dict[str, tuple[float, ...]] = {}
    for name in ("offset", "scale"):
        values = doc.get(name)
        if not isinstance(values, list) or not values:
            raise DataError(f"normalization: {name} must be a non-empty list of numbers")
        if not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in values
        ):
            raise DataError(f"normalization: {name} must hold finite numbers only")
        vectors[name] = tuple(float(v) for v in values)
    if len(vectors["offset"]) != len(vectors["scale"]):
        raise DataError("normalization: offset and scale differ in length")
    examples = doc.get("examples")
    if not isinstance(examples, int) or isinstance(examples, bool) or examples < 1:
        raise DataError("normalization: examples must be a positive integer")
    return Normalization(
        method=method,
        offset=vectors["offset"],
        scale=vectors["scale"],
        examples=examples,
    )
