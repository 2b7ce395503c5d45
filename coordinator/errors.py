"""Errors of the coordinator, named by what the caller should do.

::

    CoordinatorError           the job cannot go on as asked; the message says why
    ├── JobConfigError         the job file is wrong: fix it and start again
    │   └── JobStateConflict       it disagrees with the state saved under its job_id
    ├── StrategyError          a strategy cannot aggregate what it was given; the round keeps the old model
    │   └── InsufficientUpdates    too few updates for a robust rule (e.g. Krum's n >= 2f + 3)
    ├── CheckpointError        the state directory cannot be read or written
    ├── OwnershipError         another coordinator owns the job: stop it, or use another job_id
    └── DashboardError         the dashboard cannot be served as asked (address in use, bad URL)
"""

from __future__ import annotations


class CoordinatorError(Exception):
    """Root of the coordinator's errors."""


class JobConfigError(CoordinatorError, ValueError):
    """The job description is invalid."""


class JobStateConflict(JobConfigError):
    """The job file changed what its saved state was trained with (model or strategy): give the
    job a new ``job_id`` or use a fresh state directory."""


class StrategyError(CoordinatorError):
    """A strategy refused to aggregate."""


class InsufficientUpdates(StrategyError):
    """Too few updates for the strategy's guarantees."""


class CheckpointError(CoordinatorError, OSError):
    """The coordinator's state could not be saved or loaded."""


class OwnershipError(CoordinatorError):
    """Another coordinator run owns the job (its state directory lock or its retained claim)."""


class DashboardError(CoordinatorError):
    """The dashboard cannot be served as asked: its address is taken or not ours, or the ROMA
    URL is not an http(s) URL. Nothing of the job has started."""
