"""The Fleet over MQTT: registry from retained status/hello and heartbeats, rounds over inboxes.

Every inbound message goes through the same gate: topic → decode → sender matches topic → known
agent → admission (duplicate id, job and round) → the round's collector (selected agent, weights
that fit the model). Anything that fails is logged, counted in :attr:`MqttFleet.dropped` under its
:class:`~protocol.ProtocolError` code, and dropped; the round goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import aiomqtt

from protocol import (
    Admission,
    BrokerAddress,
    Envelope,
    Failure,
    Heartbeat,
    Hello,
    InvalidTopic,
    JobState,
    ModelRef,
    ProtocolError,
    StaleRound,
    Status,
    Topics,
    TrainIns,
    TrainRes,
    Weights,
    decode,
    encode,
    new_envelope,
)

from .fleet import Fleet, RoundCollector, RoundReplies
from .registry import Registry

__all__ = ["MqttFleet", "open_mqtt_fleet"]

_log = logging.getLogger(__name__)
_NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class UnknownAgent(ProtocolError):
    code = "unknown_agent"


class SpoofedSender(ProtocolError):
    code = "spoofed"


class MqttFleet(Fleet):
    def __init__(
        self,
        *,
        broker: BrokerAddress,
        topics: Topics,
        identity: str = "coordinator",
        stale_after_s: float = 30.0,
        reconnect_max_s: float = 10.0,
    ) -> None:
        self.broker = broker
        self.topics = topics
        self.identity = identity
        self.registry = Registry(stale_after_s=stale_after_s)
        self.dropped = Counter()
        self.connected = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._admission = Admission()
        self._round: RoundCollector | None = None
        self._reconnect_max_s = reconnect_max_s

    # ------------------------------------------------------------------ connection

    async def run(self) -> None:
        """Stay connected (with backoff) and dispatch inbound messages, until cancelled."""
        delay = 0.5
        while True:
            client = aiomqtt.Client(
                self.broker.host,
                self.broker.port,
                identifier=f"hf-{self.identity}-{random.getrandbits(32):08x}",
                username=self.broker.username,
                password=self.broker.password,
                protocol=aiomqtt.ProtocolVersion.V311,
                socket_options=[_NODELAY],
                tls_params=aiomqtt.TLSParameters() if self.broker.tls else None,
                max_queued_outgoing_messages=10000,
            )
            client.pending_calls_threshold = 10_000  # one publish per participant is the norm
            try:
                async with client:
                    for kind in ("status", "hello", "heartbeat", "results"):
                        await client.subscribe(self.topics.all_agents(kind), qos=1)
                    self._client = client
                    self.connected.set()
                    delay = 0.5
                    _log.info("coordinator: connected to %s", self.broker.url)
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._expire_loop())
                        async for message in client.messages:
                            self.dispatch(str(message.topic), message.payload)
            except* aiomqtt.MqttError as group:
                self.connected.clear()
                self._client = None
                _log.warning(
                    "coordinator: lost broker %s (%s); reconnecting in %.1fs",
                    self.broker.url,
                    group.exceptions[0],
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._reconnect_max_s)

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for agent_id in self.registry.expire(time.time()):
                _log.info("coordinator: agent %s went silent; marked offline", agent_id)

    async def _publish(
        self, topic: str, payload: bytes, *, retain: bool = False, timeout: float = 10.0
    ) -> None:
        if self._client is None:
            await asyncio.wait_for(self.connected.wait(), timeout=timeout)
        assert self._client is not None
        await self._client.publish(topic, payload, qos=1, retain=retain, timeout=timeout)

    # ------------------------------------------------------------------ inbound

    def dispatch(self, topic: str, payload: object) -> None:
        try:
            self._dispatch(topic, payload)
        except ProtocolError as exc:
            self.dropped[exc.code] += 1
            _log.warning("coordinator: dropped message on %s (%s): %s", topic, exc.code, exc)

    def _dispatch(self, topic: str, payload: object) -> None:
        agent_id, kind = self.topics.parse_agent_topic(topic)
        if kind == "inbox":
            return  # our own instructions echoed by a wildcard; nothing to do
        if not isinstance(payload, (bytes, bytearray)):
            raise InvalidTopic(f"empty or non-binary payload on {topic}")
        if kind == "status" and not payload:
            return  # a retained status being cleared
        env = decode(payload)
        if env.sender != agent_id:
            raise SpoofedSender(f"message from {env.sender!r} on {agent_id!r}'s topic")
        now = time.time()
        body = env.body
        if kind == "status" and isinstance(body, Status):
            self.registry.on_status(agent_id, body, now)
        elif kind == "hello" and isinstance(body, Hello):
            self.registry.on_hello(agent_id, body, now)
        elif kind == "heartbeat" and isinstance(body, Heartbeat):
            self.registry.on_heartbeat(agent_id, body, now)
        elif kind == "results" and isinstance(body, (TrainRes, Failure)):
            self._on_result(agent_id, env, body, len(payload))
        else:
            raise StaleRound(f"{env.type} does not belong on {kind}")

    def _on_result(self, agent_id: str, env: Envelope, body: TrainRes | Failure, n: int) -> None:
        if agent_id not in self.registry:
            raise UnknownAgent(f"reply from {agent_id}, which never said hello")
        self.registry.on_seen(agent_id, time.time())
        current = self._round
        if current is None:
            self._admission.admit(env)
            raise StaleRound(f"{body.TYPE} from {agent_id} for round {env.round}: no round is open")
        self._admission.admit(env, job_id=current.job_id, round=current.round)
        current.offer(agent_id, body, n)

    # ------------------------------------------------------------------ Fleet

    async def train(
        self,
        *,
        job_id: str,
        round: int,
        instructions: Mapping[str, TrainIns],
        reference: Weights,
        quorum: int,
        deadline: float,
    ) -> RoundReplies:
        collector = RoundCollector(
            job_id=job_id,
            round=round,
            expected=set(instructions),
            reference=reference,
            quorum=quorum,
        )
        self._round = collector
        try:
            async with asyncio.TaskGroup() as tg:
                for agent_id, ins in instructions.items():
                    tg.create_task(self._send(collector, agent_id, job_id, round, ins, deadline))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    collector.done.wait(), timeout=max(0.0, deadline - time.time())
                )
        finally:
            self._round = None
        return collector.close()

    async def _send(
        self,
        collector: RoundCollector,
        agent_id: str,
        job_id: str,
        rnd: int,
        ins: TrainIns,
        deadline: float,
    ) -> None:
        payload = encode(new_envelope(ins, sender=self.identity, job_id=job_id, round=rnd))
        collector.sent_at[agent_id] = time.monotonic()
        try:
            # A send that outlasts the round is a failed send, not a round overrun.
            timeout = max(0.1, deadline - time.time())
            await self._publish(self.topics.inbox(agent_id), payload, timeout=timeout)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            collector.replies.failures[agent_id] = f"send failed: {exc}"
            return
        collector.replies.bytes_sent += len(payload)

    async def publish_state(self, job_id: str, state: JobState) -> None:
        env = new_envelope(state, sender=self.identity, job_id=job_id, round=state.round)
        await self._publish(self.topics.job_state(job_id), encode(env), retain=True)

    async def publish_model(self, ref: ModelRef) -> None:
        env = new_envelope(ref, sender=self.identity, job_id=ref.job_id)
        await self._publish(self.topics.model_latest(ref.name), encode(env), retain=True)


@asynccontextmanager
async def open_mqtt_fleet(
    *, broker: BrokerAddress, topics: Topics, connect_timeout_s: float = 30.0, **kwargs: float
) -> AsyncIterator[MqttFleet]:
    """Run an :class:`MqttFleet` for the duration of the ``async with`` block."""
    fleet = MqttFleet(broker=broker, topics=topics, **kwargs)  # type: ignore[arg-type]
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(fleet.run(), name="mqtt-fleet")
        try:
            await asyncio.wait_for(fleet.connected.wait(), timeout=connect_timeout_s)
            yield fleet
        finally:
            task.cancel()
