"""The broker contract, run against Mosquitto and the embedded broker, and the launcher's behaviour.

:class:`BrokerContract` holds what hyperfleet needs from any MQTT broker (exact bytes at QoS 1,
large payloads, retained messages, the Last Will, durable sessions). Each implementation is a
subclass that only says how to get a running broker; the tests are shared.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import aiomqtt
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

import hyperfleet.broker as broker_mod
from hyperfleet.broker import RunningBroker, probe_mqtt, start_broker
from hyperfleet.errors import BrokerError, HyperfleetError

RECEIVE_TIMEOUT_S = 5.0
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


def _client(broker: RunningBroker, **kwargs: object) -> aiomqtt.Client:
    return aiomqtt.Client(
        broker.host,
        broker.port,
        protocol=aiomqtt.ProtocolVersion.V311,
        socket_options=NODELAY,
        timeout=RECEIVE_TIMEOUT_S,
        **kwargs,  # type: ignore[arg-type]
    )


async def _next_message(client: aiomqtt.Client) -> aiomqtt.Message:
    async with asyncio.timeout(RECEIVE_TIMEOUT_S):
        async for message in client.messages:
            return message
    raise AssertionError("the client disconnected before a message arrived")


def _answers_mqtt(broker: RunningBroker) -> bool:
    return probe_mqtt(broker.host, broker.port, timeout_s=0.5)


class BrokerContract:
    """What hyperfleet relies on from a broker. Subclasses override the ``broker`` fixture."""

    @pytest.fixture
    def broker(self) -> RunningBroker:
        raise NotImplementedError

    def test_qos1_publish_subscribe_delivers_exact_bytes(
        self, broker: RunningBroker, unique_topic_prefix: str
    ) -> None:
        topic = f"{unique_topic_prefix}/agents/a1/inbox"
        payload = bytes(range(256)) + b"\x00\xff\r\n"

        async def scenario() -> aiomqtt.Message:
            async with _client(broker) as sub, _client(broker) as pub:
                await sub.subscribe(topic, qos=1)
                await pub.publish(topic, payload, qos=1)
                return await _next_message(sub)

        message = asyncio.run(scenario())
        assert message.topic.value == topic
        assert message.payload == payload
        assert message.qos == 1
        assert message.retain is False

    def test_one_mebibyte_binary_payload_arrives_intact(
        self, broker: RunningBroker, unique_topic_prefix: str
    ) -> None:
        topic = f"{unique_topic_prefix}/agents/a1/results"
        payload = os.urandom(1 << 20)

        async def scenario() -> aiomqtt.Message:
            async with _client(broker) as sub, _client(broker) as pub:
                await sub.subscribe(topic, qos=1)
                await pub.publish(topic, payload, qos=1)
                return await _next_message(sub)

        message = asyncio.run(scenario())
        assert isinstance(message.payload, bytes)
        assert len(message.payload) == len(payload)
        assert message.payload == payload

    def test_retained_message_reaches_a_later_subscriber(
        self, broker: RunningBroker, unique_topic_prefix: str
    ) -> None:
        topic = f"{unique_topic_prefix}/models/digits/latest"

        async def scenario() -> aiomqtt.Message:
            async with _client(broker) as pub:
                await pub.publish(topic, b"model-ref-v3", qos=1, retain=True)
            async with _client(broker) as late:
                await late.subscribe(topic, qos=1)
                return await _next_message(late)

        message = asyncio.run(scenario())
        assert message.payload == b"model-ref-v3"
        assert message.retain is True

    def test_new_client_gets_only_the_retained_messages_it_subscribed_to(
        self, broker: RunningBroker, unique_topic_prefix: str
    ) -> None:
        other = f"{unique_topic_prefix}/agents/a2/status"
        mine = f"{unique_topic_prefix}/agents/a1/status"

        async def scenario() -> aiomqtt.Message:
            async with _client(broker) as watcher:  # someone else watches `other`, and stays
                await watcher.subscribe(other, qos=1)
                async with _client(broker) as pub:
                    await pub.publish(other, b"other-retained", qos=1, retain=True)
                    await pub.publish(mine, b"mine-retained", qos=1, retain=True)
                assert (await _next_message(watcher)).payload == b"other-retained"
                async with _client(broker) as newcomer:
                    await newcomer.subscribe(mine, qos=1)
                    return await _next_message(newcomer)

        message = asyncio.run(scenario())
        assert message.topic.value == mine
        assert message.payload == b"mine-retained"

    def test_last_will_is_published_retained_when_socket_drops(
        self, broker: RunningBroker, unique_topic_prefix: str
    ) -> None:
        topic = f"{unique_topic_prefix}/agents/a1/status"
        _connect_with_will_and_drop(broker, topic=topic, payload=b"offline")

        async def scenario() -> aiomqtt.Message:
            # Subscribe only after the drop: the will must be retained to arrive here.
            async with _client(broker) as monitor:
                await monitor.subscribe(topic, qos=1)
                return await _next_message(monitor)

        message = asyncio.run(scenario())
        assert message.payload == b"offline"
        assert message.retain is True

    def test_durable_session_gets_qos1_messages_sent_while_offline(
        self, broker: RunningBroker, unique_topic_prefix: str
    ) -> None:
        topic = f"{unique_topic_prefix}/agents/a1/inbox"
        identifier = f"test-agent-{uuid4().hex[:8]}"
        sent = [f"instruction-{i}".encode() for i in range(3)]

        async def scenario() -> list[bytes]:
            async with _client(broker, identifier=identifier, clean_session=False) as agent:
                await agent.subscribe(topic, qos=1)
            async with _client(broker) as coordinator:
                for payload in sent:
                    await coordinator.publish(topic, payload, qos=1)
            # Same identifier, no new SUBSCRIBE: the broker kept the subscription and queue.
            async with _client(broker, identifier=identifier, clean_session=False) as agent:
                received = [_payload(await _next_message(agent)) for _ in sent]
            # Leave no durable session behind on the shared broker.
            async with _client(broker, identifier=identifier, clean_session=True):
                pass
            return received

        assert asyncio.run(scenario()) == sent


def _payload(message: aiomqtt.Message) -> bytes:
    assert isinstance(message.payload, bytes | bytearray)
    return bytes(message.payload)


def _connect_with_will_and_drop(broker: RunningBroker, *, topic: str, payload: bytes) -> None:
    """Connect a raw paho client with a retained QoS 1 will, then close its socket abruptly.

    No DISCONNECT is sent, as when an edge device loses power or its network, so the broker
    must publish the will.
    """
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"test-will-{uuid4().hex[:8]}",
        protocol=paho.MQTTv311,
    )
    client.will_set(topic, payload, qos=1, retain=True)
    connected = threading.Event()
    client.on_connect = lambda *_args: connected.set()
    client.connect(broker.host, broker.port, keepalive=60)
    deadline = time.monotonic() + RECEIVE_TIMEOUT_S
    while not connected.is_set():
        assert time.monotonic() < deadline, "paho client did not get a CONNACK"
        client.loop(timeout=0.05)
    sock = client.socket()
    assert isinstance(sock, socket.socket)
    sock.close()


class TestMosquitto(BrokerContract):
    @pytest.fixture
    def broker(self, mosquitto: RunningBroker) -> RunningBroker:
        assert mosquitto.kind == "mosquitto"
        return mosquitto


@pytest.fixture(scope="module")
def embedded_broker() -> Iterator[RunningBroker]:
    with start_broker(prefer="embedded") as running:
        yield running


class TestEmbeddedBroker(BrokerContract):
    @pytest.fixture
    def broker(self, embedded_broker: RunningBroker) -> RunningBroker:
        assert embedded_broker.kind == "embedded"
        return embedded_broker


# --- the launcher -----------------------------------------------------------------------------


@pytest.fixture(params=["mosquitto", "embedded"])
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "mosquitto":
        request.getfixturevalue("mosquitto_binary")  # skip (or fail under CI) without it
    value: str = request.param
    return value


def test_start_broker_picks_free_ports_and_serves_mqtt(kind: str) -> None:
    with (
        start_broker(prefer=kind) as first,  # type: ignore[arg-type]
        start_broker(prefer=kind) as second,  # type: ignore[arg-type]
    ):
        assert first.kind == second.kind == kind
        assert first.port != second.port
        assert 1883 not in (first.port, second.port)
        assert first.url == f"mqtt://127.0.0.1:{first.port}"
        assert _answers_mqtt(first)
        assert _answers_mqtt(second)


def test_stop_ends_the_process_cleanly_and_removes_its_temp_dir(kind: str) -> None:
    running = start_broker(prefer=kind)  # type: ignore[arg-type]
    workdir = running.workdir
    assert running.is_running()
    assert workdir.is_dir()
    running.stop()
    assert running.process.returncode == 0  # SIGTERM handled as a clean shutdown
    assert not _answers_mqtt(running)
    assert not workdir.exists()
    running.stop()  # idempotent
    assert running.process.returncode == 0


def test_prefer_mosquitto_without_binary_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(broker_mod, "find_mosquitto", lambda: None)
    with pytest.raises(BrokerError, match="apt-get install mosquitto") as info:
        start_broker(prefer="mosquitto")
    assert "brew install mosquitto" in str(info.value)
    assert "--embedded" in str(info.value)
    assert isinstance(info.value, HyperfleetError)


def test_auto_falls_back_to_embedded_without_mosquitto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_mod, "find_mosquitto", lambda: None)
    with start_broker(prefer="auto") as running:
        assert running.kind == "embedded"
        assert _answers_mqtt(running)


def test_broker_that_exits_early_raises_with_its_log(
    mosquitto_binary: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real_config = broker_mod.mosquitto_config

    def broken_config(**kwargs: object) -> str:
        return real_config(**kwargs) + "no_such_option 1\n"  # type: ignore[arg-type]

    monkeypatch.setattr(broker_mod, "mosquitto_config", broken_config)
    with pytest.raises(BrokerError, match="exited with code") as info:
        start_broker(prefer="mosquitto", workdir=tmp_path)
    assert "no_such_option" in str(info.value)  # the log tail explains why


def test_port_already_in_use_is_refused_up_front(mosquitto: RunningBroker) -> None:
    with pytest.raises(BrokerError, match=f"port {mosquitto.port} .*already in use"):
        start_broker(port=mosquitto.port, prefer="mosquitto")
    assert _answers_mqtt(mosquitto)  # the running broker is untouched


def test_generated_config_with_persistence_is_accepted_by_mosquitto(
    mosquitto_binary: str, tmp_path: Path
) -> None:
    state = tmp_path / "state dir"  # a space, to prove paths are not split
    state.mkdir()
    with start_broker(prefer="mosquitto", persistence_dir=state, workdir=tmp_path / "run") as b:
        assert _answers_mqtt(b)
    assert b.process.returncode == 0
    assert (state / "mosquitto.db").is_file()  # written on shutdown


def test_a_persistent_broker_keeps_a_retained_model_reference_across_a_restart(
    mosquitto_binary: str, tmp_path: Path
) -> None:

    state = tmp_path / "state"
    state.mkdir()

    def client(b: RunningBroker) -> paho.Client:
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"c-{time.monotonic_ns()}")
        c.connect("127.0.0.1", b.port)
        c.loop_start()
        return c

    with start_broker(prefer="mosquitto", persistence_dir=state, workdir=tmp_path / "a") as b:
        port = b.port
        c = client(b)
        c.publish("hf/v1/models/m/latest", b"model-ref", qos=1, retain=True).wait_for_publish(5)
        c.loop_stop()
        c.disconnect()
    got: list[bytes] = []
    with start_broker(
        prefer="mosquitto", port=port, persistence_dir=state, workdir=tmp_path / "b"
    ) as b:
        c = client(b)
        c.on_message = lambda _c, _u, m: got.append(bytes(m.payload))
        c.subscribe("hf/v1/models/+/latest", qos=1)
        end = time.monotonic() + 5
        while not got and time.monotonic() < end:
            time.sleep(0.05)
        c.loop_stop()
        c.disconnect()
    assert got == [b"model-ref"]


def test_stop_kills_a_process_that_ignores_sigterm(tmp_path: Path) -> None:
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    assert stubborn.stdout is not None
    with stubborn.stdout:
        assert stubborn.stdout.readline() == b"ready\n"  # SIGTERM is ignored from here on
    running = RunningBroker(
        kind="embedded", host="127.0.0.1", port=1, process=stubborn, workdir=tmp_path
    )
    started = time.monotonic()
    running.stop(grace_s=0.2)
    assert running.process.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 5


def test_probe_tells_a_broker_from_a_silent_tcp_listener(mosquitto: RunningBroker) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        assert not probe_mqtt("127.0.0.1", silent.getsockname()[1], timeout_s=0.3)
    assert probe_mqtt(mosquitto.host, mosquitto.port)


@pytest.mark.parametrize("bind", ["", "127.0.0.1\nlistener 1883", "0.0.0.0 extra"])
def test_config_refuses_bind_addresses_that_would_inject_options(bind: str) -> None:
    with pytest.raises(ValueError, match="bind address"):
        broker_mod.mosquitto_config(port=1884, bind=bind, persistence_dir=None)
