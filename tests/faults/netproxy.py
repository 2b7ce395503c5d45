"""A TCP proxy for fault probes: put it between one process and the broker, then delay,
partition or cut that link while the rest of the system runs on.

:class:`Proxy` forwards ``127.0.0.1:<port>`` to an upstream address from an event loop of its
own (a daemon thread), so a test drives it from plain synchronous code:

- :meth:`Proxy.delay` adds one-way latency to every chunk in both directions (order kept);
- :meth:`Proxy.partition` stops forwarding without closing anything, as a dead link does: TCP
  holds the bytes (the sender's buffers fill), keepalives go unanswered, nobody is told;
  :meth:`Proxy.heal` lets the held bytes through;
- :meth:`Proxy.cut` aborts every connection (a reset, as a NAT or a Wi-Fi drop does) and, for
  ``refuse_s``, closes new ones at once.

Loopback only (the workplace's rule for failure tests); bounded by the test's own timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["Proxy"]

_T = TypeVar("_T")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proxy:
    """Forward ``127.0.0.1:port`` → ``upstream_host:upstream_port``; see the module doc."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = _free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.connections = 0
        """Connections accepted so far (a reconnect shows as one more)."""
        self._delay_s = 0.0
        self._refuse_until = 0.0
        self._loop = asyncio.new_event_loop()
        self._flowing: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._call(self._start())

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if time.monotonic() < self._refuse_until:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._writers.update((writer, up_writer))
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()
            self._tasks.difference_update(pumps)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy one direction; chunks wait ``delay`` after arrival, and while partitioned."""
        assert self._flowing is not None
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                arrived, chunk = await queue.get()
                wait = arrived + self._delay_s - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                assert self._flowing is not None
                await self._flowing.wait()
                writer.write(chunk)
                await writer.drain()

        sender = asyncio.create_task(send())
        try:
            while True:
                await self._flowing.wait()
                chunk = await reader.read(65536)
                if not chunk:
                    return
                await queue.put((time.monotonic(), chunk))
                if sender.done():
                    return
        except (ConnectionError, OSError):
            return
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await sender

    # -- faults, called from the test's thread --------------------------------------------

    def delay(self, seconds: float) -> None:
        """One-way latency added to every chunk from now on (0: none)."""
        self._delay_s = seconds

    def partition(self) -> None:
        """Stop forwarding in both directions; connections stay open, bytes are held."""

        async def go() -> None:
            assert self._flowing is not None
            self._flowing.clear()

        self._call(go())

    def heal(self) -> None:
        """Forward again, held bytes first."""

        async def go() -> None:
            assert self._flowing is not None
            self._flowing.set()

        self._call(go())

    def cut(self, refuse_s: float = 0.0) -> None:
        """Abort every connection now; refuse new ones for ``refuse_s`` seconds."""

        async def go() -> None:
            self._refuse_until = time.monotonic() + refuse_s
            for w in list(self._writers):
                w.transport.abort()

        self._call(go())

    def close(self) -> None:
        async def go() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                w.transport.abort()
            for task in list(self._tasks):
                task.cancel()

        with contextlib.suppress(Exception):
            self._call(go())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
