"""Reconnect delays: exponential, with jitter, and never above the cap."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass(slots=True, kw_only=True)
class Backoff:
    """Delays (seconds) between reconnect attempts.

    Attempt ``k`` (from 0) waits ``min(max_s, min_s * factor**k)`` scaled by a random factor in
    ``[1 - jitter, 1]``: the jitter spreads a fleet's reconnects out and only ever shortens a
    delay, so no delay exceeds ``max_s``. :meth:`reset` after a successful connection.
    """

    min_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random, repr=False)
    _attempt: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not 0 < self.min_s <= self.max_s:
            raise ValueError(f"need 0 < min_s <= max_s, got {self.min_s} and {self.max_s}")
        if self.factor < 1:
            raise ValueError(f"factor must be at least 1, got {self.factor}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")

    def next_delay(self) -> float:
        """The delay before the next attempt, in seconds: ``(1 - jitter) * cap <= d <= cap``."""
        cap = min(self.max_s, self.min_s * self.factor**self._attempt)
        if cap < self.max_s:  # the exponent stops at the cap: a long outage never overflows
            self._attempt += 1
        return cap * (1.0 - self.jitter * self.rng.random())

    def reset(self) -> None:
        self._attempt = 0
