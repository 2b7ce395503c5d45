"""The dashboard in a real browser: a coordinator and three NumPy agents over a real Mosquitto, a
real ROMA in-process (following the job's model), and Debian's chromium driven by Playwright.

The page is opened before the job starts, so everything it shows at the end came live, by
server-sent events. A screenshot is saved to ``results/test-artifacts/dashboard.png``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support import digits_split, numpy_agents, running

from cloud.roma import RomaRunner, ServeConfig
from coordinator.dashboard import open_dashboard
from coordinator.job import JobSpec
from coordinator.mqtt_fleet import open_mqtt_fleet
from coordinator.service import Coordinator
from protocol import Topics, encode_shard, parse_broker_url

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "results" / "test-artifacts" / "dashboard.png"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
_NO_CHROMIUM = (
    "no chromium at /usr/bin/chromium or on PATH; the dashboard's browser test needs it: "
    "`make chromium` installs it as root, or sudo apt-get install chromium "
    "(never `playwright install`)"
)
ROUNDS = 6
"""Rounds of the job: the learning curve predicts from its fourth point, so the plans of
rounds 5 and 6 carry the planner's prediction."""


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium; skips (fails under CI) when it or Playwright is missing."""
    binary = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )
    problem = _NO_CHROMIUM if binary is None else None
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        problem = "playwright is not installed: pip install -e '.[dev]'"
    if problem is not None:
        if _in_ci():
            pytest.fail(f"CI is set but {problem}", pytrace=False)
        pytest.skip(problem)
    assert binary is not None
    return binary


async def wait_until(page: Any, predicate: str, *, timeout_s: float) -> None:
    """Poll ``predicate`` (a JavaScript function of no arguments) until it returns true.
    Playwright's ``wait_for_function`` evaluates its predicate with ``eval``, which the page's
    Content-Security-Policy forbids; ``page.evaluate`` goes through the DevTools protocol."""
    async with asyncio.timeout(timeout_s):
        while not await page.evaluate(predicate):
            await asyncio.sleep(0.1)


async def infer(url: str, rows: list[list[float]]) -> None:
    """One KServe v2 request per row to the served model, so the SLA panel has numbers."""
    async with aiohttp.ClientSession() as session:
        for row in rows:
            body = {"inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP32",
                                "data": row}]}  # fmt: skip
            async with session.post(f"{url}/v2/models/digits-dash/infer", json=body) as r:
                assert r.status == 200, await r.text()


def job_spec(holdout: Path) -> JobSpec:
    return JobSpec.model_validate(
        {
            "job_id": "digits-live",
            "holdout": str(holdout),
            "model": {"name": "digits-dash", "hidden": [16]},
            "planner": {"name": "hyperfl", "min_deadline_s": 5.0},
            "rounds": {
                "participants": 3,
                "round_timeout_s": 10,
                "batch_size": 16,
                "min_agents": 3,
                "wait_for_agents_s": 10,
            },
            "constraints": {"target_accuracy": 0.99, "time_budget_s": 120, "max_rounds": ROUNDS},
        }
    )


def test_the_page_shows_the_fleet_the_curve_and_roma_live(
    chromium: str, broker_url: str, unique_topic_prefix: str, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    shards, holdout = digits_split(3, seed=2)
    holdout_path = tmp_path / "holdout.npz"
    holdout_path.write_bytes(encode_shard(holdout))
    spec = job_spec(holdout_path)
    (tmp_path / "repository").mkdir()
    roma_config = ServeConfig(
        repository=tmp_path / "repository",
        port=0,
        broker=broker_url,
        prefix=unique_topic_prefix,
        cores=1.0,
    )
    errors: list[str] = []

    async def go() -> dict[str, Any]:
        async with (
            running(numpy_agents(broker_url, unique_topic_prefix, shards)),
            RomaRunner(roma_config) as roma,
            open_dashboard(port=0, roma_url=roma.url, interval_s=0.3, roma_interval_s=0.5) as (
                dashboard,
                url,
            ),
            async_playwright() as pw,
        ):
            browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 1000})
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.on(
                    "console",
                    lambda msg: errors.append(msg.text) if msg.type == "error" else None,
                )
                await page.goto(url)
                await page.wait_for_selector("body[data-rendered]")
                first = await page.text_content("#job-status")
                async with open_mqtt_fleet(
                    broker=parse_broker_url(broker_url),
                    topics=Topics(unique_topic_prefix),
                    job_id=spec.job_id,
                ) as fleet:
                    coordinator = Coordinator(
                        spec=spec,
                        fleet=fleet,
                        holdout=holdout,
                        state_dir=tmp_path / "state",
                        out_dir=tmp_path / "out",
                    )
                    dashboard.watch(coordinator)
                    outcome = await coordinator.run()
                # Everything below arrives by server-sent events: the page was loaded before.
                await wait_until(
                    page,
                    "() => document.querySelector('#accuracy-curve')?.dataset.points == "
                    f"'{ROUNDS + 1}' && document.querySelector('#job-status').textContent == "
                    "'max_rounds'",
                    timeout_s=15,
                )
                # ROMA follows models/+/latest: the job's model shows on the SLA panel.
                await page.wait_for_selector(
                    "#roma-models tr[data-model='digits-dash']", timeout=20_000
                )
                await wait_until(
                    page,
                    "() => [...document.querySelectorAll('#roma-models tr[data-model] .badge')]"
                    ".some(b => b.textContent == 'READY')",
                    timeout_s=20,
                )
                await infer(roma.url, holdout.x[:12].reshape(12, -1).tolist())
                await wait_until(  # the response-time line has two points or more
                    page,
                    "() => (document.querySelector(\"#roma-models tr[data-model='digits-dash'] "
                    "svg.spark path.line\")?.getAttribute('d') || '').includes('L')",
                    timeout_s=10,
                )
                found = await page.evaluate(
                    """() => ({
                        agents: [...document.querySelectorAll('#agents tbody tr[data-agent]')]
                            .map(tr => [...tr.cells].map(td => td.textContent)),
                        path: document.querySelector('#accuracy-curve').getAttribute('d'),
                        dots: document.querySelectorAll('#chart circle.dot').length,
                        predicted: document.querySelector('#predicted-curve')
                            ?.getAttribute('data-points'),
                        roma: !document.querySelector('#roma').hidden,
                        romaError: document.querySelector('#roma-error').hidden
                            ? '' : document.querySelector('#roma-error').textContent,
                        plan: document.querySelector('#plan-facts').textContent,
                    })"""
                )
                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                await page.screenshot(path=str(SCREENSHOT), full_page=True)
            finally:
                await browser.close()
        return {"first": first, "outcome": outcome, **found}

    found = asyncio.run(go())
    assert found["first"] == "starting", "the page showed the coordinator before its job began"
    assert found["outcome"].progress.round == ROUNDS
    rows = {cells[0]: cells for cells in found["agents"]}
    assert sorted(rows) == ["agent-000", "agent-001", "agent-002"]
    for cells in rows.values():
        assert cells[2] == "x86-cpu"  # the device class from each agent's hello
        assert cells[4].endswith("ago")  # a heartbeat arrived
        assert int(cells[6]) >= 1  # chosen
    assert sum(int(cells[7]) for cells in rows.values()) >= ROUNDS  # replies aggregated
    points = found["path"].replace("M", " ").replace("L", " ").split()
    assert len(points) == 2 * (ROUNDS + 1)  # the initial model and every round, as x y pairs
    assert found["dots"] == ROUNDS + 1
    assert int(found["predicted"]) >= 1  # what the planner predicted when it planned a round
    assert found["roma"], "the ROMA panel is shown"
    assert found["romaError"] == ""
    assert "round deadline" in found["plan"]  # hyperFL's plan reached the page
    assert errors == []
    assert SCREENSHOT.stat().st_size > 10_000
