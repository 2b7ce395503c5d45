"""Spark tests need a Java 17 runtime (``make test`` installs one with apt as root). Without it
they skip, saying how to install it, except under CI, where that is a failure."""

from __future__ import annotations

import shutil

import pytest
from conftest import _in_ci

_NO_JAVA = ("no java on PATH; Spark needs a Java 17 runtime: make test installs it as root, or "
            "sudo apt-get install openjdk-17-jre-headless")  # fmt: skip


@pytest.fixture(autouse=True, scope="session")
def java() -> str:
    binary = shutil.which("java")
    if binary is None:
        if _in_ci():
            pytest.fail(f"CI is set but {_NO_JAVA}", pytrace=False)
        pytest.skip(_NO_JAVA)
    return binary
