"""Errors of the pipelines. Each cloud part (pipelines, dynaSpark, ROMA) owns its errors, as it
owns its code: the parts never import each other.

::

    PipelineError       root
    └── DataError       a data set or file that cannot be loaded or partitioned as asked (ValueError)
"""

from __future__ import annotations

__all__ = ["DataError", "PipelineError"]


class PipelineError(Exception):
    """Root of the pipelines' errors."""


class DataError(PipelineError, ValueError):
    """Input data that cannot be used: wrong format, shape or parameters."""
