"""ROMA publishes how it serves each model, retained, on ``serving/{model}/stats`` of a real
Mosquitto (for ``hyperfleet monitor``): the version serving, the response time against the SLA,
the request rate and the cores, decodable by the protocol codec."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import numpy as np

from cloud.roma import RomaRunner, ServeConfig
from link.mqtt import mqtt_client
from protocol import ServingStats, Topics, decode, parse_broker_url

from .conftest import TrainedModels, make_repository

REQUESTS = 12


async def _infer(session: aiohttp.ClientSession, url: str, x: np.ndarray) -> None:
    body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.reshape(-1).tolist()}]}  # fmt: skip
    async with session.post(f"{url}/v2/models/digits/infer", json=body) as response:
        assert response.status == 200, await response.text()


async def _retained_stats(broker_url: str, topic: str, *, name: str) -> list[ServingStats]:
    """Every ServingStats the broker delivers on ``topic`` until one has seen all requests."""
    seen: list[ServingStats] = []
    async with mqtt_client(parse_broker_url(broker_url), identifier=name) as client:
        await client.subscribe(topic, qos=1)
        async with asyncio.timeout(30):
            async for message in client.messages:
                payload = message.payload
                assert isinstance(payload, bytes)
                stats = decode(payload).body
                assert isinstance(stats, ServingStats)
                seen.append(stats)
                if stats.requests >= REQUESTS:
                    return seen
    raise AssertionError("unreachable")


def test_roma_publishes_retained_serving_stats(
    tmp_path: Path, broker_url: str, unique_topic_prefix: str, digits_models: TrainedModels
) -> None:
    repo = make_repository(tmp_path / "repo", digits_models)  # sla_ms = 50
    topics = Topics(unique_topic_prefix)
    config = ServeConfig(repository=repo, port=0, broker=broker_url, prefix=unique_topic_prefix,
                         stats_period_s=0.2)  # fmt: skip

    async def go() -> tuple[list[ServingStats], ServingStats, int]:
        async with RomaRunner(config) as runner, aiohttp.ClientSession() as session:
            for i in range(REQUESTS):
                await _infer(session, runner.url, digits_models.x[i : i + 1])
            live = await _retained_stats(broker_url, topics.serving_stats("digits"), name="t1")
            assert runner.follower is not None
            published = runner.follower.stats_published
        # After ROMA has gone, a newcomer still gets its last stats: they are retained.
        (last,) = (await _retained_stats(broker_url, topics.serving_stats("digits"), name="t2"))[:1]
        return live, last, published

    live, last, published = asyncio.run(go())
    assert published >= 1
    stats = live[-1]
    assert (stats.model, stats.version, stats.state) == ("digits", 1, "READY")
    assert (stats.sla_ms, stats.percentile, stats.period_s) == (50.0, 95.0, 0.2)
    assert stats.requests == REQUESTS
    assert stats.shed == 0
    assert stats.p95_ms is not None
    assert stats.p95_ms > 0
    assert stats.response_ms is not None
    assert stats.violation_share is not None
    assert 0.0 <= stats.violation_share <= 1.0
    assert stats.requests_per_s > 0
    assert stats.cores > 0
    assert last.requests == REQUESTS
    assert last.state == "STOPPED"  # the last word of a server that stopped cleanly
