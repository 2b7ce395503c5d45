"""How fast an emulated device trains in one round: a small seeded model, pure (no clock, no I/O).

A device never trains at exactly its nominal rate. Two things move it, and both are drawn here:

- **per-round variance.** Each round's rate is log-normal around the nominal rate:
  ``ln(rate) = ln(nominal) + sigma * Z`` with ``Z ~ N(0, 1)``, so the *median* round runs at the
  nominal rate and ``sigma`` is the standard deviation of the log-rate (0.2: about two rounds in
  three within ±20 %). Measured per-round speeds of phones and single-board computers are
  right-skewed like this (Lai et al., *Oort*, OSDI 2021, fig. 2; Yang et al., *Characterizing
  Impacts of Heterogeneity in Federated Learning upon Large-Scale Smartphone Data*, WWW 2021).
- **background load.** Episodes when the owner's other work takes the device, as a continuous-time
  Markov on/off process in device-seconds: off spells are exponential with mean
  ``load_off_mean_s``, on spells exponential with mean ``load_on_mean_s``; while on, the round's
  rate is divided by ``load_factor``. The long-run share of time loaded is
  ``on / (on + off)``. A ``load_factor`` of 1 turns load off.

Time here is the device's own, in seconds from the emulator's start (the emulator divides the wall
clock by its time scale), so the same seed gives the same rates at every time scale.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

__all__ = ["SpeedProcess", "SpeedSpec"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SpeedSpec:
    """The parameters of :class:`SpeedProcess` (see the module docstring for their meaning)."""

    rate: float
    """Nominal rate, examples per device-second; > 0."""
    sigma: float = 0.0
    """Standard deviation of the log-rate per round; >= 0 (0: every round at the nominal rate)."""
    load_factor: float = 1.0
    """Rate divisor while background load is on; >= 1 (1: no load episodes)."""
    load_on_mean_s: float = 120.0
    """Mean length of a background-load episode, device-seconds; > 0."""
    load_off_mean_s: float = 600.0
    """Mean time between background-load episodes, device-seconds; > 0."""

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError(f"rate must be positive and finite, got {self.rate}")
        if not self.sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {self.sigma}")
        if not self.load_factor >= 1:
            raise ValueError(f"load_factor must be >= 1, got {self.load_factor}")
        if not (self.load_on_mean_s > 0 and self.load_off_mean_s > 0):
            raise ValueError("load_on_mean_s and load_off_mean_s must be positive")

    @property
    def loaded_share(self) -> float:
        """Long-run share of device time under background load (0 when load is off)."""
        if self.load_factor == 1:
            return 0.0
        return self.load_on_mean_s / (self.load_on_mean_s + self.load_off_mean_s)


class SpeedProcess:
    """Per-round training rates of one device, reproducible from ``seed``.

    Call :meth:`rate_at` once per round with the device time the round's training starts; times
    must not go backwards (the load process only moves forward). The load process starts in its
    stationary law (loaded with probability :attr:`SpeedSpec.loaded_share`).

    Raises:
        ValueError: ``rate_at`` with a time before the last one.
    """

    def __init__(self, spec: SpeedSpec, *, seed: int) -> None:
        self.spec = spec
        # Two streams, so the variance draws do not depend on how many load switches happened.
        self._load_rng = random.Random(f"load:{seed}")
        self._round_rng = random.Random(f"round:{seed}")
        self._now = 0.0
        self._loaded = self._load_rng.random() < spec.loaded_share
        self._switch_at = self._spell(self._loaded)
        self.episodes = 1 if self._loaded else 0
        """Load episodes begun so far (up to the last time asked)."""

    def _spell(self, loaded: bool) -> float:
        if self.spec.load_factor == 1:
            return math.inf
        mean = self.spec.load_on_mean_s if loaded else self.spec.load_off_mean_s
        return self._load_rng.expovariate(1.0 / mean)

    def loaded_at(self, t: float) -> bool:
        """Whether background load is on at device time ``t`` (seconds, not before the last)."""
        if t < self._now:
            raise ValueError(f"device time went backwards: {t} after {self._now}")
        self._now = t
        while t >= self._switch_at:
            self._loaded = not self._loaded
            if self._loaded:
                self.episodes += 1
            self._switch_at += self._spell(self._loaded)
        return self._loaded

    def rate_at(self, t: float) -> float:
        """The rate of a round whose training starts at device time ``t``, examples/s."""
        loaded = self.loaded_at(t)
        s = self.spec
        rate = s.rate * math.exp(s.sigma * self._round_rng.gauss(0.0, 1.0)) if s.sigma else s.rate
        return rate / s.load_factor if loaded else rate
