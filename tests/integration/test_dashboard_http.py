"""The dashboard's HTTP server, real and on a real socket: bad requests get 4xx and leave it
healthy, event streams are capped and end with the server, ROMA's answers are checked."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from support import CAPS

from coordinator.dashboard import Dashboard, open_dashboard
from coordinator.errors import DashboardError
from coordinator.fleet import InMemoryFleet
from coordinator.job import JobSpec
from coordinator.service import Coordinator
from protocol import Hello, Shard, TrainIns, TrainRes

MALFORMED: list[bytes] = [
    b"GARBAGE\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),  # a TLS ClientHello
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
    b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Name: y\r\n\r\n",
    b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    b"POST /api/snapshot HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    b"DELETE / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /nothing-here HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /static/../../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /static/%2e%2e%2f_server.py HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /static/index.html%00.js HTTP/1.1\r\nHost: x\r\n\r\n",
]


def _raw(port: int, request: bytes) -> bytes:
    """Send ``request`` on a fresh connection; return the start of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
            if b"\r\n" in answer:
                break
        return answer


def _port(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


def _coordinator(tmp_path: Path) -> Coordinator:
    """A coordinator over two in-process agents, not started: what a page sees before round 1."""
    hello = Hello(device_class="x86-cpu", arch=CAPS.arch, cores=2, memory_bytes=1 << 30, num_examples=10)  # fmt: skip

    async def never(ins: TrainIns) -> TrainRes | None:
        return None

    spec = JobSpec.model_validate(
        {
            "job_id": "http-test",
            "holdout": str(tmp_path / "holdout.npz"),
            "constraints": {"target_accuracy": 0.9, "time_budget_s": 60},
        }
    )
    holdout = Shard(x=np.zeros((2, 4), dtype=np.float32), y=np.zeros(2, dtype=np.int64))
    return Coordinator(
        spec=spec,
        fleet=InMemoryFleet({"a-1": (hello, never), "a-2": (hello, never)}),
        holdout=holdout,
        state_dir=tmp_path / "state",
        out_dir=tmp_path / "out",
    )


def test_malformed_http_gets_4xx_and_the_dashboard_stays_healthy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> tuple[list[tuple[bytes, bytes]], int, dict[str, Any], str, str]:
        async with open_dashboard(port=0) as (dashboard, url):
            dashboard.watch(_coordinator(tmp_path))
            port = _port(url)
            answers = [(req[:40], await asyncio.to_thread(_raw, port, req)) for req in MALFORMED]
            # half a request, then the client goes away
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHo")
            async with aiohttp.ClientSession() as session:
                async with session.get(url) as r:
                    page = await r.text()
                    csp = r.headers["Content-Security-Policy"]
                    status = r.status
                async with session.get(url + "api/snapshot") as r:
                    snap = await r.json()
        return answers, status, snap, page, csp

    caplog.set_level(logging.INFO)
    answers, status, snap, page, csp = asyncio.run(go())
    for request, answer in answers:
        code = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else None
        assert code is not None, (request, answer)
        assert 400 <= code < 500, (request, answer)
    assert status == 200
    assert "/static/dashboard.js" in page
    assert "default-src 'self'" in csp
    assert snap["job"]["job_id"] == "http-test"
    assert [a["id"] for a in snap["agents"]] == ["a-1", "a-2"]
    # A client's garbage is one INFO line each, never an ERROR with a traceback.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert any("malformed request" in r.getMessage() for r in caplog.records)


async def _first_event(response: aiohttp.ClientResponse) -> dict[str, Any]:
    async for line in response.content:
        if line.startswith(b"data: "):
            data: dict[str, Any] = json.loads(line[len(b"data: ") :])
            return data
    raise AssertionError("the stream ended without an event")


def test_event_streams_send_snapshots_are_capped_and_end_with_the_server(tmp_path: Path) -> None:
    async def go() -> tuple[dict[str, Any], int, int, int]:
        async with (
            open_dashboard(port=0, max_clients=2, interval_s=0.1) as (dashboard, url),
            aiohttp.ClientSession() as session,
        ):
            dashboard.watch(_coordinator(tmp_path))
            one = await session.get(url + "events")
            two = await session.get(url + "events")
            event = await _first_event(one)
            await _first_event(two)
            three = await session.get(url + "events")
            refused = three.status
            one.close()
            while dashboard.clients > 1:  # the server notices the page has gone
                await asyncio.sleep(0.05)
            again = await session.get(url + "events")
            await _first_event(again)
            accepted = again.status
            open_at_exit = dashboard.clients
        # Leaving the block closed the server with two streams still open, and returned.
        return event, refused, accepted, open_at_exit

    event, refused, accepted, open_at_exit = asyncio.run(asyncio.wait_for(go(), 60))
    assert event["job"]["job_id"] == "http-test"
    assert event["roma"] is None  # no ROMA configured: no panel
    assert refused == 503
    assert accepted == 200
    assert open_at_exit == 2


@asynccontextmanager
async def broken_roma(routes: web.RouteTableDef) -> AsyncIterator[str]:
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def test_the_roma_panel_reports_what_is_wrong_and_keeps_only_known_fields() -> None:
    """A server answering ROMA's endpoints badly (wrong shapes, non-finite numbers, extra and
    nested fields), then a closed port: the panel says so, and never passes junk on."""
    routes = web.RouteTableDef()
    answers: list[Any] = [{"not": "a list"}, [{"name": "m"}, {"no": "name"}, "junk"]]

    @routes.post("/v2/repository/index")
    async def index(request: web.Request) -> web.Response:
        return web.json_response(answers.pop(0) if len(answers) > 1 else answers[0])

    @routes.get("/v2/models/m/stats")
    async def stats(request: web.Request) -> web.Response:
        body = '{"sla_ms": 50, "window_response_ms": NaN, "requests": 3, "cores": {"x": 1}, "secret": "s", "state": "READY"}'
        return web.Response(text=body, content_type="application/json")

    async def go() -> list[dict[str, Any]]:
        seen = []
        async with broken_roma(routes) as url:
            dashboard = Dashboard(roma_url=url, roma_interval_s=0.0)
            for _ in range(2):
                await dashboard.refresh()
                seen.append(dashboard.snapshot()["roma"])
        await dashboard.refresh()  # the server is gone now
        seen.append(dashboard.snapshot()["roma"])
        assert dashboard.roma is not None
        await dashboard.roma.aclose()
        return seen

    bad_index, good, gone = asyncio.run(go())
    assert bad_index["ok"] is False
    assert "not a list" in bad_index["error"]
    assert good["ok"] is True
    (model,) = good["models"]
    assert model["name"] == "m"
    assert model["sla_ms"] == 50
    assert model["window_response_ms"] is None  # NaN never reaches the page
    assert model["requests"] == 3
    assert model["cores"] is None  # not a number
    assert "secret" not in model
    json.dumps(good, allow_nan=False)
    assert gone["ok"] is False
    assert gone["models"] == good["models"]  # the last answer stays on the panel, marked stale


def test_a_bad_roma_url_or_a_taken_port_is_a_dashboard_error() -> None:
    async def go() -> None:
        with pytest.raises(DashboardError, match="http"):
            async with open_dashboard(roma_url="ftp://example.org"):
                pass
        async with open_dashboard(port=0) as (_, url):
            with pytest.raises(DashboardError, match="cannot serve"):
                async with open_dashboard(port=_port(url)):
                    pass

    asyncio.run(go())
