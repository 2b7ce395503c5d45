"""A real Mosquitto with TLS, the password file and the ACL of ``hyperfleet certs``/``acl``:
strangers, wrong passwords and untrusted CAs are refused, and an agent reaches only its own
topics. Mosquitto drops an unauthorised publish silently (MQTT 3.1.1 cannot say no), so each
check publishes and then looks with a privileged subscriber for what arrived."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest
from secure_broker import SecureBroker, secure_broker

from hyperfleet.cli import main
from link.mqtt import TlsFiles, mqtt_client
from protocol import Topics, parse_broker_url

T = Topics("hf/v1")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    with secure_broker(tmp_path_factory.mktemp("secure"), agents=["a1", "a2"]) as b:
        yield b


def _client(b: SecureBroker, user: str | None, *, password: str | None = None,
            tls: TlsFiles | None = None, cid: str = "") -> aiomqtt.Client:  # fmt: skip
    return mqtt_client(
        parse_broker_url(b.url(user, password)),
        identifier=cid or f"test-{user}",
        tls=tls or b.tls(),
        timeout_s=5,
    )


async def _collect(client: aiomqtt.Client, into: list[tuple[str, bytes]]) -> None:
    async for message in client.messages:
        assert isinstance(message.payload, bytes)
        into.append((str(message.topic), message.payload))


def test_strangers_wrong_passwords_and_untrusted_cas_are_refused(
    broker: SecureBroker, tmp_path: Path
) -> None:
    assert main(["certs", "--out", str(tmp_path / "other"), "--agents", "a1"]) == 0
    other_ca = broker.tls(ca=tmp_path / "other" / "ca.crt")

    async def attempt(client: aiomqtt.Client) -> str:
        try:
            async with client:
                return "connected"
        except aiomqtt.MqttError as exc:
            return f"refused: {exc}"

    async def go() -> dict[str, str]:
        return {
            "anonymous": await attempt(_client(broker, None)),
            "wrong password": await attempt(_client(broker, "a1", password="guess")),
            "unknown user": await attempt(_client(broker, "mallory", password="x")),
            "untrusted CA": await attempt(_client(broker, "a1", tls=other_ca)),
            "right": await attempt(_client(broker, "a1")),
        }

    outcome = asyncio.run(go())
    assert outcome["right"] == "connected"
    for case in ("anonymous", "wrong password", "unknown user", "untrusted CA"):
        assert outcome[case].startswith("refused"), (case, outcome[case])
    assert "certificate" in outcome["untrusted CA"].lower()


def test_an_agent_publishes_only_below_its_own_topics(broker: SecureBroker) -> None:
    forged = [
        T.results("a2"),  # another agent's reply
        T.hello("a2"),
        T.inbox("a2"),  # an instruction to another agent
        T.inbox("a1"),  # an instruction to itself
        T.job_state("job"),  # the coordinator's topics
        T.model_latest("digits"),
        "hf/v1/anything/else",
    ]
    allowed = [T.results("a1"), T.hello("a1"), T.status("a1"), T.heartbeat("a1")]

    async def go() -> list[str]:
        seen: list[tuple[str, bytes]] = []
        async with _client(broker, "monitor") as monitor:
            await monitor.subscribe("hf/v1/#", qos=1)
            reader = asyncio.create_task(_collect(monitor, seen))
            try:
                async with _client(broker, "a1") as a1:
                    for topic in forged:
                        await a1.publish(topic, b"forged", qos=1)
                    for topic in allowed:
                        await a1.publish(topic, b"ok", qos=1)
                for _ in range(100):  # the allowed ones arrive after the forged would have
                    if len(seen) >= len(allowed):
                        break
                    await asyncio.sleep(0.05)
            finally:
                reader.cancel()
        return [t for t, _ in seen]

    arrived = asyncio.run(go())
    assert sorted(arrived) == sorted(allowed)


def test_an_agent_reads_only_its_own_inbox(broker: SecureBroker) -> None:
    async def go() -> list[tuple[str, bytes]]:
        got: list[tuple[str, bytes]] = []
        async with _client(broker, "a1", cid="a1-reader") as a1:
            await a1.subscribe(T.inbox("a2"), qos=1)
            await a1.subscribe(T.all_agents("inbox"), qos=1)
            await a1.subscribe("hf/v1/#", qos=1)
            await a1.subscribe(T.inbox("a1"), qos=1)
            reader = asyncio.create_task(_collect(a1, got))
            try:
                async with _client(broker, "coordinator") as coordinator:
                    await coordinator.publish(T.inbox("a2"), b"for a2", qos=1)
                    await coordinator.publish(T.results("a2"), b"not the coordinator's", qos=1)
                    await coordinator.publish(T.inbox("a1"), b"for a1", qos=1)
                for _ in range(100):
                    if got:
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.2)  # anything else in flight would be here by now
            finally:
                reader.cancel()
        return got

    assert asyncio.run(go()) == [(T.inbox("a1"), b"for a1")]


def test_the_coordinator_and_roma_get_what_they_need(broker: SecureBroker) -> None:
    async def go() -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
        coordinator_got: list[tuple[str, bytes]] = []
        roma_got: list[tuple[str, bytes]] = []
        async with (
            _client(broker, "coordinator") as coordinator,
            _client(broker, "roma") as roma,
        ):
            await coordinator.subscribe(T.all_agents("results"), qos=1)
            await roma.subscribe("hf/v1/models/+/latest", qos=1)
            await roma.subscribe(T.all_agents("results"), qos=1)
            readers = [
                asyncio.create_task(_collect(coordinator, coordinator_got)),
                asyncio.create_task(_collect(roma, roma_got)),
            ]
            try:
                async with _client(broker, "a2") as a2:
                    await a2.publish(T.results("a2"), b"res", qos=1)
                await coordinator.publish(T.model_latest("digits"), b"ref", qos=1)
                await roma.publish(T.model_latest("digits"), b"forged by roma", qos=1)
                for _ in range(100):
                    if coordinator_got and roma_got:
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.2)
            finally:
                for r in readers:
                    r.cancel()
        return coordinator_got, roma_got

    coordinator_got, roma_got = asyncio.run(go())
    assert coordinator_got == [(T.results("a2"), b"res")]
    assert roma_got == [(T.model_latest("digits"), b"ref")]


def test_roma_publishes_its_serving_stats_and_a_monitor_reads_them(broker: SecureBroker) -> None:
    async def go() -> list[tuple[str, bytes]]:
        got: list[tuple[str, bytes]] = []
        async with _client(broker, "monitor") as monitor:
            await monitor.subscribe("hf/v1/serving/#", qos=1)
            reader = asyncio.create_task(_collect(monitor, got))
            try:
                async with _client(broker, "roma") as roma, _client(broker, "a1") as a1:
                    await a1.publish(T.serving_stats("digits"), b"forged by a1", qos=1)
                    await roma.publish(T.serving_stats("digits"), b"stats", qos=1)
                for _ in range(100):
                    if got:
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.2)
            finally:
                reader.cancel()
        return got

    assert asyncio.run(go()) == [(T.serving_stats("digits"), b"stats")]
