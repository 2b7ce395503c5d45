"""The dashboard's HTTP server (aiohttp): one page, its two static files, a snapshot, live events.

::

    GET /                 the page (static/index.html)
    GET /static/{name}    dashboard.js, dashboard.css; anything else 404
    GET /api/snapshot     the current snapshot as JSON (see coordinator.dashboard._snapshot)
    GET /events           server-sent events: ``event: snapshot`` with the same JSON whenever it
                          changes (checked every ``interval_s``), a comment line as keep-alive;
                          503 past ``max_clients`` open streams

Other paths answer 404, other methods 405, malformed requests 400 (aiohttp's parser): the
server reads no request body and keeps no per-client state but the open event streams. Every
answer carries a Content-Security-Policy that allows only this origin (no inline script, no CDN).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, Final

from aiohttp import http_exceptions, web

from ..errors import DashboardError
from ..service import Coordinator
from ._roma import RomaWatch
from ._snapshot import job_snapshot

__all__ = ["Dashboard", "open_dashboard"]

_log = logging.getLogger(__name__)

_STATIC: Final = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}
_SECURITY_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_KEEPALIVE_S: Final = 15.0


class _RequestLog(logging.LoggerAdapter[logging.Logger]):
    """The log aiohttp's request handler writes to. It logs a malformed request (a client's
    mistake: bad request line, header, URL or version) with a traceback at ERROR; here that is
    one INFO line, so garbage cannot flood the log. Errors in our handlers keep their
    traceback at ERROR."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else None
        if isinstance(exc, http_exceptions.HttpProcessingError):
            remote = args[0] if args else "a client"
            first = exc.message.splitlines()[0] if exc.message else ""
            self.info("dashboard: malformed request from %s: HTTP %s %s", remote, exc.code, first)
            return
        self.logger.exception(msg, *args, exc_info=exc_info, **kwargs)


def _asset(name: str) -> bytes:
    return resources.files("coordinator.dashboard").joinpath("static", name).read_bytes()


class Dashboard:
    """What the page shows: the watched coordinator's job (or "starting" before
    :meth:`watch`), and ROMA's SLA panel when ``roma_url`` is set."""

    def __init__(
        self,
        *,
        roma_url: str | None = None,
        interval_s: float = 1.0,
        roma_interval_s: float = 2.0,
        max_clients: int = 32,
    ) -> None:
        self.interval_s = interval_s
        self.max_clients = max_clients
        self.roma = RomaWatch(roma_url, interval_s=roma_interval_s) if roma_url else None
        self.clients = 0
        self.closing = asyncio.Event()
        self._coordinator: Coordinator | None = None

    def watch(self, coordinator: Coordinator) -> None:
        """Show ``coordinator``'s job from now on (its fleet, progress and planner)."""
        self._coordinator = coordinator

    async def refresh(self) -> None:
        """Bring what comes from other processes (ROMA's stats) up to date; never raises."""
        if self.roma is not None:
            await self.roma.refresh()

    def snapshot(self) -> dict[str, Any]:
        """The page's data (``{"job": ..., "agents": ..., "roma": ...}``); before
        :meth:`watch`, ``{"job": None, ...}``."""
        c = self._coordinator
        if c is None:
            snap: dict[str, Any] = {
                "job": None,
                "curve": [],
                "plan": {},
                "prediction": {},
                "agents": [],
                "fleet": {},
            }
        else:
            snap = job_snapshot(
                spec=c.spec,
                agents=list(c.fleet.registry),
                progress=c.progress,
                state=c.state,
                prediction=c.prediction(),
                initial_accuracy=c.initial_accuracy,
                dropped=c.fleet.dropped,
                now=time.monotonic(),
                stale_after_s=c.fleet.registry.stale_after_s,
            )
        snap["roma"] = None if self.roma is None else self.roma.snapshot()
        return snap

    # ------------------------------------------------------------------ HTTP

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_headers], client_max_size=1024)
        app[_DASHBOARD] = self
        app.router.add_get("/", _index)
        app.router.add_get("/static/{name}", _static)
        app.router.add_get("/api/snapshot", _snapshot)
        app.router.add_get("/events", _events)

        async def on_shutdown(app: web.Application) -> None:
            self.closing.set()

        app.on_shutdown.append(on_shutdown)
        return app


_DASHBOARD: Final = web.AppKey("dashboard", Dashboard)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(_SECURITY_HEADERS)
        raise
    if not response.prepared:
        response.headers.update(_SECURITY_HEADERS)
    return response


async def _index(request: web.Request) -> web.Response:
    return web.Response(
        body=_asset("index.html"),
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": "no-cache"},
    )


async def _static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    kind = _STATIC.get(name)
    if kind is None:
        raise web.HTTPNotFound(text="no such file")
    return web.Response(
        body=_asset(name), content_type=kind, charset="utf-8", headers={"Cache-Control": "no-cache"}
    )


def _json(snapshot: dict[str, Any]) -> str:
    return json.dumps(snapshot, separators=(",", ":"), allow_nan=False)


async def _snapshot(request: web.Request) -> web.Response:
    dash = request.app[_DASHBOARD]
    await dash.refresh()
    body = _json(dash.snapshot())
    return web.Response(
        text=body, content_type="application/json", headers={"Cache-Control": "no-store"}
    )


async def _events(request: web.Request) -> web.StreamResponse:
    dash = request.app[_DASHBOARD]
    if dash.clients >= dash.max_clients:
        raise web.HTTPServiceUnavailable(text=f"at most {dash.max_clients} live pages")
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
            **_SECURITY_HEADERS,
        }
    )
    dash.clients += 1
    try:
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        last, quiet = "", 0.0
        while not dash.closing.is_set():
            await dash.refresh()
            data = _json(dash.snapshot())
            if data != last:
                await response.write(f"event: snapshot\ndata: {data}\n\n".encode())
                last, quiet = data, 0.0
            elif quiet >= _KEEPALIVE_S:
                await response.write(b": keep-alive\n\n")
                quiet = 0.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(dash.closing.wait(), dash.interval_s)
            quiet += dash.interval_s
    except ConnectionError:  # the page went away
        pass
    finally:
        dash.clients -= 1
    return response


@asynccontextmanager
async def open_dashboard(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    roma_url: str | None = None,
    interval_s: float = 1.0,
    roma_interval_s: float = 2.0,
    max_clients: int = 32,
) -> AsyncIterator[tuple[Dashboard, str]]:
    """Serve a :class:`Dashboard` on ``host:port`` (0: a free port) for the ``async with``
    block; yields it and its URL (``http://host:port/``). Pages get a new snapshot every
    ``interval_s`` seconds when it changed. With ``roma_url`` (``http(s)://...``) ROMA's stats
    are polled every ``roma_interval_s`` seconds while a page watches. Raises :class:`~coordinator.errors.DashboardError`
    when the address cannot be bound or ``roma_url`` is not an http(s) URL."""
    if roma_url is not None and not roma_url.startswith(("http://", "https://")):
        raise DashboardError(f"the ROMA URL must be http:// or https://, got {roma_url!r}")
    dash = Dashboard(
        roma_url=roma_url,
        interval_s=interval_s,
        roma_interval_s=roma_interval_s,
        max_clients=max_clients,
    )
    runner = web.AppRunner(
        dash.app(), access_log=None, shutdown_timeout=5.0, logger=_RequestLog(_log, {})
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise DashboardError(f"cannot serve the dashboard on {host}:{port}: {exc}") from exc
    bound = runner.addresses[0]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{int(bound[1])}/"
    try:
        yield dash, url
    finally:
        dash.closing.set()
        await runner.cleanup()
        if dash.roma is not None:
            await dash.roma.aclose()
