"""Response times over a sliding window: the SLA's percentile, and which requests broke it.

Pure: times are passed in (seconds on one monotonic clock). The controller reads
:meth:`LatencyWindow.percentile` every control period; ``/v2/models/{m}/stats`` and the
benchmark read the same numbers.
"""

from __future__ import annotations

from collections import deque

import numpy as np

__all__ = ["LatencyWindow"]


class LatencyWindow:
    """Requests completed in the last ``window_s`` seconds and their response times.

    ``add(now, response_s)`` records one; :meth:`percentile` (``q`` in 0-100) gives the
    response time at that percentile, ``None`` when the window is empty.
    """

    def __init__(self, window_s: float, *, max_samples: int = 100_000) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque(maxlen=max_samples)

    def add(self, now: float, response_s: float) -> None:
        self._samples.append((now, response_s))

    def _prune(self, now: float) -> None:
        horizon = now - self.window_s
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()

    def count(self, now: float) -> int:
        self._prune(now)
        return len(self._samples)

    def percentile(self, now: float, q: float, *, within_s: float | None = None) -> float | None:
        """The ``q``-th percentile of the window, or of its last ``within_s`` seconds only
        (the controller's shorter view); ``None`` when there is no sample."""
        self._prune(now)
        since = now - within_s if within_s is not None else -np.inf
        samples = [s for t, s in self._samples if t >= since]
        if not samples:
            return None
        return float(np.percentile(samples, q))

    def violation_share(self, now: float, sla_s: float) -> float | None:
        """The share of the window's requests slower than ``sla_s``; ``None`` when empty."""
        self._prune(now)
        if not self._samples:
            return None
        return sum(1 for _, s in self._samples if s > sla_s) / len(self._samples)
