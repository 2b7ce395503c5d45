"""The Fleet over MQTT: registry from retained status/hello and heartbeats, rounds over inboxes.

Every inbound message goes through the same gate (:class:`link.InboundGate`): topic → decode →
sender matches topic → known agent → admission (duplicate id, job and round) → the round's
collector (selected agent, the instruction it answers, weights that fit the model). Anything that
fails is logged, counted in :attr:`MqttFleet.dropped` under its :class:`~protocol.ProtocolError`
code, and dropped; the round goes on.

Broker outages are ridden out, not fought::

    connection lost ──► the open round's clock pauses (its time left is kept)
    connected again ──► re-publish retained job state and model reference
                        re-send the open round's instruction to every agent that has not replied
    agent back online ► re-send its instruction (same message id: an agent that has it ignores it)

The fleet's session has a Last Will on the job state: if the coordinator dies, the broker marks
the job ``lost`` for monitors. A clean end publishes the final state and leaves without the will.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from link import AdmissionScope, Backoff, InboundGate, LinkError
from link.mqtt import LastWill, MqttConnection, MqttSession, TlsFiles
from protocol import (
    BrokerAddress,
    Envelope,
    Failure,
    Heartbeat,
    Hello,
    InvalidTopic,
    JobState,
    MalformedMessage,
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

from .errors import OwnershipError
from .fleet import Fleet, RoundCollector, RoundReplies
from .registry import Registry

__all__ = ["MqttFleet", "open_mqtt_fleet"]

_log = logging.getLogger(__name__)

SKEW_WARN_S = 2.0
"""Clock offsets beyond this are reported (budgets are relative, so rounds are unaffected)."""


class UnknownAgent(ProtocolError):
    code = "unknown_agent"


class MqttFleet(Fleet):
    def __init__(
        self,
        *,
        broker: BrokerAddress,
        topics: Topics,
        job_id: str = "",
        identity: str = "coordinator",
        stale_after_s: float = 30.0,
        reconnect_max_s: float = 10.0,
        claim_wait_s: float = 1.0,
        tls: TlsFiles | None = None,
    ) -> None:
        self.broker = broker
        self.topics = topics
        self.identity = identity
        self.job_id = job_id
        self.session = uuid.uuid4().hex[:12]
        self.epoch = 0
        self.registry = Registry(stale_after_s=stale_after_s)
        self.clashes: set[str] = set()
        """Agent ids under which two daemon sessions were heard at once."""
        self._skew_warned: set[str] = set()
        self._claim_wait_s = claim_wait_s
        self._rounds: dict[str, RoundCollector] = {}
        """Agent id → the open round that asked it to train. Rounds over disjoint agents may be
        open at once (the asynchronous mode opens one per agent at work)."""
        self._pending: dict[str, Envelope] = {}
        """The open rounds' instruction envelope per agent that has not replied yet."""
        self._ends: dict[str, float] = {}
        """Agent id → when its open round's deadline falls (monotonic; paused while offline)."""
        self._status_ids: dict[str, str] = {}
        """The message id of each agent's newest status: a retained one replayed on our own
        reconnect has the id we saw; an agent that reconnected sends a new one."""
        self._sends: dict[str, set[asyncio.Task[None]]] = {}
        """Sends to each agent of its open round, cancelled when that round closes."""
        self._retained: dict[str, bytes] = {}
        """What we keep retained on the broker (topic → payload), re-published on every connect."""
        self._claims: list[JobState] = []
        self._gate = InboundGate(
            name="coordinator",
            handler=self._on_message,
            sender_of=self._sender_of,
            scope=self._scope,
        )
        self.dropped = self._gate.dropped
        self._link = MqttSession(
            broker=broker,
            identifier=f"hf-{identity}-{self.session}",
            on_message=self.dispatch,
            on_connect=self._on_connect,
            while_connected=self._expire_loop,
            will=self._will(None),
            backoff=Backoff(min_s=min(0.5, reconnect_max_s), max_s=reconnect_max_s),
            max_queued_outgoing=10_000,
            tls=tls,
            name="coordinator",
        )
        self.connected = self._link.connected

    # ------------------------------------------------------------------ connection

    async def run(self) -> None:
        """Stay connected (with backoff) and dispatch inbound messages, until cancelled."""
        await self._link.run()

    async def _on_connect(self, conn: MqttConnection) -> None:
        for kind in ("status", "hello", "heartbeat", "results"):
            await conn.subscribe(self.topics.all_agents(kind), qos=1)
        if self.job_id:
            await conn.subscribe(self.topics.job_state(self.job_id), qos=1)
        for topic, payload in list(self._retained.items()):
            await conn.publish(topic, payload, qos=1, retain=True)
        self._resend(list(self._pending), why="the coordinator reconnected")

    async def _expire_loop(self, conn: MqttConnection) -> None:
        while True:
            await asyncio.sleep(1.0)
            for agent_id in self.registry.expire(time.monotonic()):
                _log.info("coordinator: agent %s went silent; marked offline", agent_id)

    async def _publish(
        self, topic: str, payload: bytes, *, retain: bool = False, timeout: float | None = 10.0
    ) -> None:
        """Publish at QoS 1; :class:`~link.LinkError` when not delivered within ``timeout``."""
        await self._link.publish(topic, payload, qos=1, retain=retain, timeout=timeout)

    def _will(self, state: JobState | None) -> LastWill | None:
        """The job state the broker publishes if we die: marked lost, naming us as owner. MQTT
        3.1.1 fixes a will at connect, so its numbers are those of the last state sent before
        the connection was made (zeros on the first)."""
        if not self.job_id:
            return None
        lost = JobState(
            status="lost",
            round=state.round if state else 0,
            accuracy=state.accuracy if state else 0.0,
            best_accuracy=state.best_accuracy if state else 0.0,
            target_accuracy=state.target_accuracy if state else 0.0,
            elapsed_s=state.elapsed_s if state else 0.0,
            time_budget_s=state.time_budget_s if state else 0.0,
            message="the coordinator's connection was lost (its Last Will)",
            owner=self.session,
            epoch=self.epoch,
        )
        env = new_envelope(lost, sender=self.identity, job_id=self.job_id, round=lost.round)
        return LastWill(topic=self.topics.job_state(self.job_id), payload=encode(env))

    # ------------------------------------------------------------------ inbound

    def dispatch(self, topic: str, payload: object) -> None:
        """Pass one received message through the gate; refusals are counted, never raised."""
        if self.job_id and topic == self.topics.job_state(self.job_id):
            self._on_job_state(payload)
            return
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

    def _on_job_state(self, payload: object) -> None:
        if isinstance(payload, (bytes, bytearray)) and not payload:
            return  # a retained state being cleared
        topic = self.topics.job_state(self.job_id)
        try:
            if not isinstance(payload, (bytes, bytearray, memoryview)):
                raise MalformedMessage(f"payload on {topic} is not bytes")
            env = decode(payload)
            if not isinstance(env.body, JobState):
                raise StaleRound(f"{env.type} does not belong on a job's state topic")
        except ProtocolError as exc:
            self._gate.drop(exc, topic)
            return
        if env.body.owner != self.session:
            self._claims.append(env.body)

    def _sender_of(self, topic: str) -> str:
        agent_id, _ = self.topics.parse_agent_topic(topic)
        return agent_id

    def _scope(self, topic: str, env: Envelope) -> AdmissionScope | None:
        """Replies are admitted against the open round; retained state is exempt (it comes
        again, same message id, on every subscribe), and so are heartbeats (QoS 0)."""
        agent_id, kind = self.topics.parse_agent_topic(topic)
        if kind != "results":
            return None
        if agent_id not in self.registry:
            raise UnknownAgent(f"reply from {agent_id}, which never said hello")
        current = self._rounds.get(agent_id)
        if current is None:
            return AdmissionScope()  # counted as a duplicate or, below, as stale
        return AdmissionScope(job_id=current.job_id, round=current.round)

    def _on_message(self, topic: str, env: Envelope, nbytes: int) -> None:
        agent_id, kind = self.topics.parse_agent_topic(topic)
        now = time.monotonic()
        body = env.body
        if kind == "status" and isinstance(body, Status):
            self.registry.on_status(agent_id, body, now)
            fresh = self._status_ids.get(agent_id) != env.msg_id
            self._status_ids[agent_id] = env.msg_id
            if fresh and body.state == "online" and agent_id in self._pending:
                self._resend([agent_id], why=f"{agent_id} came back online")
        elif kind == "hello" and isinstance(body, Hello):
            self.registry.on_hello(agent_id, body, now)
        elif kind == "heartbeat" and isinstance(body, Heartbeat):
            self._on_heartbeat(agent_id, env, body, now)
        elif kind == "results" and isinstance(body, (TrainRes, Failure)):
            self.registry.on_seen(agent_id, now)
            current = self._rounds.get(agent_id)
            if current is None:
                raise StaleRound(
                    f"{body.TYPE} from {agent_id} for round {env.round}: no round is open"
                )
            current.offer(agent_id, body, nbytes, reply_to=env.reply_to)
            self._pending.pop(agent_id, None)
        else:
            raise StaleRound(f"{env.type} does not belong on {kind}")

    def _on_heartbeat(self, agent_id: str, env: Envelope, beat: Heartbeat, now: float) -> None:
        clash = self.registry.on_heartbeat(agent_id, beat, now, offset_s=env.ts - time.time())
        rec = self.registry.get(agent_id)
        assert rec is not None
        if clash and agent_id not in self.clashes:
            self.clashes.add(agent_id)
            _log.error(
                "coordinator: two daemons are running as agent %s (sessions %s); stop one: "
                "both are asked to train and only the first reply counts",
                agent_id,
                ", ".join(sorted(rec.sessions)),
            )
        offset = rec.clock_offset_s
        if offset is not None and abs(offset) > SKEW_WARN_S and agent_id not in self._skew_warned:
            self._skew_warned.add(agent_id)
            _log.warning(
                "coordinator: agent %s's clock is about %.1fs %s ours; budgets are measured on "
                "each side's own clock, so rounds are unaffected, but check its time sync (NTP)",
                agent_id,
                abs(offset),
                "ahead of" if offset > 0 else "behind",
            )

    # ------------------------------------------------------------------ restarts

    REPLAY_IDS = 4096
    """Message ids kept across a restart (a retained or duplicated reply older than these is
    refused anyway: a reply must name an instruction of the open round)."""

    def replay_state(self) -> dict[str, Any]:
        return {**super().replay_state(), "seen": self._gate.admission.recent(self.REPLAY_IDS)}

    def restore_replay_state(self, state: Mapping[str, Any]) -> None:
        super().restore_replay_state(state)
        seen = state.get("seen")
        if isinstance(seen, list) and all(isinstance(i, str) for i in seen):
            self._gate.admission.remember(seen[-self.REPLAY_IDS :])

    # ------------------------------------------------------------------ ownership

    async def claim(self, job_id: str, epoch: int) -> int:
        """Refuse a job whose retained state says another coordinator is running it; else take
        it at ``max(epoch, their epoch + 1)`` and publish the claim (retained)."""
        if not self.job_id:  # opened without a job: watch it from now (the will: next connect)
            self.job_id = job_id
            conn = await self._link.wait_connected(10.0)
            await conn.subscribe(self.topics.job_state(job_id), qos=1)
        elif job_id != self.job_id:
            raise ValueError(f"this fleet was opened for job {self.job_id!r}, not {job_id!r}")
        await asyncio.sleep(self._claim_wait_s)  # retained state arrives right after subscribe
        for other in self._claims:
            if other.status == "running":
                raise OwnershipError(
                    f"job {job_id!r} is running under another coordinator (session "
                    f"{other.owner or 'unknown'}, epoch {other.epoch}) on {self.broker.url}: stop "
                    "it first, or use another job_id. If that coordinator died, the broker marks "
                    "the job lost within 1.5 keep-alive periods (45 s) and this run may start."
                )
            epoch = max(epoch, other.epoch + 1)
        self.epoch = epoch
        return epoch

    # ------------------------------------------------------------------ Fleet

    async def train(
        self,
        *,
        job_id: str,
        round: int,
        instructions: Mapping[str, TrainIns],
        reference: Weights,
        quorum: int,
        timeout_s: float,
    ) -> RoundReplies:
        busy = sorted(set(instructions) & set(self._rounds))
        if busy:
            raise ValueError(f"agents {busy} are already training in an open round")
        collector = RoundCollector(
            job_id=job_id,
            round=round,
            expected=set(instructions),
            reference=reference,
            quorum=quorum,
        )
        left = timeout_s
        for agent_id in instructions:
            self._rounds[agent_id] = collector
            self._ends[agent_id] = time.monotonic() + left
            self._sends[agent_id] = set()
        try:
            for agent_id, ins in instructions.items():
                env = new_envelope(ins, sender=self.identity, job_id=job_id, round=round)
                collector.instruction_ids[agent_id] = env.msg_id
                collector.sent_at[agent_id] = time.monotonic()
                self._pending[agent_id] = env
            self._resend(list(instructions), why="")
            left = await self._wait_paused(collector, left)
        finally:
            unsent = [
                a for a in instructions if a in self._pending and a not in collector.delivered
            ]
            for agent_id in instructions:
                self._rounds.pop(agent_id, None)
                self._ends.pop(agent_id, None)
                self._pending.pop(agent_id, None)
                for task in self._sends.pop(agent_id, set()):
                    task.cancel()
        replies = collector.close()
        for agent_id in unsent:
            if replies.failures.get(agent_id, "").startswith("timeout"):
                replies.failures[agent_id] = "timeout: the instruction could not be delivered"
        return replies

    async def _wait_paused(self, collector: RoundCollector, left: float) -> float:
        """Wait for the round to end, counting only connected time against ``left``."""
        while left > 0 and not collector.done.is_set():
            if not self._link.connected.is_set():
                t0 = time.monotonic()
                await _first(self._link.connected.wait(), collector.done.wait())
                for agent_id in collector.expected:
                    if agent_id in self._ends:
                        self._ends[agent_id] += time.monotonic() - t0
                _log.info("coordinator: round %d clock resumed", collector.round)
                continue
            t0 = time.monotonic()
            await _first(self._link.disconnected.wait(), collector.done.wait(), timeout=left)
            left -= time.monotonic() - t0
            if self._link.disconnected.is_set() and not collector.done.is_set():
                _log.warning(
                    "coordinator: lost the broker in round %d; its clock pauses with %.1fs left",
                    collector.round,
                    left,
                )
        return left

    def _resend(self, agents: list[str], *, why: str) -> None:
        """(Re-)send each agent's open round's instruction with that round's time left."""
        now = time.monotonic()
        for agent_id in agents:
            collector = self._rounds.get(agent_id)
            env = self._pending.get(agent_id)
            if collector is None or env is None:
                continue
            left = self._ends[agent_id] - now
            if left <= 0:
                continue
            assert isinstance(env.body, TrainIns)
            fresh = dataclasses.replace(
                env, body=dataclasses.replace(env.body, budget_s=left), ts=time.time()
            )
            if why:
                _log.info("coordinator: re-sending round %d to %s (%s)", env.round, agent_id, why)
            task = asyncio.get_running_loop().create_task(self._send(collector, agent_id, fresh))
            sends = self._sends.setdefault(agent_id, set())
            sends.add(task)
            task.add_done_callback(sends.discard)

    async def _send(self, collector: RoundCollector, agent_id: str, env: Envelope) -> None:
        payload = encode(env)
        try:
            await self._publish(self.topics.inbox(agent_id), payload, timeout=None)
        except LinkError as exc:  # the next connection re-sends it
            _log.info("coordinator: round %d to %s not sent yet (%s)", env.round, agent_id, exc)
            return
        collector.replies.bytes_sent += len(payload)
        collector.delivered.add(agent_id)

    async def publish_state(self, job_id: str, state: JobState) -> None:
        state = dataclasses.replace(state, owner=self.session, epoch=self.epoch)
        env = new_envelope(state, sender=self.identity, job_id=job_id, round=state.round)
        topic = self.topics.job_state(job_id)
        self._retained[topic] = payload = encode(env)
        # If we die from here on, monitors see this state marked lost; a final state needs none.
        self._link.will = self._will(state) if state.status == "running" else None
        await self._publish(topic, payload, retain=True)

    async def publish_model(self, ref: ModelRef) -> None:
        env = new_envelope(ref, sender=self.identity, job_id=ref.job_id)
        topic = self.topics.model_latest(ref.name)
        self._retained[topic] = payload = encode(env)
        await self._publish(topic, payload, retain=True)


async def _first(*aws: object, timeout: float | None = None) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]  # type: ignore[call-overload]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


@asynccontextmanager
async def open_mqtt_fleet(
    *,
    broker: BrokerAddress,
    topics: Topics,
    job_id: str = "",
    connect_timeout_s: float = 30.0,
    tls: TlsFiles | None = None,
    **kwargs: float,
) -> AsyncIterator[MqttFleet]:
    """Run an :class:`MqttFleet` for the duration of the ``async with`` block. With ``job_id``
    the fleet watches that job's retained state (for :meth:`MqttFleet.claim`) and carries a Last
    Will on it. ``tls``: CA bundle and client certificate for an ``mqtts://`` broker."""
    fleet = MqttFleet(broker=broker, topics=topics, job_id=job_id, tls=tls, **kwargs)  # type: ignore[arg-type]
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(fleet.run(), name="mqtt-fleet")
        try:
            await asyncio.wait_for(fleet.connected.wait(), timeout=connect_timeout_s)
            yield fleet
        finally:
            task.cancel()
