"""Spark tests need a Java 17 runtime (the ``java`` fixture: skipped without one, failed under
CI; ``make test`` installs it with apt as root)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _needs_java(java: str) -> None:
    """Every Spark test needs the runtime."""
