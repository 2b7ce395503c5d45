"""What the fleet looks like from its topic tree: the pure state model of ``hyperfleet monitor``.

::

    view = FleetView(Topics("hf/v1"))
    event = view.apply(topic, payload, now)    # one MQTT message; ``now`` on a monotonic clock
    view.agents / view.jobs / view.models      # the tables, updated in place
    view.rates.rate(kind, now)                 # (messages/s, bytes/s) per topic kind

No I/O and no clock of its own: every time is passed in (seconds on one monotonic clock), so the
model is driven message by message in tests exactly as the monitor drives it from the broker.
Every payload goes through the protocol codec; a frame that does not decode is an ``undecodable``
:class:`Event` (counted, and listed in :attr:`FleetView.problems`), a frame of the wrong type for
its topic an ``unexpected`` one, an empty payload (a retained message being cleared) a
``cleared`` one. :meth:`FleetView.apply` never raises for anything a broker can deliver.

Reliability of an agent (``AgentRow.reliability``): of the ``TrainIns`` the monitor saw on the
agent's inbox whose reply is due, the share answered by a ``TrainRes`` in time. An instruction is
due ``budget_s`` + ``reply_grace_s`` after the monitor saw it; a ``Failure`` reply or no reply by
then counts against the agent (the coordinator, too, counts a late reply as a failure).
Instructions sent before the monitor started are not counted. Missed heartbeats are counted
apart, from gaps in the heartbeat sequence numbers of one daemon session.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from protocol import (
    AGENT_ID_PATTERN,
    Envelope,
    Failure,
    Heartbeat,
    Hello,
    JobState,
    Message,
    ModelRef,
    ProtocolError,
    ServingStats,
    Status,
    Topics,
    TrainIns,
    TrainRes,
    decode,
)

__all__ = [
    "TOPIC_KINDS",
    "AgentRow",
    "Event",
    "FleetView",
    "JobRow",
    "ModelRow",
    "TopicKind",
    "TopicRates",
    "body_to_json",
    "topic_kind",
]

TopicKind = Literal[
    "heartbeat", "hello", "status", "inbox", "results", "job state", "models", "serving", "other"
]
TOPIC_KINDS: tuple[TopicKind, ...] = (
    "heartbeat",
    "hello",
    "status",
    "inbox",
    "results",
    "job state",
    "models",
    "serving",
    "other",
)
Outcome = Literal["decoded", "undecodable", "unexpected", "cleared"]

_AGENT_KINDS: Mapping[str, TopicKind] = {
    k: k for k in ("heartbeat", "hello", "status", "inbox", "results")
}
_EXPECTED: Mapping[TopicKind, tuple[type[Message], ...]] = {
    "status": (Status,),
    "hello": (Hello,),
    "heartbeat": (Heartbeat,),
    "inbox": (TrainIns,),
    "results": (TrainRes, Failure),
    "job state": (JobState,),
    "models": (ModelRef,),
    "serving": (ServingStats,),
}
_LONG_TEXT = 512
"""Strings longer than this (a ``TrainIns``'s Keras model JSON) travel in JSON events as
``"<N characters>"``."""


def topic_kind(topics: Topics, topic: str) -> tuple[TopicKind, str]:
    """The kind of ``topic`` and the id it names (agent, job or model; ``""`` for ``other``):
    ``{prefix}/agents/{id}/{heartbeat|hello|status|inbox|results}``, ``{prefix}/jobs/{id}/state``
    (``job state``), ``{prefix}/models/{name}/latest`` (``models``),
    ``{prefix}/serving/{name}/stats`` (``serving``); anything else is ``other``."""
    head = f"{topics.prefix}/"
    if not topic.startswith(head):
        return "other", ""
    parts = topic[len(head) :].split("/")
    if len(parts) != 3 or not AGENT_ID_PATTERN.fullmatch(parts[1]):
        return "other", ""
    tree, ident, leaf = parts
    if tree == "agents" and leaf in _AGENT_KINDS:
        return _AGENT_KINDS[leaf], ident
    if (tree, leaf) == ("jobs", "state"):
        return "job state", ident
    if (tree, leaf) == ("models", "latest"):
        return "models", ident
    if (tree, leaf) == ("serving", "stats"):
        return "serving", ident
    return "other", ""


def body_to_json(value: Any) -> Any:
    """A message body (or any part of one) as plain JSON values: records become objects, arrays
    ``{"dtype", "shape"}`` (never their data), tuples lists, strings over 512 characters
    ``"<N characters>"``."""
    if isinstance(value, np.ndarray):
        return {"dtype": value.dtype.str, "shape": list(value.shape)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: body_to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [body_to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): body_to_json(v) for k, v in value.items()}
    if isinstance(value, str) and len(value) > _LONG_TEXT:
        return f"<{len(value)} characters>"
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One message as the monitor saw it: decoded (``envelope``), or why not (``error``)."""

    topic: str
    kind: TopicKind
    nbytes: int
    outcome: Outcome
    envelope: Envelope | None = None
    error: str = ""
    """For ``undecodable`` and ``unexpected``: the reason, for people."""
    error_type: str = ""
    """For ``undecodable``: the protocol error's class (``MalformedMessage``, ...)."""

    def to_json(self, *, wall_time: float) -> dict[str, Any]:
        """One JSON object: ``t`` (UNIX seconds, the monitor's clock), ``topic``, ``kind``,
        ``bytes``, ``outcome``; a decoded message adds ``type``, ``sender``, ``job_id``, ``round``,
        ``msg_id``, ``reply_to``, ``ts`` and ``body``; the others ``error`` (and ``error_type``)."""
        doc: dict[str, Any] = {
            "t": round(wall_time, 3),
            "topic": self.topic,
            "kind": self.kind,
            "bytes": self.nbytes,
            "outcome": self.outcome,
        }
        env = self.envelope
        if env is not None:
            doc.update(
                type=env.type,
                sender=env.sender,
                job_id=env.job_id,
                round=env.round,
                msg_id=env.msg_id,
                reply_to=env.reply_to,
                ts=env.ts,
                body=body_to_json(env.body),
            )
        if self.error:
            doc["error"] = self.error
        if self.error_type:
            doc["error_type"] = self.error_type
        return doc


@dataclass(slots=True, kw_only=True)
class AgentRow:
    """One agent as seen on its topics; times on the monitor's monotonic clock."""

    agent_id: str
    status: str = "unknown"
    """``online`` / ``offline`` from the retained status; ``unknown`` until one is seen."""
    session: str = ""
    """The session of the newest ``online`` status."""
    hello: Hello | None = None
    last_heartbeat: float | None = None
    heartbeat_interval_s: float | None = None
    """Smoothed time between consecutive heartbeats (None until two have been seen)."""
    heartbeat_session: str = ""
    seq: int | None = None
    load: float | None = None
    busy: bool = False
    memory_used_bytes: int | None = None
    missed_heartbeats: int = 0
    """Sequence numbers skipped within one daemon session."""
    asked: int = 0
    """``TrainIns`` seen on the inbox."""
    ok: int = 0
    """Of those, answered by a ``TrainRes`` in time."""
    failed: int = 0
    """Answered by a ``Failure`` in time."""
    missed: int = 0
    """No reply (or a late one) by ``budget_s`` + grace."""
    last_failure: str = ""
    pending: dict[str, float] = field(default_factory=dict)
    """Instructions not yet answered: message id → when the reply is due."""

    @property
    def device_class(self) -> str:
        return self.hello.device_class if self.hello is not None else ""

    def heartbeat_age(self, now: float) -> float | None:
        return None if self.last_heartbeat is None else max(0.0, now - self.last_heartbeat)

    def stale(self, now: float, *, intervals: float = 3.0) -> bool:
        """No heartbeat for ``intervals`` times the usual interval (False while unknown)."""
        age = self.heartbeat_age(now)
        interval = self.heartbeat_interval_s
        return age is not None and interval is not None and age > intervals * interval

    @property
    def due(self) -> int:
        """Instructions whose reply is due: answered in time, answered with a failure, or missed."""
        return self.ok + self.failed + self.missed

    @property
    def reliability(self) -> float | None:
        """``ok / due``; ``None`` before any reply is due."""
        return self.ok / self.due if self.due else None


@dataclass(slots=True, kw_only=True)
class JobRow:
    job_id: str
    state: JobState
    sender: str
    updated: float

    @property
    def budget_left_s(self) -> float:
        return max(0.0, self.state.time_budget_s - self.state.elapsed_s)

    @property
    def prediction(self) -> str:
        """The planner's prediction from ``JobState.plan`` in words (``""`` without one, and
        once the job has ended)."""
        if self.state.status != "running":
            return ""
        plan = self.state.plan
        feasible = plan.get("feasible")
        to_target = plan.get("predicted_time_to_target_s")
        at_budget = plan.get("predicted_accuracy_at_budget")
        if feasible is False:
            tail = f", {at_budget:.3f} at budget" if isinstance(at_budget, (int, float)) else ""
            return f"infeasible{tail}"
        if isinstance(to_target, (int, float)):
            return f"target in ~{to_target:.0f}s"
        if feasible is True:
            return "feasible"
        return ""


@dataclass(slots=True, kw_only=True)
class ModelRow:
    name: str
    ref: ModelRef | None = None
    stats: ServingStats | None = None
    stats_sender: str = ""
    stats_at: float | None = None

    def stats_age(self, now: float) -> float | None:
        return None if self.stats_at is None else max(0.0, now - self.stats_at)

    def stats_stale(self, now: float, *, periods: float = 3.0) -> bool:
        """No new stats for ``periods`` publication periods (a ``STOPPED`` server's last word is
        never stale: it will not be followed by another)."""
        age = self.stats_age(now)
        stats = self.stats
        return (
            age is not None
            and stats is not None
            and stats.state != "STOPPED"
            and age > periods * stats.period_s
        )


class TopicRates:
    """Messages and bytes per topic kind: totals, and rates over the last ``window_s`` seconds
    (one-second buckets, so memory stays bounded however fast messages come)."""

    def __init__(self, window_s: float = 10.0) -> None:
        if not window_s >= 1:
            raise ValueError(f"window_s must be at least 1, got {window_s}")
        self.window_s = window_s
        self.messages: dict[TopicKind, int] = dict.fromkeys(TOPIC_KINDS, 0)
        self.bytes: dict[TopicKind, int] = dict.fromkeys(TOPIC_KINDS, 0)
        self._buckets: dict[TopicKind, deque[list[int]]] = {k: deque() for k in TOPIC_KINDS}
        self._first: float | None = None

    def add(self, kind: TopicKind, nbytes: int, now: float) -> None:
        self.messages[kind] += 1
        self.bytes[kind] += nbytes
        if self._first is None:
            self._first = now
        second = int(now)
        buckets = self._buckets[kind]
        if buckets and buckets[-1][0] == second:
            buckets[-1][1] += 1
            buckets[-1][2] += nbytes
        else:
            buckets.append([second, 1, nbytes])
        self._prune(buckets, now)

    def _prune(self, buckets: deque[list[int]], now: float) -> None:
        while buckets and buckets[0][0] <= now - self.window_s - 1:
            buckets.popleft()

    def rate(self, kind: TopicKind, now: float) -> tuple[float, float]:
        """(messages/s, bytes/s) of ``kind`` over the window (or since the first message, when
        that is more recent)."""
        buckets = self._buckets[kind]
        self._prune(buckets, now)
        span = self.window_s if self._first is None else min(self.window_s, now - self._first)
        span = max(span, 1.0)
        horizon = now - span
        count = sum(b[1] for b in buckets if b[0] + 1 > horizon)
        nbytes = sum(b[2] for b in buckets if b[0] + 1 > horizon)
        return count / span, nbytes / span


class FleetView:
    """The fleet's tables, kept up to date one message at a time (see the module docstring)."""

    def __init__(
        self,
        topics: Topics,
        *,
        rate_window_s: float = 10.0,
        reply_grace_s: float = 2.0,
        max_problems: int = 20,
        max_pending: int = 1000,
    ) -> None:
        self.topics = topics
        self.reply_grace_s = reply_grace_s
        self.max_pending = max_pending
        self.agents: dict[str, AgentRow] = {}
        self.jobs: dict[str, JobRow] = {}
        self.models: dict[str, ModelRow] = {}
        self.rates = TopicRates(rate_window_s)
        self.received = 0
        self.undecodable = 0
        self.unexpected = 0
        self.problems: deque[str] = deque(maxlen=max_problems)
        """The newest ``undecodable on <topic>: <reason>`` / ``unexpected ...`` lines."""

    # ------------------------------------------------------------------ applying messages

    def apply(self, topic: str, payload: object, now: float) -> Event:
        """Take one message; returns what it was. Never raises for any topic or payload."""
        kind, ident = topic_kind(self.topics, topic)
        nbytes = len(payload) if isinstance(payload, (bytes, bytearray, str)) else 0
        self.received += 1
        self.rates.add(kind, nbytes, now)
        self.expire(now)
        if isinstance(payload, (bytes, bytearray)) and not payload:
            self._clear(kind, ident)
            return Event(topic=topic, kind=kind, nbytes=0, outcome="cleared")
        if not isinstance(payload, (bytes, bytearray)):
            return self._undecodable(topic, kind, nbytes, "not a binary payload", "TypeError")
        try:
            env = decode(payload)
        except ProtocolError as exc:
            return self._undecodable(topic, kind, nbytes, str(exc), type(exc).__name__)
        why = self._mismatch(kind, ident, env)
        if why:
            self.unexpected += 1
            self.problems.append(f"unexpected on {topic}: {why}")
            return Event(
                topic=topic, kind=kind, nbytes=nbytes, outcome="unexpected", envelope=env, error=why
            )
        self._update(kind, ident, env, now)
        return Event(topic=topic, kind=kind, nbytes=nbytes, outcome="decoded", envelope=env)

    def expire(self, now: float) -> None:
        """Count the instructions whose reply is overdue as missed."""
        for row in self.agents.values():
            if not row.pending:
                continue
            overdue = [msg_id for msg_id, due in row.pending.items() if due < now]
            for msg_id in overdue:
                del row.pending[msg_id]
                row.missed += 1

    def _undecodable(
        self, topic: str, kind: TopicKind, nbytes: int, reason: str, error_type: str
    ) -> Event:
        self.undecodable += 1
        self.problems.append(f"undecodable on {topic}: {reason}")
        return Event(
            topic=topic,
            kind=kind,
            nbytes=nbytes,
            outcome="undecodable",
            error=reason,
            error_type=error_type,
        )

    def _mismatch(self, kind: TopicKind, ident: str, env: Envelope) -> str:
        expected = _EXPECTED.get(kind)
        if expected is None:
            return ""
        body = env.body
        if not isinstance(body, expected):
            return f"a {env.type} does not belong on a {kind} topic"
        if isinstance(body, ModelRef) and body.name != ident:
            return f"a ModelRef of model {body.name!r} on model {ident!r}'s topic"
        if isinstance(body, ServingStats) and body.model != ident:
            return f"serving stats of model {body.model!r} on model {ident!r}'s topic"
        return ""

    def _agent(self, agent_id: str) -> AgentRow:
        row = self.agents.get(agent_id)
        if row is None:
            row = self.agents[agent_id] = AgentRow(agent_id=agent_id)
        return row

    def _model(self, name: str) -> ModelRow:
        row = self.models.get(name)
        if row is None:
            row = self.models[name] = ModelRow(name=name)
        return row

    def _update(self, kind: TopicKind, ident: str, env: Envelope, now: float) -> None:
        body = env.body
        if isinstance(body, Status):
            row = self._agent(ident)
            if body.state == "online":
                row.status, row.session = "online", body.session
            elif not (body.session and row.session and body.session != row.session):
                row.status = "offline"  # another session's farewell leaves this one online
        elif isinstance(body, Hello):
            self._agent(ident).hello = body
        elif isinstance(body, Heartbeat):
            self._heartbeat(self._agent(ident), body, now)
        elif isinstance(body, TrainIns):
            row = self._agent(ident)
            row.asked += 1
            row.pending[env.msg_id] = now + body.budget_s + self.reply_grace_s
            while len(row.pending) > self.max_pending:  # oldest first (insertion order)
                del row.pending[next(iter(row.pending))]
                row.missed += 1
        elif isinstance(body, (TrainRes, Failure)):
            row = self._agent(ident)
            if isinstance(body, Failure):
                row.last_failure = f"{body.code}: {body.reason}"
            if env.reply_to in row.pending:
                del row.pending[env.reply_to]
                if isinstance(body, TrainRes):
                    row.ok += 1
                else:
                    row.failed += 1
        elif isinstance(body, JobState):
            self.jobs[ident] = JobRow(job_id=ident, state=body, sender=env.sender, updated=now)
        elif isinstance(body, ModelRef):
            self._model(ident).ref = body
        elif isinstance(body, ServingStats):
            model = self._model(ident)
            model.stats, model.stats_sender, model.stats_at = body, env.sender, now

    def _heartbeat(self, row: AgentRow, beat: Heartbeat, now: float) -> None:
        same_session = beat.session == row.heartbeat_session and row.seq is not None
        if same_session and row.seq is not None:
            if beat.seq <= row.seq:
                return  # a duplicate or a reordered old one: nothing newer in it
            step = beat.seq - row.seq
            row.missed_heartbeats += step - 1
            if row.last_heartbeat is not None:
                gap = (now - row.last_heartbeat) / step
                row.heartbeat_interval_s = (
                    gap
                    if row.heartbeat_interval_s is None
                    else 0.8 * row.heartbeat_interval_s + 0.2 * gap
                )
        row.heartbeat_session = beat.session
        row.seq = beat.seq
        row.last_heartbeat = now
        row.load, row.busy, row.memory_used_bytes = beat.load, beat.busy, beat.memory_used_bytes

    def _clear(self, kind: TopicKind, ident: str) -> None:
        """A retained message was deleted (an empty payload): forget what it said."""
        if kind == "job state":
            self.jobs.pop(ident, None)
        elif kind == "models" and ident in self.models:
            self.models[ident].ref = None
        elif kind == "serving" and ident in self.models:
            self.models[ident].stats = None
            self.models[ident].stats_at = None
        elif kind == "hello" and ident in self.agents:
            self.agents[ident].hello = None
        elif kind == "status" and ident in self.agents:
            self.agents[ident].status = "unknown"
