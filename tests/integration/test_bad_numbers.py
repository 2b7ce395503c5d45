"""Numbers from the wire, over a real Mosquitto with real agent daemons (issue 13 §1).

A well-formed message can still carry a number no honest sender would: a zero speed that a planner
divides by, an empty shard that can never train. Each case costs only the agent that sent it.
"""

from __future__ import annotations

import asyncio
import time

import keras
import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from support import make_agent, running

from agent.numpy_trainer import NumpyTrainer
from coordinator.engine import start
from coordinator.mqtt_fleet import open_mqtt_fleet
from coordinator.planners.hyperfl import HyperFLPlanner, HyperFLSettings
from protocol import (
    Hello,
    Shard,
    Status,
    Topics,
    TrainConfig,
    TrainIns,
    encode,
    new_envelope,
    parse_broker_url,
)

MODEL_JSON = keras.Sequential(
    [keras.Input((4,)), keras.layers.Dense(2, activation="softmax")]
).to_json()
WEIGHTS = (np.zeros((4, 2), dtype=np.float32), np.zeros(2, dtype=np.float32))
EMPTY = Shard(x=np.zeros((0, 4), dtype=np.float32), y=np.zeros(0, dtype=np.int64))


def test_a_retained_hello_with_a_zero_train_rate_is_dropped_and_the_planner_runs(
    broker_url: str, unique_topic_prefix: str
) -> None:
    """Before: the hello was admitted and the hyperFL planner raised ZeroDivisionError, again on
    every restart while the hello stayed retained. Now it is an ``out_of_range`` drop."""
    topics = Topics(unique_topic_prefix)
    address = parse_broker_url(broker_url)
    zero = Hello(
        device_class="raspberry-pi-5",
        arch="aarch64",
        cores=4,
        memory_bytes=1 << 30,
        num_examples=50,
        profile={"train_rate": 0.0, "uplink_mbps": 5.0, "downlink_mbps": 20.0, "rtt_ms": 80.0},
    )
    raw = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{unique_topic_prefix}-raw")
    raw.connect(address.host, address.port)
    raw.loop_start()
    try:
        for topic, body in (
            (topics.hello("pi-0"), zero),
            (topics.status("pi-0"), Status(state="online")),
        ):
            raw.publish(topic, encode(new_envelope(body, sender="pi-0")), qos=1, retain=True)
            time.sleep(0.1)

        async def go() -> None:
            async with (
                running(
                    [make_agent("good-0", broker_url, unique_topic_prefix, NumpyTrainer(EMPTY))]
                ),
                open_mqtt_fleet(broker=address, topics=topics) as fleet,
            ):
                async with asyncio.timeout(10):
                    while fleet.dropped["out_of_range"] < 1 or not fleet.registry.available():
                        await asyncio.sleep(0.05)
                assert [r.agent_id for r in fleet.registry.available()] == ["good-0"]
                record = fleet.registry.get("pi-0")
                assert record is None or record.hello is None
                planner = HyperFLPlanner(HyperFLSettings(), model_bytes=1000)
                plan = planner.plan(
                    start("job", WEIGHTS),
                    fleet.registry.available(),
                    budget_left_s=60.0,
                    train_options={},
                )
                assert plan.participants == ("good-0",)

        asyncio.run(go())
    finally:
        for topic in (topics.hello("pi-0"), topics.status("pi-0")):  # clear what was retained
            raw.publish(topic, b"", qos=1, retain=True)
        time.sleep(0.1)
        raw.loop_stop()
        raw.disconnect()


def test_an_agent_with_an_empty_shard_says_no_data(
    broker_url: str, unique_topic_prefix: str
) -> None:
    """Before: it trained zero steps and replied "the deadline left no time for one step". It is
    also never offered for selection (it announces ``num_examples = 0``)."""
    agent = make_agent(
        "empty-0", broker_url, unique_topic_prefix, NumpyTrainer(EMPTY), num_examples=0
    )

    async def go() -> tuple[dict[str, str], list[str]]:
        async with (
            running([agent]),
            open_mqtt_fleet(
                broker=parse_broker_url(broker_url), topics=Topics(unique_topic_prefix)
            ) as fleet,
        ):
            async with asyncio.timeout(10):
                while (record := fleet.registry.get("empty-0")) is None or record.hello is None:
                    await asyncio.sleep(0.05)
            available = [r.agent_id for r in fleet.registry.available()]
            ins = TrainIns(
                model=MODEL_JSON,
                weights=WEIGHTS,
                config=TrainConfig(local_steps=2, batch_size=4),
                budget_s=10.0,
            )
            replies = await fleet.train(
                job_id="job",
                round=1,
                instructions={"empty-0": ins},
                reference=WEIGHTS,
                quorum=1,
                timeout_s=10.0,
            )
            return replies.failures, available

    failures, available = asyncio.run(go())
    assert available == []
    assert failures["empty-0"].startswith("no_data:")
