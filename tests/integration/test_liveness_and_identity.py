"""Liveness, identity and ownership facts over a real Mosquitto, with real agent daemons.

Each case failed before the fix it guards (issue 13): a ghost agent counted as available from
its retained status; two daemons under one id went unnoticed and one's stop hid the other; an
instruction of a replaced coordinator run was obeyed; a coordinator whose clock was behind its
agents' had every instruction refused as late.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from support import ScriptedTrainer, make_agent, running

from coordinator.errors import OwnershipError
from coordinator.mqtt_fleet import open_mqtt_fleet
from protocol import (
    Envelope,
    Hello,
    JobState,
    Status,
    Topics,
    TrainConfig,
    TrainIns,
    encode,
    new_envelope,
    parse_broker_url,
)

REFERENCE = (np.zeros((4, 2), dtype=np.float32),)


def raw_client(broker_url: str, name: str) -> paho.Client:
    address = parse_broker_url(broker_url)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=name)
    client.connect(address.host, address.port)
    client.loop_start()
    return client


def publish(client: paho.Client, topic: str, env: Envelope, *, retain: bool = False) -> None:
    client.publish(topic, encode(env), qos=1, retain=retain).wait_for_publish(5)


def ins(epoch: int = 0, budget_s: float = 5.0) -> TrainIns:
    return TrainIns(
        model="{}",
        weights=REFERENCE,
        config=TrainConfig(local_steps=1),
        budget_s=budget_s,
        epoch=epoch,
    )


def test_a_ghost_with_retained_status_and_hello_is_never_available(
    broker_url: str, unique_topic_prefix: str
) -> None:
    topics = Topics(unique_topic_prefix)
    raw = raw_client(broker_url, "ghost-maker")
    hello = Hello(device_class="x86-cpu", arch="x86_64", cores=2, memory_bytes=1, num_examples=9)
    publish(raw, topics.hello("ghost"), new_envelope(hello, sender="ghost"), retain=True)
    online = Status(state="online", session="s-old")
    publish(raw, topics.status("ghost"), new_envelope(online, sender="ghost"), retain=True)
    raw.loop_stop()
    raw.disconnect()

    async def go() -> tuple[int, bool]:
        async with open_mqtt_fleet(
            broker=parse_broker_url(broker_url), topics=topics, stale_after_s=2.0
        ) as fleet:
            got = await fleet.wait_for_agents(1, timeout=2.0)
            rec = fleet.registry.get("ghost")
            return got, rec is not None and rec.announced

    got, announced = asyncio.run(go())
    assert announced  # the retained messages did arrive
    assert got == 0  # but nothing fresh ever came: not available


def test_two_daemons_under_one_id_are_reported_and_one_stop_never_hides_the_other(
    broker_url: str, unique_topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    first = make_agent("twin", broker_url, unique_topic_prefix, ScriptedTrainer())
    second = make_agent("twin", broker_url, unique_topic_prefix, ScriptedTrainer())

    async def go() -> tuple[set[str], bool]:
        async with (
            open_mqtt_fleet(
                broker=parse_broker_url(broker_url), topics=Topics(unique_topic_prefix)
            ) as fleet,
            running([first]),
        ):
            async with running([second]):
                async with asyncio.timeout(10):
                    while not fleet.clashes:
                        await asyncio.sleep(0.1)
            # The second daemon stopped cleanly (its offline published); the first lives on.
            await asyncio.sleep(1.5)
            still = [r.agent_id for r in fleet.registry.available()]
            return fleet.clashes, still == ["twin"]

    clashes, first_still_available = asyncio.run(go())
    assert clashes == {"twin"}
    assert first_still_available
    assert any("another daemon" in r.message for r in caplog.records)  # the agents say so too


def test_an_agent_ignores_instructions_of_a_replaced_coordinator_epoch(
    broker_url: str, unique_topic_prefix: str
) -> None:
    topics = Topics(unique_topic_prefix)
    trainer = ScriptedTrainer()
    agent = make_agent("a1", broker_url, unique_topic_prefix, trainer)

    async def go() -> dict[str, int]:
        async with running([agent]):
            raw = raw_client(broker_url, "coordinators")
            try:
                new = new_envelope(ins(epoch=2), sender="coordinator", job_id="j", round=1)
                publish(raw, topics.inbox("a1"), new)
                await asyncio.sleep(0.5)
                old = new_envelope(ins(epoch=1), sender="coordinator", job_id="j", round=1)
                publish(raw, topics.inbox("a1"), old)
                await asyncio.sleep(0.5)
            finally:
                raw.loop_stop()
                raw.disconnect()
            return dict(agent.dropped)

    dropped = asyncio.run(go())
    assert dropped.get("stale_owner") == 1
    assert len(trainer.calls) == 1  # only the current owner's instruction was carried out


class _SkewedTime:
    """The ``time`` module as a coordinator whose wall clock is 15 s behind sees it."""

    monotonic = staticmethod(time.monotonic)

    @staticmethod
    def time() -> float:
        return _REAL_TIME() - 15.0


_REAL_TIME = time.time


def test_a_coordinator_clock_15s_behind_its_agents_still_gets_results(
    broker_url: str, unique_topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import coordinator.mqtt_fleet as mqtt_fleet

    def skewed_envelope(*args: Any, **kwargs: Any) -> Envelope:
        env = new_envelope(*args, **kwargs)
        return dataclasses.replace(env, ts=env.ts - 15.0)

    monkeypatch.setattr(mqtt_fleet, "time", _SkewedTime)
    monkeypatch.setattr(mqtt_fleet, "new_envelope", skewed_envelope)
    agent = make_agent("a1", broker_url, unique_topic_prefix, ScriptedTrainer())

    async def go() -> tuple[Any, float | None]:
        async with (
            running([agent]),
            open_mqtt_fleet(
                broker=parse_broker_url(broker_url), topics=Topics(unique_topic_prefix)
            ) as fleet,
        ):
            assert await fleet.wait_for_agents(1, timeout=5) == 1
            replies = await fleet.train(
                job_id="j",
                round=1,
                instructions={"a1": ins(budget_s=5.0)},
                reference=REFERENCE,
                quorum=1,
                timeout_s=5.0,
            )
            rec = fleet.registry.get("a1")
            return replies, rec.clock_offset_s if rec else None

    replies, offset = asyncio.run(go())
    assert list(replies.results) == ["a1"], replies.failures
    assert offset is not None
    assert offset == pytest.approx(15.0, abs=1.0)  # reported: the agent looks 15 s ahead


def test_a_second_coordinator_on_a_running_job_is_refused(
    broker_url: str, unique_topic_prefix: str
) -> None:
    topics = Topics(unique_topic_prefix)
    broker = parse_broker_url(broker_url)

    async def go() -> tuple[int, str]:
        async with open_mqtt_fleet(broker=broker, topics=topics, job_id="j") as owner:
            epoch = await owner.claim("j", 1)
            state = JobState(
                status="running",
                round=1,
                accuracy=0.5,
                best_accuracy=0.5,
                target_accuracy=0.9,
                elapsed_s=1.0,
                time_budget_s=60.0,
            )
            await owner.publish_state("j", state)
            async with open_mqtt_fleet(broker=broker, topics=topics, job_id="j") as intruder:
                with pytest.raises(OwnershipError) as refused:
                    await intruder.claim("j", 1)
            return epoch, str(refused.value)

    epoch, message = asyncio.run(go())
    assert epoch == 1
    assert "running under another coordinator" in message
    assert "another job_id" in message


def test_a_job_whose_owner_ended_is_taken_at_a_higher_epoch(
    broker_url: str, unique_topic_prefix: str
) -> None:
    topics = Topics(unique_topic_prefix)
    broker = parse_broker_url(broker_url)

    async def go() -> int:
        async with open_mqtt_fleet(broker=broker, topics=topics, job_id="j") as first:
            await first.claim("j", 3)
            done = JobState(
                status="reached",
                round=7,
                accuracy=0.9,
                best_accuracy=0.9,
                target_accuracy=0.9,
                elapsed_s=9.0,
                time_budget_s=60.0,
            )
            await first.publish_state("j", done)
        async with open_mqtt_fleet(broker=broker, topics=topics, job_id="j") as second:
            return await second.claim("j", 1)  # its own state directory says 1; the broker says 3

    assert asyncio.run(go()) == 4
