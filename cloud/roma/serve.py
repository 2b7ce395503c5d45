"""Run a ROMA server until cancelled: HTTP, the control loop and, with a broker, hot reload.

::

    async with RomaRunner(config) as runner:      # models loaded, HTTP listening
        runner.url                                 # http://host:port
        await runner.wait()                        # until cancelled (SIGTERM via the CLI)

Every task lives in one :class:`asyncio.TaskGroup`; leaving the block stops the follower, the
controller and the HTTP site, then drains and stops every model's workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType
from typing import Self

from aiohttp import web

from link.mqtt import TlsFiles
from protocol import Topics, parse_broker_url

from .app import make_app
from .config import ServeConfig
from .errors import RomaError
from .follow import ModelFollower
from .server import RomaServer

__all__ = ["RomaRunner"]

_log = logging.getLogger(__name__)


class RomaRunner:
    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.server = RomaServer(config)
        self.follower: ModelFollower | None = None
        self._runner: web.AppRunner | None = None
        self._group: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.port = config.port

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    async def __aenter__(self) -> Self:
        await self.server.start()
        runner = web.AppRunner(make_app(self.server), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            await self.server.close()
            raise RomaError(
                f"cannot listen on {self.config.host}:{self.config.port}: {exc}"
            ) from exc
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        self._tasks = [self._group.create_task(self.server.control_loop(), name="roma-control")]
        c = self.config
        if c.broker:
            tls = (
                TlsFiles(ca_file=c.tls_ca, cert_file=c.tls_cert, key_file=c.tls_key)
                if parse_broker_url(c.broker).tls
                else None
            )
            self.follower = ModelFollower(
                self.server,
                c.broker,
                topics=Topics(c.prefix),
                stats_period_s=c.stats_period_s,
                tls=tls,
            )
            self._tasks.append(self._group.create_task(self.follower.run(), name="roma-follower"))
        _log.info("ROMA serving %d models on %s", len(self.server.entries), self.url)
        return self

    async def wait(self) -> None:
        """Block until cancelled."""
        await asyncio.Event().wait()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        group, self._group = self._group, None
        if group is not None:
            if self.follower is not None:  # monitors learn the server stopped (bounded wait)
                await self.follower.publish_stats(final=True, timeout_s=2.0)
            for task in self._tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await group.__aexit__(None, None, None)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.server.close()
