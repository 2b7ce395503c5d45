"""MqttSession against a real Mosquitto: reconnect after a restart, prompt cancellation in any
state, the clean-stop farewell, and errors that are LinkErrors, never aiomqtt's."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from uuid import uuid4

import pytest

from hyperfleet.broker import RunningBroker, start_broker
from link import Backoff, PublishTimeout
from link.mqtt import LastWill, MqttConnection, MqttSession, TlsFiles, mqtt_client
from protocol import BrokerAddress, InvalidTopic, parse_broker_url

LIVENESS_S = 5.0  # a generous bound: the loop must end, not be fast


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Probe:
    """A session that subscribes to ``topic`` on every connect and records what arrives."""

    def __init__(self, broker: BrokerAddress, topic: str, **kwargs: object) -> None:
        self.topic = topic
        self.connects = 0
        self.received: asyncio.Queue[tuple[str, object]] = asyncio.Queue()
        self.session = MqttSession(
            broker=broker,
            identifier=f"test-{uuid4().hex[:8]}",
            on_message=lambda t, p: self.received.put_nowait((t, p)),
            on_connect=self.on_connect,
            backoff=Backoff(min_s=0.05, max_s=0.2),
            **kwargs,  # type: ignore[arg-type]
        )

    async def on_connect(self, conn: MqttConnection) -> None:
        self.connects += 1
        await conn.subscribe(self.topic)


async def wait_until(condition: object, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.02)


def test_the_session_reconnects_after_the_broker_restarts(
    tmp_path: Path, mosquitto_binary: str, unique_topic_prefix: str
) -> None:
    broker = start_broker(prefer="mosquitto", workdir=tmp_path)
    port = broker.port
    topic = f"{unique_topic_prefix}/probe"

    async def scenario() -> tuple[int, int, tuple[str, object]]:
        nonlocal broker
        probe = Probe(parse_broker_url(broker.url), topic)
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(probe.session.run())
            await asyncio.wait_for(probe.session.connected.wait(), 10)
            broker.stop()
            await wait_until(lambda: not probe.session.connected.is_set())
            broker = start_broker(prefer="mosquitto", port=port, workdir=tmp_path)
            await asyncio.wait_for(probe.session.connected.wait(), 15)
            await probe.session.publish(topic, b"after the restart", timeout=5)
            got = await asyncio.wait_for(probe.received.get(), 5)
            task.cancel()
        return probe.connects, probe.session.connections, got

    try:
        connects, connections, got = asyncio.run(scenario())
    finally:
        broker.stop()
    assert connects == 2, "the on-connect hook ran again (re-subscribe, re-announce)"
    assert connections == 2
    assert got == (topic, b"after the restart")


@pytest.mark.parametrize("min_s", [0.05, 30.0], ids=["retrying", "sleeping"])
def test_cancelling_while_the_broker_is_down_ends_the_loop_promptly(min_s: float) -> None:
    """Nothing listens on the port: the loop is connecting or sleeping when cancelled."""
    address = BrokerAddress(host="127.0.0.1", port=free_port())

    async def scenario() -> int:
        session = MqttSession(
            broker=address,
            identifier=f"test-{uuid4().hex[:8]}",
            on_message=lambda t, p: None,
            backoff=Backoff(min_s=min_s, max_s=max(min_s, 1.0)),
        )
        task = asyncio.create_task(session.run())
        await asyncio.sleep(0.5)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, LIVENESS_S)
        return session.connections

    assert asyncio.run(scenario()) == 0


def test_publish_without_a_broker_is_a_link_error() -> None:
    address = BrokerAddress(host="127.0.0.1", port=free_port())

    async def scenario() -> None:
        session = MqttSession(
            broker=address, identifier=f"test-{uuid4().hex[:8]}", on_message=lambda t, p: None
        )
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(session.run())
            try:
                with pytest.raises(PublishTimeout, match="not connected"):
                    await session.publish("x/y", b"z", timeout=0.3)
            finally:
                task.cancel()

    asyncio.run(scenario())


def test_a_clean_stop_publishes_the_last_will_itself(
    mosquitto: RunningBroker, unique_topic_prefix: str
) -> None:
    """The broker sends the Last Will only on a lost connection; a clean stop says it too."""
    status = f"{unique_topic_prefix}/agents/a1/status"
    address = parse_broker_url(mosquitto.url)

    async def scenario() -> tuple[bytes, bool]:
        session = MqttSession(
            broker=address,
            identifier=f"test-{uuid4().hex[:8]}",
            on_message=lambda t, p: None,
            on_connect=lambda conn: conn.publish(status, b"online", retain=True),
            will=LastWill(topic=status, payload=b"offline"),
        )
        task = asyncio.create_task(session.run())
        await asyncio.wait_for(session.connected.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, LIVENESS_S)
        async with mqtt_client(address, identifier=f"test-{uuid4().hex[:8]}") as watcher:
            await watcher.subscribe(status, qos=1)
            message = await asyncio.wait_for(anext(aiter(watcher.messages)), 5)
            await watcher.publish(status, b"", retain=True)  # leave nothing retained
        assert isinstance(message.payload, bytes)
        return message.payload, message.retain

    assert asyncio.run(scenario()) == (b"offline", True)


def test_while_connected_returning_starts_a_new_connection(
    mosquitto: RunningBroker, unique_topic_prefix: str
) -> None:
    address = parse_broker_url(mosquitto.url)
    ended = 0

    async def brief(conn: MqttConnection) -> None:
        nonlocal ended
        await asyncio.sleep(0.05)
        ended += 1

    async def scenario() -> int:
        session = MqttSession(
            broker=address,
            identifier=f"test-{uuid4().hex[:8]}",
            on_message=lambda t, p: None,
            while_connected=brief,
        )
        task = asyncio.create_task(session.run())
        await wait_until(lambda: session.connections >= 3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, LIVENESS_S)
        return session.connections

    assert asyncio.run(scenario()) >= 3
    assert ended >= 2


def test_tls_files_need_an_mqtts_broker() -> None:
    async def scenario() -> None:
        with pytest.raises(ValueError, match="mqtts://"):
            mqtt_client(
                BrokerAddress(host="h", port=1),
                identifier="x",
                tls=TlsFiles(ca_file=Path("ca.pem")),
            )
        mqtt_client(parse_broker_url("mqtts://h"), identifier="x")  # the system CA bundle

    asyncio.run(scenario())


@pytest.mark.parametrize("bad", ["a\tb", "a\x00b", "a/+", "a/#", "a\udcffb"])
def test_a_topic_the_broker_would_drop_us_for_is_refused_before_it_is_sent(
    broker_url: str, unique_topic_prefix: str, bad: str
) -> None:
    """Issue 17 §6: Mosquitto drops a client that publishes to such a topic, and the queued
    message goes again on every reconnect, forever. Now: InvalidTopic, and the link stays up."""
    probe = Probe(parse_broker_url(broker_url), f"{unique_topic_prefix}/ok")

    async def scenario() -> tuple[int, tuple[str, object]]:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(probe.session.run())
            await wait_until(lambda: probe.connects == 1)
            with pytest.raises(InvalidTopic):
                await probe.session.publish(f"{unique_topic_prefix}/{bad}", b"x", timeout=5)
            await probe.session.publish(f"{unique_topic_prefix}/ok", b"fine", timeout=5)
            got = await asyncio.wait_for(probe.received.get(), 5)
            task.cancel()
        return probe.connects, got

    connects, got = asyncio.run(scenario())
    assert connects == 1
    assert got == (f"{unique_topic_prefix}/ok", b"fine")
    with pytest.raises(InvalidTopic):
        LastWill(topic=f"{unique_topic_prefix}/{bad}", payload=b"")
