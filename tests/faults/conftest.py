"""Fixtures of the fault probes: a :class:`~faults.procstack.Stack` per test, torn down after."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from faults.procstack import Stack
from roma.conftest import digits_models, roma_server

__all__ = ["digits_models", "roma_server"]  # ROMA's fixtures, for test_http_garbage.py


@pytest.fixture
def stack_factory(tmp_path: Path, mosquitto_binary: str) -> Iterator[Callable[[int], Stack]]:
    made: list[Stack] = []

    def make(agents: int) -> Stack:
        stack = Stack(tmp_path, agents=agents)
        made.append(stack)
        return stack

    yield make
    for stack in made:
        stack.close()
