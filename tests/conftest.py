"""Shared fixtures: a real Mosquitto for the whole session and a unique topic prefix per test.

Mosquitto is a system package. Without it the tests that need it are skipped with a message
saying how to install it, except under CI (``CI`` set), where a missing broker is a failure:
a CI run that silently skips the broker tests proves nothing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from uuid import uuid4

import pytest

from hyperfleet.broker import RunningBroker, find_mosquitto, start_broker

_NO_MOSQUITTO = (
    "mosquitto is not installed (sudo apt-get install mosquitto, or brew install mosquitto); "
    "broker tests against Mosquitto are skipped"
)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session", autouse=True)
def _quiet_tensorflow() -> Iterator[None]:
    """Keep TensorFlow's C++ start-up chatter out of test output."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
        yield


_NO_JAVA = (
    "no java on PATH; Spark needs a Java 17 runtime: make test installs it as root, or "
    "sudo apt-get install openjdk-17-jre-headless"
)


@pytest.fixture(scope="session")
def java() -> str:
    """The ``java`` binary Spark needs; skips (fails under CI) when it is missing."""
    binary = shutil.which("java")
    if binary is None:
        if _in_ci():
            pytest.fail(f"CI is set but {_NO_JAVA}", pytrace=False)
        pytest.skip(_NO_JAVA)
    return binary


@pytest.fixture(scope="session")
def mosquitto_binary() -> str:
    """The path of the ``mosquitto`` binary; skips (fails under CI) when it is missing."""
    binary = find_mosquitto()
    if binary is None:
        if _in_ci():
            pytest.fail(f"CI is set but {_NO_MOSQUITTO.split(';')[0]}", pytrace=False)
        pytest.skip(_NO_MOSQUITTO)
    return binary


@pytest.fixture(scope="session")
def mosquitto(mosquitto_binary: str) -> Iterator[RunningBroker]:
    """A real Mosquitto on a free port of 127.0.0.1, shared by the whole session."""
    with start_broker(prefer="mosquitto") as broker:
        yield broker


@pytest.fixture
def broker_url(mosquitto: RunningBroker) -> str:
    """``mqtt://127.0.0.1:PORT`` of the session's Mosquitto."""
    return mosquitto.url


@pytest.fixture
def unique_topic_prefix() -> str:
    """A topic prefix no other test uses, so retained messages never leak between tests."""
    return f"test/{uuid4().hex[:8]}/hf/v1"
