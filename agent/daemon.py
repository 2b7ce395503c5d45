"""The agent daemon: one MQTT session, instructions in, replies out, and it never gives up.

Structure (every task belongs to the daemon's TaskGroup)::

    Agent.run
    ├── link.mqtt.MqttSession   connect (Last Will = offline), reconnect with capped backoff;
    │   ├── on connect          subscribe to the inbox, announce hello and status (retained)
    │   ├── while connected     heartbeats; an emulated device going offline drops the link
    │   └── on message          link.InboundGate: decode → admission → the instruction queue
    ├── _publisher              drains the outbox; an unsent reply waits for the next connection
    └── _worker                 one instruction at a time; training runs in a thread

Bad input never stops it: a frame that fails to decode, or an instruction it cannot carry out, is
logged and counted in :attr:`Agent.dropped` (by :class:`~protocol.ProtocolError` code), and where
the instruction's job and round are known the coordinator gets a :class:`~protocol.Failure`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
import uuid
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

import numpy as np

from link import AdmissionScope, Backoff, InboundGate, LinkError
from link.mqtt import LastWill, MqttConnection, MqttSession, TlsFiles
from protocol import (
    BrokerAddress,
    DuplicateMessage,
    Envelope,
    Failure,
    Heartbeat,
    Hello,
    Message,
    ProtocolError,
    Status,
    Topics,
    TrainConfig,
    TrainIns,
    TrainRes,
    check_agent_id,
    encode,
    new_envelope,
)

from .errors import AgentError
from .probe import Capabilities
from .trainer import Trainer, planned_steps

__all__ = ["Agent", "AgentSettings", "Emulator", "StaleOwner", "cap_steps"]

_log = logging.getLogger(__name__)
_ANSWERS_KEPT = 64
_REPLIES_KEPT = 4
"""Encoded replies kept for re-sending: the newest instructions'. Older ids are remembered
without theirs (each holds a model's weights: 64 of them grew a 50-agent process by 35 MB in a
soak); a repeat of such an old instruction is dropped as a duplicate."""
_FORGOTTEN = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSettings:
    """Everything one agent needs to know; built once in ``__main__``."""

    agent_id: str
    broker: BrokerAddress
    device_class: str
    topics: Topics = field(default_factory=Topics)
    heartbeat_s: float = 5.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    upload_margin_s: float = 0.01
    """Time kept back from an instruction's deadline for sending the reply (emulated links are
    accounted for by the emulator on top of this)."""
    profile: dict[str, float] = field(default_factory=dict)
    """Announced device facts (the device class's emulation table) that seed the coordinator."""
    tls: TlsFiles | None = None
    """CA bundle and client certificate for an ``mqtts://`` broker (``None``: system CAs)."""
    coordinator: str = "coordinator"
    """The sender instructions must name (``MqttFleet``'s ``identity``); an instruction from
    anyone else is dropped as ``spoofed``. A check of the envelope only: the broker's ACL is what
    keeps others off the inbox (docs/protocol.md, Topics)."""

    def __post_init__(self) -> None:
        # At construction, not at the first connect: an id a topic cannot hold would otherwise
        # fail inside the reconnect loop, again and again.
        check_agent_id(self.agent_id)


class UnexpectedMessage(ProtocolError):
    """A well-formed message that does not belong in an inbox."""

    code = "unexpected"


class StaleOwner(ProtocolError):
    """An instruction from a coordinator run that another run of the same job has replaced."""

    code = "stale_owner"


class Emulator:
    """Hooks that make one host behave like another device. This base emulates nothing: the
    agent runs at the host's own speed (see :class:`agent.emulation.DeviceEmulator`)."""

    def online(self) -> bool:
        return True

    async def wait_online(self) -> None:
        return None

    async def download(self, nbytes: int) -> None:
        return None

    def plan_work(
        self, config: TrainConfig, num_examples: int, time_left_s: float, upload_bytes: int
    ) -> TrainConfig:
        """The work this device will actually do of ``config`` before its deadline."""
        return config

    def compute_s(self, examples: int) -> float:
        """Emulated compute time of ``examples``; 0 when not emulating."""
        return 0.0

    async def compute(self, examples: int, real_s: float) -> bool:
        """Wait out the emulated compute time; False when the device dropped out mid-round."""
        return True

    async def upload(self, nbytes: int) -> None:
        return None


class Agent:
    """One edge agent. ``await agent.run()`` until cancelled; ``agent.stop()`` ends it cleanly."""

    def __init__(
        self,
        *,
        settings: AgentSettings,
        trainer: Trainer,
        capabilities: Capabilities,
        num_examples: int,
        label_counts: tuple[int, ...] = (),
        software: str = "",
        emulator: Emulator | None = None,
        max_local_steps: int | None = None,
    ) -> None:
        self.settings = settings
        self._trainer = trainer
        self._caps = capabilities
        self._num_examples = num_examples
        self._label_counts = label_counts
        self._software = software
        self._emu = emulator or Emulator()
        self._max_steps = max_local_steps
        """The device class's cap on local steps per instruction (``None``: no cap)."""
        self._topics = settings.topics
        self._id = settings.agent_id
        self.session = uuid.uuid4().hex[:12]
        """This daemon run's id, in hello, status and heartbeats: a second daemon started with
        the same agent id shows as a second session, and neither one's stop hides the other."""
        self._epochs: dict[str, int] = {}
        """The newest coordinator epoch seen per job: instructions of older epochs are ignored."""
        self._clash_warned: set[str] = set()
        self._answers: OrderedDict[str, bytes | None] = OrderedDict()
        """Recent instruction ids → our encoded reply (``None`` while working on it)."""
        self.resent = 0
        """Replies sent again because the coordinator asked again."""
        self._instructions: asyncio.Queue[tuple[Envelope, float]] = asyncio.Queue()
        self._outbox: asyncio.Queue[tuple[str, bytes, bool]] = asyncio.Queue()
        self._stopping = asyncio.Event()
        self._busy = False
        self._seq = 0
        self._gate = InboundGate(
            name=f"agent {self._id}",
            handler=self._on_message,
            sender_of=self._sender_of,
            scope=self._scope,
        )
        self._link = MqttSession(
            broker=settings.broker,
            # One MQTT session per daemon run: reconnects resume it (the broker queues our inbox
            # meanwhile), while a restarted daemon, or a second one by mistake, never takes it over.
            identifier=f"hf-agent-{self._id}-{self.session}",
            clean_session=False,
            will=LastWill(
                topic=self._topics.status(self._id), payload=self._status_payload("offline")
            ),
            on_message=self._gate,
            on_connect=self._announce,
            while_connected=self._while_connected,
            before_connect=self._emu.wait_online,
            backoff=Backoff(min_s=settings.reconnect_min_s, max_s=settings.reconnect_max_s),
            tls=settings.tls,
            name=f"agent {self._id}",
        )
        self.connected = self._link.connected
        """Set while connected to the broker and announced."""
        self.dropped: Counter[str] = self._gate.dropped
        """Inbound messages refused, by :class:`~protocol.ProtocolError` code."""
        self.handled: Counter[str] = Counter()

    @property
    def capabilities(self) -> Capabilities:
        """What this agent announces in its hello about the machine it may use."""
        return self._caps

    @property
    def trainer_name(self) -> str:
        return self._trainer.name

    @property
    def connections(self) -> int:
        """Connections to the broker made so far (a reconnect counts again)."""
        return self._link.connections

    # ------------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(self._worker(), name=f"{self._id}-worker"),
                tg.create_task(self._link.run(), name=f"{self._id}-link"),
                tg.create_task(self._publisher(), name=f"{self._id}-publisher"),
            ]
            await self._stopping.wait()
            for task in tasks:
                task.cancel()

    def _status_payload(self, state: str) -> bytes:
        status = Status(state=state, session=self.session)  # type: ignore[arg-type]
        return encode(new_envelope(status, sender=self._id))

    async def _announce(self, conn: MqttConnection) -> None:
        """On every connection: subscribe to the inbox (and our own heartbeats, to notice a
        second daemon under our id), then re-announce hello and status."""
        await conn.subscribe(self._topics.inbox(self._id), qos=1)
        await conn.subscribe(self._topics.heartbeat(self._id), qos=0)
        await conn.publish(self._topics.hello(self._id), self._hello(), qos=1, retain=True)
        await conn.publish(
            self._topics.status(self._id), self._status_payload("online"), qos=1, retain=True
        )
        _log.info("agent %s: online at %s", self._id, self.settings.broker.url)

    async def _while_connected(self, conn: MqttConnection) -> None:
        async with asyncio.TaskGroup() as tg:
            beats = tg.create_task(self._heartbeats(conn), name=f"{self._id}-heartbeat")
            if type(self._emu) is not Emulator:  # a real device never goes offline on cue
                await self._emulated_offline(conn)
                beats.cancel()  # returning drops the link; the session waits for wait_online()

    async def _emulated_offline(self, conn: MqttConnection) -> None:
        """Return when the emulated device goes offline. The broker would publish our Last Will
        at once on a dropped TCP connection; publishing ``offline`` ourselves is the same."""
        while self._emu.online():
            await asyncio.sleep(0.2)
        _log.info("agent %s: emulated device goes offline", self._id)
        with contextlib.suppress(LinkError):
            offline = self._status_payload("offline")
            await conn.publish(self._topics.status(self._id), offline, retain=True, timeout=2)

    def _hello(self) -> bytes:
        caps = self._caps
        hello = Hello(
            device_class=self.settings.device_class,
            arch=caps.arch,
            cores=caps.cores,
            memory_bytes=caps.memory_bytes,
            gpus=caps.gpus,
            runtimes=caps.runtimes,
            num_examples=self._num_examples,
            software=self._software,
            profile=self.settings.profile,
            label_counts=self._label_counts,
            session=self.session,
        )
        return encode(new_envelope(hello, sender=self._id))

    async def _heartbeats(self, conn: MqttConnection) -> None:
        while True:
            self._seq += 1
            beat = Heartbeat(
                seq=self._seq,
                busy=self._busy,
                load=_load_average(),
                memory_used_bytes=_resident_bytes(),
                session=self.session,
            )
            await conn.publish(
                self._topics.heartbeat(self._id), encode(new_envelope(beat, sender=self._id)), qos=0
            )
            await asyncio.sleep(self.settings.heartbeat_s)

    async def _publisher(self) -> None:
        """Send replies in order; one that fails waits for the next connection and goes again."""
        while True:
            topic, payload, retain = await self._outbox.get()
            while True:
                try:
                    await self._link.publish(topic, payload, qos=1, retain=retain, timeout=None)
                    break
                except LinkError as exc:
                    _log.info("agent %s: reply not sent yet (%s); retrying", self._id, exc)
                    await asyncio.sleep(0.05)

    # ------------------------------------------------------------------ instructions

    def _sender_of(self, topic: str) -> str:
        """Who may send on ``topic``: the coordinator on our inbox, we on our own heartbeats."""
        return self._id if topic == self._topics.heartbeat(self._id) else self.settings.coordinator

    def _scope(self, topic: str, env: Envelope) -> AdmissionScope | None:
        # Instructions are deduplicated below (a repeat may ask for our reply again); our own
        # heartbeats, echoed back to us, need no duplicate window.
        return None

    def _on_message(self, topic: str, env: Envelope, nbytes: int) -> None:
        body = env.body
        if topic == self._topics.heartbeat(self._id):
            if isinstance(body, Heartbeat) and body.session != self.session:
                self._warn_clash(body.session)
            return
        if not isinstance(body, TrainIns):
            raise UnexpectedMessage(f"{env.type} does not belong in an inbox")
        if env.msg_id in self._answers:
            self._repeat(env)
            return
        newest = self._epochs.get(env.job_id, body.epoch)
        if body.epoch < newest:
            raise StaleOwner(
                f"instruction of epoch {body.epoch} for job {env.job_id!r}; "
                f"epoch {newest} has taken the job over"
            )
        self._epochs[env.job_id] = body.epoch
        self._answers[env.msg_id] = None
        while len(self._answers) > _ANSWERS_KEPT:
            self._answers.popitem(last=False)
        # The budget runs from receipt, on our own clock.
        self._instructions.put_nowait((env, time.monotonic()))

    def _repeat(self, env: Envelope) -> None:
        """An instruction we have seen, sent again: the coordinator reconnected or saw us come
        back, and our reply may have been lost with a broker's state. Send it again (the
        coordinator takes the first copy of a reply), or ignore it while still working on it."""
        reply = self._answers[env.msg_id]
        if reply is None:
            raise DuplicateMessage(f"instruction {env.msg_id} again, while still on it")
        if reply == _FORGOTTEN:
            raise DuplicateMessage(f"instruction {env.msg_id} again, answered long ago")
        _log.info("agent %s: round %d asked again; re-sending the reply", self._id, env.round)
        self.resent += 1
        self._outbox.put_nowait((self._topics.results(self._id), reply, False))

    def _warn_clash(self, other: str) -> None:
        if other not in self._clash_warned:
            self._clash_warned.add(other)
            _log.error(
                "agent %s: another daemon (session %s) is running with the same agent id; "
                "this one is session %s. Stop one of them: both are asked to train and the "
                "coordinator keeps only the first reply",
                self._id,
                other,
                self.session,
            )

    def _reply(self, ins: Envelope, body: Message) -> None:
        env = new_envelope(
            body, sender=self._id, job_id=ins.job_id, round=ins.round, reply_to=ins.msg_id
        )
        payload = encode(env)
        if ins.msg_id in self._answers:
            self._answers[ins.msg_id] = payload
            kept = 0
            for msg_id in list(reversed(self._answers)):
                if self._answers[msg_id]:
                    kept += 1
                    if kept > _REPLIES_KEPT:
                        self._answers[msg_id] = _FORGOTTEN
        self._outbox.put_nowait((self._topics.results(self._id), payload, False))

    async def _worker(self) -> None:
        while True:
            env, received = await self._instructions.get()
            self._busy = True
            try:
                reply = await self._carry_out(env, received)
            except AgentError as exc:
                reply = Failure(code="agent_error", reason=str(exc))
            except Exception as exc:  # a bug in a trainer must not end the daemon
                _log.exception("agent %s: instruction %s failed", self._id, env.type)
                reply = Failure(code="internal", reason=f"{type(exc).__name__}: {exc}")
            finally:
                self._busy = False
            if reply is not None:
                self.handled[reply.TYPE] += 1
                self._reply(env, reply)

    async def _carry_out(self, env: Envelope, received: float) -> Message | None:
        ins = env.body
        assert isinstance(ins, TrainIns)
        if self._num_examples == 0:
            return Failure(code="no_data", reason="this agent's shard holds no examples")
        deadline_mono = received + ins.budget_s - self.settings.upload_margin_s
        remaining = deadline_mono - time.monotonic()
        if remaining <= 0:
            return Failure(
                code="deadline_passed",
                reason=f"the instruction waited {-remaining:.2f}s past its budget here",
            )
        nbytes = sum(w.nbytes for w in ins.weights)
        await self._emu.download(nbytes)
        config = self._emu.plan_work(
            cap_steps(ins.config, self._num_examples, self._max_steps),
            self._num_examples,
            deadline_mono - time.monotonic(),
            nbytes,
        )
        started = time.monotonic()
        fit = await asyncio.to_thread(
            self._trainer.fit, ins.model, ins.weights, config, stop_at=deadline_mono
        )
        real_s = time.monotonic() - started
        dropped = not await self._emu.compute(fit.num_examples, real_s)
        compute_s = time.monotonic() - started  # what the device itself would report
        if dropped:
            _log.info("agent %s: emulated drop-out in round %d", self._id, env.round)
            return None  # the device dropped out mid-round: no reply at all
        if fit.steps == 0:
            return Failure(code="no_time", reason="the deadline left no time for one step")
        if not all(np.isfinite(w).all() for w in fit.weights) or not np.isfinite(fit.loss):
            return Failure(code="diverged", reason=f"training diverged (loss {fit.loss})")
        await self._emu.upload(sum(w.nbytes for w in fit.weights))
        return TrainRes(
            weights=fit.weights,
            num_examples=fit.num_examples,
            steps=fit.steps,
            loss=fit.loss,
            train_s=compute_s,
            metrics={
                "real_compute_s": real_s,
                "emulated_compute_s": self._emu.compute_s(fit.num_examples),
            },
        )


def cap_steps(config: TrainConfig, num_examples: int, cap: int | None) -> TrainConfig:
    """``config`` with at most ``cap`` local steps (a device class's ``max_local_steps``)."""
    if cap is None or planned_steps(config, num_examples) <= cap:
        return config
    return dataclasses.replace(config, local_steps=cap)


def _resident_bytes() -> int:
    """Resident memory of this process in bytes (0 where the platform does not say)."""
    try:
        import psutil
    except ImportError:
        return 0
    return int(psutil.Process().memory_info().rss)


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0
