"""Errors of dynaSpark. It owns them as it owns its code (the cloud parts never import each
other)::

    DynaSparkError          root
    ├── ProfileError        a profile that cannot be read, or does not fit the job (ValueError)
    └── InfeasibleDeadline  the profile says the deadline cannot be met with the cores there are
"""

from __future__ import annotations

__all__ = ["DynaSparkError", "InfeasibleDeadline", "ProfileError"]


class DynaSparkError(Exception):
    """Root of dynaSpark's errors."""


class ProfileError(DynaSparkError, ValueError):
    """A job profile that is malformed, or whose stages do not match the job's."""


class InfeasibleDeadline(DynaSparkError):
    """The deadline is below the shortest time the profile allows on the cores available."""

    def __init__(self, message: str, *, deadline_s: float, shortest_s: float) -> None:
        super().__init__(message)
        self.deadline_s = deadline_s
        self.shortest_s = shortest_s
