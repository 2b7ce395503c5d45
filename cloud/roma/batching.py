"""Batch sizing from measured latency per batch size, not a fixed delay.

:class:`BatchProfile` keeps an exponentially weighted mean of compute time per batch-size bucket
(powers of two up to ``max_batch``) and predicts unseen sizes from a least-squares line
``t(b) = a + c·b`` over the buckets seen — model compute is close to affine in the batch size on
CPUs (a fixed dispatch cost plus per-row work; Clipper, NSDI 2017, §4.3, uses the same shape for
its adaptive batching). :func:`choose_batch` is work-conserving: called when a worker is free,
it never waits for more requests, and takes the largest batch that still lets the oldest
request finish within its budget.
"""

from __future__ import annotations

import math

__all__ = ["BatchProfile", "choose_batch"]


def _bucket(size: int) -> int:
    return 1 << max(0, math.ceil(math.log2(size)))


class BatchProfile:
    """Compute time (seconds) by batch size, learned from observations."""

    def __init__(self, *, max_batch: int, smoothing: float = 0.2) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        self.max_batch = max_batch
        self.smoothing = smoothing
        self._mean: dict[int, float] = {}
        """Bucket → mean compute seconds per batch; a batch of ``b`` rows lands in the bucket
        ``2^ceil(log2 b)`` with its time scaled up to that size along the fitted line when one
        exists (else taken as is)."""
        self.observed = 0

    def observe(self, batch_size: int, compute_s: float) -> None:
        """Record that a batch of ``batch_size`` rows took ``compute_s`` seconds. ``ValueError``
        for a non-positive size or a negative or non-finite time."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not math.isfinite(compute_s) or compute_s < 0:
            raise ValueError(f"compute time must be finite and >= 0, got {compute_s}")
        bucket = _bucket(batch_size)
        value = compute_s
        if bucket != batch_size:
            line = self._line()
            if line is not None:
                _, c = line
                value = compute_s + max(0.0, c) * (bucket - batch_size)
        old = self._mean.get(bucket)
        self._mean[bucket] = value if old is None else old + self.smoothing * (value - old)
        self.observed += 1

    def _line(self) -> tuple[float, float] | None:
        if len(self._mean) < 2:
            return None
        xs = list(self._mean)
        ys = [self._mean[x] for x in xs]
        n = len(xs)
        mx, my = sum(xs) / n, sum(ys) / n
        sxx = sum((x - mx) ** 2 for x in xs)
        c = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
        return my - c * mx, c

    def predict(self, batch_size: int) -> float | None:
        """Predicted compute seconds of a batch of ``batch_size`` rows; ``None`` before any
        observation. Seen buckets answer from their mean, scaled down linearly inside the
        bucket; other sizes from the fitted line (never below the smallest time seen)."""
        if not self._mean:
            return None
        if len(self._mean) == 1:
            ((bucket, mean),) = self._mean.items()
            return mean if batch_size <= bucket else mean * batch_size / bucket
        a, c = self._line()  # type: ignore[misc]
        c = max(c, 0.0)
        return max(min(self._mean.values()), a + c * batch_size)


def choose_batch(
    *, queued: int, oldest_wait_s: float, budget_s: float, max_batch: int, profile: BatchProfile
) -> int:
    """Rows to take now: the largest ``b <= min(queued, max_batch)`` with
    ``oldest_wait_s + predict(b) <= budget_s``; 1 when even one row is late or the profile is
    still empty (so it gets measured); 0 when nothing is queued."""
    if queued <= 0:
        return 0
    top = min(queued, max_batch)
    if profile.predict(1) is None:
        return 1
    left = budget_s - oldest_wait_s
    lo, hi = 1, top
    while lo < hi:  # predict is non-decreasing in b: binary search for the last fit
        mid = (lo + hi + 1) // 2
        t = profile.predict(mid)
        if t is not None and t <= left:
            lo = mid
        else:
            hi = mid - 1
    return lo
