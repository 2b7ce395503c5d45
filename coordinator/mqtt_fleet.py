"""The Fleet over MQTT: registry from retained status/hello and heartbeats, rounds over inboxes.

Every inbound message goes through the same gate (:class:`link.InboundGate`): topic → decode → sender matches topic → known
agent → admission (duplicate id, job and round) → the round's collector (selected agent, weights
that fit the model). Anything that fails is logged, counted in :attr:`MqttFleet.dropped` under its
:class:`~protocol.ProtocolError` code, and dropped; the round goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from link import AdmissionScope, Backoff, InboundGate, LinkError
from link.mqtt import MqttConnection, MqttSession
from protocol import (
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
    encode,
    new_envelope,
)

from .fleet import Fleet, RoundCollector, RoundReplies
from .registry import Registry

__all__ = ["MqttFleet", "open_mqtt_fleet"]

_log = logging.getLogger(__name__)


class UnknownAgent(ProtocolError):
    code = "unknown_agent"


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
        self._round: RoundCollector | None = None
        self._gate = InboundGate(
            name="coordinator",
            handler=self._on_message,
            sender_of=self._sender_of,
            scope=self._scope,
        )
        self.dropped = self._gate.dropped
        self._link = MqttSession(
            broker=broker,
            identifier=f"hf-{identity}-{random.getrandbits(32):08x}",
            on_message=self.dispatch,
            on_connect=self._subscribe,
            while_connected=self._expire_loop,
            backoff=Backoff(min_s=min(0.5, reconnect_max_s), max_s=reconnect_max_s),
            max_queued_outgoing=10_000,
            name="coordinator",
        )
        self.connected = self._link.connected

    # ------------------------------------------------------------------ connection

    async def run(self) -> None:
        """Stay connected (with backoff) and dispatch inbound messages, until cancelled."""
        await self._link.run()

    async def _subscribe(self, conn: MqttConnection) -> None:
        for kind in ("status", "hello", "heartbeat", "results"):
            await conn.subscribe(self.topics.all_agents(kind), qos=1)

    async def _expire_loop(self, conn: MqttConnection) -> None:
        while True:
            await asyncio.sleep(1.0)
            for agent_id in self.registry.expire(time.time()):
                _log.info("coordinator: agent %s went silent; marked offline", agent_id)

    async def _publish(
        self, topic: str, payload: bytes, *, retain: bool = False, timeout: float = 10.0
    ) -> None:
        """Publish at QoS 1; :class:`~link.LinkError` when not delivered within ``timeout``."""
        await self._link.publish(topic, payload, qos=1, retain=retain, timeout=timeout)

    # ------------------------------------------------------------------ inbound

    def dispatch(self, topic: str, payload: object) -> None:
        """Pass one received message through the gate; refusals are counted, never raised."""
        try:
            _, kind = self.topics.parse_agent_topic(topic)
        except InvalidTopic as exc:
            self._gate.drop(exc, topic)
            return
        if kind == "inbox":
            return  # our own instructions echoed by a wildcard; nothing to do
        if kind == "status" and payload in (b"", bytearray()):
            return  # a retained status being cleared
        self._gate(topic, payload)

    def _sender_of(self, topic: str) -> str:
        agent_id, _ = self.topics.parse_agent_topic(topic)
        return agent_id

    def _scope(self, topic: str, env: Envelope) -> AdmissionScope | None:
        """Replies are admitted against the open round; retained state is exempt (it comes
        again, same message id, on every subscribe)."""
        agent_id, kind = self.topics.parse_agent_topic(topic)
        if kind != "results":
            return None
        if agent_id not in self.registry:
            raise UnknownAgent(f"reply from {agent_id}, which never said hello")
        self.registry.on_seen(agent_id, time.time())
        current = self._round
        if current is None:
            return AdmissionScope()  # counted as a duplicate or, below, as stale
        return AdmissionScope(job_id=current.job_id, round=current.round)

    def _on_message(self, topic: str, env: Envelope, nbytes: int) -> None:
        agent_id, kind = self.topics.parse_agent_topic(topic)
        now = time.time()
        body = env.body
        if kind == "status" and isinstance(body, Status):
            self.registry.on_status(agent_id, body, now)
        elif kind == "hello" and isinstance(body, Hello):
            self.registry.on_hello(agent_id, body, now)
        elif kind == "heartbeat" and isinstance(body, Heartbeat):
            self.registry.on_heartbeat(agent_id, body, now)
        elif kind == "results" and isinstance(body, (TrainRes, Failure)):
            current = self._round
            if current is None:
                raise StaleRound(
                    f"{body.TYPE} from {agent_id} for round {env.round}: no round is open"
                )
            current.offer(agent_id, body, nbytes)
        else:
            raise StaleRound(f"{env.type} does not belong on {kind}")

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
        except LinkError as exc:
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
