"""The Fleet port: how the round engine reaches agents.

:class:`~coordinator.mqtt_fleet.MqttFleet` is the real one (MQTT); :class:`InMemoryFleet` calls
agent callables in-process. One conformance suite (``tests/integration/test_fleet_contract.py``)
runs against both.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from protocol import (
    DEFAULT_MAX_UPDATE_NORM_RATIO,
    DuplicateMessage,
    Failure,
    Heartbeat,
    Hello,
    JobState,
    ModelRef,
    ProtocolError,
    StaleRound,
    Status,
    TrainIns,
    TrainRes,
    Weights,
    check_update_norm,
    check_weights_like,
)

from .registry import Registry

__all__ = ["Fleet", "InMemoryFleet", "LocalAgent", "RoundCollector", "RoundReplies"]


@dataclass(slots=True)
class RoundReplies:
    """What one round brought back. ``failures`` maps agent id to why it has no result."""

    results: dict[str, TrainRes] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    reply_s: dict[str, float] = field(default_factory=dict)
    """Seconds from sending the instruction to receiving the reply, per agent that replied."""
    bytes_sent: int = 0
    bytes_received: int = 0


class RoundCollector:
    """Collects the replies of one round; decides when it is over. Shared by every Fleet.

    An update that does not fit the model, or moves it by more than ``max_update_norm_ratio``
    times its norm (:func:`~protocol.check_update_norm`), is that agent's failure ("rejected
    update: ...") and the rest of the round goes on.
    """

    def __init__(
        self,
        *,
        job_id: str,
        round: int,
        expected: set[str],
        reference: Weights,
        quorum: int,
        max_update_norm_ratio: float = DEFAULT_MAX_UPDATE_NORM_RATIO,
    ) -> None:
        self.job_id = job_id
        self.round = round
        self.expected = expected
        self.reference = reference
        self.quorum = quorum
        self.max_update_norm_ratio = max_update_norm_ratio
        self.replies = RoundReplies()
        self.sent_at: dict[str, float] = {}
        self.instruction_ids: dict[str, str] = {}
        """The ``msg_id`` of the instruction sent to each agent; a reply must name it."""
        self.delivered: set[str] = set()
        """Agents whose instruction the broker acknowledged."""
        self.done = asyncio.Event()

    def offer(self, agent_id: str, body: TrainRes | Failure, nbytes: int, *, reply_to: str) -> None:
        """Take a reply already admitted for this job and round; :class:`ProtocolError` if unfit.

        ``reply_to`` is the instruction id the reply names: a reply to an instruction this round
        did not send (an earlier coordinator run's, say) is a :class:`~protocol.StaleRound`."""
        if agent_id not in self.expected:
            raise _not_selected(agent_id, self.round)
        replies = self.replies
        if agent_id in replies.results or agent_id in replies.failures:
            raise _already_replied(agent_id, self.round)
        sent = self.instruction_ids.get(agent_id)
        if reply_to != sent:
            raise StaleRound(
                f"{agent_id}'s reply answers instruction {reply_to or '(none)'!r}; "
                f"round {self.round} sent it {sent!r}"
            )
        replies.bytes_received += nbytes
        if isinstance(body, TrainRes):
            try:
                check_weights_like(body.weights, self.reference)
                check_update_norm(
                    body.weights, self.reference, max_ratio=self.max_update_norm_ratio
                )
            except ProtocolError as exc:
                replies.failures[agent_id] = f"rejected update: {exc}"
                self._check_done()
                raise
            replies.results[agent_id] = body
            replies.reply_s[agent_id] = time.monotonic() - self.sent_at.get(agent_id, 0.0)
        else:
            replies.failures[agent_id] = f"{body.code}: {body.reason}"
        self._check_done()

    def _check_done(self) -> None:
        r = self.replies
        if len(r.results) >= self.quorum or len(r.results) + len(r.failures) >= len(self.expected):
            self.done.set()

    def close(self) -> RoundReplies:
        """End the round: everyone who has not replied failed by timeout."""
        for agent_id in self.expected:
            if agent_id not in self.replies.results and agent_id not in self.replies.failures:
                self.replies.failures[agent_id] = "timeout: no reply by the round deadline"
        return self.replies


def _not_selected(agent_id: str, round: int) -> ProtocolError:
    return StaleRound(f"{agent_id} was not asked to train in round {round}")


def _already_replied(agent_id: str, round: int) -> ProtocolError:
    return DuplicateMessage(f"{agent_id} already replied in round {round}")


class Fleet(ABC):
    """The agents, as the round engine sees them."""

    registry: Registry
    dropped: Counter[str]

    session: str = "local"
    """This coordinator run's id: the owner named in the job state."""

    @abstractmethod
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
        """Send each agent its instruction; return when ``quorum`` results are in, everyone has
        answered, or ``timeout_s`` seconds of round time pass (a fleet may pause the round's
        clock while it cannot reach the agents). Late or missing replies are failures.

        Calls may overlap when their agents are disjoint (the asynchronous mode opens one
        single-agent round per agent at work, ``round`` = the model version it trains from);
        asking an agent that is in another open round raises :class:`ValueError`."""

    def replay_state(self) -> dict[str, Any]:
        """What must survive a coordinator restart for replay protection: recent message ids
        and the drop counters (JSON-able). A fleet without a wire keeps nothing."""
        return {"dropped": dict(self.dropped)}

    def restore_replay_state(self, state: Mapping[str, Any]) -> None:
        """Load what :meth:`replay_state` returned (unknown or malformed parts are ignored)."""
        dropped = state.get("dropped")
        if isinstance(dropped, dict):
            for code, count in dropped.items():
                if isinstance(code, str) and type(count) is int and count >= 0:
                    self.dropped[code] += count

    async def claim(self, job_id: str, epoch: int) -> int:
        """Take ownership of ``job_id``, proposing ``epoch``; return the epoch taken (at least
        ``epoch``). Raises :class:`~coordinator.errors.OwnershipError` when another live
        coordinator owns the job. A fleet only one coordinator can reach owns trivially."""
        return epoch

    @abstractmethod
    async def publish_state(self, job_id: str, state: JobState) -> None: ...

    @abstractmethod
    async def publish_model(self, ref: ModelRef) -> None: ...

    async def wait_for_agents(self, count: int, *, timeout: float) -> int:
        """Wait until ``count`` agents are available or ``timeout`` passes; return how many are."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while len(self.registry.available()) < count and loop.time() < end:
            await asyncio.sleep(0.05)
        return len(self.registry.available())


_BEAT = Heartbeat(seq=0, busy=False, load=0.0, memory_used_bytes=0)

LocalAgent = Callable[[TrainIns], Awaitable[TrainRes | Failure | None]]
"""An in-process agent: takes an instruction, returns its reply (``None``: it never answers)."""


class InMemoryFleet(Fleet):
    """Agents as in-process callables; the same contract as the MQTT fleet, without a broker."""

    def __init__(self, agents: Mapping[str, tuple[Hello, LocalAgent]]) -> None:
        self.registry = Registry()
        self.dropped = Counter()
        self.states: list[JobState] = []
        self.models: list[ModelRef] = []
        self._agents = dict(agents)
        self._busy: set[str] = set()
        now = time.monotonic()
        for agent_id, (hello, _) in self._agents.items():
            self.registry.on_hello(agent_id, hello, now)
            self.registry.on_status(agent_id, Status(state="online"), now)
            self.registry.on_heartbeat(agent_id, _BEAT, now)

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
        busy = sorted(set(instructions) & self._busy)
        if busy:
            raise ValueError(f"agents {busy} are already training in an open round")
        deadline = time.monotonic() + timeout_s
        collector = RoundCollector(
            job_id=job_id,
            round=round,
            expected=set(instructions),
            reference=reference,
            quorum=quorum,
        )

        async def one(agent_id: str, ins: TrainIns) -> None:
            collector.sent_at[agent_id] = time.monotonic()
            ins_id = collector.instruction_ids[agent_id] = uuid.uuid4().hex
            reply = await self._agents[agent_id][1](ins)
            if reply is None or time.monotonic() > deadline:
                return
            try:
                collector.offer(agent_id, reply, 0, reply_to=ins_id)
            except ProtocolError as exc:
                self.dropped[exc.code] += 1

        self._busy |= set(instructions)
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(one(a, ins)) for a, ins in instructions.items()]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(collector.done.wait(), timeout=max(0.0, timeout_s))
                for task in tasks:
                    task.cancel()
        finally:
            self._busy -= set(instructions)
        return collector.close()

    async def publish_state(self, job_id: str, state: JobState) -> None:
        self.states.append(state)

    async def publish_model(self, ref: ModelRef) -> None:
        self.models.append(ref)
