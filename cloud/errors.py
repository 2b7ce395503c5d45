"""Errors of the cloud tier.

::

    CloudError          root
    └── DataError       a data set or file that cannot be loaded or partitioned as asked (ValueError)
"""

from __future__ import annotations


class CloudError(Exception):
    """Root of the cloud tier's errors."""


class DataError(CloudError, ValueError):
    """Input data that cannot be used: wrong format, shape or parameters."""
