"""Hot reload from the broker: ``hyperfleet serve --broker`` follows ``models/+/latest`` on a real
Mosquitto, fetches what is published over HTTP and serves it without a restart; garbage and a
ModelRef on another model's topic are dropped and counted."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from cloud.roma import RomaRunner, ServeConfig
from link.artifacts import ArtifactServer
from link.mqtt import mqtt_client
from protocol import (
    ModelRef,
    ServingStats,
    Topics,
    decode,
    encode,
    new_envelope,
    parse_broker_url,
)

from .conftest import TrainedModels, make_repository


async def _version(
    session: aiohttp.ClientSession, url: str, x: np.ndarray
) -> tuple[str, list[Any]]:
    body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.reshape(-1).tolist()}]}  # fmt: skip
    async with session.post(f"{url}/v2/models/digits/infer", json=body) as response:
        doc = await response.json()
    return str(doc["model_version"]), doc["outputs"][0]["data"]


async def _served_stats(broker_url: str, topic: str, *, version: int) -> ServingStats:
    """The first retained or live ``ServingStats`` on ``topic`` that shows ``version``."""
    async with mqtt_client(parse_broker_url(broker_url), identifier="test-stats") as client:
        await client.subscribe(topic, qos=1)
        async with asyncio.timeout(30):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                stats = decode(message.payload).body
                assert isinstance(stats, ServingStats)
                if stats.version == version:
                    return stats
    raise AssertionError("unreachable")


def test_a_published_model_is_served_without_a_restart(
    tmp_path: Path,
    broker_url: str,
    unique_topic_prefix: str,
    digits_models: TrainedModels,
    digits_models_v2: TrainedModels,
) -> None:
    repo = make_repository(tmp_path / "repo", digits_models)
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    shutil.copy(digits_models_v2.tflite, artifacts / "digits-v2.tflite")
    topics = Topics(unique_topic_prefix)
    # Stats once an hour: the ones that show version 2 are those published right after its install.
    config = ServeConfig(repository=repo, port=0, broker=broker_url, prefix=unique_topic_prefix,
                         stats_period_s=3600)  # fmt: skip
    x = digits_models.x[:6]

    async def go() -> tuple[str, list[Any], dict[str, int], ServingStats]:
        async with (
            ArtifactServer(artifacts) as files,
            RomaRunner(config) as runner,
            aiohttp.ClientSession() as session,
        ):
            assert (await _version(session, runner.url, x))[0] == "1"
            assert runner.follower is not None
            # Frames published before the subscription would be lost, not dropped.
            await asyncio.wait_for(runner.follower.subscribed.wait(), 30)
            data = (artifacts / "digits-v2.tflite").read_bytes()
            ref = ModelRef(name="digits", version=2, job_id="job", format="tflite",
                           url=files.url("digits-v2.tflite"),
                           sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))  # fmt: skip
            spoof = ModelRef(name="other", version=9, job_id="job", format="tflite",
                             url=files.url("digits-v2.tflite"), sha256=ref.sha256,
                             size_bytes=ref.size_bytes)  # fmt: skip
            async with mqtt_client(parse_broker_url(broker_url), identifier="test-pub") as client:
                await client.publish(topics.model_latest("digits"), b"\x00garbage", qos=1)
                await client.publish(
                    topics.model_latest("digits"),
                    encode(new_envelope(spoof, sender="coordinator")),
                    qos=1,
                )
                await client.publish(
                    topics.model_latest("digits"),
                    encode(new_envelope(ref, sender="coordinator")),
                    qos=1,
                    retain=True,
                )
            for _ in range(300):
                version, out = await _version(session, runner.url, x)
                if version == "2":
                    break
                await asyncio.sleep(0.1)
            assert runner.follower is not None
            stats = await _served_stats(broker_url, topics.serving_stats("digits"), version=2)
            return version, out, dict(runner.follower.gate.dropped), stats

    version, out, dropped, stats = asyncio.run(go())
    assert version == "2"
    assert (stats.version, stats.state) == (2, "READY")
    np.testing.assert_allclose(
        np.asarray(out, dtype=np.float32).reshape(6, 10), digits_models_v2.expected[:6], atol=1e-6
    )
    assert dropped.get("spoofed") == 1
    assert sum(dropped.values()) == 2
