"""Run a command's coroutine until it ends or a signal stops it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from .exits import EXIT_OK

__all__ = ["run_until_signal"]

_log = logging.getLogger("hyperfleet")


def run_until_signal(make: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run ``make()`` on a fresh event loop and return its exit status; SIGINT/SIGTERM cancel
    it cleanly (exit 0)."""

    async def runner() -> int:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, task.cancel)
        try:
            return await make()
        except asyncio.CancelledError:
            _log.info("stopped by signal")
            return EXIT_OK

    return asyncio.run(runner())
