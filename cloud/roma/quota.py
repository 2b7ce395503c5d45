"""A CPU allowance in core-seconds: cgroup v2 ``cpu.max`` emulated in user space.

The kernel's CFS bandwidth control (``cpu.max`` = ``quota period``) lets a group run ``quota``
microseconds of CPU per ``period``; ``cores = quota / period``. :class:`CpuQuota` does the same
for a model's worker processes without cgroups: every batch charges the CPU seconds its worker
process used for it (all threads, as the kernel counts; not wall time, which a preempted worker
spends without the CPU), the bucket refills at ``cores`` core-seconds per second and holds at most
``burst_s`` seconds' worth, and a model whose bucket is empty waits :meth:`wait_s` before its
next batch. Fractional allocations (0.1 core) thereby mean something on any machine; where the
process may write ``cpu.max`` the kernel enforces the same number. Pure: times are passed in.
"""

from __future__ import annotations

import math

__all__ = ["CpuQuota"]


class CpuQuota:
    def __init__(self, cores: float, *, burst_s: float = 0.1) -> None:
        if not burst_s > 0:
            raise ValueError(f"burst_s must be positive, got {burst_s}")
        self.burst_s = burst_s
        self.cores = 0.0
        self.set_cores(cores)
        self._tokens = self.cores * burst_s
        self._at: float | None = None
        self.used_core_seconds = 0.0

    def set_cores(self, cores: float) -> None:
        """Allow ``cores`` from now on (``ValueError`` unless positive and finite)."""
        if not (math.isfinite(cores) and cores > 0):
            raise ValueError(f"cores must be positive and finite, got {cores}")
        self.cores = cores

    def _refill(self, now: float) -> None:
        if self._at is not None and now > self._at:
            cap = self.cores * self.burst_s
            self._tokens = min(cap, self._tokens + (now - self._at) * self.cores)
        if self._at is None or now > self._at:
            self._at = now

    def charge(self, core_seconds: float, now: float) -> None:
        """Record CPU used at ``now`` (``ValueError`` for a negative or non-finite amount)."""
        if not (math.isfinite(core_seconds) and core_seconds >= 0):
            raise ValueError(f"core_seconds must be finite and >= 0, got {core_seconds}")
        self._refill(now)
        self._tokens -= core_seconds
        self.used_core_seconds += core_seconds

    def wait_s(self, now: float) -> float:
        """Seconds until the model may dispatch again (0: now)."""
        self._refill(now)
        return 0.0 if self._tokens >= -1e-9 else -self._tokens / self.cores
