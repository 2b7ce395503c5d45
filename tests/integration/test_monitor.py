"""``hyperfleet monitor`` over a real Mosquitto, as a subprocess: a real agent daemon (status,
hello, heartbeats, a reply to a real instruction), a job's state, a model reference, serving stats
and garbage come out as the right JSON events with ``--json``, and as the right rows in the
rendered frame without it."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from support import ScriptedTrainer, make_agent, running

from link.mqtt import mqtt_client
from protocol import (
    JobState,
    ModelRef,
    ServingStats,
    Topics,
    TrainConfig,
    TrainIns,
    encode,
    new_envelope,
    parse_broker_url,
)

AGENT = "edge-monitored"
JOB = "digits-job"


def _command(broker_url: str, prefix: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "hyperfleet", "monitor", "--broker", broker_url,
            "--prefix", prefix, *extra]  # fmt: skip


@pytest.fixture
def retained(broker_url: str, unique_topic_prefix: str) -> Iterator[Topics]:
    """A job's state, a model reference, serving stats and garbage, retained on the broker."""
    topics = Topics(unique_topic_prefix)
    state = JobState(status="running", round=7, accuracy=0.812, best_accuracy=0.83,
                     target_accuracy=0.9, elapsed_s=40.0, time_budget_s=300.0,
                     participants=(AGENT,), plan={"predicted_time_to_target_s": 55.0})  # fmt: skip
    ref = ModelRef(name="digits", version=3, job_id=JOB, format="keras", url="http://h/m.keras",
                   sha256="0" * 64, size_bytes=10, metrics={"accuracy": 0.91})  # fmt: skip
    stats = ServingStats(model="digits", version=3, state="READY", sla_ms=20.0, percentile=95.0,
                         window_s=5.0, period_s=5.0, response_ms=14.5, p95_ms=14.5,
                         violation_share=0.01, requests_per_s=33.0, requests=990,
                         cores=1.5)  # fmt: skip

    async def publish(items: list[tuple[str, bytes]]) -> None:
        broker = parse_broker_url(broker_url)
        async with mqtt_client(broker, identifier=f"test-retain-{os.getpid()}") as client:
            for topic, payload in items:
                await client.publish(topic, payload, qos=1, retain=True)

    items = [
        (topics.job_state(JOB), encode(new_envelope(state, sender="coord", job_id=JOB, round=7))),
        (topics.model_latest("digits"), encode(new_envelope(ref, sender="coord"))),
        (topics.serving_stats("digits"), encode(new_envelope(stats, sender="hf-roma-1"))),
        (topics.job_state("broken"), b"\x00not a frame"),
    ]
    asyncio.run(publish(items))
    yield topics
    asyncio.run(publish([(topic, b"") for topic, _ in items]))  # clear what we retained


def test_json_mode_prints_every_message_decoded_or_undecodable(
    broker_url: str, unique_topic_prefix: str, retained: Topics
) -> None:
    topics = retained
    trainer = ScriptedTrainer()
    agent = make_agent(AGENT, broker_url, unique_topic_prefix, trainer, heartbeat_s=0.2)
    instruction = new_envelope(
        TrainIns(model="{}", weights=(np.zeros((4, 2), np.float32),),
                 config=TrainConfig(local_steps=1), budget_s=5.0),
        sender="coordinator", job_id=JOB, round=8,
    )  # fmt: skip

    async def go() -> tuple[list[dict[str, Any]], str, int]:
        async with running([agent]):
            proc = await asyncio.create_subprocess_exec(
                *_command(broker_url, unique_topic_prefix, "--json", "--duration", "3"),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            assert proc.stdout is not None
            assert proc.stderr is not None
            first = await asyncio.wait_for(proc.stdout.readline(), 30)  # subscribed: retained came
            async with mqtt_client(parse_broker_url(broker_url), identifier="test-coord") as c:
                await c.publish(topics.inbox(AGENT), encode(instruction), qos=1)
            rest, err = await asyncio.wait_for(proc.communicate(), 30)
            assert await proc.wait() == 0
        lines = (first + rest).decode().splitlines()
        return [json.loads(line) for line in lines], err.decode(), len(lines)

    events, stderr, count = asyncio.run(go())
    assert count == len(events) > 0, stderr
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_kind.setdefault(e["kind"], []).append(e)
    job = next(e for e in by_kind["job state"] if e["outcome"] == "decoded")
    assert (job["type"], job["body"]["round"], job["body"]["accuracy"]) == ("JobState", 7, 0.812)
    (broken,) = [e for e in by_kind["job state"] if e["outcome"] == "undecodable"]
    assert broken["topic"] == topics.job_state("broken")
    assert broken["error_type"] == "MalformedMessage"
    assert "bad magic" in broken["error"]
    assert by_kind["models"][0]["body"]["version"] == 3
    assert by_kind["serving"][0]["body"]["p95_ms"] == 14.5
    hello = by_kind["hello"][0]
    assert (hello["sender"], hello["body"]["device_class"]) == (AGENT, "x86-cpu")
    assert by_kind["status"][0]["body"]["state"] == "online"
    beats = [e for e in by_kind["heartbeat"] if e["outcome"] == "decoded"]
    assert len(beats) >= 2
    assert all(e["sender"] == AGENT for e in beats)
    (ins,) = by_kind["inbox"]
    assert ins["msg_id"] == instruction.msg_id
    assert ins["body"]["weights"] == [{"dtype": "<f4", "shape": [4, 2]}]
    (reply,) = by_kind["results"]
    assert (reply["type"], reply["reply_to"]) == ("TrainRes", instruction.msg_id)


def test_the_screen_shows_the_agents_and_the_job_round(
    broker_url: str, unique_topic_prefix: str, retained: Topics
) -> None:
    agent = make_agent(AGENT, broker_url, unique_topic_prefix, ScriptedTrainer(), heartbeat_s=0.2)

    async def go() -> tuple[str, str, int]:
        async with running([agent]):
            proc = await asyncio.create_subprocess_exec(
                *_command(broker_url, unique_topic_prefix, "--duration", "3"),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "COLUMNS": "220", "LINES": "60"},
            )
            out, err = await asyncio.wait_for(proc.communicate(), 30)
            return out.decode(), err.decode(), await proc.wait()

    screen, stderr, status = asyncio.run(go())
    assert status == 0, stderr
    agent_line = next(line for line in screen.splitlines() if AGENT in line)
    assert "online" in agent_line
    assert "x86-cpu" in agent_line
    job_line = next(line for line in screen.splitlines() if JOB in line)
    assert " 7 " in job_line
    assert "0.8120" in job_line
    assert "target in ~55s" in job_line
    model_line = next(line for line in screen.splitlines() if line.strip().startswith("digits "))
    assert "v3" in model_line
    assert "p95 14.5 / 20 ms" in model_line
    assert f"undecodable on {retained.job_state('broken')}: " in screen
    assert "connected" in screen
