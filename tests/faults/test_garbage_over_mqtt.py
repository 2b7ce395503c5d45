"""Raw garbage on every topic the coordinator and the agents read, while a job runs (issue 17 §2).

A real Mosquitto, three real agent daemons (NumPy trainers on digits) and the real MQTT fleet
under the coordinator. A raw paho client publishes, on every topic either side subscribes to:

- random bytes, and random bytes behind a valid frame prefix;
- valid frames of the wrong type (a ``JobState`` on a results topic, a ``TrainRes`` in an
  inbox, ...);
- frames claiming another sender than the topic's (``agent-002`` on ``agent-001``'s topics, an
  instruction from ``vandal`` in an inbox);
- payloads of 17 MiB, over the 16 MiB frame limit and under the broker's packet limit;
- retained garbage on a job's state topic and a ghost agent's status and hello, delivered again
  on every subscribe.

Every one is counted under its :class:`~protocol.ProtocolError` code and dropped, by the
coordinator (``fleet.dropped``) and by the agents (``agent.dropped``); the job runs every round
with every agent's result. ``tests/integration/test_job_over_mqtt.py`` keeps a shorter version
in ``make test``.
"""

from __future__ import annotations

import asyncio
import random
import struct
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from support import digits_split, numpy_agents, running

from coordinator.job import JobSpec
from coordinator.mqtt_fleet import MqttFleet, open_mqtt_fleet
from coordinator.service import Coordinator, JobOutcome
from protocol import (
    Heartbeat,
    Hello,
    JobState,
    Message,
    Topics,
    TrainConfig,
    TrainIns,
    TrainRes,
    encode,
    encode_shard,
    new_envelope,
    parse_broker_url,
)

JOB = "garbage"
ROUNDS = 3
OVERSIZE = 17 * 1024 * 1024
W = (np.zeros((64, 10), np.float32), np.zeros(10, np.float32))


def _spec(holdout: Path) -> JobSpec:
    return JobSpec.model_validate(
        {
            "job_id": JOB,
            "holdout": str(holdout),
            "model": {"hidden": []},
            "rounds": {
                "participants": 3,
                "min_agents": 3,
                "round_timeout_s": 20,
                "batch_size": 16,
                "wait_for_agents_s": 10,
            },
            "constraints": {"target_accuracy": 0.99, "time_budget_s": 120, "max_rounds": ROUNDS},
        }
    )


def _frame(body: Message, sender: str, **kw: Any) -> bytes:
    return encode(new_envelope(body, sender=sender, **kw))


def _garbage(topics: Topics, rng: random.Random) -> list[tuple[str, bytes]]:
    """One pass of garbage: (topic, payload) on every topic the coordinator or an agent reads."""
    junk = rng.randbytes(rng.randint(1, 2000))
    framed = struct.pack(">2sI", b"HF", 40) + rng.randbytes(40)
    beat = Heartbeat(seq=1, busy=False, load=0.0, memory_used_bytes=0)
    res = TrainRes(weights=W, num_examples=1, steps=1, loss=0.1, train_s=0.1)
    ins = TrainIns(model="{}", weights=W, config=TrainConfig(), budget_s=5.0)
    state = JobState(
        status="running",
        round=1,
        accuracy=0.1,
        best_accuracy=0.1,
        target_accuracy=0.9,
        elapsed_s=1.0,
        time_budget_s=60.0,
    )
    hello = Hello(device_class="x", arch="x86_64", cores=1, memory_bytes=1, num_examples=1)
    out: list[tuple[str, bytes]] = []
    for agent in ("agent-001", "ghost-9"):
        for kind in ("status", "hello", "heartbeat", "results"):
            topic = topics.agent(agent, kind)
            out += [(topic, junk), (topic, framed)]
        # the wrong type on each of the coordinator's topics
        out.append((topics.status(agent), _frame(ins, agent)))
        out.append((topics.hello(agent), _frame(beat, agent)))
        out.append((topics.heartbeat(agent), _frame(res, agent, job_id=JOB, round=1)))
        out.append((topics.results(agent), _frame(state, agent, job_id=JOB, round=1)))
    # another sender than the topic's
    out.append((topics.heartbeat("agent-001"), _frame(beat, "agent-002")))
    out.append((topics.hello("agent-001"), _frame(hello, "agent-002")))
    out.append((topics.results("agent-001"), _frame(res, "agent-002", job_id=JOB, round=1)))
    # what the agents read: agent-000's inbox and its own heartbeats
    inbox, own = topics.inbox("agent-000"), topics.heartbeat("agent-000")
    out += [(inbox, junk), (inbox, framed), (own, junk)]
    out.append((inbox, _frame(res, "coordinator", job_id=JOB, round=1)))  # wrong type
    out.append((inbox, _frame(ins, "vandal", job_id=JOB, round=1)))  # another sender
    out.append((own, _frame(beat, "agent-001")))  # another sender on its own heartbeats
    # the job's state topic
    state_topic = topics.job_state(JOB)
    out += [(state_topic, junk), (state_topic, _frame(beat, "coordinator"))]
    return out


def test_garbage_on_every_topic_is_counted_and_dropped_and_the_job_completes(
    broker_url: str, unique_topic_prefix: str, tmp_path: Path
) -> None:
    shards, holdout = digits_split(3, seed=2)
    holdout_path = tmp_path / "holdout.npz"
    holdout_path.write_bytes(encode_shard(holdout))
    topics = Topics(unique_topic_prefix)
    address = parse_broker_url(broker_url)
    raw = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{unique_topic_prefix}-vandal")
    raw.connect(address.host, address.port)
    raw.loop_start()
    retained = [
        topics.job_state(JOB),
        topics.status("ghost-1"),
        topics.hello("ghost-1"),
    ]
    sent = {"passes": 0, "oversize": 0}
    stop = threading.Event()

    def publish(topic: str, payload: bytes, *, retain: bool = False) -> None:
        raw.publish(topic, payload, qos=1, retain=retain).wait_for_publish(30)

    def vandal() -> None:
        rng = random.Random(17)
        big = rng.randbytes(OVERSIZE)
        for topic in (
            topics.results("agent-001"),
            topics.hello("ghost-9"),
            topics.inbox("agent-000"),
        ):
            publish(topic, big)
            sent["oversize"] += 1
        while not stop.is_set():
            for topic, payload in _garbage(topics, rng):
                publish(topic, payload)
            sent["passes"] += 1
            time.sleep(0.05)

    for topic in retained:  # there before the coordinator and the agents subscribe
        publish(topic, b"\xffretained garbage", retain=True)
    agents = numpy_agents(broker_url, unique_topic_prefix, shards)

    async def go() -> tuple[JobOutcome, MqttFleet]:
        async with (
            running(agents),
            open_mqtt_fleet(broker=address, topics=topics, job_id=JOB) as fleet,
        ):
            thread = threading.Thread(target=vandal, daemon=True)
            thread.start()
            try:
                coordinator = Coordinator(
                    spec=_spec(holdout_path),
                    fleet=fleet,
                    holdout=holdout,
                    state_dir=tmp_path / "state",
                    out_dir=tmp_path / "out",
                )
                return await coordinator.run(), fleet
            finally:
                stop.set()
                await asyncio.to_thread(thread.join, 60)

    try:
        outcome, fleet = asyncio.run(go())
    finally:
        for topic in retained:
            publish(topic, b"", retain=True)
        raw.loop_stop()
        raw.disconnect()

    history = outcome.progress.history
    assert outcome.progress.round == ROUNDS, "every round ran"
    assert all(r.aggregated and r.results == 3 for r in history), [
        (r.results, r.failures) for r in history
    ]
    assert sent["passes"] >= 1
    assert sent["oversize"] == 3
    dropped = fleet.dropped
    for code in ("malformed", "oversize", "spoofed", "stale_round", "unknown_agent"):
        assert dropped[code] >= 1, (code, dict(dropped))
    assert dropped["malformed"] >= 3, "including the retained garbage on the job's state topic"
    inbox_drops = agents[0].dropped
    for code in ("malformed", "oversize", "spoofed", "unexpected"):
        assert inbox_drops[code] >= 1, (code, dict(inbox_drops))
    for agent in agents:
        assert agent.handled["TrainRes"] == ROUNDS, "each agent answered every round"
